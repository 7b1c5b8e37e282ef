"""sparse-cwd: the YOLOv8 compression recipe (sparsity training, BN pruning, CWD).

Paper: Sabaghian et al., "A Novel Compression Framework for YOLOv8: Achieving Real-Time Aerial
Object Detection on Edge Devices via Structured Pruning and Channel-Wise Distillation", arXiv
2509.12918; fork melika-sce/YOLOv8_pruning (sparse training, BN pruning); channel-wise
distillation: Shu et al., "Channel-wise Knowledge Distillation for Dense Prediction", ICCV 2021.

* `SparsityAwareSlimming` (entry point `cwd`): decaying BN-L1 sparsity training (γ and the
  fork's β term), then BN channel pruning by the paper's per-layer ratio or the fork's global
  threshold, on the core's channel groups (rebuild with `sparsecore.export.remove_channels`);
* `l1_rate`, `add_l1_subgradients`, `eligible_norms`, `select_per_layer`, `select_global`;
* `cwd_loss` and `ChannelWiseDistillation` (1×1 adapters, forward hooks on named layers);
* `TinyDetector` (C2f backbone / neck, CenterNet head), `fork_ignored_norms`, `make_scenes`
  (synthetic aerial scenes), `encode_targets` / `detection_loss` / `decode` / `mean_ap50`
  (torchmetrics COCO mAP@0.5), `train_detector`, `prune_detector`, `run_seed`.
"""

from sparse_cwd.centernet import decode, detection_loss, encode_targets, mean_ap50
from sparse_cwd.detector import TinyDetector, fork_ignored_norms
from sparse_cwd.distill import ChannelWiseDistillation, cwd_loss
from sparse_cwd.experiment import ExperimentConfig, prune_detector, run_seed
from sparse_cwd.method import SlimmingConfig, SparsityAwareSlimming
from sparse_cwd.scenes import CLASSES, Scenes, make_scenes
from sparse_cwd.slimming import (
    add_l1_subgradients,
    eligible_norms,
    l1_rate,
    select_global,
    select_per_layer,
)
from sparse_cwd.training import make_optimizer, train_detector

__version__ = "0.1.0"

__all__ = [
    "CLASSES",
    "ChannelWiseDistillation",
    "ExperimentConfig",
    "Scenes",
    "SlimmingConfig",
    "SparsityAwareSlimming",
    "TinyDetector",
    "__version__",
    "add_l1_subgradients",
    "cwd_loss",
    "decode",
    "detection_loss",
    "eligible_norms",
    "encode_targets",
    "fork_ignored_norms",
    "l1_rate",
    "make_optimizer",
    "make_scenes",
    "mean_ap50",
    "prune_detector",
    "run_seed",
    "select_global",
    "select_per_layer",
    "train_detector",
]
