"""Helpers shared by the modules that trace a model with Torch-Pruning (groups, surgery)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["flat_outputs", "import_torch_pruning", "run_model"]


def import_torch_pruning(feature: str) -> Any:
    """The `torch_pruning` module, or an `ImportError` naming `feature` and the extra to install."""
    try:
        import torch_pruning as tp
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            f"{feature} needs Torch-Pruning: pip install 'sparse-core[structured]'"
        ) from err
    return tp


def run_model(model: nn.Module, inputs: Any) -> Any:
    """Call `model` on `inputs`: a mapping as keywords, a tuple/list as positionals, else one."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, tuple | list):
        return model(*inputs)
    return model(inputs)


def flat_outputs(out: Any) -> list[torch.Tensor]:
    """Every tensor in a (nested) output: a tensor, mapping, tuple or list."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        out = list(out.values())
    if isinstance(out, tuple | list):
        return [t for o in out for t in flat_outputs(o)]
    return []
