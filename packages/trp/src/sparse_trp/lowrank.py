"""Rank criteria, the three weight reshapes (NC, VH, ND) and truncated SVD.

This module holds the pure tensor maths of TRP (Xu et al., "Trained Rank Pruning for Efficient
Deep Neural Networks", IJCAI 2020, arXiv 2004.14566; official code
https://github.com/yuhuixu1993/Trained-Rank-Pruning, files ``cifar-TRP.py`` and
``decompose.py``). Nothing here touches a model.

Reshapes of a convolution weight ``W`` of shape ``(N, C, *k)`` (``low_rank_approx`` in the
official ``cifar-TRP.py``):

* ``"NC"`` (channel-wise): ``W.reshape(N, C·prod(k))``. Also used for Linear weights, which are
  already matrices.
* ``"VH"`` (spatial-wise, Conv2d only): ``W.permute(1, 2, 0, 3).reshape(C·kh, N·kw)``.
* ``"ND"`` (network decoupling): one matrix per filter, ``W[n].reshape(C, prod(k))``, each with
  its own rank (a batch of ``N`` matrices).

Choices, with reasons:

* ``EnergyThreshold`` counts energy as ``σ²`` (the official default ``eidenval=True``) and returns
  the smallest ``r`` with ``Σ_{i≤r} σ_i² / Σ σ_i² ≥ e``; exactly the official loop, vectorised.
* ``ValueThreshold`` keeps the ``σ_i ≥ t`` (the official loop stops at the first ``σ_i < t``;
  singular values are sorted, so it is the same count).
* Both return at least 1: the official ``ValueThreshold`` can return 0, which would build a
  convolution with zero channels. An all-zero matrix gets rank 1 and a zero sub-gradient (the
  official code divides 0 by 0 there and keeps the full rank).
* The nuclear-norm sub-gradient is ``U_r V_rᵀ`` over the kept components only, as in the official
  ``low_rank_approx`` (it truncates *before* forming ``U V ᵀ``); components with ``σ = 0`` are left
  out so that a zero matrix gets a zero sub-gradient.
* SVDs run in float32 at least (half-precision weights are up-cast, the result cast back), with
  ``torch.linalg.svd(full_matrices=False)`` (the official ``torch.svd(some=True)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = [
    "SCHEMES",
    "EnergyThreshold",
    "FixedRank",
    "RankCriterion",
    "Scheme",
    "Truncation",
    "ValueThreshold",
    "from_matrix",
    "svd_truncate",
    "to_matrix",
]

Scheme = Literal["NC", "VH", "ND"]
#: The reshapes of the official code's ``--type``.
SCHEMES: tuple[str, ...] = ("NC", "VH", "ND")


class RankCriterion:
    """Maps singular values (sorted, descending, last dimension) to the number kept."""

    def __call__(self, sigma: torch.Tensor) -> torch.Tensor:
        """Ranks, shape ``sigma.shape[:-1]``, int64, each in ``[1, sigma.shape[-1]]``."""
        raise NotImplementedError


@dataclass(frozen=True)
class EnergyThreshold(RankCriterion):
    """Smallest ``r`` with ``Σ_{i≤r} σ_i² ≥ threshold · Σ σ_i²`` (official ``EnergyThreshold``).

    Args:
        threshold: Fraction of the energy kept, in ``(0, 1]``.
    """

    threshold: float

    def __post_init__(self) -> None:
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, int | float):
            raise TypeError(f"threshold must be a number, got {type(t).__name__}")
        if math.isnan(t) or not 0.0 < t <= 1.0:
            raise ValueError(f"threshold (energy) must lie in (0, 1], got {t}")

    def __call__(self, sigma: torch.Tensor) -> torch.Tensor:  # noqa: D102
        energy = sigma.double() ** 2
        total = energy.sum(-1, keepdim=True)
        cum = energy.cumsum(-1) / total.clamp_min(torch.finfo(torch.float64).tiny)
        # A tiny slack absorbs rounding in the cumulative sum (e = 1 must give the full rank).
        short = (cum < self.threshold - 1e-12).sum(-1) + 1
        short = torch.where(total.squeeze(-1) > 0, short, torch.ones_like(short))
        return short.clamp(1, sigma.shape[-1])


@dataclass(frozen=True)
class ValueThreshold(RankCriterion):
    """Keep the singular values ``σ_i ≥ threshold`` (official ``ValueThreshold``), at least one.

    Args:
        threshold: Absolute singular-value threshold, ``≥ 0``.
    """

    threshold: float

    def __post_init__(self) -> None:
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, int | float):
            raise TypeError(f"threshold must be a number, got {type(t).__name__}")
        if math.isnan(t) or t < 0:
            raise ValueError(f"threshold (value) must be >= 0, got {t}")

    def __call__(self, sigma: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return (sigma >= self.threshold).sum(-1).clamp(1, sigma.shape[-1])


@dataclass(frozen=True)
class FixedRank(RankCriterion):
    """Keep exactly ``rank`` components (capped at the matrix rank bound).

    Args:
        rank: Number of singular values kept, ``≥ 1``.
    """

    rank: int

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int):
            raise TypeError(f"rank must be an integer, got {type(self.rank).__name__}")
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")

    def __call__(self, sigma: torch.Tensor) -> torch.Tensor:  # noqa: D102
        full = torch.full(sigma.shape[:-1], self.rank, dtype=torch.int64, device=sigma.device)
        return full.clamp(1, sigma.shape[-1])


def to_matrix(weight: torch.Tensor, scheme: str) -> torch.Tensor:
    """The matrix (or, for ``"ND"``, the batch of matrices) TRP takes the SVD of.

    Args:
        weight: A Linear weight ``(out, in)`` or a convolution weight ``(N, C, *k)``.
        scheme: ``"NC"``, ``"VH"`` (4-D weights only) or ``"ND"`` (convolutions only).
            Linear weights always use the matrix itself.

    Returns:
        ``(N, C·K)`` for NC, ``(C·kh, N·kw)`` for VH, ``(N, C, K)`` for ND.
    """
    if weight.dim() == 2:
        return weight
    n, c = weight.shape[:2]
    if scheme == "NC":
        return weight.reshape(n, -1)
    if scheme == "VH":
        if weight.dim() != 4:
            raise ValueError(f"scheme 'VH' needs a Conv2d weight, got shape {tuple(weight.shape)}")
        kh, kw = weight.shape[2:]
        return weight.permute(1, 2, 0, 3).reshape(c * kh, n * kw)
    if scheme == "ND":
        return weight.reshape(n, c, -1)
    raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")


def from_matrix(matrix: torch.Tensor, scheme: str, shape: torch.Size) -> torch.Tensor:
    """Inverse of `to_matrix` for a weight of ``shape``."""
    if len(shape) == 2:
        return matrix.reshape(shape)
    if scheme == "VH":
        n, c, kh, kw = shape
        return matrix.reshape(c, kh, n, kw).permute(2, 0, 1, 3).contiguous()
    return matrix.reshape(shape)


@dataclass
class Truncation:
    """Result of `svd_truncate`.

    Attributes:
        lowrank: The rank-``r`` approximation, shaped like the weight.
        subgradient: ``U_r V_rᵀ`` reshaped like the weight (the truncated sub-gradient of the
            nuclear norm of the reshaped weight).
        ranks: Kept ranks: a 0-d tensor, or shape ``(N,)`` for ND.
        sigma: All singular values (descending), shape ``(q,)`` or ``(N, q)``.
    """

    lowrank: torch.Tensor
    subgradient: torch.Tensor
    ranks: torch.Tensor
    sigma: torch.Tensor


@torch.no_grad()
def svd_truncate(weight: torch.Tensor, scheme: str, criterion: RankCriterion) -> Truncation:
    """Truncated SVD of the reshaped ``weight``: TRP's substitution and sub-gradient in one.

    Args:
        weight: The weight tensor.
        scheme: ``"NC"``, ``"VH"`` or ``"ND"``.
        criterion: Chooses the rank from the singular values.

    Returns:
        A `Truncation` with tensors in ``weight``'s dtype and device.
    """
    matrix = to_matrix(weight.detach(), scheme)
    work = matrix if matrix.dtype in (torch.float32, torch.float64) else matrix.float()
    u, s, vh = torch.linalg.svd(work, full_matrices=False)
    ranks = criterion(s)
    positions = torch.arange(s.shape[-1], device=s.device)
    keep = positions < ranks.unsqueeze(-1)
    support = (keep & (s > 0)).to(s.dtype)
    low = (u * (s * keep).unsqueeze(-2)) @ vh
    sub = (u * support.unsqueeze(-2)) @ vh
    return Truncation(
        lowrank=from_matrix(low, scheme, weight.shape).to(weight.dtype),
        subgradient=from_matrix(sub, scheme, weight.shape).to(weight.dtype),
        ranks=ranks,
        sigma=s,
    )
