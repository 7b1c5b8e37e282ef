"""FPGM selects exactly the brute-force argmin filters (he-y/filter-pruning-geometric-median)."""

import itertools
import math

import torch
from prunequant_helpers import SHAPE, plain_cnn

from sparse_prunequant import fpgm_keeps, pruned_count, soft_zero
from sparsecore.groups import channel_groups
from sparsecore.select import keep_count

torch.set_num_threads(1)


def _brute_force_pruned(weight: torch.Tensor, rate: float) -> set[int]:
    filters = [f.flatten().double() for f in weight.detach()]
    sums = [sum(float((fi - fj).pow(2).sum().sqrt()) for fj in filters) for fi in filters]
    order = sorted(range(len(filters)), key=lambda i: sums[i])
    return set(order[: int(len(filters) * rate)])  # official int(N * rate_dist)


def test_fpgm_prunes_exactly_the_brute_force_argmin_filters():
    model = plain_cnn()
    groups = channel_groups(model, torch.zeros(1, *SHAPE))
    for rate in (0.3, 0.5):
        keeps = fpgm_keeps(groups, model, rate)
        assert set(keeps) == {"0", "3"}  # the two conv groups; the classifier is an output
        for name, keep in keeps.items():
            weight = dict(model.named_modules())[name].weight
            assert set((~keep).nonzero().flatten().tolist()) == _brute_force_pruned(weight, rate)


def test_pruned_count_is_the_official_floor_not_the_core_keep_count():
    for size, rate in itertools.product((10, 12, 16, 32), (0.3, 0.4, 0.5)):
        assert pruned_count(size, rate) == math.floor(size * rate + 1e-9)
    assert pruned_count(16, 0.3) == 4 and 16 - keep_count(16, 0.7) == 5


def test_soft_zero_zeroes_only_the_selected_filters_and_leaves_batchnorm():
    model = plain_cnn()
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
    gammas = model[1].weight.detach().clone()
    groups = channel_groups(model, torch.zeros(1, *SHAPE))
    keeps = fpgm_keeps(groups, model, 0.3)
    soft_zero(groups, model, keeps)
    zero_rows = (model[0].weight.detach().flatten(1).abs().sum(1) == 0).nonzero().flatten()
    assert zero_rows.tolist() == (~keeps["0"]).nonzero().flatten().tolist()
    assert len(zero_rows) == 3 and torch.equal(model[1].weight.detach(), gammas)
