"""Instability analysis: is training from ``θ_k`` stable to SGD noise?

Paper: Frankle, Dziugaite, Roy & Carbin, "Linear Mode Connectivity and the Lottery Ticket
Hypothesis", ICML 2020, arXiv 1912.05671 (the revised "Stabilizing the Lottery Ticket
Hypothesis", arXiv 1903.01611). OpenLTH has no instability branch in its public code; this follows
the paper's definitions.

Two copies of a network (dense, or a subnetwork ``θ_k ⊙ m``) are trained from the same ``θ_k`` at
step ``k`` to ``T`` with different SGD noise (data order and per-step random numbers). Along the
line ``θ(α) = (1 - α) θ_A + α θ_B`` the test error ``E(α)`` is evaluated, and

    instability = max_α E(α) - (E(0) + E(1)) / 2

(the *error barrier height*). The network is "stable" when the barrier is ≈ 0 (the paper
calls a barrier under 2 percentage points stable [recall: from the paper, not checked here]).

Choices:

* ``α`` takes ``points`` evenly spaced values in ``[0, 1]`` (default 30, the paper's grid
  [recall: from the paper, not checked against code]); the endpoints are exact copies of the
  two networks (``(1-α)·a + α·b`` is ``a`` at ``α = 0`` and ``b`` at ``α = 1`` bit for bit).
* Every floating-point entry of the state dict is interpolated (weights, biases and BatchNorm
  running statistics). Non-float entries (bool masks, batch counters) must be equal in both
  networks; a mask that differs raises, as the analysis compares copies of one subnetwork.
* Error is ``1 - accuracy`` on the data given (the paper reports test error).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sparse_lth.config import TrainSpec
from sparse_lth.training import Data, evaluate, train_subnetwork

__all__ = [
    "InstabilityResult",
    "error_along_path",
    "error_barrier",
    "instability_analysis",
    "interpolate_states",
    "linear_interpolation",
]


def interpolate_states(
    state_a: Mapping[str, torch.Tensor], state_b: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * a + alpha * b`` for every floating-point entry; others must be equal.

    Raises:
        ValueError: The keys differ, ``alpha`` is outside ``[0, 1]``, or a non-float entry (a
            mask) differs.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if set(state_a) != set(state_b):
        diff = sorted(set(state_a) ^ set(state_b))[:3]
        raise ValueError(f"state_a and state_b have different keys, e.g. {diff}")
    out = {}
    for key, a in state_a.items():
        b = state_b[key]
        if a.shape != b.shape:
            raise ValueError(f"{key!r}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
        if a.is_floating_point():
            out[key] = (1.0 - alpha) * a + alpha * b.to(a.device, a.dtype)
        else:
            if not torch.equal(a, b.to(a.device)):
                raise ValueError(f"{key!r}: non-float entries (masks, counters) differ")
            out[key] = a.clone()
    return out


def error_along_path(
    model: nn.Module,
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    error_fn: Callable[[nn.Module], float],
    alphas: Sequence[float],
) -> list[float]:
    """``error_fn`` of ``model`` loaded with each interpolated state (the model is restored).

    Args:
        model: A model whose ``state_dict`` has the keys of the two states.
        state_a: The network at ``α = 0``.
        state_b: The network at ``α = 1``.
        error_fn: Error of a model (e.g. ``1 - accuracy`` on the test set).
        alphas: Points in ``[0, 1]``.
    """
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    errors = []
    try:
        for alpha in alphas:
            model.load_state_dict(interpolate_states(state_a, state_b, float(alpha)))
            errors.append(float(error_fn(model)))
    finally:
        model.load_state_dict(saved)
    return errors


def error_barrier(errors: Sequence[float]) -> float:
    """``max(errors) - (errors[0] + errors[-1]) / 2``: the barrier height of a path.

    ``errors`` must run from ``α = 0`` to ``α = 1`` (the endpoints first and last).
    """
    if len(errors) < 2:
        raise ValueError(f"errors needs at least the two endpoints, got {len(errors)} values")
    return float(max(errors) - 0.5 * (errors[0] + errors[-1]))


@dataclass
class InstabilityResult:
    """The error along the linear path between two networks.

    Attributes:
        alphas: Interpolation points, from 0 to 1.
        errors: Error at each point.
        barrier: `error_barrier` of ``errors`` (the instability).
        extras: Anything else (seeds, steps, endpoint accuracies).
    """

    alphas: list[float]
    errors: list[float]
    barrier: float
    extras: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields."""
        return {
            "alphas": self.alphas,
            "errors": self.errors,
            "barrier": self.barrier,
            "extras": self.extras,
        }


def linear_interpolation(
    model: nn.Module,
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    points: int = 30,
) -> InstabilityResult:
    """Classification error of ``model`` along ``θ(α)`` at ``points`` evenly spaced ``α``.

    Args:
        model: Architecture to evaluate with (its own state is restored afterwards).
        state_a: Network at ``α = 0``.
        state_b: Network at ``α = 1``.
        x: Evaluation inputs.
        y: Evaluation labels.
        points: Number of ``α`` values, ``>= 2`` (endpoints included).
    """
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise ValueError(f"points must be an integer >= 2, got {points!r}")
    alphas = torch.linspace(0.0, 1.0, points, dtype=torch.float64).tolist()
    alphas[0], alphas[-1] = 0.0, 1.0
    errors = error_along_path(model, state_a, state_b, lambda m: evaluate(m, x, y)["error"], alphas)
    return InstabilityResult(alphas, errors, error_barrier(errors))


def instability_analysis(
    model_fn: Callable[[int], nn.Module],
    data: Data,
    spec: TrainSpec,
    state: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor] | None = None,
    start_step: int = 0,
    seeds: tuple[int, int] = (1, 2),
    points: int = 30,
    method_options: Mapping[str, Any] | None = None,
) -> InstabilityResult:
    """Train two copies of ``(state, masks)`` from step ``start_step`` and measure the barrier.

    Copy ``i`` uses ``seeds[i]`` for both the data order and the per-step noise; everything else
    (weights ``θ_k``, masks, hyperparameters, schedule position ``k``) is shared.

    Args:
        model_fn: Builds the architecture from a seed.
        data: Training and test tensors (the error is measured on the test set).
        spec: Training run (``T = spec.steps``).
        state: ``θ_k``.
        masks: The subnetwork (``None``: dense).
        start_step: ``k``.
        seeds: Noise seeds of the two copies (must differ).
        points: Number of ``α`` values.
        method_options: Extra `sparse_lth.LotteryTicketConfig` fields (``targets``...).
    """
    if len(seeds) != 2 or seeds[0] == seeds[1]:
        raise ValueError(f"seeds must be two different integers, got {seeds!r}")
    states = []
    for seed in seeds:
        model, method, _ = train_subnetwork(
            model_fn,
            data,
            spec,
            state=state,
            masks=masks,
            start_step=start_step,
            data_seed=seed,
            noise_seed=seed,
            method_options=method_options,
        )
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        method.masks.detach()
    result = linear_interpolation(model, states[0], states[1], data.x_test, data.y_test, points)
    result.extras.update({"seeds": list(seeds), "start_step": start_step, "end_step": spec.steps})
    return result
