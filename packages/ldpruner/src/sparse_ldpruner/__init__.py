"""LD-Pruner (Castells et al., CVPRW 2024, arXiv 2404.11936): operator pruning of LDMs.

Public API:

* `LDPruner` / `LDPrunerConfig`: the method (a `sparsecore.PruningMethod`, entry point
  ``ldpruner``): `LDPruner.prune_ldm` on a diffusion model, `LDPruner.calibrate` on any model;
* `ld_prune`, `random_prune`, `magnitude_prune`, `PruneResult`: LD-Pruner and its baselines to a
  MAC budget on a `TinyLDM`;
* `latent_score`, `score_candidates`, `select_to_budget`: the score and the selection;
* `enumerate_operators`, `apply_candidates`, `Operator`, `Candidate`: operators of a diffusers
  UNet and their removal / halving with weight preservation;
* `TinyLDM`, `LDMConfig`, `diffusion_loss`, `pretrained_tiny_ldm`, `train_unet`: a tiny
  class-conditional latent diffusion model on digits, built from diffusers and cached;
* `fid_and_accuracy`, `DigitsClassifier`, `load_digits_16`: quality of generated digits;
* `unet_macs`, `count_parameters`, `interleaved_latency`: what pruning buys.
"""

from sparse_ldpruner.cost import count_parameters, interleaved_latency, unet_macs
from sparse_ldpruner.ldm import LDMConfig, TinyLDM, diffusion_loss
from sparse_ldpruner.method import LDPruner, LDPrunerConfig
from sparse_ldpruner.operators import (
    ACTIONS,
    KINDS,
    Candidate,
    Operator,
    ShortcutOnly,
    ZeroOperator,
    apply_candidates,
    enumerate_operators,
)
from sparse_ldpruner.pretrained import LDM_SIZES, Pretrained, pretrained_tiny_ldm, train_unet
from sparse_ldpruner.pruning import (
    PruneResult,
    candidates_of,
    ld_prune,
    magnitude_prune,
    random_prune,
)
from sparse_ldpruner.quality import DigitsClassifier, fid_and_accuracy, load_digits_16
from sparse_ldpruner.score import Selection, latent_score, score_candidates, select_to_budget

__version__ = "0.1.0"

__all__ = [
    "ACTIONS",
    "KINDS",
    "LDM_SIZES",
    "Candidate",
    "DigitsClassifier",
    "LDMConfig",
    "LDPruner",
    "LDPrunerConfig",
    "Operator",
    "Pretrained",
    "PruneResult",
    "Selection",
    "ShortcutOnly",
    "TinyLDM",
    "ZeroOperator",
    "__version__",
    "apply_candidates",
    "candidates_of",
    "count_parameters",
    "diffusion_loss",
    "enumerate_operators",
    "fid_and_accuracy",
    "interleaved_latency",
    "latent_score",
    "ld_prune",
    "load_digits_16",
    "magnitude_prune",
    "pretrained_tiny_ldm",
    "random_prune",
    "score_candidates",
    "select_to_budget",
    "train_unet",
    "unet_macs",
]
