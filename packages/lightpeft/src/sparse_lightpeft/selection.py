"""Stage-2 selection: which heads, FFN neurons, LoRA modules and LoRA ranks are removed.

Official code (gccnlp/Light-PEFT ``NLU/nlu_utils.py``): ``threshold = np.quantile(scores, ratio,
axis=-1 or None)`` and ``keep = scores > threshold``, for the head masks (``prune_bert_attn``,
layer-wise by default), the FFN masks (``prune_bert_ffn``, ``global`` in ``train.sh``), the
module importances ``p2`` (``prune_peft_modules``, always global) and the rank importances
(``prune_peft_rank``, ``global`` in ``train.sh``).

Choices:

* [choice] **Exact counts instead of the interpolated quantile.** ``round(ratio · n)`` lowest
  scores are removed (ties broken by the lower index), so the removed count is exactly
  ``ratio × total`` (rounded) whatever the ties; ``np.quantile`` with ``>`` keeps all tied values
  at the threshold and, for distinct scores, removes ``floor(ratio (n - 1)) + 1`` of them (equal
  to ``round(ratio · n)`` at the paper's ratios on 12 heads, 4 heads and 16 ranks).
* [choice] **Every layer keeps at least one head and one FFN neuron** under a global quantile
  (the lowest-scored units of the other layers go instead): transformers has no BERT layer
  without attention or FFN. The official global FFN quantile could empty a layer in principle.
* A LoRA module whose every rank is removed is deleted (as in ``prune_peft_rank``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

__all__ = ["select_global", "select_layerwise", "select_modules", "select_ranks", "select_units"]


def _count(ratio: float, n: int) -> int:
    return round(ratio * n)


def _lowest(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the ``count`` lowest entries (stable: ties removed from the lowest index)."""
    order = torch.sort(scores.detach().float().cpu(), stable=True).indices
    return order[:count]


def select_layerwise(scores: Sequence[torch.Tensor], ratio: float) -> list[torch.Tensor]:
    """Keep masks with ``round(ratio · n_l)`` lowest scores of each layer removed.

    Args:
        scores: One 1-D score tensor per layer (the trained masks).
        ratio: Fraction removed in each layer.

    Returns:
        One bool keep tensor per layer.
    """
    keeps = []
    for s in scores:
        keep = torch.ones(s.numel(), dtype=torch.bool)
        keep[_lowest(s, min(_count(ratio, s.numel()), s.numel() - 1))] = False
        keeps.append(keep)
    return keeps


def select_global(
    scores: Sequence[torch.Tensor], ratio: float, min_keep: int = 1
) -> list[torch.Tensor]:
    """Keep masks with the ``round(ratio · N)`` lowest scores over all layers removed.

    Args:
        scores: One 1-D score tensor per layer.
        ratio: Fraction removed over all layers.
        min_keep: Units each layer keeps at least (its highest-scored ones).
    """
    flat = torch.cat([s.detach().float().cpu() for s in scores])
    sizes = [s.numel() for s in scores]
    protected = torch.zeros(flat.numel(), dtype=torch.bool)
    start = 0
    for size, s in zip(sizes, scores, strict=True):
        if min_keep > 0:
            top = torch.sort(s.detach().float().cpu(), descending=True, stable=True).indices
            protected[start + top[: min(min_keep, size)]] = True
        start += size
    count = min(_count(ratio, flat.numel()), int((~protected).sum()))
    ranked = flat.masked_fill(protected, float("inf"))
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    keep[_lowest(ranked, count)] = False
    return list(keep.split(sizes))


def select_units(
    scores: Sequence[torch.Tensor], ratio: float, scope: str, min_keep: int = 1
) -> list[torch.Tensor]:
    """`select_layerwise` (``scope="layer"``) or `select_global` (``"global"``)."""
    if scope == "layer":
        return select_layerwise(scores, ratio)
    return select_global(scores, ratio, min_keep)


def select_modules(p2: Mapping[str, float], ratio: float) -> dict[str, bool]:
    """Which LoRA modules stay: the ``round(ratio · M)`` with the lowest ``p2`` are dropped."""
    names = list(p2)
    values = torch.tensor([float(p2[n]) for n in names], dtype=torch.float64)
    dropped = set(_lowest(values, _count(ratio, len(names))).tolist())
    return {n: i not in dropped for i, n in enumerate(names)}


def select_ranks(
    importance: Mapping[str, torch.Tensor], ratio: float, scope: str = "global"
) -> dict[str, torch.Tensor]:
    """Keep masks over each module's rank dimensions (lowest first-order importance removed).

    With ``scope="global"`` the ``round(ratio · Σ r)`` lowest over all modules go (a module can
    lose every rank, which deletes it); with ``"layer"`` each module loses ``round(ratio · r)``.
    """
    names = list(importance)
    scores = [importance[n] for n in names]
    if scope == "layer":
        keeps = [torch.ones(s.numel(), dtype=torch.bool) for s in scores]
        for keep, s in zip(keeps, scores, strict=True):
            keep[_lowest(s, _count(ratio, s.numel()))] = False
    else:
        keeps = select_global(scores, ratio, min_keep=0)
    return dict(zip(names, keeps, strict=True))
