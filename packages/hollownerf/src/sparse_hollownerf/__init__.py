"""HollowNeRF (Xie et al., ICCV 2023): pruning hash-grid NeRFs with a trainable saliency mask.

Public API:

* `HollowNeRF` / `HollowNeRFConfig`: the ADMM pruning method (a
  `sparsecore.PruningMethod`, entry point ``hollownerf``) on saliency grids;
* `HashEncoding`, `SaliencyGrid`, `HashNeRF`: the pure-PyTorch
  Instant-NGP-style field with a saliency gate that skips hash lookups where ``s(x) = 0``;
* `render_rays`, `composite`: volume rendering;
* `random_scene`, `make_views`, `psnr`: synthetic scenes with exact ground truth;
* `fit`, `evaluate_psnr`: a plain training loop and evaluation;
* `needed_entries`, `encoding_budget`: hash-table parameter accounting.
"""

from sparse_hollownerf.accounting import (
    EncodingBudget,
    encoding_budget,
    needed_entries,
    touched_entries,
)
from sparse_hollownerf.config import HollowNeRFConfig
from sparse_hollownerf.field import HashNeRF, Rendered, composite, render_rays, stratified_samples
from sparse_hollownerf.hashgrid import PRIMES, HashEncoding, spatial_hash
from sparse_hollownerf.method import HollowNeRF, project_l1_budget
from sparse_hollownerf.saliency import SaliencyGrid
from sparse_hollownerf.scene import (
    Primitive,
    Scene,
    Views,
    camera_rays,
    make_views,
    psnr,
    random_scene,
)
from sparse_hollownerf.train import FitResult, evaluate_psnr, fit, make_optimizer, render_views

__version__ = "0.1.0"

__all__ = [
    "PRIMES",
    "EncodingBudget",
    "FitResult",
    "HashEncoding",
    "HashNeRF",
    "HollowNeRF",
    "HollowNeRFConfig",
    "Primitive",
    "Rendered",
    "SaliencyGrid",
    "Scene",
    "Views",
    "__version__",
    "camera_rays",
    "composite",
    "encoding_budget",
    "evaluate_psnr",
    "fit",
    "make_optimizer",
    "make_views",
    "needed_entries",
    "project_l1_budget",
    "psnr",
    "random_scene",
    "render_rays",
    "render_views",
    "spatial_hash",
    "stratified_samples",
    "touched_entries",
]
