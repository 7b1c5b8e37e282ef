"""After training: replace each low-rank layer by two plain layers.

TRP (Xu et al., IJCAI 2020, arXiv 2004.14566; official code
https://github.com/yuhuixu1993/Trained-Rank-Pruning ``decompose.py``: ``channel_decompose``,
``VH_decompose_model``, ``network_decouple``). A decomposed model contains only standard
``torch.nn`` layers (each decomposed layer becomes an ``nn.Sequential`` of two), so it needs no
class from this package to run, and its ``state_dict`` loads with ``torch.load(weights_only=True)``
once the structure is rebuilt from the *plan* (a plain dict, see `build_decomposed`).

Structures, for a convolution with ``N`` outputs, ``C`` inputs and kernel ``k`` and a rank ``R``:

* ``"NC"``: ``Conv(C→R, k, stride, padding, dilation)`` then ``Conv(R→N, 1)`` with the bias.
* ``"VH"`` (Conv2d): ``Conv2d(C→R, (kh, 1), stride (sh, 1), padding (ph, 0), dilation (dh, 1))``
  then ``Conv2d(R→N, (1, kw), stride (1, sw), padding (0, pw), dilation (1, dw))`` with the bias.
* ``"ND"``: ``Conv(C→N·R, 1)`` then the grouped ``Conv(N·R→N, k, groups=N)`` with the bias.
* Linear (any scheme): ``Linear(in→R, bias=False)`` then ``Linear(R→out)`` with the bias.

Choices, with reasons:

* The official code decomposes only stride-1 layers and hard-codes ``padding=1`` for NC. Here
  stride, padding (numbers, ``"same"``, ``"valid"``), dilation and every padding mode are carried
  over exactly (the placement above commutes with padding because the first factor has no bias);
  ``groups > 1`` is rejected with a ``ValueError``.
* ND's official ``MultiPathConv`` (a custom module summing ``R`` point-wise → depth-wise paths) is
  rewritten as one 1×1 convolution to ``N·R`` channels followed by a grouped convolution with
  ``groups=N``: the same function and FLOPs from two standard layers. As in the official code the
  ND rank is the largest per-filter rank (capped at ``min(C, prod(k))``) and every filter keeps
  that many components.
* The singular values are split as ``√σ`` between the two factors (the official NC does the same;
  the official VH puts ``σ`` on the second factor: only the conditioning differs).
* `plan_ranks` leaves a layer dense when its factorisation would not cost fewer
  multiply-accumulates (``only_if_smaller``); the official code decomposes every eligible
  stride-1 layer regardless. MACs, not weight counts, decide: a strided layer's ND point-wise
  factor (and VH's first factor along a strided width) runs at the input resolution, so a
  factorisation with fewer weights can cost more. With an ``example`` input the spatial sizes
  are the real ones (`sparse_trp.flops`); without, the count is per output position in the
  large-input limit (``|in| = prod(stride) · |out|``), exact for stride 1.
* Default criteria follow the official evaluation: ``ValueThreshold(0.05)`` for NC/VH (the trained
  weights are already low-rank), ``EnergyThreshold(0.85)`` for ND.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from sparse_trp.lowrank import RankCriterion, to_matrix

__all__ = [
    "LAYER_TYPES",
    "build_decomposed",
    "decompose",
    "decomposed_module",
    "eligible_layers",
    "factor_params",
    "macs_per_output_position",
    "plan_ranks",
]

#: Module types TRP can act on.
LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Linear)


def eligible_layers(
    model: nn.Module, include_linear: bool = False, skip_first_conv: bool = True
) -> list[str]:
    """Module names TRP acts on by default (official ``get_look_up_table``).

    Every Conv1d/Conv2d whose kernel is not all ones and with ``groups == 1``, except the first
    such convolution in module order; plus every Linear layer if ``include_linear``.
    """
    names: list[str] = []
    first = skip_first_conv
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv1d | nn.Conv2d):
            if math.prod(module.kernel_size) == 1 or module.groups != 1:
                continue
            if first:
                first = False
                continue
            names.append(name)
        elif include_linear and isinstance(module, nn.Linear):
            names.append(name)
    return names


def check_layer(name: str, module: nn.Module, scheme: str) -> None:
    """Raise a ``ValueError`` naming ``name`` if TRP cannot act on ``module`` with ``scheme``."""
    if not isinstance(module, LAYER_TYPES):
        raise ValueError(
            f"layer {name!r}: TRP supports Conv1d, Conv2d and Linear, got {type(module).__name__}"
        )
    if isinstance(module, nn.Linear):
        return
    if module.groups != 1:
        raise ValueError(f"layer {name!r}: groups={module.groups} is not supported (needs 1)")
    if scheme == "VH" and not isinstance(module, nn.Conv2d):
        raise ValueError(f"layer {name!r}: scheme 'VH' needs a Conv2d, got {type(module).__name__}")


def _work(weight: torch.Tensor) -> torch.Tensor:
    """The weight in a dtype the SVD supports (float64 kept, anything else float32)."""
    w = weight.detach()
    return w if w.dtype == torch.float64 else w.float()


def _rank_bound(module: nn.Module, scheme: str) -> int:
    w = module.weight
    if isinstance(module, nn.Linear):
        return min(w.shape)
    if scheme == "ND":
        return min(w.shape[1], math.prod(w.shape[2:]))
    return min(to_matrix(w.detach(), scheme).shape)


def factor_params(module: nn.Module, scheme: str, rank: int) -> int:
    """Weights (without bias) of the two-layer factorisation of ``module`` at ``rank``."""
    w = module.weight
    if isinstance(module, nn.Linear):
        return rank * (w.shape[0] + w.shape[1])
    n, c = w.shape[:2]
    k = math.prod(w.shape[2:])
    if scheme == "NC":
        return rank * (c * k + n)
    if scheme == "VH":
        return rank * (c * w.shape[2] + n * w.shape[3])
    return rank * (c * n + n * k)


def macs_per_output_position(module: nn.Module, scheme: str, rank: int | None) -> int:
    """MACs per output position of ``module`` (``rank=None``: dense), large-input limit.

    The input of a strided layer is taken as ``prod(stride)`` times its output (padding
    ignored), so ND's point-wise factor costs ``C·N·R·prod(stride)`` and VH's first factor
    ``C·kh·R·stride_w`` per output position. Exact for stride 1; a Linear layer counts per token.
    """
    w = module.weight
    if rank is None:
        return w.numel()
    if isinstance(module, nn.Linear):
        return factor_params(module, scheme, rank)
    n, c = w.shape[:2]
    k = math.prod(w.shape[2:])
    if scheme == "NC":
        return rank * (c * k + n)
    if scheme == "VH":
        return c * w.shape[2] * rank * module.stride[1] + rank * w.shape[3] * n
    return c * n * rank * math.prod(module.stride) + n * rank * k


def _is_smaller(module: nn.Module, scheme: str, rank: int, size: tuple[int, ...] | None) -> bool:
    """Whether the factorisation at ``rank`` costs fewer MACs than the dense layer."""
    if size is None:
        dense = macs_per_output_position(module, scheme, None)
        return macs_per_output_position(module, scheme, rank) < dense
    from sparse_trp.flops import decomposed_macs, dense_macs

    return decomposed_macs(module, scheme, rank, size) < dense_macs(module, size)


@torch.no_grad()
def plan_ranks(
    model: nn.Module,
    layers: list[str],
    scheme: str,
    criterion: RankCriterion,
    only_if_smaller: bool = True,
    example: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Choose a rank per layer from its singular values.

    Args:
        model: The trained model.
        layers: Module names to consider.
        scheme: ``"NC"``, ``"VH"`` or ``"ND"``.
        criterion: Rank criterion (for ND: applied per filter, the plan keeps the largest).
        only_if_smaller: Leave a layer dense when the factorisation would cost at least as many
            multiply-accumulates as the dense layer.
        example: A batch of inputs for the layers' real spatial sizes in the MAC comparison;
            ``None``: per output position in the large-input limit (see the module docstring).

    Returns:
        The plan ``{"scheme": scheme, "ranks": {name: rank}}`` (plain Python values).
    """
    sizes: dict[str, tuple[int, ...]] = {}
    if only_if_smaller and example is not None:
        from sparse_trp.flops import layer_inputs

        sizes = layer_inputs(model, example)
    ranks: dict[str, int] = {}
    for name in layers:
        module = model.get_submodule(name)
        check_layer(name, module, scheme)
        matrix = to_matrix(_work(module.weight), scheme)
        sigma = torch.linalg.svdvals(matrix)
        rank = int(criterion(sigma).max())
        rank = min(rank, _rank_bound(module, scheme))
        if only_if_smaller and not _is_smaller(module, scheme, rank, sizes.get(name)):
            continue
        ranks[name] = rank
    return {"scheme": scheme, "ranks": ranks}


