"""Wanda and SparseGPT: brute-force references, reconstruction order, OBS = least squares."""

from __future__ import annotations

import copy

import pytest
import torch

from sparsecore import SparseGPT, Wanda
from sparsecore.bench import tiny_llama
from sparsecore.oneshot import sparsegpt_prune, wanda_keep, wanda_scores
from sparsecore.patterns import NM
from sparsecore.select import select
from sparsecore.testing import MethodConformance


class TestWandaConformance(MethodConformance):
    method_cls = Wanda


class TestSparseGPTConformance(MethodConformance):
    method_cls = SparseGPT


def _layer(seed: int, rows: int = 24, cols: int = 32, tokens: int = 200):
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, cols, generator=gen, dtype=torch.float64)
    scales = torch.exp(torch.randn(cols, generator=gen, dtype=torch.float64))  # uneven inputs
    x = torch.randn(tokens, cols, generator=gen, dtype=torch.float64) * scales
    return weight, x


def _brute_wanda(weight, x, sparsity, group=None):
    norms = (x**2).sum(0).sqrt()
    keep = torch.ones_like(weight, dtype=torch.bool)
    rows, cols = weight.shape
    size = group[1] if group else cols
    drop = group[1] - group[0] if group else int(cols * sparsity)
    for r in range(rows):
        for g in range(0, cols, size):
            entries = [(float(abs(weight[r, j]) * norms[j]), j) for j in range(g, g + size)]
            for _, j in sorted(entries)[:drop]:
                keep[r, j] = False
    return keep


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.7])
def test_wanda_equals_brute_force_per_row(sparsity):
    weight, x = _layer(0)
    keep = wanda_keep(wanda_scores(weight, (x**2).sum(0)), sparsity)
    assert torch.equal(keep, _brute_wanda(weight, x, sparsity))
    assert (keep.sum(1) == 32 - int(32 * sparsity)).all()  # compared per output row


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (4, 8)])
def test_wanda_nm_equals_brute_force(n, m):
    weight, x = _layer(1)
    keep = wanda_keep(wanda_scores(weight, (x**2).sum(0)), 0.0, NM(n, m))
    assert torch.equal(keep, _brute_wanda(weight, x, 0.0, (n, m)))
    assert NM(n, m).is_valid(keep)


def _llama(seed=0):
    return tiny_llama(seed=seed, vocab_size=64, hidden_size=32, intermediate_size=64)


@pytest.mark.parametrize("cls", [Wanda, SparseGPT])
def test_nm_valid_on_every_group_of_a_decoder(cls):
    model = _llama()
    method = cls(pattern="2:4").setup(model)
    method.calibrate([torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))])
    assert len(method.masks.names) == 14 and not any("lm_head" in n for n in method.masks.names)
    for name, mask in method.masks.masks().items():
        assert NM(2, 4).is_valid(mask), name
        assert not method.masks.param(name)[~mask].any(), name


def _error(weight, new, x):
    return float(((x @ weight.T - x @ new.T) ** 2).sum())


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("pattern", [None, NM(2, 4)])
def test_reconstruction_error_sparsegpt_below_wanda_below_magnitude(seed, pattern):
    weight, x = _layer(10 + seed)
    gram = x.T @ x
    magnitude = select(weight.abs(), 0.5, pattern or None)
    wanda = wanda_keep(wanda_scores(weight, (x**2).sum(0)), 0.5, pattern)
    new, keep = sparsegpt_prune(weight, gram, 0.5, pattern)  # one block of 128 (official)
    assert int((~keep).sum()) == int((~wanda).sum()) == int((~magnitude).sum())
    errors = [_error(weight, new, x), _error(weight, weight * wanda, x)]
    errors.append(_error(weight, weight * magnitude, x))
    assert errors[0] < errors[1] < errors[2], errors


def test_zero_sparsity_leaves_weights_unchanged():
    weight, x = _layer(5)
    new, keep = sparsegpt_prune(weight, x.T @ x, 0.0, blocksize=8)
    assert keep.all() and torch.equal(new, weight)
    model = _llama()
    before = copy.deepcopy(model.state_dict())
    method = SparseGPT(sparsity=0.0).setup(model)
    method.calibrate([torch.randint(0, 64, (2, 16))])
    after = method.finalize().state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def _damped(gram, percdamp=0.01):
    return gram + percdamp * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=gram.dtype)


def test_obs_update_equals_least_squares_when_pruned_entries_lead_each_row():
    """When every row's pruned entries come before its kept ones (columns are processed left to
    right, kept weights are frozen once passed), the result is the global least-squares solve
    with the mask fixed."""
    weight, x = _layer(7, rows=6, cols=12)
    keep = torch.ones_like(weight, dtype=torch.bool)
    for r, lead in enumerate([0, 1, 3, 5, 2, 4]):
        keep[r, :lead] = False
    new, _ = sparsegpt_prune(weight, x.T @ x, 0.0, blocksize=4, keep=keep)
    H = _damped(x.T @ x)
    for r in range(6):
        s = keep[r].nonzero().squeeze(1)
        # min (w0 - w) H (w0 - w)^T over w supported on s  =>  w_s = w0 H[:, s] H[s, s]^-1
        want = torch.linalg.solve(H[s][:, s], H[s] @ weight[r])
        assert torch.allclose(new[r, s], want, atol=1e-9)
        assert not new[r][~keep[r]].any()


@pytest.mark.parametrize("blocksize", [3, 4, 128])
def test_obs_update_equals_sequential_dense_solve_for_any_fixed_mask(blocksize):
    """Column by column, each pruned (or frozen) weight's error is optimally absorbed by the
    later columns: a dense solve per column gives the same weights as the lazy Cholesky form."""
    weight, x = _layer(8, rows=5, cols=12)
    keep = torch.rand(5, 12, generator=torch.Generator().manual_seed(1)) < 0.5
    new, _ = sparsegpt_prune(weight, x.T @ x, 0.0, blocksize=blocksize, keep=keep)
    H = _damped(x.T @ x)
    want = weight.clone()
    for j in range(12):
        want[:, j] = torch.where(keep[:, j], want[:, j], torch.zeros(()))
        rest = slice(j + 1, 12)
        delta = want[:, : j + 1] - weight[:, : j + 1]
        correction = torch.linalg.solve(H[rest, rest], H[rest, : j + 1] @ delta.T).T
        want[:, rest] = weight[:, rest] - correction
    assert torch.allclose(new, want, atol=1e-9)


def test_sparsegpt_unstructured_count_exact_per_block():
    weight, x = _layer(9, rows=8, cols=20)
    _, keep = sparsegpt_prune(weight, x.T @ x, 0.5, blocksize=8)
    for start in range(0, 20, 8):
        block = keep[:, start : start + 8]
        assert int((~block).sum()) == int(block.numel() * 0.5)


def test_bad_input_raises_before_touching_model():
    model = _llama()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="blocksize"):
        SparseGPT(pattern="2:4", blocksize=6)
    with pytest.raises(ValueError, match="targets"):
        Wanda(targets=("lm_head.weight",)).setup(model)
    with pytest.raises(ValueError, match="not divisible"):
        Wanda(pattern="4:8").setup(
            tiny_llama(
                vocab_size=64,
                hidden_size=36,
                num_attention_heads=2,
                num_key_value_heads=2,
                intermediate_size=64,
            )
        )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
