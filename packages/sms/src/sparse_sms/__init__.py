"""Sparse Model Soups (Zimmer, Spiegel & Pokutta, ICLR 2024, arXiv 2306.16788), on sparsecore.

* `SparseModelSoup`: the per-phase global magnitude pruning as a
  `sparsecore.PruningMethod` (registered as ``sms``), with masks shared by ingredients.
* `run`: the whole procedure: ``P`` prune–retrain phases, ``m`` ingredients per phase
  (sequential, or one per rank under ``torch.distributed``), uniform or greedy soup, BatchNorm
  recalibration.
* `run_gradual`: soups at the pruning steps of gradual magnitude pruning during training.
* `sparse_sms.soup`: `merge`, `greedy_soup`, `recalibrate_bn`.
* `sparse_sms.lr`: the retraining schedules (LLR, ALLR, FT, LRW, SLR, CLR).
"""

from sparse_sms.config import SMSConfig
from sparse_sms.gradual import gradual_prune_epochs, gradual_sparsities, run_gradual
from sparse_sms.ingredient import EvalFn, Ingredient, TrainFn, make_train_fn
from sparse_sms.lr import allr_start, retrain_lrs
from sparse_sms.method import SparseModelSoup, removal_count
from sparse_sms.runner import PhaseResult, SMSResult, ingredients_for, plain_state, run
from sparse_sms.soup import (
    GreedyResult,
    batches_of,
    check_same_masks,
    greedy_soup,
    merge,
    recalibrate_bn,
    uniform_weights,
)

__version__ = "0.1.0"

__all__ = [
    "EvalFn",
    "GreedyResult",
    "Ingredient",
    "PhaseResult",
    "SMSConfig",
    "SMSResult",
    "SparseModelSoup",
    "TrainFn",
    "__version__",
    "allr_start",
    "batches_of",
    "check_same_masks",
    "gradual_prune_epochs",
    "gradual_sparsities",
    "greedy_soup",
    "ingredients_for",
    "make_train_fn",
    "merge",
    "plain_state",
    "recalibrate_bn",
    "removal_count",
    "retrain_lrs",
    "run",
    "run_gradual",
    "uniform_weights",
]
