"""Property tests for selection: exact counts, N:M validity, brute-force equality, ties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsecore.patterns import NM, Block, Channel, Head, Unstructured, parse_pattern
from sparsecore.select import (
    drop_lowest,
    grow_highest,
    keep_count,
    select,
    select_global,
    topk_mask,
)

torch.set_num_threads(1)

SETTINGS = settings(max_examples=60, deadline=None)


def brute_topk(values: list[float], k: int) -> set[int]:
    """Reference: stable sort by (-value, index) and take the first k indices."""
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))
    return set(order[:k])


@st.composite
def score_tensors(draw, max_dim: int = 12, ties: bool = False):
    rows = draw(st.integers(1, max_dim))
    cols = draw(st.integers(1, max_dim))
    if ties:
        values = draw(st.lists(st.integers(0, 3), min_size=rows * cols, max_size=rows * cols))
        return torch.tensor(values, dtype=torch.float32).reshape(rows, cols)
    seed = draw(st.integers(0, 2**31 - 1))
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))


@SETTINGS
@given(score_tensors(ties=True), st.floats(0.01, 1.0))
def test_unstructured_exact_count_and_brute_force(scores, density):
    mask = select(scores, density, Unstructured())
    k = keep_count(scores.numel(), density)
    assert int(mask.sum()) == k == max(1, math.floor(density * scores.numel() + 1e-6))
    kept = set(torch.nonzero(mask.flatten()).flatten().tolist())
    assert kept == brute_topk(scores.flatten().tolist(), k)


@SETTINGS
@given(st.integers(1, 6), st.integers(1, 4), st.integers(0, 2**31 - 1), st.sampled_from([0, 1]))
def test_nm_every_group_holds_exactly_n(rows, groups, seed, dim):
    n, m = 2, 4
    shape = (rows * m, groups * m)
    scores = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).round()  # ties
    pattern = NM(n, m, dim=dim)
    mask = select(scores, 0.0 + 1.0, pattern)
    assert pattern.is_valid(mask)
    grouped_scores = pattern.groups(scores)
    grouped_mask = pattern.groups(mask)
    assert bool((grouped_mask.sum(-1) == n).all())
    for g_scores, g_mask in zip(grouped_scores.tolist(), grouped_mask.tolist(), strict=True):
        assert {i for i, keep in enumerate(g_mask) if keep} == brute_topk(g_scores, n)


@pytest.mark.parametrize(("n", "m"), [(1, 4), (2, 4), (4, 8), (1, 2), (3, 5)])
def test_nm_general_ratios(n, m):
    scores = torch.randn(6, 4 * m)
    mask = select(scores, 1.0, NM(n, m))
    assert int(mask.sum()) == 6 * 4 * n
    assert NM(n, m).is_valid(mask)


@SETTINGS
@given(score_tensors(), st.floats(0.05, 1.0))
def test_channel_keeps_whole_channels(scores, density):
    mask = select(scores, density, Channel())
    assert Channel().is_valid(mask)
    kept_rows = mask.all(1)
    assert int(kept_rows.sum()) == keep_count(scores.shape[0], density)
    sums = scores.sum(1).tolist()
    assert set(torch.nonzero(kept_rows).flatten().tolist()) == brute_topk(
        sums, int(kept_rows.sum())
    )


def test_block_and_head_patterns():
    scores = torch.randn(8, 8)
    block = select(scores, 0.5, Block(2, 4))
    assert Block(2, 4).is_valid(block) and int(block.sum()) == 32
    head = select(torch.randn(12, 5), 1 / 3, Head(3))
    assert Head(3).is_valid(head) and int(head.sum()) == 4 * 5


@SETTINGS
@given(st.lists(score_tensors(max_dim=6, ties=True), min_size=1, max_size=4), st.floats(0.05, 1.0))
def test_global_selection_matches_concatenated_brute_force(tensors, density):
    scores = {f"t{i}": t for i, t in enumerate(tensors)}
    masks = select_global(scores, density, min_per_tensor=0)  # the plain ranking (no floor)
    flat = torch.cat([t.flatten() for t in tensors]).tolist()
    k = keep_count(len(flat), density)
    kept = torch.cat([masks[f"t{i}"].flatten() for i in range(len(tensors))])
    assert int(kept.sum()) == k
    assert set(torch.nonzero(kept).flatten().tolist()) == brute_topk(flat, k)


def test_ties_are_deterministic_lower_index_first():
    scores = torch.zeros(10)
    assert topk_mask(scores, 3).tolist() == [True] * 3 + [False] * 7


@SETTINGS
@given(score_tensors(), st.integers(0, 2**31 - 1), st.data())
def test_drop_and_grow_counts(scores, seed, data):
    mask = torch.rand(scores.shape, generator=torch.Generator().manual_seed(seed)) < 0.5
    active, inactive = int(mask.sum()), int((~mask).sum())
    r = data.draw(st.integers(0, min(active, inactive)))
    dropped = drop_lowest(scores, mask, r)
    assert int(dropped.sum()) == active - r and bool((dropped <= mask).all())
    # the dropped ones are the lowest-scored active entries
    if r and dropped.any():
        assert scores[mask & ~dropped].max() <= scores[dropped].min()
    grown = grow_highest(scores, dropped, r)
    assert int(grown.sum()) == active and bool((dropped <= grown).all())


@SETTINGS
@given(score_tensors(ties=True), st.integers(0, 2**31 - 1), st.data())
def test_drop_and_grow_equal_brute_force_with_ties(scores, seed, data):
    mask = torch.rand(scores.shape, generator=torch.Generator().manual_seed(seed)) < 0.5
    active = [i for i, m in enumerate(mask.flatten().tolist()) if m]
    inactive = [i for i, m in enumerate(mask.flatten().tolist()) if not m]
    values = scores.flatten().tolist()
    r = data.draw(st.integers(0, min(len(active), len(inactive))))
    kept = brute_topk([values[i] for i in active], len(active) - r)
    want_drop = {active[j] for j in kept}
    dropped = drop_lowest(scores, mask, r)
    assert set(dropped.flatten().nonzero().flatten().tolist()) == want_drop
    grown_idx = brute_topk([values[i] for i in inactive], r)
    want_grow = set(active) | {inactive[j] for j in grown_idx}
    grown = grow_highest(scores, mask, r)
    assert set(grown.flatten().nonzero().flatten().tolist()) == want_grow
    # transposed (non-contiguous) inputs give the same answer as contiguous copies
    assert torch.equal(
        drop_lowest(scores.t(), mask.t(), r),
        drop_lowest(scores.t().contiguous(), mask.t().contiguous(), r),
    )
    assert dropped.dtype == torch.bool and grown.dtype == torch.bool


def test_topk_edge_cases():
    with pytest.raises(ValueError, match="NaN"):
        topk_mask(torch.tensor([3.0, float("nan"), 1.0, 2.0]), 2)
    inf = float("inf")
    assert topk_mask(torch.tensor([-inf, inf, 0.0, inf, -inf]), 3).tolist() == [
        False,
        True,
        True,
        True,
        False,
    ]
    assert topk_mask(torch.tensor([True, False, True]), 1).tolist() == [True, False, False]
    assert topk_mask(torch.tensor([1, 5, 5, 2], dtype=torch.int64), 2).tolist() == [
        False,
        True,
        True,
        False,
    ]
    assert topk_mask(torch.randn(0), 0).shape == (0,)
    assert topk_mask(torch.tensor(2.0), 1).item() is True
    float_mask = torch.tensor([1.0, 1.0, 0.0, 0.0])
    assert drop_lowest(torch.tensor([4.0, 3.0, 2.0, 1.0]), float_mask, 1).tolist() == [
        True,
        False,
        False,
        False,
    ]
    assert grow_highest(torch.tensor([4.0, 3.0, 2.0, 1.0]), float_mask, 1).tolist() == [
        True,
        True,
        True,
        False,
    ]


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="NaN"):
        select(torch.tensor([1.0, float("nan")]), 0.5)
    with pytest.raises(ValueError, match="density"):
        select(torch.randn(4), 0.0)
    with pytest.raises(ValueError, match="density"):
        select(torch.randn(4), 1.5)
    with pytest.raises(ValueError, match="n < m"):
        NM(4, 4)
    with pytest.raises(ValueError, match="not divisible"):
        select(torch.randn(3, 6), 1.0, NM(2, 4))
    with pytest.raises(ValueError, match=">= 2 dims"):
        select(torch.randn(8), 1.0, NM(2, 4))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        select([1.0, 2.0], 0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown pattern"):
        parse_pattern("3-of-7")
    with pytest.raises(TypeError, match="N:M"):
        select_global({"a": torch.randn(4, 4)}, 0.5, NM(2, 4))


def test_parse_pattern():
    assert parse_pattern("2:4") == NM(2, 4)
    assert parse_pattern("unstructured") == Unstructured()
    assert parse_pattern("channel") == Channel()
    assert parse_pattern("block2x2") == Block(2, 2)
