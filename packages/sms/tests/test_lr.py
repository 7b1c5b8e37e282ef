import itertools
import math

import pytest

from sparse_sms import Ingredient, allr_start, retrain_lrs


def test_llr_cosine_warmup_then_linear_decay():
    lrs = retrain_lrs("llr", 100, max_lr=0.2)
    assert len(lrs) == 100
    w = 10
    assert lrs[0] == 0.0
    for t in range(w):
        assert math.isclose(lrs[t], 0.2 * (1 - math.cos(math.pi * t / w)) / 2)
    assert lrs[w] == 0.2 == max(lrs)
    # linear: constant decrement after the warm-up, reaching 0.2 / 90 at the last step
    diffs = [lrs[t] - lrs[t + 1] for t in range(w, 99)]
    assert all(math.isclose(d, 0.2 / 90) for d in diffs)
    assert math.isclose(lrs[-1], 0.2 / 90)
    assert all(b >= a for a, b in itertools.pairwise(lrs[: w + 1]))


def test_llr_without_warmup_when_short():
    assert retrain_lrs("llr", 5, max_lr=1.0) == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])


def test_start_lr_forces_llr_shape():
    a = retrain_lrs("clr", 50, max_lr=0.1, start_lr=0.03)
    b = retrain_lrs("llr", 50, max_lr=0.5, start_lr=0.03)
    assert a == b and max(a) == 0.03


def test_ft_lrw_slr_clr_use_the_history():
    hist = [0.1 * (1 - t / 200) for t in range(200)]
    assert retrain_lrs("ft", 20, max_lr=0.1, lr_history=hist) == [min(hist)] * 20
    assert retrain_lrs("lrw", 20, max_lr=0.1, lr_history=hist) == hist[-20:]
    slr = retrain_lrs("slr", 20, max_lr=0.1, lr_history=hist)
    assert slr[2:] == [hist[int(j * 200 / 18)] for j in range(18)]
    clr = retrain_lrs("clr", 20, max_lr=0.1, lr_history=hist)
    assert clr[2] == 0.1 and math.isclose(
        clr[-1], min(hist) + (0.1 - min(hist)) * (1 + math.cos(math.pi * 17 / 18)) / 2
    )
    for kind in ("ft", "lrw", "slr"):
        with pytest.raises(ValueError, match="lr_history"):
            retrain_lrs(kind, 20, max_lr=0.1)


def test_allr_start_is_clipped():
    assert allr_start(0.1, 0.0, 0.5, 2, 10) == pytest.approx(0.02)  # floor E_r / E * max
    assert allr_start(0.1, 10.0, 0.5, 2, 10) == 0.1  # capped at max
    mid = allr_start(0.1, 0.3, 0.25, 1, 10)
    assert mid == pytest.approx(0.3 / 0.5 * 0.1)


def test_global_schedule_continues_the_run():
    ing = Ingredient(
        phase=1,
        index=0,
        seed=0,
        epochs=2,
        weight_decay=0.0,
        momentum=0.9,
        max_lr=1.0,
        schedule="global",
        global_epochs=(4, 10),
    )
    lrs = ing.learning_rates(6)  # 3 steps per epoch, epochs 4..5 of 10
    assert lrs == pytest.approx([1 - (12 + t) / 30 for t in range(6)])


def test_bad_arguments():
    with pytest.raises(ValueError, match="total"):
        retrain_lrs("llr", 0, max_lr=0.1)
    with pytest.raises(ValueError, match="max_lr"):
        retrain_lrs("llr", 10, max_lr=0.0)
    with pytest.raises(ValueError, match="retrain_schedule"):
        retrain_lrs("step", 10, max_lr=0.1)
