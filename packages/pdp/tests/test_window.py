"""PDP's pruning window: the full target is reached within the window, or the config raises;
an incomplete ramp warns at finalize (issue 39)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparse_pdp import PDP
from sparsecore.testing import WindowCase, tiny_mlp, window_property_test
from sparsecore.window import ScheduleIncompleteWarning

torch.set_num_threads(1)


def _pdp(case: WindowCase) -> PDP:
    return PDP(
        sparsity=0.75,
        begin_step=case.begin,
        end_step=case.end,
        update_every=case.every,
        relative_tau=True,
        tau=0.03,
    )


test_window_property = window_property_test(_pdp, max_examples=20)


@pytest.mark.parametrize(
    ("begin", "end", "every", "complete"),
    [(0, 10, 4, 8), (5, 5, 3, 5), (2, 9, 3, 8), (0, 12, 1, 11)],
)
def test_ramp_complete_step_is_the_last_stage_start(begin, end, every, complete):
    pdp = PDP(sparsity=0.8, begin_step=begin, end_step=end, update_every=every)
    assert pdp.config.ramp_complete_step == complete <= end
    assert pdp.config.fraction(complete) == 1.0
    assert complete == begin or pdp.config.fraction(complete - 1) < 1.0


def test_short_loop_warns_and_reports_incomplete():
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    pdp = PDP(sparsity=0.9, begin_step=0, end_step=40, update_every=10).setup(model, opt)
    gen = torch.Generator().manual_seed(0)
    for _ in range(15):
        x, y = torch.randn(8, 16, generator=gen), torch.randint(0, 4, (8,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not pdp.schedule_complete
    with pytest.warns(ScheduleIncompleteWarning, match="end_step=40") as record:
        pdp.finalize()
    assert len(record) == 1
