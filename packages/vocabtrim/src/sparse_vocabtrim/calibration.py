"""Calibration data for VocabTrim: target generations, drafter generations or raw text.

Paper: Goel et al., arXiv 2506.22694, Sec. 3: the token counts ``c`` come from a calibration
set ``D``; the paper compares raw text, drafter-generated text and target-generated text, and
finds target generations best (the drafter should propose what the *target* will emit).

Choices, labelled:

* **Generations** are sampled with the decoding temperature given (default 1, as the paper's
  sampled setting), KV-cached (`sparse_vocabtrim.speculative.autoregressive_generate`), from
  prompts of the training text; only the generated tokens are counted, not the prompts.
* **Raw text** counts every token of the given blocks (prompt and continuation alike).
"""

from __future__ import annotations

import torch
from torch import nn

from sparse_vocabtrim.speculative import autoregressive_generate
from sparsecore.validation import check_choice, check_int, check_number

__all__ = ["CALIBRATION_SOURCES", "calibration_tokens"]

#: Where the calibration tokens come from.
CALIBRATION_SOURCES = ("target", "drafter", "text")


@torch.no_grad()
def calibration_tokens(
    source: str,
    prompts: torch.Tensor,
    target: nn.Module | None = None,
    drafter: nn.Module | None = None,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 32,
) -> torch.Tensor:
    """Token ids to count for VocabTrim.

    Args:
        source: ``"target"`` (target generations, the paper's best), ``"drafter"`` (the
            untrimmed drafter's generations) or ``"text"`` (``prompts`` themselves, raw text).
        prompts: Token blocks ``(N, L)`` of calibration text (training text, not evaluation).
        target: The target LM (``source="target"``).
        drafter: The untrimmed drafter LM (``source="drafter"``).
        max_new_tokens: Tokens generated per prompt.
        temperature: Sampling temperature of the generations (0: greedy).
        seed: Seed of the sampling generator (not the models' weight seed).
        batch_size: Prompts per generation batch.

    Returns:
        ``(N, max_new_tokens)`` generated ids, or ``prompts`` for ``"text"``.

    Raises:
        ValueError: Unknown source, missing model, or bad sizes.
    """
    check_choice(source, "source", CALIBRATION_SOURCES)
    check_int(max_new_tokens, "max_new_tokens", 1)
    check_number(temperature, "temperature", 0.0, finite=True)
    check_int(seed, "seed", 0)
    check_int(batch_size, "batch_size", 1)
    if not isinstance(prompts, torch.Tensor) or prompts.ndim != 2:
        raise ValueError("prompts must be a (N, L) tensor of token ids")
    if source == "text":
        return prompts.clone()
    model = target if source == "target" else drafter
    if model is None:
        raise ValueError(f"source={source!r} needs the {source} model")
    generator = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, prompts.shape[0], batch_size):
        tokens, _ = autoregressive_generate(
            model, prompts[start : start + batch_size], max_new_tokens, temperature, generator
        )
        out.append(tokens)
    return torch.cat(out)
