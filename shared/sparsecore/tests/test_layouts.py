"""Transposed layouts: HF ``Conv1D`` targets, ``transpose_pattern``, per-target patterns."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from sparsecore import (
    NM,
    Block,
    Channel,
    Head,
    OneShotMagnitude,
    RandomPruning,
    Unstructured,
    default_targets,
    is_hf_conv1d,
    keep_count,
    select,
    transpose_pattern,
)
from sparsecore.evaluation import SparsityReport
from sparsecore.layouts import common_pattern, is_transposed, linear_view

torch.set_num_threads(1)

transformers = pytest.importorskip("transformers")
from transformers.pytorch_utils import Conv1D  # noqa: E402

from sparsecore.bench.models import tiny_gpt2  # noqa: E402

GPT2_TARGETS = [
    f"transformer.h.{i}.{layer}.weight"
    for i in range(2)
    for layer in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
]

PATTERNS = [
    Unstructured(),
    NM(2, 4),
    NM(1, 4, dim=0),
    NM(2, 4, dim=-1),
    Channel(),
    Channel(dim=1),
    Channel(dim=-1),
    Block(2, 4),
]


def has_mask_buffers(model: nn.Module) -> bool:
    return any(name.endswith("_mask") for name, _ in model.named_buffers())


# ---------------------------------------------------------------------- detection and targets
def test_is_hf_conv1d_and_no_transformers_import() -> None:
    assert is_hf_conv1d(Conv1D(8, 4))
    assert not is_hf_conv1d(nn.Linear(4, 8))
    assert not is_hf_conv1d(type("Conv1D", (nn.Module,), {})())  # same name, other class
    code = (
        "import sys, torch, sparsecore as sc\n"
        "m = sc.OneShotMagnitude(sparsity=0.5).setup(torch.nn.Sequential(torch.nn.Linear(8, 8)))\n"
        "assert not sc.is_hf_conv1d(m.model[0])\n"
        "assert 'transformers' not in sys.modules, 'sparsecore imported transformers'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_default_targets_of_gpt2_are_every_conv1d_weight_but_not_tied_head() -> None:
    model = tiny_gpt2()
    assert default_targets(model) == GPT2_TARGETS
    assert all(is_transposed(model, n) for n in GPT2_TARGETS)
    assert not is_transposed(model, "lm_head.weight")
    assert not is_transposed(model, "transformer.h.0.attn.c_attn.bias")
    with pytest.raises(ValueError, match=r"'lm_head.weight' is tied to"):
        OneShotMagnitude(targets=("lm_head.weight",)).setup(tiny_gpt2())


def test_gpt2_unstructured_magnitude_exact_per_tensor_counts() -> None:
    model = tiny_gpt2()
    method = OneShotMagnitude(sparsity=0.75).setup(model)
    assert method.masks.names == GPT2_TARGETS
    for name, mask in method.masks.masks().items():
        weight = method.masks.param(name).detach().abs()
        assert method.masks.targets[name].pattern == Unstructured()
        assert int(mask.sum()) == keep_count(mask.numel(), 0.25), name
        assert weight[mask].min() >= weight[~mask].max(), name  # the largest |w| are kept
        assert not method.masks.param(name)[~mask].any()
    assert torch.equal(model.lm_head.weight, model.transformer.wte.weight)
    assert model.transformer.wte.weight.ne(0).all()  # the tied embedding is untouched


# ---------------------------------------------------------------------- N:M on Conv1D
def brute_force_nm_along_dim0(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Groups of ``m`` consecutive rows per column keep their ``n`` largest ``|w|``."""
    keep = torch.zeros(weight.shape, dtype=torch.bool)
    rows, cols = weight.shape
    for col in range(cols):
        for start in range(0, rows, m):
            entries = [(-abs(float(weight[r, col])), r) for r in range(start, start + m)]
            for _, r in sorted(entries)[:n]:
                keep[r, col] = True
    return keep


def test_gpt2_two_four_groups_run_along_input_dim() -> None:
    model = tiny_gpt2()
    method = OneShotMagnitude(pattern="2:4").setup(model)
    for name, target in method.masks.targets.items():
        assert target.pattern == NM(2, 4, dim=0), name
        mask = method.masks.mask(name)
        # dim 0 of a Conv1D weight is the input dim: groups of 4 consecutive inputs keep 2
        assert (mask.t().reshape(-1, 4).sum(-1) == 2).all(), name
        # in Linear convention this is the usual 2:4 along dim 1
        assert NM(2, 4).is_valid(linear_view(mask, True)), name
    name = "transformer.h.1.mlp.c_proj.weight"
    weight = method.masks.param(name).detach()
    assert torch.equal(method.masks.mask(name), brute_force_nm_along_dim0(weight, 2, 4))
    assert not NM(2, 4, dim=1).is_valid(method.masks.mask(name))  # not the untransposed groups
    report = SparsityReport.from_masks(method)
    assert report.valid and [t.pattern for t in report.tensors] == ["2:4(dim=0)"] * len(
        GPT2_TARGETS
    )
    rows = {t.name: t for t in SparsityReport.from_model(model, NM(2, 4)).tensors}
    assert all(rows[n].valid for n in GPT2_TARGETS)
    ids = torch.randint(0, 1000, (2, 8))
    assert torch.isfinite(model(input_ids=ids).logits).all()