def _pair(value: Any, n: int) -> tuple:
    return tuple(value) if isinstance(value, tuple | list) else (value,) * n


def decomposed_module(module: nn.Module, scheme: str, rank: int) -> nn.Sequential:
    """The two-layer structure replacing ``module`` (weights uninitialised from the SVD)."""
    w = module.weight
    factory = {"device": w.device, "dtype": w.dtype}
    has_bias = module.bias is not None
    if isinstance(module, nn.Linear):
        first: nn.Module = nn.Linear(module.in_features, rank, bias=False, **factory)
        second: nn.Module = nn.Linear(rank, module.out_features, bias=has_bias, **factory)
    else:
        conv = type(module)
        n, c = module.out_channels, module.in_channels
        mode = module.padding_mode
        if scheme == "NC":
            first = conv(
                c, rank, module.kernel_size, module.stride, module.padding, module.dilation,
                bias=False, padding_mode=mode, **factory,
            )  # fmt: skip
            second = conv(rank, n, 1, bias=has_bias, **factory)
        elif scheme == "VH":
            (kh, kw), (sh, sw), (dh, dw) = module.kernel_size, module.stride, module.dilation
            pad = module.padding
            pad_v, pad_h = (pad, pad) if isinstance(pad, str) else ((pad[0], 0), (0, pad[1]))
            first = conv(
                c, rank, (kh, 1), (sh, 1), pad_v, (dh, 1), bias=False, padding_mode=mode, **factory
            )
            second = conv(
                rank, n, (1, kw), (1, sw), pad_h, (1, dw), bias=has_bias, padding_mode=mode,
                **factory,
            )  # fmt: skip
        elif scheme == "ND":
            first = conv(c, n * rank, 1, bias=False, **factory)
            second = conv(
                n * rank, n, module.kernel_size, module.stride, module.padding, module.dilation,
                groups=n, bias=has_bias, padding_mode=mode, **factory,
            )  # fmt: skip
        else:
            raise ValueError(f"scheme must be 'NC', 'VH' or 'ND', got {scheme!r}")
    block = nn.Sequential(first, second)
    block.train(module.training)
    return block


