"""Which layers AST prunes, in which layout, and how their N:M masks are scored.

Choices (official code: thu-ml/Adaptive-Sparse-Trainer ``sparse_modeling.py``):

* **Targets.** The official GPT-2 code replaces ``c_attn``, ``c_proj``, ``c_fc`` and the MLP
  ``c_proj`` of every block by ``SparseLinear`` and leaves ``lm_head`` (tied to the token
  embedding) dense; the LLaMA code wraps every ``nn.Linear`` except the output layer. By default
  we therefore target every ``nn.Linear`` and Hugging Face ``Conv1D`` weight except the model's
  output embedding (``get_output_embeddings()``) and any weight shared with an ``nn.Embedding``.
* **Layout.** nanoGPT stores GPT-2 weights as ``(out, in)`` (it transposes the HF ``Conv1D``
  checkpoints on load) and groups 4 consecutive *inputs* of each output row. HF's ``Conv1D``
  keeps ``(in, out)``, so for it the N:M groups run along dim 0. Everything here works on the
  stored tensor and knows its layout; `linear_view` gives the ``(out, in)`` view. The
  layout logic is sparsecore's (`sparsecore.layouts`: ``is_hf_conv1d``, ``linear_view``,
  and the automatic transpose of the config's pattern in ``PruningMethod.pattern_for``);
  ``is_conv1d``, ``linear_view`` and ``layout_pattern`` are kept here as aliases.
* **Scores.** ``magnitude``: ``|W|``. ``wanda``: ``|W| * sqrt(scaler_row)`` where the official
  ``scaler_row`` is a running mean over calibration *sequences* of ``sum_tokens x_j**2``; that
  equals ``||X_j||_2**2`` up to a positive factor per layer, which cannot change a per-row N:M
  choice, so we keep the exact ``||X_j||_2`` (sum of squares over all calibration tokens).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from sparsecore import NM, transpose_pattern
from sparsecore.layouts import is_hf_conv1d, linear_view

__all__ = [
    "default_lm_targets",
    "is_conv1d",
    "layout_pattern",
    "linear_view",
    "mask_scores",
]


#: Alias of `sparsecore.layouts.is_hf_conv1d` (kept for backward compatibility).
is_conv1d = is_hf_conv1d


def _tied_ids(model: nn.Module) -> set[int]:
    tied = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    get_out = getattr(model, "get_output_embeddings", None)
    if callable(get_out):
        out = get_out()
        if out is not None and isinstance(getattr(out, "weight", None), nn.Parameter):
            tied.add(id(out.weight))
    return tied


def default_lm_targets(model: nn.Module) -> list[str]:
    """Qualified weight names of every ``nn.Linear`` / ``Conv1D`` except the LM head.

    Args:
        model: Any module; Hugging Face models are recognised by ``get_output_embeddings``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    skip = _tied_ids(model)
    names = []
    for name, module in model.named_modules():
        if not (isinstance(module, nn.Linear) or is_conv1d(module)):
            continue
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter) and id(weight) not in skip:
            names.append(f"{name}.weight" if name else "weight")
    return names


def layout_pattern(pattern: NM, conv1d: bool) -> NM:
    """The stored-tensor pattern for an input-dimension N:M ``pattern``.

    `sparsecore.transpose_pattern` for ``Conv1D``, the pattern itself otherwise (kept for
    backward compatibility; methods get this from ``PruningMethod.pattern_for``).
    """
    return transpose_pattern(pattern) if conv1d else pattern  # type: ignore[return-value]


def mask_scores(
    weight: torch.Tensor, conv1d: bool, input_norm: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-entry scores in the stored layout: ``|W|`` or Wanda's ``|W| * ||X_j||_2``.

    Args:
        weight: The dense weight (stored layout).
        conv1d: Whether ``weight`` is ``(in, out)``.
        input_norm: ``||X_j||_2`` per input feature (Wanda); ``None`` for magnitude.
    """
    scores = weight.detach().abs().float()
    if input_norm is None:
        return scores
    norm = input_norm.to(scores.device, scores.dtype)
    return scores * (norm[:, None] if conv1d else norm[None, :])


def run_batches(model: nn.Module, batches: Iterable[object]) -> int:
    """Forward ``model`` on each batch (tensor, ``(x, y)`` pair or dict of kwargs) without grad.

    Returns:
        The number of batches seen.
    """
    seen = 0
    with torch.no_grad():
        for batch in batches:
            if isinstance(batch, dict):
                model(**batch)
            elif isinstance(batch, tuple | list):
                model(batch[0])
            elif isinstance(batch, torch.Tensor):
                model(batch)
            else:
                raise TypeError(
                    f"batches: expected tensors, (x, y) pairs or dicts, got {type(batch).__name__}"
                )
            seen += 1
    return seen
