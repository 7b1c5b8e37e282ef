"""ARRoL's quality head q_φ and its bucketed online calibration.

Paper: Xu et al., "Prune as You Generate: Online Rollout Pruning for Faster and Better RLVR",
arXiv 2603.24840. The head is a lightweight MLP on the policy's hidden state of a *partial*
rollout (at the detection length) that predicts the rollout's success probability
``p̂ = σ(q_φ(h))``; it is trained online with binary cross-entropy on the rollouts that completed
(their verifiable reward is the label) and its outputs are calibrated online with bucketed
estimates: ``p̂`` is binned and each bin keeps the empirical success rate of the finished rollouts
that fell in it.

Choices (labelled [recon]: the paper gives no code or sizes at the time of writing):

* `QualityHead`: ``Linear(H, width) → GELU → Linear(width, 1)`` on the (detached, float) last-layer
  hidden state, initialised from the procedure's own generator (deterministic for a seed),
  trained by Adam (lr ``lr``) for ``updates`` full-batch steps per RL step on that step's
  completed rollouts.
* `BucketCalibrator`: ``bins`` equal-width bins of ``p̂ ∈ [0, 1]``; per bin the counts of finished
  rollouts ``n_b`` and successes ``s_b``, decayed by ``decay`` at every update (the policy moves,
  old evidence ages); the calibrated estimate is the posterior mean under a Beta prior of
  strength ``prior`` centred on the raw prediction: ``(s_b + prior · p̂) / (n_b + prior)``. With
  no evidence in a bin the raw ``p̂`` passes through.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sparsecore.validation import check_int, check_number

__all__ = ["BucketCalibrator", "QualityHead"]


class QualityHead(nn.Module):
    """``σ(q_φ(h))``: a two-layer MLP from a hidden state to a success probability.

    Args:
        hidden_size: Size of the policy's hidden state.
        width: Hidden width of the MLP.
        generator: Initialises the weights (uniform ±1/sqrt(fan_in), PyTorch's default range).
    """

    def __init__(self, hidden_size: int, width: int, generator: torch.Generator) -> None:
        super().__init__()
        check_int(hidden_size, "hidden_size", 1)
        check_int(width, "width", 1)
        self.net = nn.Sequential(nn.Linear(hidden_size, width), nn.GELU(), nn.Linear(width, 1))
        with torch.no_grad():
            for layer in (self.net[0], self.net[2]):
                bound = layer.in_features**-0.5
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[R]`` logits of ``[R, H]`` hidden states."""
        return self.net(hidden.detach().float()).squeeze(-1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[R]`` predicted success probabilities."""
        return torch.sigmoid(self.logits(hidden))


class BucketCalibrator:
    """Bucketed online calibration of predicted probabilities (module docstring).

    Args:
        bins: Number of equal-width bins over ``[0, 1]``.
        prior: Strength of the Beta prior centred on the raw prediction.
        decay: Factor applied to the counts before each update (1: keep everything).
    """

    def __init__(self, bins: int = 10, prior: float = 2.0, decay: float = 0.95) -> None:
        self.bins = check_int(bins, "bins", 1)
        self.prior = check_number(prior, "prior", 0.0, finite=True)
        self.decay = check_number(decay, "decay", 0.0, 1.0, open_low=True)
        self.counts = torch.zeros(bins, dtype=torch.float64)
        self.successes = torch.zeros(bins, dtype=torch.float64)

    def bin_of(self, p: torch.Tensor) -> torch.Tensor:
        """Bin index of each probability."""
        return (p.double().clamp(0, 1) * self.bins).long().clamp(max=self.bins - 1)

    def update(self, p: torch.Tensor, rewards: torch.Tensor) -> None:
        """Add finished rollouts: their raw predictions ``p`` and 0/1 ``rewards``."""
        p, rewards = torch.as_tensor(p).flatten(), torch.as_tensor(rewards).flatten()
        if p.shape != rewards.shape:
            raise ValueError("rewards must have one entry per prediction")
        self.counts *= self.decay
        self.successes *= self.decay
        b = self.bin_of(p)
        self.counts.index_add_(0, b, torch.ones_like(b, dtype=torch.float64))
        self.successes.index_add_(0, b, rewards.double())

    def __call__(self, p: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities (float32) of raw predictions ``p``."""
        p = torch.as_tensor(p).flatten().double()
        b = self.bin_of(p)
        n, s = self.counts[b], self.successes[b]
        denom = n + self.prior
        out = torch.where(denom > 0, (s + self.prior * p) / denom.clamp(min=1e-12), p)
        return out.float()

    def rates(self) -> torch.Tensor:
        """Empirical success rate of every bin (NaN where empty)."""
        return torch.where(self.counts > 0, self.successes / self.counts, float("nan"))

    def state_dict(self) -> dict[str, Any]:
        """Counts and successes (tensors)."""
        return {"counts": self.counts.clone(), "successes": self.successes.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict`."""
        if state["counts"].shape != (self.bins,):
            raise ValueError(
                f"calibration state has {state['counts'].numel()} bins, not {self.bins}"
            )
        self.counts = state["counts"].clone().double()
        self.successes = state["successes"].clone().double()
