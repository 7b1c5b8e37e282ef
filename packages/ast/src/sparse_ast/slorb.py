"""SLoRB, the Sparse Low-Rank Boost: ``y = (W ⊙ m) x + S (P x)``.

Official code: thu-ml/Adaptive-Sparse-Trainer ``sparse_modeling.py`` (``SparseLinear.init_SLoRB``
and ``forward``). With ``d`` inputs and group size ``k``:

* ``P ∈ {0,1}^{(d/k) × d}`` sums the inputs of each contiguous group of ``k``:
  ``P[r, r*k : (r+1)*k] = 1`` (``x_proj``; trainable when ``--trainable_projection``).
* ``S ∈ R^{N × d/k}`` (``SLoRB_Weight``) is initialised from the *pruned* weights:
  ``S[i, r] = mean_{j in group r} (W ⊙ (1 - m))[i, j]`` (``"mean"``: the mean over all ``k``
  entries, kept ones counting as zero; ``"sum"``: the sum). Hence, if ``x`` is constant inside
  every group, the boosted sparse layer reproduces the dense output at initialisation.
* ``"xavier"`` follows the GPT-2 code: ``P`` gets Xavier-uniform values and ``S`` stays zero
  (so the output starts equal to the masked layer). ``"zero"`` (LLaMA code) keeps ``P`` as the
  grouping matrix and ``S = 0``.

The term is added by a forward hook on the layer, so the layer keeps its class (``nn.Linear`` or
HF ``Conv1D``) and ``P``, ``S`` live on it as parameters ``slorb_proj`` and ``slorb_weight``
(in ``state_dict``). ``S`` is initialised once, when the masks are first set (and again after a
Wanda calibration), and not when masks are recomputed, as in the official code.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["add_slorb", "slorb_forward_hook", "slorb_init_weight", "slorb_projection"]

PROJ = "slorb_proj"
WEIGHT = "slorb_weight"


def slorb_projection(in_features: int, k: int) -> torch.Tensor:
    """The grouping matrix ``P`` of shape ``(in_features // k, in_features)``."""
    if in_features % k:
        raise ValueError(f"slorb_k={k} does not divide in_features={in_features}")
    rows = in_features // k
    proj = torch.zeros(rows, in_features)
    cols = torch.arange(rows)[:, None] * k + torch.arange(k)[None, :]
    proj[torch.arange(rows)[:, None], cols] = 1.0
    return proj


def slorb_init_weight(
    weight: torch.Tensor, keep: torch.Tensor, k: int, init: str = "mean"
) -> torch.Tensor:
    """``S`` from the pruned weights, in the ``(out, in)`` layout.

    Args:
        weight: Dense weight ``(out, in)``.
        keep: Bool keep-mask of the same shape.
        k: Group size along the input dimension.
        init: ``"mean"``, ``"sum"``, ``"zero"`` or ``"xavier"`` (the last two give zeros).
    """
    out_features, in_features = weight.shape
    if in_features % k:
        raise ValueError(f"slorb_k={k} does not divide in_features={in_features}")
    pruned = (weight.detach() * (~keep)).reshape(out_features, in_features // k, k)
    if init == "mean":
        return pruned.mean(-1)
    if init == "sum":
        return pruned.sum(-1)
    if init in ("zero", "xavier"):
        return torch.zeros(out_features, in_features // k, dtype=weight.dtype, device=weight.device)
    raise ValueError(f"slorb_init must be 'mean', 'sum', 'zero' or 'xavier', got {init!r}")


def slorb_forward_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
    """Forward hook adding ``S (P x)`` to the layer's output."""
    x = inputs[0]
    proj = getattr(module, PROJ)
    weight = getattr(module, WEIGHT)
    return output + F.linear(F.linear(x, proj.to(x.dtype)), weight.to(x.dtype))


def add_slorb(
    module: nn.Module,
    weight: torch.Tensor,
    keep: torch.Tensor,
    k: int,
    init: str = "mean",
    trainable_projection: bool = True,
    generator: torch.Generator | None = None,
) -> list[nn.Parameter]:
    """Create (or re-initialise in place) ``P`` and ``S`` on ``module``.

    Args:
        module: The layer (``nn.Linear`` or HF ``Conv1D``).
        weight: Its dense weight in the ``(out, in)`` layout.
        keep: Its bool keep-mask in the ``(out, in)`` layout.
        k: Group size.
        init: See `slorb_init_weight`.
        trainable_projection: Whether ``P`` requires grad.
        generator: Random numbers for ``"xavier"``.

    Returns:
        The new parameters ``[P, S]`` (empty if they already existed and were re-initialised).
    """
    with torch.no_grad():
        proj = slorb_projection(weight.shape[1], k).to(weight.device, weight.dtype)
        if init == "xavier":
            nn.init.xavier_uniform_(proj, generator=generator)
        s_init = slorb_init_weight(weight, keep, k, init)
        if hasattr(module, WEIGHT):
            getattr(module, PROJ).copy_(proj)
            getattr(module, WEIGHT).copy_(s_init)
            return []
    p_param = nn.Parameter(proj, requires_grad=trainable_projection)
    s_param = nn.Parameter(s_init.contiguous())
    module.register_parameter(PROJ, p_param)
    module.register_parameter(WEIGHT, s_param)
    return [p_param, s_param]
