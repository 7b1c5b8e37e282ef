"""Pruning windows, schedule completion and schedule-field validation (issues 39 and 18.8)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from sparsecore import GMP, SET, RigL
from sparsecore.schedules import Polynomial
from sparsecore.testing import WindowCase, tiny_mlp, window_property_test
from sparsecore.window import PruningWindow, ScheduleIncompleteWarning, WindowNames

torch.set_num_threads(1)


def train(model, optimizer, steps, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.randn(8, 16, generator=gen), torch.randint(0, 4, (8,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def setup(method):
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return model, method.setup(model, optimizer), optimizer


def finalize_quietly(method):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScheduleIncompleteWarning)
        return method.finalize()


# ---------------------------------------------------------------------- the window itself
@pytest.mark.parametrize(
    ("begin", "end", "every", "grid", "updates"),
    [
        (0, 150, 100, "begin", [100, 150]),
        (0, 50, 100, "begin", [50]),
        (4, 24, 4, "begin", [4, 8, 12, 16, 20, 24]),
        (3, 10, 4, "begin", [3, 7, 10]),
        (0, 150, 100, "multiples", [100]),
        (150, 420, 100, "multiples", [200, 300, 400]),
        (0, 6, 2, "multiples", [2, 4, 6]),
    ],
)
def test_window_updates_end_on_last_update(begin, end, every, grid, updates):
    window = PruningWindow(begin, end, every, grid=grid)
    assert list(window.updates()) == updates
    assert [s for s in range(end + every + 1) if window.is_update(s)] == updates
    assert window.last_update == updates[-1]
    assert window.progress(window.last_update) == 1.0
    assert not window.complete(updates[-1] - 1) and window.complete(updates[-1])


def test_polynomial_last_update_lands_on_end():
    schedule = Polynomial(0.0, 0.9, 0, 150, 100)
    assert [s for s in range(1, 200) if schedule.is_update_step(s)] == [100, 150]
    assert schedule(150) == 0.9


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"begin": 0, "end": 10, "every": 2.5}, TypeError, "update_every must be an integer"),
        ({"begin": 0, "end": 10, "every": True}, TypeError, "update_every"),
        ({"begin": 5, "end": 5, "every": 1}, ValueError, r"end_step \(5\) must be > begin_step"),
        ({"begin": 0, "end": 50, "every": 100, "grid": "multiples"}, ValueError, "at least one"),
        ({"begin": 0, "end": 50, "every": 10, "total": 40}, ValueError, "total_steps"),
        ({"begin": -1, "end": 50, "every": 10}, ValueError, "begin_step"),
    ],
)
def test_window_errors_name_the_fields(kwargs, error, match):
    with pytest.raises(error, match=match):
        PruningWindow(**kwargs)


def test_window_uses_the_callers_names():
    names = WindowNames(begin="t0", end="prune_steps", every="dt")
    with pytest.raises(ValueError, match=r"prune_steps \(3\) must be > t0 \(3\)"):
        PruningWindow(3, 3, 1, names=names)


# ---------------------------------------------------------------------- GMP
@pytest.mark.parametrize("end", [150, 50, 1])
def test_gmp_reaches_target_when_end_is_off_the_grid(end):
    model, method, opt = setup(GMP(sparsity=0.9, end_step=end, update_every=100))
    train(model, opt, end - 1)
    assert method.masks.sparsity() < 0.9 - 1e-3 and not method.schedule_complete
    train(model, opt, 1)
    for name, mask in method.masks.masks().items():
        assert int(mask.sum()) == int(mask.numel() * 0.1 + 1e-6), name
    assert method.schedule_complete
    final = finalize_quietly(method)
    assert final is model


def test_gmp_finalize_warns_once_naming_end_step():
    model, method, opt = setup(GMP(sparsity=0.9, end_step=150, update_every=100))
    train(model, opt, 120)
    with pytest.warns(ScheduleIncompleteWarning, match="end_step=150") as record:
        method.finalize()
    assert len(record) == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"update_every": 2.5}, TypeError, "update_every"),
        ({"update_every": True}, TypeError, "update_every"),
        ({"update_every": 0}, ValueError, "update_every"),
        ({"begin_step": 1.0}, TypeError, "begin_step"),
        ({"end_step": None}, TypeError, "end_step"),
        ({"begin_step": 100, "end_step": 100}, ValueError, "end_step"),
        ({"initial_sparsity": 0.95}, ValueError, "initial_sparsity"),
        ({"power": 0}, ValueError, "power"),
        ({"power": True}, TypeError, "power"),
    ],
)
def test_gmp_schedule_fields_validated(kwargs, error, match):
    with pytest.raises(error, match=match):
        GMP(**{"sparsity": 0.9, **kwargs})


# ---------------------------------------------------------------------- RigL / SET
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"update_every": 2.5}, TypeError, "update_every"),
        ({"update_every": True}, TypeError, "update_every"),
        ({"drop_fraction": True}, TypeError, "drop_fraction"),
        ({"drop_fraction": 1.5}, ValueError, "drop_fraction"),
        ({"begin_step": -1}, ValueError, "begin_step"),
        ({"end_step": 2.0}, TypeError, "end_step"),
        ({"end_step": 50}, ValueError, r"end_step \(50\) leaves no drop-and-grow update"),
        ({"begin_step": 10, "end_step": 5}, ValueError, "end_step"),
        ({"total_steps": 0}, ValueError, "total_steps"),
        ({"total_steps": 120}, ValueError, "total_steps"),
        ({"end_step": 300, "total_steps": 200}, ValueError, "end_step"),
    ],
)
@pytest.mark.parametrize("cls", [RigL, SET])
def test_dynamic_schedule_fields_validated(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(**{"sparsity": 0.9, **kwargs})


@pytest.mark.parametrize(("total", "every", "end"), [(100, 10, 75), (40, 12, 28), (1000, 100, 750)])
def test_dynamic_default_end_from_total_steps(total, every, end):
    method = RigL(sparsity=0.9, update_every=every, total_steps=total)
    assert method.config.update_end == end
    assert end <= total - every


@pytest.mark.parametrize("cls", [RigL, SET])
def test_no_update_within_last_interval_and_no_regrown_zeros(cls):
    total, every = 40, 12
    model, method, opt = setup(cls(sparsity=0.8, update_every=every, total_steps=total))
    steps = []
    original = method.update_masks
    method.update_masks = lambda f: (steps.append(method.step), original(f))[1]
    train(model, opt, total)
    assert steps == [12, 24] and max(steps) <= total - every
    assert method.schedule_complete
    masks = {n: m.clone() for n, m in method.masks.masks().items()}
    final = finalize_quietly(method)
    params = dict(final.named_parameters())
    if cls is RigL:  # grown where |g| is largest, so trained away from 0 (SET may grow dead units)
        for name, mask in masks.items():
            assert bool((params[name][mask] != 0).all()), name


def test_rigl_without_end_warns_about_regrown_zeros():
    model, method, opt = setup(RigL(sparsity=0.9, update_every=10))
    train(model, opt, 100)  # the last update runs at the final step
    assert not method.schedule_complete
    with pytest.warns(ScheduleIncompleteWarning, match="total_steps") as record:
        method.finalize()
    assert "exactly zero" in str(record[0].message) and len(record) == 1


def test_rigl_short_loop_with_end_warns():
    model, method, opt = setup(RigL(sparsity=0.9, update_every=5, end_step=30))
    train(model, opt, 20)
    with pytest.warns(ScheduleIncompleteWarning, match="end_step=30"):
        method.finalize()


def test_schedule_complete_is_true_for_unscheduled_methods():
    from sparsecore import OneShotMagnitude

    _, method, _ = setup(OneShotMagnitude(sparsity=0.5))
    assert method.schedule_complete
    finalize_quietly(method)


# ---------------------------------------------------------------------- properties
test_gmp_window_property = window_property_test(
    lambda c: GMP(sparsity=0.75, begin_step=c.begin, end_step=c.end, update_every=c.every)
)

# An explicit end_step may ask for updates up to the last step (weights regrown there are still
# exactly 0, as asked): count the masks.
test_rigl_window_property = window_property_test(
    lambda c: RigL(
        sparsity=0.75,
        update_every=c.every,
        begin_step=c.begin,
        end_step=c.end,
        total_steps=c.total,
    ),
    count_zeros=False,
    max_examples=20,
)

# The default end (from total_steps) leaves ΔT steps after the last update: RigL's regrown
# weights (largest |g|) have trained away from 0, so the finalized zeros are exactly the target.
test_rigl_default_end_property = window_property_test(
    lambda c: RigL(sparsity=0.75, update_every=c.every, begin_step=c.begin, total_steps=c.total),
    expect_complete=lambda c, m: True,
    max_examples=20,
)


def _set_with_total(c: WindowCase) -> SET:
    return SET(sparsity=0.75, update_every=c.every, begin_step=c.begin, total_steps=c.total)


test_set_total_steps_property = window_property_test(
    _set_with_total, expect_complete=lambda c, m: True, count_zeros=False, max_examples=20
)


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: Polynomial(0.0, 0.9, 0, 10, 2.5), TypeError, "every"),
        (lambda: Polynomial(0.0, 0.9, 0, 10, 1, power=0), ValueError, "power"),
        (lambda: Polynomial(0.0, 0.9, 0, 10.0), TypeError, "end"),
    ],
)
def test_schedules_refuse_non_integer_steps(build, error, match):
    with pytest.raises(error, match=match):
        build()