def test_random_pruning_two_four_on_gpt2_is_valid_per_target() -> None:
    method = RandomPruning(pattern="2:4", seed=3).setup(tiny_gpt2())
    for name, mask in method.masks.masks().items():
        assert NM(2, 4, dim=0).is_valid(mask), name


# ---------------------------------------------------------------------- Channel / Block on Conv1D
def test_channel_pattern_removes_whole_output_features_of_conv1d() -> None:
    model = tiny_gpt2()
    method = OneShotMagnitude(pattern="channel", sparsity=0.5).setup(model)
    for name, mask in method.masks.masks().items():
        assert method.masks.targets[name].pattern == Channel(dim=1), name
        weight = method.masks.param(name).detach()
        out_features = weight.shape[1]
        kept_cols = mask.all(0)
        assert (kept_cols | ~mask.any(0)).all(), name  # whole columns (= output features)
        assert int(kept_cols.sum()) == keep_count(out_features, 0.5), name
        norms = weight.abs().sum(0)
        assert norms[kept_cols].min() >= norms[~kept_cols].max(), name
        assert not linear_view(weight, True)[~kept_cols].any()  # (out, in) rows are zero
    finalized = method.finalize()
    c_fc = finalized.transformer.h[0].mlp.c_fc
    x = torch.randn(3, c_fc.weight.shape[0])
    out = c_fc(x)
    dead = c_fc.weight.eq(0).all(0)
    assert dead.any() and torch.allclose(out[:, dead], c_fc.bias[dead].expand(3, -1))


def test_block_pattern_is_transposed_on_conv1d() -> None:
    method = OneShotMagnitude(pattern=Block(2, 4), sparsity=0.5).setup(tiny_gpt2())
    for name, target in method.masks.targets.items():
        assert target.pattern == Block(4, 2), name
        assert Block(2, 4).is_valid(linear_view(method.masks.mask(name), True)), name


def test_global_scope_needs_one_layout() -> None:
    mixed = nn.Sequential(Conv1D(16, 8), nn.ReLU(), nn.Linear(16, 4))
    with pytest.raises(ValueError, match=r"scope='global' needs one pattern"):
        OneShotMagnitude(pattern="channel", scope="global").setup(mixed)
    assert not has_mask_buffers(mixed)  # raised before the model was touched
    method = OneShotMagnitude(sparsity=0.5, scope="global").setup(mixed)  # unstructured: fine
    assert sum(method.masks.nnz().values()) == keep_count(16 * 8 + 4 * 16, 0.5)
    gpt2 = OneShotMagnitude(pattern="channel", sparsity=0.5, scope="global").setup(tiny_gpt2())
    for mask in gpt2.masks.masks().values():
        assert Channel(dim=1).is_valid(mask)
    with pytest.raises(ValueError, match="no targets"):
        common_pattern({})


# ---------------------------------------------------------------------- transpose_pattern
def test_transpose_pattern_values_and_round_trip() -> None:
    assert transpose_pattern(Unstructured()) == Unstructured()
    assert transpose_pattern(NM(2, 4)) == NM(2, 4, dim=0)
    assert transpose_pattern(NM(1, 4, dim=0)) == NM(1, 4, dim=1)
    assert transpose_pattern(NM(2, 4, dim=-1)) == NM(2, 4, dim=0)
    assert transpose_pattern(Channel()) == Channel(dim=1)
    assert transpose_pattern(Channel(dim=-1)) == Channel(dim=0)
    assert transpose_pattern(Block(2, 4)) == Block(4, 2)
    for pattern in PATTERNS:
        twice = transpose_pattern(transpose_pattern(pattern))
        expected = pattern
        if isinstance(pattern, NM | Channel):
            expected = type(pattern)(**{**vars(pattern), "dim": pattern.dim % 2})
        assert twice == expected, pattern


@pytest.mark.parametrize("pattern", PATTERNS, ids=str)
def test_selecting_on_the_transpose_is_the_transposed_selection(pattern) -> None:
    scores = torch.rand(8, 12, generator=torch.Generator().manual_seed(0))  # no ties
    keep = select(scores, 0.5, pattern)
    keep_t = select(scores.t().contiguous(), 0.5, transpose_pattern(pattern))
    assert torch.equal(keep_t, keep.t())
    assert transpose_pattern(pattern).is_valid(keep.t())


def test_head_pattern_cannot_be_transposed() -> None:
    with pytest.raises(ValueError, match=r"h\.0\.attn\.c_attn\.weight"):
        transpose_pattern(Head(4), "transformer.h.0.attn.c_attn.weight")

    class HeadMagnitude(OneShotMagnitude):
        supported_patterns = (Head,)

    model = tiny_gpt2()
    with pytest.raises(ValueError, match=r"transformer\.h\.0\.attn\.c_attn\.weight"):
        HeadMagnitude(pattern=Head(4)).setup(model)
    assert not has_mask_buffers(model)
