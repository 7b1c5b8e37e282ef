"""The pruning methods the paper re-examines, on the core's channel groups and masks.

From Liu et al., "Rethinking the Value of Network Pruning" (ICLR 2019, arXiv 1810.05270):

* **L1-norm filter pruning** (Li et al., "Pruning Filters for Efficient ConvNets", arXiv
  1608.08710): a *predefined* target architecture: every convolution keeps the same fraction of
  its filters, those of largest L1 norm (`prune_structured` with ``criterion="l1"``,
  ``scope="layer"``);
* **network slimming** (Liu et al. 2017, arXiv 1708.06519): train with an L1 penalty on the
  BatchNorm scales γ (`sparse_rethinking.training.train_model` ``slimming=``), then remove the
  channels of smallest |γ| under one global threshold: an *automatically* found architecture
  (``criterion="bn"``, ``scope="global"``);
* **weight-level pruning** (Han et al. 2015): one global magnitude threshold over the weights of
  every convolution (official ``cifar/weight-level/cifar_prune.py``: Conv2d weights only, the
  classifier stays dense) (`magnitude_masks`).

Structured pruning uses `sparsecore.groups`: channels are scored and removed per dependency
group (a convolution's filters together with its BatchNorm entries and the next layer's input
slices), and `sparsecore.export.remove_channels` shrinks the model exactly, so the pruned model
is a smaller dense network whose FLOPs are counted on its channels.

CHOICE (labelled): the unstructured mask keeps exactly ``keep_count(n, 1 - sparsity)``
(``floor``) weights by magnitude with the core's deterministic tie-breaking (the official
code thresholds at a sorted value, which keeps ties).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn

from sparsecore.export import remove_channels
from sparsecore.groups import aggregate, channel_groups, group_masks, group_scores, select_channels
from sparsecore.patterns import Unstructured
from sparsecore.select import keep_count, select_global
from sparsecore.validation import check_choice, check_number

__all__ = ["conv_layers", "magnitude_masks", "prune_structured"]

_CONVS = (nn.Conv1d, nn.Conv2d)


def conv_layers(model: nn.Module) -> list[str]:
    """Names of the model's convolutions (the layers pruning may thin or sparsify)."""
    return [name for name, module in model.named_modules() if isinstance(module, _CONVS)]


def prune_structured(
    model: nn.Module,
    input_shape: tuple[int, ...],
    sparsity: float,
    criterion: str = "l1",
    scope: str = "layer",
    keeps: Mapping[str, torch.Tensor] | None = None,
) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A physically thinner copy of ``model`` with the lowest-scoring conv channels removed.

    Args:
        model: The trained large model (not changed).
        input_shape: One example's shape (traces the dependency graph).
        sparsity: Fraction of the convolutions' channels removed (per group for
            ``scope="layer"``, over all groups for ``"global"``), in ``[0, 1)``.
        criterion: ``"l1"`` (the filter's own L1 norm, Li et al.: only the producers' rows
            are scored, not the group's BN or consumer slices), ``"bn"`` (|γ|, network
            slimming), or ``"l2"`` / ``"fpgm"`` of `sparsecore.groups.group_scores`.
        scope: ``"layer"`` (predefined architecture) or ``"global"`` (automatic).
        keeps: Channel keep-masks by group name to use instead of the criterion's selection
            (e.g. `sparsecore.evaluation.matched_random_masks` of a method's keeps: random
            channels with exactly its per-layer widths, the Sparseland R5 baseline).

    Returns:
        ``(pruned model, channel keep-masks by group name)``; the model holds the large
        model's surviving weights (the fine-tuning start).

    Raises:
        ValueError: A bad option (before anything is traced).
    """
    check_number(sparsity, "sparsity", 0.0, 1.0, open_high=True)
    check_choice(scope, "scope", ("layer", "global"))
    check_choice(criterion, "criterion", ("l1", "l2", "bn", "fpgm"))
    pruned = copy.deepcopy(model)
    example = torch.zeros((1, *input_shape), dtype=next(model.parameters()).dtype)
    groups = channel_groups(pruned, example, conv_layers(pruned))
    if keeps is not None:
        keeps = {name: keep.bool() for name, keep in keeps.items()}
    elif criterion == "l1":  # Li et al.: the filter's own sum |w| (producers' rows only)
        elements = {n: p.detach().abs() for n, p in pruned.named_parameters()}
        keeps = select_channels(aggregate(groups, elements, ("out",)), 1.0 - sparsity, scope)
    else:
        scores = group_scores(groups, pruned, criterion)
        keeps = select_channels(scores, 1.0 - sparsity, scope)
    current = {n: torch.ones_like(p, dtype=torch.bool) for n, p in pruned.named_parameters()}
    masks = group_masks(groups, keeps, current)
    with torch.no_grad():
        remove_channels(pruned, example, masks)
    return pruned, keeps


@torch.no_grad()
def magnitude_masks(model: nn.Module, sparsity: float) -> dict[str, torch.Tensor]:
    """Keep-masks of one global magnitude ranking over all convolution weights.

    Args:
        model: The trained model.
        sparsity: Fraction of the conv weights removed, in ``[0, 1)``.

    Returns:
        ``{"<conv>.weight": bool keep-mask}`` keeping exactly ``keep_count(n, 1 - sparsity)``.
    """
    check_number(sparsity, "sparsity", 0.0, 1.0, open_high=True)
    params = dict(model.named_parameters())
    scores = {f"{name}.weight": params[f"{name}.weight"].abs() for name in conv_layers(model)}
    if not scores:
        raise ValueError("model has no convolution to prune")
    masks = select_global(scores, 1.0 - sparsity, Unstructured())
    total = sum(s.numel() for s in scores.values())
    kept = sum(int(m.sum()) for m in masks.values())
    if kept != keep_count(total, 1.0 - sparsity):  # pragma: no cover - a core invariant
        raise RuntimeError("global selection kept the wrong count")
    return {name: mask.bool() for name, mask in masks.items()}
