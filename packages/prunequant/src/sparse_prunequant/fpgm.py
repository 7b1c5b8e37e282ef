"""FPGM filter selection on the core's channel groups, and soft zeroing.

Paper: He, Liu, Wang, Hu & Yang, "Filter Pruning via Geometric Median for Deep Convolutional
Neural Networks Acceleration", CVPR 2019, arXiv 1811.00250. Official code:
he-y/filter-pruning-geometric-median, ``pruning_cifar10.py`` (``Mask.get_filter_similar``,
``do_similar_mask``), read for this module:

* per layer, flatten the ``N`` filters, take the pairwise Euclidean distances and each filter's
  sum ``S_i = Σ_j ‖F_i − F_j‖`` (``distance.cdist`` then ``np.sum(..., axis=0)``);
* prune the ``int(N · rate_dist)`` = ``⌊r · N⌋`` filters with the smallest ``S_i`` (nearest the
  geometric median, the most replaceable). With ``rate_norm = 1`` (pure FPGM) no filter is
  first removed by norm, so all ``N`` take part in the distances;
* the selection is recomputed at the start and after every epoch; selected filters are set to
  zero and keep training ("soft": they may come back).

The score is the core's (`sparsecore.groups.group_scores` with ``criterion="fpgm"``), which for
a group with one producer is exactly ``S_i`` above (checked by a brute-force test).

Choices:

* CHOICE: coupled layers (a residual sum) form one group and prune the same channels; their
  score is the mean of the producers' ``S_i`` (the core's rule). The official code prunes each
  conv on its own, which leaves the summed channels in place (no compaction).
* CHOICE: exactly ``⌊r · N⌋`` channels per group (the official ``int``), not the core's
  ``keep_count`` (which keeps ``⌊(1 − r) · N⌋``, i.e. prunes ``⌈r · N⌉``); ties by the core's
  deterministic `sparsecore.select.topk_mask`.
* CHOICE: soft zeroing zeroes the producers' filters and biases only, as the official
  ``do_mask`` (conv weights): zeroing the BatchNorm scale too would cut the filter's gradient
  and end the "soft" regrowth. The final hard mask covers the whole group (filters, biases,
  BatchNorm weight and bias), so the channel is removable exactly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sparsecore.groups import ChannelGroups, group_scores
from sparsecore.select import topk_mask

__all__ = ["fpgm_keeps", "pruned_count", "soft_zero"]


def pruned_count(size: int, rate: float) -> int:
    """Filters FPGM prunes in a layer of ``size``: ``⌊rate · size⌋`` (official ``int``)."""
    return min(size - 1, math.floor(rate * size + 1e-9))


@torch.no_grad()
def fpgm_keeps(groups: ChannelGroups, model: nn.Module, rate: float) -> dict[str, torch.Tensor]:
    """Channel keep-masks of every prunable group: all but the ``⌊r·N⌋`` lowest ``S_i``.

    Args:
        groups: The model's channel groups.
        model: The model (its current weights are scored).
        rate: Fraction of filters pruned per group, in ``[0, 1)``.

    Returns:
        ``{group name: bool keep-mask of shape (size,)}``.
    """
    scores = group_scores(groups, model, "fpgm")
    return {
        name: topk_mask(score, score.numel() - pruned_count(score.numel(), rate))
        for name, score in scores.items()
    }


@torch.no_grad()
def soft_zero(groups: ChannelGroups, model: nn.Module, keeps: dict[str, torch.Tensor]) -> None:
    """Zero the producers' filters and biases of the channels not kept (soft pruning)."""
    params = dict(model.named_parameters())
    for name, keep in keeps.items():
        for s in groups[name].members("out", "bias"):
            param = params[s.param]
            dropped = ~keep.cpu()[torch.tensor(s.channel)]
            index = torch.tensor(s.index)[dropped].to(param.device)
            param.index_fill_(s.dim, index, 0.0)
