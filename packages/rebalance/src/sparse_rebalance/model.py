"""The reasoning toy's model: the core's pretrained tiny Llama fine-tuned to think in steps.

`reasoning_lm` loads `sparsecore.bench.pretrained_tiny_lm` (byte-level, trained on the Python
standard library), adds the four special tokens of `ReasoningTokenizer` (new embedding and head
rows initialised at the mean of the byte rows), and fine-tunes every weight on
`training_trace` data (clean, over-thinking and under-thinking traces mixed) with AdamW and a
linear warm-up / cosine decay. The result is cached under the core's cache directory
(``$SPARSE_CACHE_DIR`` or ``~/.cache/sparse``) in ``rebalance/`` and reloaded with
``from_pretrained``; the key hashes the recipe, the base model and the torch version, as the
core's own cache does. Choice, labelled: the loss covers every token of the trace (prompt
included); ``max_position_embeddings`` is raised to 192 (RoPE positions are computed, not
learned, so the base model's weights are unchanged by it).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from typing import Any

import torch
from torch import nn

from sparse_rebalance.reasoning import EOS, ReasoningTokenizer, make_problems, training_trace
from sparsecore.bench.pretrained import (
    cache_dir,
    pretrained_tiny_lm,
    tiny_lm_path,
    write_cache_entry,
)
from sparsecore.validation import check_int

__all__ = ["FINETUNE", "batch_of", "finetune", "reasoning_lm"]

#: The fine-tuning recipe (part of the cache key).
FINETUNE: dict[str, Any] = {
    "base": "tiny",
    "steps": 600,
    "batch": 32,
    "lr": 2e-3,
    "over": 0.4,
    "under": 0.2,
    "problems": 4000,
}


def batch_of(texts: list[str], tokenizer: ReasoningTokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(input_ids, labels)``; padding is ``<eos>`` with label −100."""
    ids = [tokenizer.encode(t) for t in texts]
    width = max(len(i) for i in ids)
    inputs = torch.full((len(ids), width), EOS, dtype=torch.long)
    labels = torch.full((len(ids), width), -100, dtype=torch.long)
    for row, seq in enumerate(ids):
        inputs[row, : len(seq)] = torch.tensor(seq)
        labels[row, : len(seq)] = torch.tensor(seq)
    return inputs, labels


def _add_special_rows(model: nn.Module, vocab: int) -> None:
    old = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(vocab, mean_resizing=False)
    with torch.no_grad():
        for module in (model.get_input_embeddings(), model.get_output_embeddings()):
            module.weight[old:] = module.weight[:old].mean(0, keepdim=True)
    model.config.max_position_embeddings = 192


def finetune(
    model: nn.Module, seed: int, recipe: dict[str, Any], progress: bool = False
) -> list[float]:
    """Fine-tune ``model`` in place on mixed traces; returns the loss per step."""
    tokenizer = ReasoningTokenizer()
    rng = random.Random(seed + 101)
    problems = make_problems(recipe["problems"], seed=seed + 202)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=0.0)
    steps = recipe["steps"]
    warm = max(1, steps // 20)
    model.train()
    losses = []
    iterator = range(steps)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="fine-tuning the reasoning LM", leave=False)
    for step in iterator:
        lr = recipe["lr"] * min(1.0, (step + 1) / warm)
        lr *= 0.5 * (1 + math.cos(math.pi * min(1.0, step / steps)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        texts = [
            training_trace(rng.choice(problems), rng, recipe["over"], recipe["under"])
            for _ in range(recipe["batch"])
        ]
        inputs, labels = batch_of(texts, tokenizer)
        loss = model(input_ids=inputs, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def _key(seed: int, recipe: dict[str, Any]) -> str:
    base = tiny_lm_path(recipe["base"], seed=0).name
    blob = json.dumps({"recipe": recipe, "seed": seed, "base": base, "torch": torch.__version__})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def reasoning_lm(
    seed: int = 0, recipe: dict[str, Any] | None = None, progress: bool = True
) -> nn.Module:
    """The fine-tuned reasoning LM: loaded from the cache, or fine-tuned once and cached.

    Args:
        seed: Fine-tuning data seed (the base model is the core's ``tiny`` LM, seed 0).
        recipe: Overrides of `FINETUNE` (e.g. fewer ``steps`` for tests).
        progress: Show a progress bar while fine-tuning.

    Returns:
        A ``LlamaForCausalLM`` in eval mode, vocabulary 260.
    """
    from transformers import LlamaForCausalLM

    check_int(seed, "seed", 0)
    recipe = {**FINETUNE, **(recipe or {})}
    path = cache_dir() / "rebalance" / f"reasoning-{_key(seed, recipe)}"
    if not (path / "config.json").exists():
        model = pretrained_tiny_lm(recipe["base"], seed=0, progress=progress)
        _add_special_rows(model, ReasoningTokenizer.vocab_size)
        losses = finetune(model, seed, recipe, progress)
        meta = {"recipe": recipe, "seed": seed, "final_loss": losses[-1]}
        write_cache_entry(
            path, lambda tmp: model.save_pretrained(tmp, safe_serialization=True), meta
        )
    return LlamaForCausalLM.from_pretrained(path).eval()
