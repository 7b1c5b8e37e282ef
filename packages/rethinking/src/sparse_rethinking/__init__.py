"""sparse-rethinking: "Rethinking the Value of Network Pruning" (Liu et al., ICLR 2019).

Paper: Zhuang Liu, Mingjie Sun, Tinghui Zhou, Gao Huang, Trevor Darrell, "Rethinking the Value
of Network Pruning", ICLR 2019, arXiv 1810.05270; official code
Eric-mingjie/rethinking-network-pruning.

* `scratch_schedules` / `EpochSchedule`: the official Scratch-E / Scratch-B epoch rules
  (CIFAR uncapped, ImageNet capped at 2E) and their learning-rate steps;
* `prune_structured` (L1-norm filters, network slimming's BN-γ, on the core's channel groups,
  physically shrunk) and `magnitude_masks` (weight-level);
* `reinitialize` (the Scratch models: same architecture / mask, fresh weights) and
  `train_model` (the official SGD recipe, slimming penalty, fixed masks);
* `ProtocolConfig` / `run_seed`: one seed of the whole protocol;
* `NetworkSlimming` (entry point `slimming`): network slimming as a method for any training loop.
"""

from sparse_rethinking.experiment import METHODS, ProtocolConfig, run_seed
from sparse_rethinking.method import NetworkSlimming, SlimmingConfig
from sparse_rethinking.models import SmallVGG, reinitialize
from sparse_rethinking.pruning import conv_layers, magnitude_masks, prune_structured
from sparse_rethinking.schedule import MODES, EpochSchedule, scratch_schedules
from sparse_rethinking.training import apply_masks, bn_l1_subgradient, train_model

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "MODES",
    "EpochSchedule",
    "NetworkSlimming",
    "ProtocolConfig",
    "SlimmingConfig",
    "SmallVGG",
    "__version__",
    "apply_masks",
    "bn_l1_subgradient",
    "conv_layers",
    "magnitude_masks",
    "prune_structured",
    "reinitialize",
    "run_seed",
    "scratch_schedules",
    "train_model",
]
