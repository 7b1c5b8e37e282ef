"""LAPP's pruning phase as a window ``[0, prune_steps]``: after it the FLOPs budget holds
exactly (the projection), before it finalize warns (issue 39)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparse_lapp import LAPP
from sparsecore.testing import WindowCase, window_property_test
from sparsecore.window import ScheduleIncompleteWarning

from .test_conformance import SHAPE, lapp_model

torch.set_num_threads(1)

SPARSITY = 0.5


def _lapp(case: WindowCase) -> LAPP:
    return LAPP(sparsity=SPARSITY, input_shape=SHAPE, prune_steps=case.end, threshold_lr=0.2)


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3000 + step)
    return torch.randn(8, *SHAPE, generator=gen), torch.randint(0, 4, (8,), generator=gen)


def _flops_reduction(final: nn.Module, method: LAPP, names: list[str]) -> float:
    """1 - MACs / MACs0 counted from the channels still non-zero in the finalized model."""
    assert method.flops_model is not None
    params = dict(final.named_parameters())
    kept = []
    for unit in method.flops_model.units:
        alive = sum(
            params[p].detach().reshape(params[p].shape[0], -1).ne(0).any(1) for p in unit.params
        )
        kept.append(float((alive > 0).sum()))
    ratio = float(method.flops_model.macs(kept)) / method.flops_model.original_macs
    assert ratio <= 1.0 - SPARSITY + 1e-9, ratio  # the budget always holds after the freeze
    return 1.0 - ratio


# Greedy restoration fills the budget up to one channel's MACs: allow that much above target.
test_window_property = window_property_test(
    _lapp,
    make_model=lapp_model,
    make_batch=_batch,
    achieved=_flops_reduction,
    tolerance=0.12,
    fields=("prune_steps",),
    max_total=20,
    max_examples=10,
)


def test_finalize_before_prune_steps_warns():
    model = lapp_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    lapp = _lapp(WindowCase(total=3, every=1, begin=0, end=10)).setup(model, opt)
    for step in range(3):
        x, y = _batch(step)
        loss = nn.functional.cross_entropy(model(x), y) + lapp.regularization()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not lapp.schedule_complete
    with pytest.warns(ScheduleIncompleteWarning, match="prune_steps=10") as record:
        lapp.finalize()
    assert len(record) == 1
