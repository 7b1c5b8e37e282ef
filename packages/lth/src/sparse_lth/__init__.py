"""Lottery tickets: iterative magnitude pruning with rewinding and instability analysis.

Frankle & Carbin, "The Lottery Ticket Hypothesis" (ICLR 2019, arXiv 1803.03635); Frankle,
Dziugaite, Roy & Carbin, "Stabilizing the Lottery Ticket Hypothesis" (arXiv 1903.01611) /
"Linear Mode Connectivity and the Lottery Ticket Hypothesis" (ICML 2020, arXiv 1912.05671).
Official framework: https://github.com/facebookresearch/open_lth.

* `LotteryTicket`: the sparsecore method (IMP with rewinding to step ``k`` and the
  schedule position, layers to ignore, control branches), for a plain training loop.
* `LotteryExperiment`: the level/branch experiment on disk, resumable.
* `sparse_lth.instability`: linear interpolation, error barrier, instability analysis.
"""

from sparse_lth.config import LotteryTicketConfig, TrainSpec
from sparse_lth.experiment import BRANCHES, LotteryExperiment
from sparse_lth.instability import (
    InstabilityResult,
    error_along_path,
    error_barrier,
    instability_analysis,
    interpolate_states,
    linear_interpolation,
)
from sparse_lth.method import LotteryTicket, advance_scheduler, shuffled_masks
from sparse_lth.training import batch_indices, evaluate, train_steps, train_subnetwork

__version__ = "0.1.0"

__all__ = [
    "BRANCHES",
    "InstabilityResult",
    "LotteryExperiment",
    "LotteryTicket",
    "LotteryTicketConfig",
    "TrainSpec",
    "__version__",
    "advance_scheduler",
    "batch_indices",
    "error_along_path",
    "error_barrier",
    "evaluate",
    "instability_analysis",
    "interpolate_states",
    "linear_interpolation",
    "shuffled_masks",
    "train_steps",
    "train_subnetwork",
]
