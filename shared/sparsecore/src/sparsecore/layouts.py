"""Weight layouts: which targets are stored transposed, and how patterns map onto them.

``nn.Linear`` stores its weight as ``(out_features, in_features)``. Hugging Face's
``transformers.pytorch_utils.Conv1D`` (GPT-2 and its relatives) computes the same affine map but
stores the weight as ``(in_features, out_features)``.

Choices:

* **Patterns are written in ``nn.Linear``'s ``(out, in)`` convention, always.** ``"2:4"`` means
  groups of 4 consecutive *inputs* (what semi-structured kernels need), ``Channel()`` means whole
  *output* features, whatever the stored layout. For the ``weight`` of a ``Conv1D`` the pattern
  is transposed automatically (`stored_pattern`, used by
  `PruningMethod.pattern_for`), so the
  per-target pattern ``method.masks.targets[name].pattern`` is the one that describes the stored
  tensor (``NM(2, 4, dim=0)`` for a GPT-2 ``c_fc.weight``). Selection and validity checks must use
  that per-target pattern, never ``method.config.pattern``.
* **No import of transformers.** `is_hf_conv1d` looks the class up in
  ``sys.modules["transformers.pytorch_utils"]``: if that module was never imported, no ``Conv1D``
  can exist, so plain-PyTorch users pay nothing.
* **Only ``weight`` is transposed.** A ``Conv1D`` bias is 1-D and has no layout question.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import torch
from torch import nn

from sparsecore.patterns import Pattern, transpose_pattern

__all__ = [
    "common_pattern",
    "is_hf_conv1d",
    "is_transposed",
    "linear_view",
    "stored_pattern",
    "transpose_pattern",
]


def is_hf_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is a Hugging Face ``Conv1D`` (``weight`` stored ``(in, out)``).

    transformers is not imported: the class is looked up in ``sys.modules`` only.
    """
    utils = sys.modules.get("transformers.pytorch_utils")
    conv1d = getattr(utils, "Conv1D", None)
    return isinstance(conv1d, type) and isinstance(module, conv1d)


def is_transposed(model: nn.Module, name: str) -> bool:
    """Whether parameter ``name`` of ``model`` is stored ``(in, out)`` (a ``Conv1D`` weight).

    Args:
        model: The model.
        name: Qualified parameter name (``"transformer.h.0.mlp.c_fc.weight"``).
    """
    module_name, _, param_name = name.rpartition(".")
    if param_name != "weight":
        return False
    try:
        module = model.get_submodule(module_name) if module_name else model
    except AttributeError:
        return False
    return is_hf_conv1d(module)


def stored_pattern(model: nn.Module, name: str, pattern: Pattern) -> Pattern:
    """``pattern`` (Linear convention) in the stored layout of parameter ``name``.

    Raises:
        ValueError: The pattern cannot be transposed (``Head``) for a transposed weight.
    """
    return transpose_pattern(pattern, name) if is_transposed(model, name) else pattern


def linear_view(weight: torch.Tensor, transposed: bool) -> torch.Tensor:
    """``weight`` as ``(out_features, in_features)``: a transpose view when ``transposed``."""
    return weight.t() if transposed else weight


def common_pattern(patterns: Mapping[str, Pattern], what: str = "global selection") -> Pattern:
    """The one pattern shared by every target, for rankings that span several tensors.

    Args:
        patterns: Pattern per target name (``{n: t.pattern for n, t in masks.targets.items()}``).
        what: What needs the shared pattern (used in the error message).

    Raises:
        ValueError: ``patterns`` is empty or the targets' stored-layout patterns differ (e.g.
            ``Channel`` over ``Linear`` and ``Conv1D`` weights, which are dim 0 and dim 1).
    """
    distinct = list(dict.fromkeys(patterns.values()))
    if not distinct:
        raise ValueError(f"{what}: no targets")
    if len(distinct) > 1:
        first = {p: n for n, p in reversed(list(patterns.items()))}
        examples = ", ".join(f"{first[p]!r}: {p!r}" for p in distinct[:2])
        raise ValueError(
            f"{what} needs one pattern for all targets, but the stored layouts differ ({examples}; "
            "HF Conv1D weights are transposed). Use a per-layer scope, or restrict the targets "
            "to one layout"
        )
    return distinct[0]