@torch.no_grad()
def _fill(block: nn.Sequential, module: nn.Module, scheme: str, rank: int) -> None:
    w = module.weight.detach()
    first, second = block[0], block[1]
    matrix = to_matrix(_work(w), "NC" if isinstance(module, nn.Linear) else scheme)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    root = s[..., :rank].sqrt()
    left = u[..., :rank] * root.unsqueeze(-2)  # (rows, R) or (N, C, R)
    right = root.unsqueeze(-1) * vh[..., :rank, :]  # (R, cols) or (N, R, K)
    if isinstance(module, nn.Linear):
        a, b = right, left
    elif scheme == "NC":
        a = right.reshape(first.weight.shape)
        b = left.reshape(second.weight.shape)
    elif scheme == "VH":
        c, kh = w.shape[1], w.shape[2]
        n, kw = w.shape[0], w.shape[3]
        a = left.reshape(c, kh, rank).permute(2, 0, 1).unsqueeze(-1)
        b = right.reshape(rank, n, kw).permute(1, 0, 2).unsqueeze(2)
    else:  # ND: channel n·R + j of the point-wise conv is component j of filter n
        a = left.permute(0, 2, 1).reshape(first.weight.shape)
        b = right.reshape(second.weight.shape)
    first.weight.copy_(a)
    second.weight.copy_(b)
    if module.bias is not None:
        second.bias.copy_(module.bias.detach())


def _check_plan(model: nn.Module, plan: dict[str, Any]) -> tuple[str, dict[str, int]]:
    if not isinstance(plan, dict) or "scheme" not in plan or "ranks" not in plan:
        raise TypeError("plan must be a dict {'scheme': ..., 'ranks': {layer: rank}}")
    scheme, ranks = plan["scheme"], plan["ranks"]
    modules = dict(model.named_modules())
    for name, rank in ranks.items():
        if name not in modules:
            raise ValueError(f"plan: layer {name!r} is not a module of the model")
        check_layer(name, modules[name], scheme)
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"plan: rank of {name!r} must be a positive integer, got {rank!r}")
    return scheme, dict(ranks)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, new)


def decompose(model: nn.Module, plan: dict[str, Any], inplace: bool = False) -> nn.Module:
    """Replace every planned layer by its two-layer factorisation, weights from the SVD.

    Args:
        model: The trained model (unchanged unless ``inplace``).
        plan: From `plan_ranks` (or `sparse_trp.TRP.plan`).
        inplace: Modify ``model`` itself instead of a deep copy.

    Returns:
        The decomposed model: standard layers only, the same training/eval mode.
    """
    scheme, ranks = _check_plan(model, plan)
    out = model if inplace else copy.deepcopy(model)
    for name, rank in ranks.items():
        module = out.get_submodule(name)
        block = decomposed_module(module, scheme, rank)
        _fill(block, module, scheme, rank)
        _replace(out, name, block)
    return out


def build_decomposed(model: nn.Module, plan: dict[str, Any]) -> nn.Module:
    """Rebuild the decomposed structure on a fresh model, in place, to load a saved state_dict.

    ```python
    torch.save({"plan": plan, "state": small.state_dict()}, "small.pt")
    saved = torch.load("small.pt", weights_only=True)
    small = build_decomposed(make_model(), saved["plan"])
    small.load_state_dict(saved["state"])
    ```
    """
    scheme, ranks = _check_plan(model, plan)
    for name, rank in ranks.items():
        _replace(model, name, decomposed_module(model.get_submodule(name), scheme, rank))
    return model
