"""HollowNeRF (Xie et al., ICCV 2023): pruning hash-grid NeRFs with a trainable saliency mask.

Public API:

* :class:`HollowNeRF` / :class:`HollowNeRFConfig`: the ADMM pruning method (a
  :class:`sparsecore.PruningMethod`, entry point ``hollownerf``) on saliency grids;
* :class:`HashEncoding`, :class:`SaliencyGrid`, :class:`HashNeRF`: the pure-PyTorch
  Instant-NGP-style field with a saliency gate that skips hash lookups where ``s(x) = 0``;
* :func:`render_rays`, :func:`composite`: volume rendering;
* :func:`random_scene`, :func:`make_views`, :func:`psnr`: synthetic scenes with exact ground truth;
* :func:`fit`, :func:`evaluate_psnr`: a plain training loop and evaluation;
* :func:`needed_entries`, :func:`encoding_budget`: hash-table parameter accounting.
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
