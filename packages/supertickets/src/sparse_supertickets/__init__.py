"""sparse-supertickets: "SuperTickets" (You et al., ECCV 2022, arXiv 2207.03677).

Lottery tickets drawn from a supernet while searching its architecture, in one training run
(official code GATECH-EIC/SuperTickets):

* `SuperNet`: a small multi-branch supernet (inverted residuals, depthwise kernels {3, 5, 7});
* `SuperTickets` (entry point `supertickets`): FLOPs-aware BN-γ channel search on the core's
  channel groups, progressive global magnitude pruning and iterative reactivation, as a method
  for any training loop;
* `shrink` / `Ticket`: physical removal of the searched-away channels (`sparsecore.export`),
  masks carried through (``reuse_mask``);
* `draw_ticket` / `train_fixed`: the official two-in-one loop and fixed-mask (re)training.
"""

from sparse_supertickets.method import SuperTickets, SuperTicketsConfig
from sparse_supertickets.penalty import (
    SearchedGroup,
    channel_normalizer,
    penalties,
    searched_groups,
)
from sparse_supertickets.schedule import prune_events, prune_ratio, rho_at
from sparse_supertickets.supernet import Branch, MultiBranchBlock, SuperNet, is_depthwise
from sparse_supertickets.ticket import Ticket, pruned_macs, shrink, weight_masks
from sparse_supertickets.training import (
    RecipeConfig,
    calibrate_bn,
    draw_ticket,
    evaluate,
    make_optimizer,
    train_fixed,
)

__version__ = "0.1.0"

__all__ = [
    "Branch",
    "MultiBranchBlock",
    "RecipeConfig",
    "SearchedGroup",
    "SuperNet",
    "SuperTickets",
    "SuperTicketsConfig",
    "Ticket",
    "__version__",
    "calibrate_bn",
    "channel_normalizer",
    "draw_ticket",
    "evaluate",
    "is_depthwise",
    "make_optimizer",
    "penalties",
    "prune_events",
    "prune_ratio",
    "pruned_macs",
    "rho_at",
    "searched_groups",
    "shrink",
    "train_fixed",
    "weight_masks",
]
