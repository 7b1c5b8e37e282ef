"""A supervised warm start of the core's tiny Llama on a toy task, cached on disk.

RL with a 0/1 reward learns nothing from a policy that is always wrong (every group all 0) or
always right (all 1). `sft_warm_start` fine-tunes a randomly initialised
`sparsecore.bench.tiny_llama` (character vocabulary of `sparsecore.rl.tasks.CHAR_VOCAB`) on
``prompt + answer + EOS`` sequences with cross-entropy on the answer tokens only, for a small
number of steps chosen so that the policy is right *sometimes*: the regime where RLVR has
signal. The result is saved with ``save_pretrained`` (safetensors) through
`sparsecore.bench.pretrained.write_cache_entry` under ``<cache>/rl/<task>-<key>``, the key hashing
the task, the model config, the recipe, the seed and the torch version, and loaded with
``LlamaForCausalLM.from_pretrained``. The metadata records the greedy accuracy on 256 held-out
problems (generator seed ``seed + 7``).

Recipe (labelled): AdamW (lr ``lr``, β 0.9/0.95, weight decay 0.0), constant learning rate,
batches of ``batch`` fresh problems drawn by a generator seeded with ``seed + 1``; model weights
initialised with ``seed``.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsecore.rl.tasks import ToyTask
from sparsecore.validation import check_int, check_number

__all__ = ["RL_MODEL_SIZES", "sft_warm_start", "task_key", "warm_start_path"]

#: Model configs of the warm-started policies (``vocab_size`` comes from the task).
RL_MODEL_SIZES: dict[str, dict[str, int]] = {
    "nano": dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                 num_key_value_heads=2, intermediate_size=64),
    "micro": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=128),
    "tiny": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=4, intermediate_size=384),
}  # fmt: skip


def task_key(task: ToyTask) -> dict[str, Any]:
    """A JSON description of ``task`` (its class and public scalar attributes)."""
    attrs = {k: v for k, v in vars(task).items() if isinstance(v, int | float | str)}
    return {"task": type(task).__name__, **attrs, "vocab": task.vocab.chars}


def _config(task: ToyTask, size: str) -> dict[str, Any]:
    if size not in RL_MODEL_SIZES:
        raise ValueError(f"size must be one of {', '.join(RL_MODEL_SIZES)}, got {size!r}")
    return {
        "vocab_size": task.vocab.size,
        "max_position_embeddings": 64,
        "pad_token_id": task.vocab.pad,
        "bos_token_id": task.vocab.bos,
        "eos_token_id": task.vocab.eos,
        **RL_MODEL_SIZES[size],
    }


def warm_start_path(
    task: ToyTask, size: str = "micro", steps: int = 300, batch: int = 64, lr: float = 3e-3,
    seed: int = 0,
) -> Path:  # fmt: skip
    """Where `sft_warm_start` keeps that model."""
    from sparsecore.bench.pretrained import cache_dir

    recipe = {
        "task": task_key(task), "config": _config(task, size), "steps": steps, "batch": batch,
        "lr": lr, "seed": seed, "torch": torch.__version__, "version": 1,
    }  # fmt: skip
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "rl" / f"{task.name}-{size}-{key}"


def _train(model: nn.Module, task: ToyTask, steps: int, batch: int, lr: float, seed: int) -> float:
    generator = torch.Generator().manual_seed(seed + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    model.train()
    loss_value = float("nan")
    for _ in range(steps):
        problems = task.sample(batch, generator)
        seqs = [task.sft_sequence(p) for p in problems]
        width = max(len(s) for s, _ in seqs)
        ids = torch.full((batch, width), task.vocab.pad, dtype=torch.long)
        labels = torch.full((batch, width), -100, dtype=torch.long)
        attn = torch.zeros((batch, width), dtype=torch.long)
        for row, (seq, plen) in enumerate(seqs):  # right-padded; loss on the answer only
            ids[row, : len(seq)] = torch.tensor(seq)
            labels[row, plen : len(seq)] = torch.tensor(seq[plen:])
            attn[row, : len(seq)] = 1
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        loss_value = float(loss.detach())
    model.eval()
    return loss_value


def sft_warm_start(
    task: ToyTask,
    size: str = "micro",
    steps: int = 300,
    batch: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    cache: bool = True,
) -> nn.Module:
    """A tiny Llama fine-tuned on ``task`` for ``steps`` steps (cached; see the module docstring).

    Args:
        task: The toy task.
        size: Model size in `RL_MODEL_SIZES`.
        steps: SFT steps (fewer: a weaker start).
        batch: Problems per step.
        lr: AdamW learning rate.
        seed: Weight seed (batches use ``seed + 1``).
        cache: Load/store the result in the cache (``False``: train in memory).

    Returns:
        The model in eval mode (``model.config.sparse_warm_start`` holds the metadata).
    """
    from transformers import LlamaForCausalLM

    from sparsecore.bench.models import tiny_llama
    from sparsecore.bench.pretrained import write_cache_entry
    from sparsecore.rl.trainer import greedy_accuracy

    check_int(steps, "steps", 0)
    check_int(batch, "batch", 1)
    check_number(lr, "lr", 0.0, open_low=True, finite=True)
    check_int(seed, "seed", 0)
    config = _config(task, size)
    path = warm_start_path(task, size, steps, batch, lr, seed)
    if cache and (path / "config.json").exists():
        model = LlamaForCausalLM.from_pretrained(path).eval()
        model.config.sparse_warm_start = json.loads((path / "sparse_meta.json").read_text())
        return model
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        model = tiny_llama(seed=seed, **config)
        final_loss = _train(model, task, steps, batch, lr, seed) if steps else float("nan")
    held_out = task.sample(256, torch.Generator().manual_seed(seed + 7))
    meta = {
        "task": task_key(task), "size": size, "steps": steps, "batch": batch, "lr": lr,
        "seed": seed, "torch": torch.__version__, "final_loss": final_loss,
        "greedy_accuracy_256": greedy_accuracy(model, task, held_out, task.max_answer_tokens + 1),
        "train_seconds": time.perf_counter() - start,
    }  # fmt: skip
    if cache:
        write_cache_entry(path, model.save_pretrained, meta)
    model.config.sparse_warm_start = meta
    return model
