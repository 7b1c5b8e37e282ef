"""Exporting an AST model: compact 2:4 checkpoints and torch semi-structured sparse tensors.

After `sparse_ast.AdaptiveSparseTrainer.finalize` the target weights hold exactly
``W ⊙ m`` (2 of every 4 inputs nonzero). Then:

* `save_compact` / `load_compact` are sparsecore's compact safetensors format
  (packed bitmask plus kept values; re-exported, not reimplemented). A model trained with SLoRB
  carries ``slorb_proj`` / ``slorb_weight`` parameters; to load such a checkpoint into a fresh
  model, call `restore_slorb` on it first.
* `to_semi_structured` converts 2:4 layers to ``torch.sparse`` semi-structured tensors on
  CUDA (fp16/bf16). sparsecore's converter handles ``nn.Linear``; Hugging Face GPT-2's
  ``Conv1D`` stores its weight as ``(in, out)`` with the 2:4 groups along dim 0, so it is first
  replaced by the equivalent ``nn.Linear`` (weight transposed, bias kept, SLoRB moved along).
  On CPU it raises ``RuntimeError`` before touching the model (there is no CPU kernel).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from sparse_ast.layers import is_conv1d
from sparse_ast.slorb import PROJ, WEIGHT, slorb_forward_hook
from sparsecore.export import load_compact, save_compact
from sparsecore.export import to_semi_structured as _core_to_semi_structured

__all__ = [
    "conv1d_to_linear",
    "load_compact",
    "restore_slorb",
    "save_compact",
    "to_semi_structured",
]


def _has_slorb_hook(module: nn.Module) -> bool:
    return any(h is slorb_forward_hook for h in module._forward_hooks.values())


def _move_slorb(src: nn.Module, dst: nn.Module) -> None:
    if hasattr(src, WEIGHT):
        dst.register_parameter(PROJ, getattr(src, PROJ))
        dst.register_parameter(WEIGHT, getattr(src, WEIGHT))
        dst.register_forward_hook(slorb_forward_hook)


@torch.no_grad()
def conv1d_to_linear(model: nn.Module) -> list[str]:
    """Replace every HF ``Conv1D`` by an equivalent ``nn.Linear`` (in place).

    Returns:
        Names of the replaced modules.
    """
    replaced = []
    for name, module in list(model.named_modules()):
        if not is_conv1d(module):
            continue
        nx, nf = module.weight.shape
        linear = nn.Linear(nx, nf, bias=module.bias is not None)
        linear.to(module.weight.device, module.weight.dtype)
        linear.weight.copy_(module.weight.t())
        if module.bias is not None:
            linear.bias.copy_(module.bias)
        _move_slorb(module, linear)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, linear)
        replaced.append(name)
    return replaced


def to_semi_structured(model: nn.Module, *, strict: bool = False) -> list[str]:
    """Convert every 2:4 ``nn.Linear`` / ``Conv1D`` weight to a semi-structured sparse tensor.

    The model must be finalized, on CUDA and in fp16 or bf16.

    Args:
        model: The model.
        strict: Raise if a layer cannot be converted instead of leaving it dense.

    Returns:
        Names of the converted layers.

    Raises:
        RuntimeError: CUDA is not available (nothing is changed then).
    """
    if not torch.cuda.is_available():
        raise RuntimeError(
            "to_semi_structured needs a CUDA GPU (sparse tensor cores); none is available. "
            "Use save_compact for a compact checkpoint on CPU."
        )
    conv1d_to_linear(model)
    return _core_to_semi_structured(model, strict=strict)


def restore_slorb(model: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Create empty SLoRB parameters and hooks wherever ``state`` has them, so that
    ``load_state_dict`` / `load_compact` can fill them.

    Args:
        model: A fresh model of the same architecture.
        state: A state dict (e.g. from ``load_compact(path)``) with ``*.slorb_weight`` keys.

    Returns:
        Names of the modules that received SLoRB.
    """
    done = []
    for key, value in state.items():
        if not key.endswith("." + WEIGHT):
            continue
        module_name = key[: -len(WEIGHT) - 1]
        module = model.get_submodule(module_name)
        proj = state[f"{module_name}.{PROJ}"]
        if not hasattr(module, WEIGHT):
            module.register_parameter(PROJ, nn.Parameter(torch.zeros_like(proj)))
            module.register_parameter(WEIGHT, nn.Parameter(torch.zeros_like(value)))
        if not _has_slorb_hook(module):
            module.register_forward_hook(slorb_forward_hook)
        done.append(module_name)
    return done
