"""Sparsity-aware training and BatchNorm channel selection of the YOLOv8 compression recipe.

Paper: Sabaghian et al., "A Novel Compression Framework for YOLOv8: Achieving Real-Time Aerial
Object Detection on Edge Devices via Structured Pruning and Channel-Wise Distillation", arXiv
2509.12918; network slimming: Liu et al., ICCV 2017, arXiv 1708.06519. Read in the author's fork
melika-sce/YOLOv8_pruning (``ultralytics/engine/trainer.py``, ``ultralytics/utils/prune_utils.py``,
``ultralytics/cfg/default.yaml``):

* `l1_rate`: the fork's ``srtmp = sparsity_rate · (1 − 0.9 · epoch / epochs)`` (``epoch``
  0-based; it *decays* to 0.1·λ₀ at the end, although summaries call it increasing);
* `add_l1_subgradients`: after ``backward``, ``γ.grad += λ(e) · sign(γ)`` and
  ``β.grad += 10 · λ₀ · sign(β)`` (the fork's β term: constant, not decayed) on every eligible
  BatchNorm;
* `eligible_norms`: the BatchNorms of prunable channel groups (``sparsecore.groups``) minus the
  ignored ones: names matching ``ignore`` globs (the fork's ``get_ignore_bn`` list, e.g.
  `sparse_cwd.detector.fork_ignored_norms`) and, with ``ignore_coupled``, every group with more
  than one producer (channels tied by a residual sum, the dependency rule the fork writes by hand);
* `select_per_layer` (the paper: every eligible layer loses ``ratio`` of its channels, smallest
  |γ|) and `select_global` (the fork: one threshold, the ``ratio`` percentile of all eligible
  |γ|, ``sorted[int(n · ratio)]``, keeping |γ| ≥ threshold, and refusing a threshold above the
  smallest per-layer max |γ| that would empty a layer, where the fork asserts).

CHOICE: a group's score is the sum of |γ| over its BatchNorms (one BatchNorm per group in these
detectors, so this is |γ|). CHOICE: per-layer counts are the core's ``keep_count`` (floor of the
kept fraction, at least one channel), with its deterministic tie rule.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from sparsecore.groups import ChannelGroups, group_scores, select_channels
from sparsecore.validation import check_int, check_number

__all__ = [
    "add_l1_subgradients",
    "eligible_norms",
    "l1_rate",
    "select_global",
    "select_per_layer",
]


def l1_rate(base: float, epoch: int, epochs: int) -> float:
    """The fork's decaying L1 coefficient ``λ(e) = λ₀ · (1 − 0.9 · e / E)``.

    Args:
        base: ``λ₀`` (the fork's ``sparsity_rate``, default 1e-4).
        epoch: 0-based epoch ``e``.
        epochs: Total epochs ``E`` of the sparsity-training run.

    Raises:
        ValueError: A bad option (named).
    """
    check_number(base, "base", 0.0, finite=True)
    check_int(epochs, "epochs", 1)
    check_int(epoch, "epoch", 0)
    return base * (1.0 - 0.9 * epoch / epochs)


def eligible_norms(
    groups: ChannelGroups, ignore: Iterable[str] = (), ignore_coupled: bool = True
) -> dict[str, list[str]]:
    """The groups whose BatchNorms get the L1 term and may be pruned.

    Args:
        groups: The model's channel groups.
        ignore: Globs of BatchNorm module names to leave out (``"head.*"``).
        ignore_coupled: Leave out groups with several producers (residual sums).

    Returns:
        ``{group name: [BatchNorm module names]}`` in model order (groups without BatchNorm
        are not eligible: there is no γ to rank).
    """
    patterns = list(ignore)
    out: dict[str, list[str]] = {}
    for group in groups.prunable():
        if not group.norms or (ignore_coupled and len(group.producers) > 1):
            continue
        if any(fnmatch.fnmatchcase(n, p) for n in group.norms for p in patterns):
            continue
        out[group.name] = list(group.norms)
    return out


@torch.no_grad()
def add_l1_subgradients(
    model: nn.Module, norms: Iterable[str], gamma_rate: float, beta_rate: float
) -> None:
    """``γ.grad += gamma_rate · sign(γ)``, ``β.grad += beta_rate · sign(β)`` on ``norms``.

    Args:
        model: The model, after ``backward``.
        norms: BatchNorm module names.
        gamma_rate: ``λ(e)``.
        beta_rate: The β coefficient (the fork: ``10 · λ₀``).
    """
    modules = dict(model.named_modules())
    for name in norms:
        bn = modules[name]
        for param, rate in ((bn.weight, gamma_rate), (bn.bias, beta_rate)):
            if param is None or rate == 0:
                continue
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            param.grad.add_(rate * torch.sign(param.detach()))


def _scores(
    groups: ChannelGroups, model: nn.Module, eligible: Mapping[str, list[str]]
) -> dict[str, torch.Tensor]:
    scores = group_scores(groups, model, "bn")
    return {name: scores[name] for name in eligible}


def select_per_layer(
    groups: ChannelGroups, model: nn.Module, eligible: Mapping[str, list[str]], ratio: float
) -> dict[str, torch.Tensor]:
    """The paper's rule: every eligible group keeps its ``1 − ratio`` largest-|γ| channels.

    Returns:
        ``{group name: bool keep-mask}`` for the eligible groups.
    """
    return select_channels(_scores(groups, model, eligible), 1.0 - ratio, "layer")


def select_global(
    groups: ChannelGroups, model: nn.Module, eligible: Mapping[str, list[str]], ratio: float
) -> tuple[dict[str, torch.Tensor], float]:
    """The fork's rule: keep |γ| ≥ the ``ratio`` percentile of all eligible |γ|.

    Returns:
        ``({group name: bool keep-mask}, threshold)``.

    Raises:
        ValueError: The threshold would remove every channel of some group (the fork's
            assertion; its message suggests a lower ratio or a sparser model).
    """
    scores = _scores(groups, model, eligible)
    if not scores:
        raise ValueError("no eligible BatchNorm to prune (every group is ignored)")
    flat = torch.cat([s.detach().abs().flatten().cpu() for s in scores.values()])
    ranked = torch.sort(flat).values
    threshold = float(ranked[min(int(flat.numel() * ratio), flat.numel() - 1)])
    highest = min(float(s.abs().max()) for s in scores.values())
    if threshold > highest:
        raise ValueError(
            f"ratio={ratio}: the |gamma| threshold {threshold:.4g} exceeds {highest:.4g}, the "
            "smallest per-layer maximum, and would remove a whole layer; use a lower ratio or "
            "train sparser"
        )
    keeps = {name: s.detach().abs().cpu() >= threshold for name, s in scores.items()}
    return keeps, threshold
