"""Small Llama models pretrained on the ``stdlib-lm`` task, built once and cached on disk.

``pretrained_tiny_lm("tiny")`` trains a `sparsecore.bench.tiny_llama` (a Hugging Face
``LlamaForCausalLM``) on `sparsecore.bench.lm.load_lm_task`'s training blocks,
deterministically, saves it with ``save_pretrained`` (safetensors) under the cache directory and
returns ``LlamaForCausalLM.from_pretrained`` of that directory. Later calls only load.

Sizes (`LM_SIZES`):

* ``micro``: hidden 32, 2 layers, 37k parameters, 120 steps (about 2 s of CPU time). For tests
  and every ``--quick`` run, so that CI never waits for pretraining. Validation perplexity 15.1
  against the unigram model's 21.1.
* ``tiny`` (default): hidden 128, 4 layers, 0.92M parameters, 600 steps (137 s of CPU time on one
  thread, measured); validation perplexity 5.03 against the unigram model's 21.07.
* ``nano``: hidden 16, 1 layer, 120 steps: a drafter for ``micro`` (speculative decoding tests
  and quick runs).
* ``mini``: hidden 64, 2 layers, 600 steps: a drafter for ``tiny``.
* ``small``: hidden 512, 8 layers, ~25M parameters, for benchmarks that need redundancy (tens of
  minutes on two cores; build it once).

Cache: ``$SPARSE_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/sparse`` (``~/.cache/sparse``), in
``lm/<name>-<key>``, where ``key`` hashes the model config, the training recipe, the task's
corpus hash, the seed and the torch version: a different stdlib, seed or torch gives a new
entry. The directory is written to a temporary sibling and renamed, so an interrupted build never
leaves a half-written model behind. Training choices (labelled): AdamW (β 0.9/0.95, weight decay
0.1), linear warm-up over 10% of the steps then cosine to 10% of the peak (as AST's
reproduction), gradient clipping at 1.0, training blocks drawn uniformly with replacement by a
generator seeded with ``seed + 1`` (not the weight seed).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsecore.bench.lm import LMTask, load_lm_task, perplexity, unigram_perplexity
from sparsecore.bench.models import tiny_llama
from sparsecore.validation import check_int

__all__ = [
    "LM_SIZES",
    "cache_dir",
    "pretrain_lm",
    "pretrained_tiny_lm",
    "tiny_lm_path",
    "write_cache_entry",
]

#: Model config and training recipe of every size.
LM_SIZES: dict[str, dict[str, Any]] = {
    "micro": {
        "config": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=2, intermediate_size=64),
        "train": dict(steps=120, batch=8, lr=1e-2),
        "seq_len": 64,
    },
    "tiny": {
        "config": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                       num_key_value_heads=4, intermediate_size=384),
        "train": dict(steps=600, batch=16, lr=3e-3),
        "seq_len": 128,
    },
    "nano": {
        "config": dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       num_key_value_heads=2, intermediate_size=32),
        "train": dict(steps=120, batch=8, lr=1e-2),
        "seq_len": 64,
    },
    "mini": {
        "config": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=2, intermediate_size=128),
        "train": dict(steps=600, batch=16, lr=3e-3),
        "seq_len": 128,
    },
    "small": {
        "config": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8,
                       num_key_value_heads=8, intermediate_size=1376),
        "train": dict(steps=3000, batch=16, lr=1e-3),
        "seq_len": 128,
    },
}  # fmt: skip


def cache_dir() -> Path:
    """The user cache directory (``$SPARSE_CACHE_DIR``, else ``$XDG_CACHE_HOME/sparse``)."""
    explicit = os.environ.get("SPARSE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sparse"


def _model_config(name: str, task: LMTask) -> dict[str, Any]:
    return {
        "vocab_size": task.vocab_size,
        "max_position_embeddings": task.seq_len,
        **LM_SIZES[name]["config"],
    }


def _key(name: str, task: LMTask, seed: int) -> str:
    recipe = {
        "name": name,
        "config": _model_config(name, task),
        "train": LM_SIZES[name]["train"],
        "seq_len": task.seq_len,
        "corpus": task.corpus_hash,
        "seed": seed,
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def _lr_at(step: int, steps: int, peak: float) -> float:
    warm = max(1, steps // 10)
    if step < warm:
        return peak * (step + 1) / warm
    ratio = (step - warm) / max(1, steps - warm)
    return 0.1 * peak + 0.45 * peak * (1 + math.cos(math.pi * ratio))


def pretrain_lm(
    model: nn.Module,
    task: LMTask,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    progress: bool = True,
) -> list[float]:
    """Train a causal LM on ``task``'s training blocks (in place, deterministic for ``seed``).

    Returns:
        The training loss of every step.
    """
    from tqdm.auto import tqdm

    check_int(steps, "steps", 1)
    check_int(batch, "batch", 1)
    generator = torch.Generator().manual_seed(seed + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    blocks = task.train_blocks
    losses: list[float] = []
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for step in tqdm(range(steps), desc="pretrain", disable=not progress, leave=False):
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, steps, lr)
            ids = blocks[torch.randint(0, blocks.shape[0], (batch,), generator=generator)]
            loss = model(input_ids=ids, labels=ids).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(float(loss.detach()))
    model.eval()
    return losses


def write_cache_entry(path: Path, write: Callable[[Path], None], meta: dict[str, Any]) -> None:
    """Write a cache entry atomically: ``write(tmp)`` fills a temporary sibling folder, then
    ``sparse_meta.json`` (``meta``) is written and the folder is renamed to ``path``.

    A reader never sees a half-written entry; if another process finished the same entry first,
    theirs is kept. Packages that cache their own trained models (a fine-tuned LM, a diffusion
    model) use it with the same layout as the core's pretrained LMs.

    Args:
        path: The entry's final folder (its parent is created).
        write: Writes the entry's files into the folder it is given.
        meta: JSON-serialisable description of the entry (recipe, seed, versions, metrics).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        write(tmp)
        (tmp / "sparse_meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        try:
            tmp.rename(path)
        except OSError:  # another process finished first: keep theirs
            if not (path / "sparse_meta.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tiny_lm_path(name: str = "tiny", task: LMTask | None = None, seed: int = 0) -> Path:
    """Where `pretrained_tiny_lm` keeps (or will keep) that model."""
    if name not in LM_SIZES:
        raise ValueError(f"unknown tiny LM size {name!r}; available: {', '.join(LM_SIZES)}")
    task = task if task is not None else load_lm_task(seq_len=LM_SIZES[name]["seq_len"])
    return cache_dir() / "lm" / f"{name}-{_key(name, task, seed)}"


def pretrained_tiny_lm(
    name: str = "tiny",
    task: LMTask | None = None,
    seed: int = 0,
    progress: bool = True,
    verbose: bool = False,
) -> nn.Module:
    """A Llama pretrained on ``stdlib-lm``: loaded from the cache, or trained once and cached.

    Args:
        name: ``"micro"``, ``"nano"``, ``"mini"``, ``"tiny"`` or ``"small"`` (see `LM_SIZES`).
        task: The task to train on (default: ``load_lm_task(seq_len=<the size's>)``); its corpus
            hash is part of the cache key.
        seed: Weight-initialisation seed (the batch order uses ``seed + 1``).
        progress: Show a progress bar while training.
        verbose: Print the validation and unigram perplexities after training.

    Returns:
        ``LlamaForCausalLM.from_pretrained(<cache entry>)``, in eval mode on the CPU.

    Raises:
        ValueError: Unknown size, or a task whose blocks are longer than the model's context.
    """
    from transformers import LlamaForCausalLM

    check_int(seed, "seed", 0)
    path = tiny_lm_path(name, task, seed)
    task = task if task is not None else load_lm_task(seq_len=LM_SIZES[name]["seq_len"])
    if not (path / "config.json").exists():
        _build(name, task, seed, path, progress, verbose)
    return LlamaForCausalLM.from_pretrained(path).eval()


def _build(name: str, task: LMTask, seed: int, path: Path, progress: bool, verbose: bool) -> None:
    start = time.perf_counter()
    model = tiny_llama(seed=seed, **_model_config(name, task))
    recipe = LM_SIZES[name]["train"]
    losses = pretrain_lm(
        model, task, recipe["steps"], recipe["batch"], recipe["lr"], seed, progress
    )
    ppl = perplexity(model, task, max_blocks=64)
    unigram = unigram_perplexity(task)
    meta = {
        "size": name,
        "seed": seed,
        "corpus_hash": task.corpus_hash,
        "torch": torch.__version__,
        "train": recipe,
        "final_loss": losses[-1],
        "eval_perplexity_64_blocks": ppl,
        "unigram_perplexity": unigram,
        "train_seconds": time.perf_counter() - start,
    }
    if verbose:
        print(f"{name}: validation perplexity {ppl:.3f} vs unigram {unigram:.3f}")
    write_cache_entry(path, lambda tmp: model.save_pretrained(tmp, safe_serialization=True), meta)
