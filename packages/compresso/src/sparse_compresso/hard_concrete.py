"""Hard-concrete L0 gates (Louizos, Welling & Kingma, "Learning Sparse Neural Networks through
L0 Regularization", arXiv 1712.01312), as Compresso / CoFi use them.

Read in the official Compresso code (github.com/microsoft/Moonlit
``Compresso/models/l0_module.py``):

* stretch limits ``γ = -0.1`` (``limit_a``), ``ζ = 1.1`` (``limit_b``), temperature
  ``β = 2/3``, ``ε = 1e-6``;
* training sample: ``u ~ U(ε, 1 - ε)``, ``s = σ((ln u - ln(1 - u) + log α) / β)``,
  ``z = clamp(s (ζ - γ) + γ, 0, 1)`` (``_sample_z`` / ``quantile_concrete`` + ``hardtanh``);
* ``cdf(0) = σ(β · logit((0 - γ)/(ζ - γ)) - log α)`` clamped to ``[ε, 1 - ε]`` (``cdf_qz``; note
  the code *multiplies* the logit by ``β``), and the keep probability ``q = 1 - cdf(0)``;
* deterministic gate (evaluation, fine-tuning): per gate vector, ``round(Σ cdf(0))`` gates are
  zero, namely the smallest of ``σ(log α / β · 0.8)`` (the "magical number" 0.8 of Wang et al.
  2020); the others keep that soft value (``_deterministic_z``);
* init ``log α ~ N(log(1 - p₀) - log p₀, 0.01²)`` with ``p₀ = droprate_init`` (0.01 in
  ``scripts/train.sh``) for FFN channels; heads and hidden dims start at ``N(10, 0.01²)``
  (``reset_loga(..., mean=10)``); after every step ``log α`` is clamped to ``[ln 0.01, ln 100]``
  (``constrain_parameters``), so the first step brings the heads / hidden dims to ``ln 100``.

[choice] These functions are generic (any gate vector); they live in this package for now and
could move to sparsecore when a second package needs hard-concrete gates.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "BETA",
    "EPSILON",
    "GAMMA",
    "LOG_ALPHA_MAX",
    "LOG_ALPHA_MIN",
    "MAGICAL_NUMBER",
    "ZETA",
    "cdf_zero",
    "constrain_",
    "deterministic_gate",
    "init_log_alpha",
    "keep_probability",
    "sample_gate",
]

#: Lower stretch limit ``γ`` (``limit_a``).
GAMMA = -0.1
#: Upper stretch limit ``ζ`` (``limit_b``).
ZETA = 1.1
#: Temperature ``β``.
BETA = 2.0 / 3.0
#: Clamp of the uniform noise and of ``cdf(0)``.
EPSILON = 1e-6
#: Range of ``log α`` after every step.
LOG_ALPHA_MIN, LOG_ALPHA_MAX = math.log(1e-2), math.log(1e2)
#: Scale of the deterministic soft values (``magical_number``).
MAGICAL_NUMBER = 0.8


def init_log_alpha(
    shape: tuple[int, ...], mean: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``log α ~ N(mean, 0.01²)`` of the given shape (float32, CPU).

    Use ``mean = log(1 - p₀) - log p₀`` for a drop rate ``p₀`` (FFN channels) or ``10`` (heads,
    hidden dims), as the official ``reset_loga``.
    """
    return torch.randn(shape, generator=generator) * 1e-2 + mean


def cdf_zero(log_alpha: torch.Tensor, beta: float = BETA) -> torch.Tensor:
    """``P(z = 0)`` of each gate: the stretched concrete CDF at 0, clamped to ``[ε, 1 - ε]``."""
    xn = (0.0 - GAMMA) / (ZETA - GAMMA)
    logit = math.log(xn) - math.log(1.0 - xn)
    return torch.sigmoid(logit * beta - log_alpha).clamp(EPSILON, 1.0 - EPSILON)


def keep_probability(log_alpha: torch.Tensor, beta: float = BETA) -> torch.Tensor:
    """``q = 1 - cdf(0) = P(z > 0)``, differentiable in ``log α`` (the expected-size scores)."""
    return 1.0 - cdf_zero(log_alpha, beta)


def sample_gate(
    log_alpha: torch.Tensor, beta: float = BETA, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One reparameterised hard-concrete sample ``z ∈ [0, 1]`` per gate (differentiable).

    Args:
        log_alpha: Gate parameters.
        beta: Temperature.
        generator: Generator of the uniform noise (drawn on the CPU, then moved).
    """
    u = torch.rand(log_alpha.shape, generator=generator, dtype=torch.float32)
    u = u.clamp(EPSILON, 1.0 - EPSILON).to(log_alpha.device, log_alpha.dtype)
    s = torch.sigmoid((torch.log(u) - torch.log(1.0 - u) + log_alpha) / beta)
    return (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)


@torch.no_grad()
def deterministic_gate(
    log_alpha: torch.Tensor, beta: float = BETA, magical_number: float = MAGICAL_NUMBER
) -> torch.Tensor:
    """The evaluation gate of one gate vector (1-D): ``round(Σ cdf(0))`` exact zeros.

    The zeros go to the smallest ``σ(log α / β · magical_number)``; the others keep that value.
    Among equal values the lower index is zeroed first (stable sort; ``torch.topk`` leaves ties
    open).

    Raises:
        ValueError: ``log_alpha`` is not 1-D.
    """
    if log_alpha.dim() != 1:
        raise ValueError(f"log_alpha must be 1-D (one gate vector), got {tuple(log_alpha.shape)}")
    soft = torch.sigmoid(log_alpha.detach().float() / beta * magical_number)
    zeros = round(float(cdf_zero(log_alpha.detach().float(), beta).sum()))
    if zeros > 0:
        order = torch.sort(soft, stable=True).indices
        soft[order[:zeros]] = 0.0
    return soft


@torch.no_grad()
def constrain_(log_alpha: torch.Tensor) -> torch.Tensor:
    """Clamp ``log α`` in place to ``[ln 0.01, ln 100]`` (after every optimizer step)."""
    return log_alpha.clamp_(LOG_ALPHA_MIN, LOG_ALPHA_MAX)
