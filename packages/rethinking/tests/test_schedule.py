import math

import pytest

from sparse_rethinking import EpochSchedule, scratch_schedules
from sparsecore.evaluation import scratch_budgets


def test_issue_ratio_2_5() -> None:
    e, b = scratch_schedules(160, dense_flops=250.0, pruned_flops=100.0, mode="cifar")
    assert (e.epochs, b.epochs) == (160, 400)
    assert b.milestones == (200, 300)  # x0.1 at 50% / 75%
    e, b = scratch_schedules(90, dense_flops=250.0, pruned_flops=100.0, mode="imagenet")
    assert (e.epochs, b.epochs) == (90, 180)
    assert b.step == 60 and b.milestones == (60, 120)
    assert e.step == 30


def test_issue_ratio_1_5() -> None:
    _, b = scratch_schedules(160, 150.0, 100.0, "cifar")
    assert b.epochs == 240 and b.milestones == (120, 180)
    _, b = scratch_schedules(90, 150.0, 100.0, "imagenet")
    assert b.epochs == 135 and b.step == 45 and b.milestones == (45, 90)


def test_cifar_is_uncapped_and_floors_like_the_official_int() -> None:
    _, b = scratch_schedules(160, 1000.0, 100.0, "cifar")
    assert b.epochs == 1600
    _, b = scratch_schedules(160, 1.234, 1.0, "cifar")
    assert b.epochs == int(160 * 1.234) == 197
    _, b = scratch_schedules(90, 1000.0, 100.0, "imagenet")
    assert b.epochs == 180  # capped at 2E


def test_lr_factor_steps() -> None:
    schedule = EpochSchedule.cifar(8)
    assert [schedule.lr_factor(i) for i in range(8)] == pytest.approx(
        [1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01]
    )


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"epochs": 0}, "epochs"),
        ({"dense_flops": -1.0}, "dense_flops"),
        ({"pruned_flops": 0.0}, "pruned_flops"),
        ({"mode": "cifar10"}, "mode"),
    ],
)
def test_bad_input_names_the_parameter(kwargs, name) -> None:
    args = {"epochs": 10, "dense_flops": 2.0, "pruned_flops": 1.0, "mode": "cifar"} | kwargs
    with pytest.raises((ValueError, TypeError), match=name):
        scratch_schedules(**args)


def test_core_scratch_budgets_rounding() -> None:
    assert scratch_budgets(160, 100.0, 123.4, math.inf, "floor") == (160, 197)
    assert scratch_budgets(160, 100.0, 123.4, math.inf, "ceil") == (160, 198)
    assert scratch_budgets(160, 100.0, 123.4) == (160, 198)  # default unchanged
    with pytest.raises(ValueError, match="rounding"):
        scratch_budgets(160, 100.0, 123.4, rounding="round")
