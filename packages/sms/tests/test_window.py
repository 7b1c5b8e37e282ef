"""SMS's gradual variant over a pruning window: the last pruning step lands on ``end_epoch`` and
reaches the target exactly, or the window raises naming the argument (issue 39)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings

import sparse_sms as sms
from sparse_sms import SMSConfig, make_train_fn
from sparsecore.testing import WindowCase, window_cases

from .conftest import make_data, make_net

torch.set_num_threads(1)

FIELDS = ("begin_epoch", "end_epoch", "every", "total_epochs")


@pytest.mark.parametrize(
    ("total", "begin", "end", "every", "epochs"),
    [
        (10, 0, 5, 2, [2, 4, 5]),
        (10, 3, 9, 3, [3, 6, 9]),
        (4, 0, 1, 5, [1]),
        (6, 1, 4, 1, [1, 2, 3, 4]),
    ],
)
def test_prune_epochs_end_on_end_epoch(total, begin, end, every, epochs):
    assert sms.gradual_prune_epochs(total, begin, end, every) == epochs


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((5, 0, 5, 1), ValueError, "end_epoch"),
        ((5, 3, 3, 1), ValueError, "end_epoch"),
        ((5, 0, 3, 1.5), TypeError, "every"),
        ((True, 0, 3, 1), TypeError, "total_epochs"),
    ],
)
def test_prune_epochs_errors_name_the_argument(args, error, match):
    with pytest.raises(error, match=match):
        sms.gradual_prune_epochs(*args)


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(case=window_cases(max_total=6, max_every=3))
def test_gradual_window_reaches_target_or_raises(case: WindowCase):
    try:
        epochs = sms.gradual_prune_epochs(case.total, case.begin, case.end, case.every)
    except (TypeError, ValueError) as error:
        assert any(f in str(error) for f in FIELDS), error
        return
    assert epochs[-1] == case.end
    x, y = make_data(32, seed=0)
    cfg = SMSConfig(sparsity=0.8, n_ingredients=1, max_lr=0.05, bn_recalibration_fraction=0.0)
    result = sms.run_gradual(
        make_net(),
        make_train_fn(x, y, batch_size=16),
        lambda model: 0.0,
        cfg,
        total_epochs=case.total,
        prune_epochs=epochs,
    )
    total = sum(m.numel() for m in result.masks.values())
    assert len(result.phases) == len(epochs) + 1
    assert abs(result.phases[-1].sparsity - 0.8) <= 1 / total
    params = dict(result.model.named_parameters())
    zeros = sum(int((params[n] == 0).sum()) for n in result.masks)
    assert abs(zeros / total - 0.8) <= 1 / total
