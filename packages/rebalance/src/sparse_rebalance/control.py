"""ReBalance's control surface: the steering strength α = F(c, v) of a finished reasoning step.

Paper: Li et al., "Efficient Reasoning with Balanced Thinking" (ReBalance), ICLR 2026,
arXiv 2603.12372; official code yu-lin-li/ReBalance, read for every constant here
(``modeling_utils/modeling_qwen2_dynamic_3D.py``, ``Qwen2ForCausalLM.forward``, the
``build_F`` / ``_solve_k_for_tau`` / ``F(c, v)`` block).

``c`` is the finished step's confidence (mean, over its tokens, of the max next-token
probability), ``v = (c − c_prev)² / 4`` its two-step variance proxy (0 at the first step).

1. **F1(c) = a + b·tanh(k·(c − m))** with ``m = (q25c + q75c)/2``, ``s = (q75c − q25c)/2``,
   ``a = (low_val_1 + high_val_1)/2`` and ``b = (high_val_1 − low_val_1) / (2·tanh(k·s))``, so
   that ``F1(q25c) = low_val_1``; ``k`` is found by bisection (80 halvings, upper end doubled
   from 1 while too small) so that ``tanh(k·(1 − m)) / tanh(k·s) = 2(τ − a)/(high_val_1 −
   low_val_1)`` with ``τ = high_val_1 = 0.01``: then ``F1(1) = 0.01``. ``high_val_1`` is fixed at
   0.01 in the official code (not exposed); ``c`` is clamped to ``[0, 1]`` (NaN → 0.5).
2. **Gates** ``σ(1200·(q25c − c)/IQR_c)`` (low c), ``σ(1200·(c − q75c)/IQR_c)`` (high c),
   ``σ(1200·(v − q75v)/IQR_v)`` (high v), ``σ(1200·(q25v − v)/IQR_v)`` (low v), arguments clamped
   to ``[−60, 60]``.
3. **Normalisers** ``g_p = σ(0)·σ(0) = 0.25`` and ``g_m = σ(12·(1 − q75c)/IQR_c)·σ(0)`` (the
   official code uses slope 12, not 1200, in the confidence factor of ``g_m``);
   ``w_low = min(1, gate_low_c·gate_high_v / g_p)``, ``w_high = min(1, gate_high_c·gate_low_v /
   g_m)`` (``g`` floored at 1e-6).
4. **α = F1(c) + (low_val_2 − F1(q25c))·w_low + (high_val_2 − F1(1))·w_high**, clamped to
   ``[min(low_val_2, low_val_1), max(0.01, high_val_2)]``.

The quantiles are swapped into order if given reversed, as the official code does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["HIGH_VAL_1", "ControlSurface", "solve_k"]

#: ``F1(1)``, fixed in the official code.
HIGH_VAL_1 = 0.01


def solve_k(q25: float, q75: float, low_val: float, high_val: float, tau: float) -> float:
    """The tanh slope ``k`` with ``F1(1) = tau`` (official ``_solve_k_for_tau``, 80 halvings)."""
    m = 0.5 * (q25 + q75)
    s = max(1e-9, 0.5 * (q75 - q25))
    denom = max(high_val - low_val, 1e-12)
    target = (2.0 * (tau - 0.5 * (low_val + high_val))) / denom

    def ratio(k: float) -> float:
        num = math.tanh(k * max(0.0, 1.0 - m))
        ks = k * s
        den = math.tanh(ks) if ks > 1e-12 else ks
        return num / den if den > 0 else float("inf")

    lo, hi = 1e-6, 1.0
    while ratio(hi) > target and hi < 1e6:
        hi *= 2.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if ratio(mid) > target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _sigmoid_scalar(x: float) -> float:
    x = max(min(x, 60.0), -60.0)
    return 1.0 / (1.0 + math.exp(-x))


@dataclass(frozen=True)
class ControlSurface:
    """``α = F(c, v)`` from the calibration quartiles and the three targets (module docstring).

    Attributes:
        q25c, q75c: Quartiles of step confidence over the calibration traces.
        q25v, q75v: Quartiles of ``v = (c − c_prev)²/4`` over the calibration traces.
        low_val_1: ``F1(q25c)`` (official default −1.0).
        low_val_2: ``F(q25c, q75v)`` target, low confidence with high variance (default −2.0).
        high_val_2: ``F(1, q25v)`` target, high confidence with low variance (default 0.1).
    """

    q25c: float
    q75c: float
    q25v: float
    q75v: float
    low_val_1: float = -1.0
    low_val_2: float = -2.0
    high_val_2: float = 0.1

    def __post_init__(self) -> None:
        for name in ("q25c", "q75c", "q25v", "q75v", "low_val_1", "low_val_2", "high_val_2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(float(value)):
                raise ValueError(f"{name} must be finite, got {value!r}")
        q25c, q75c = sorted((float(self.q25c), float(self.q75c)))
        q25v, q75v = sorted((float(self.q25v), float(self.q75v)))
        object.__setattr__(self, "q25c", q25c)
        object.__setattr__(self, "q75c", q75c)
        object.__setattr__(self, "q25v", q25v)
        object.__setattr__(self, "q75v", q75v)
        # F1's constants (the bisection for k) and its two calibration values, solved once
        m = 0.5 * (q25c + q75c)
        s = max(1e-9, 0.5 * (q75c - q25c))
        k = solve_k(q25c, q75c, float(self.low_val_1), HIGH_VAL_1, HIGH_VAL_1)
        a = 0.5 * (float(self.low_val_1) + HIGH_VAL_1)
        b = (HIGH_VAL_1 - float(self.low_val_1)) / (2.0 * max(math.tanh(k * s), 1e-12))
        object.__setattr__(self, "_f1_constants", (a, b, k, m))
        object.__setattr__(self, "_f_q25", float(self.f1(q25c)))
        object.__setattr__(self, "_f_1", float(self.f1(1.0)))

    # -- F1 ----------------------------------------------------------------------
    def f1(self, c: torch.Tensor | float) -> torch.Tensor:
        """The one-dimensional baseline ``F1(c)``."""
        c = torch.as_tensor(c, dtype=torch.float32)
        c = torch.nan_to_num(c, nan=0.5, posinf=1.0, neginf=0.0).clamp(0.0, 1.0)
        a, b, k, m = self._f1_constants
        return a + b * torch.tanh(k * (c - m))

    # -- F(c, v) -----------------------------------------------------------------
    @property
    def bounds(self) -> tuple[float, float]:
        """The final clamp ``[min(low_val_2, low_val_1), max(0.01, high_val_2)]``."""
        return min(self.low_val_2, self.low_val_1), max(HIGH_VAL_1, self.high_val_2)

    def __call__(self, c: torch.Tensor | float, v: torch.Tensor | float) -> torch.Tensor:
        """``α = F(c, v)`` (elementwise over a batch)."""
        c = torch.as_tensor(c, dtype=torch.float32)
        v = torch.as_tensor(v, dtype=torch.float32)
        iqr_c = max(1e-12, self.q75c - self.q25c)
        iqr_v = max(1e-12, self.q75v - self.q25v)

        def gate(x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(x.clamp(-60.0, 60.0))

        low_c = gate((self.q25c - c) / iqr_c * 1200.0)
        high_c = gate((c - self.q75c) / iqr_c * 1200.0)
        high_v = gate((v - self.q75v) / iqr_v * 1200.0)
        low_v = gate((self.q25v - v) / iqr_v * 1200.0)
        g_p = _sigmoid_scalar(0.0) * _sigmoid_scalar(0.0)
        g_m = _sigmoid_scalar((1.0 - self.q75c) / iqr_c * 12.0) * _sigmoid_scalar(0.0)
        w_low = torch.clamp(low_c * high_v / max(g_p, 1e-6), max=1.0)
        w_high = torch.clamp(high_c * low_v / max(g_m, 1e-6), max=1.0)
        f_q25 = float(self.f1(self.q25c))
        f_1 = float(self.f1(1.0))
        alpha = self.f1(c) + (self.low_val_2 - f_q25) * w_low + (self.high_val_2 - f_1) * w_high
        low, high = self.bounds
        return alpha.clamp(min=low, max=high)
