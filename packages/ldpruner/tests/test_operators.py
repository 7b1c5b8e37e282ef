"""Operators of a diffusers UNet: enumeration, surgery, weight preservation, exact counts."""

import copy

import pytest
import torch

from sparse_ldpruner import (
    Candidate,
    ShortcutOnly,
    ZeroOperator,
    apply_candidates,
    count_parameters,
    enumerate_operators,
    unet_macs,
)


def _ops(ldm):
    return {op.name: op for op in enumerate_operators(ldm.unet)}


def _one_of_each_kind(ldm):
    seen = {}
    for op in enumerate_operators(ldm.unet):
        seen.setdefault(op.kind, op)
    return list(seen.values())


def _eps(ldm):
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(4, *ldm.latent_shape, generator=gen)
    with torch.no_grad():
        return ldm.denoise(z, torch.tensor([10, 200, 500, 900]), torch.tensor([0, 3, 5, 9]))


def test_enumeration_finds_the_paper_operator_set(ldm) -> None:
    kinds = [op.kind for op in enumerate_operators(ldm.unet)]
    # (8, 16) channels, 1 layer per block: 2+1 down/mid... resnets and 4 transformer blocks
    assert kinds.count("resnet") == 8
    assert kinds.count("self_attn") == kinds.count("cross_attn") == kinds.count("ffn") == 4
    with pytest.raises(TypeError, match="unet"):
        enumerate_operators(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("action", ["remove", "halve"])
def test_unmodified_tensors_are_bit_identical(ldm, action) -> None:
    before = {k: v.clone() for k, v in ldm.unet.state_dict().items()}
    for op in _one_of_each_kind(ldm):
        model = copy.deepcopy(ldm)
        apply_candidates(model.unet, [Candidate(op, action)])
        after = model.unet.state_dict()
        for key, value in before.items():
            if not key.startswith(op.name + "."):
                assert torch.equal(after[key], value), (op.name, key)
        assert _eps(model).shape == (4, *ldm.latent_shape)


def test_removal_counts_equal_the_removed_operator(ldm) -> None:
    ops = _ops(ldm)
    dense_params, dense_macs = count_parameters(ldm.unet), unet_macs(ldm)
    for name, op in ops.items():
        model = copy.deepcopy(ldm)
        module = ldm.unet.get_submodule(name)
        kept = 0
        if op.kind == "resnet" and module.conv_shortcut is not None:
            kept = count_parameters(module.conv_shortcut)
        apply_candidates(model.unet, [Candidate(op, "remove")])
        assert count_parameters(model.unet) == dense_params - count_parameters(module) + kept
        replacement = model.unet.get_submodule(name)
        assert isinstance(replacement, ShortcutOnly if op.kind == "resnet" else ZeroOperator)
        if op.kind == "ffn":  # tokens x (dim x 2 inner + inner x dim)
            dim, inner = module.net[2].out_features, module.net[2].in_features
            tokens = 16 if name.startswith(("down_blocks.1", "mid", "up_blocks.0")) else 64
            assert dense_macs - unet_macs(model) == tokens * 3 * dim * inner


def test_removing_a_branch_equals_zeroing_its_output(ldm) -> None:
    for op in _one_of_each_kind(ldm)[1:3]:  # a self- and a cross-attention
        removed, zeroed = copy.deepcopy(ldm), copy.deepcopy(ldm)
        apply_candidates(removed.unet, [Candidate(op, "remove")])
        out = zeroed.unet.get_submodule(op.name).to_out[0]
        with torch.no_grad():
            out.weight.zero_()
            out.bias.zero_()
        torch.testing.assert_close(_eps(removed), _eps(zeroed), rtol=1e-5, atol=1e-6)


def test_halving_heads_and_ffn_equals_zeroing_the_dropped_ones(ldm) -> None:
    for op in _one_of_each_kind(ldm)[1:]:
        halved, masked = copy.deepcopy(ldm), copy.deepcopy(ldm)
        apply_candidates(halved.unet, [Candidate(op, "halve")])
        module, small = masked.unet.get_submodule(op.name), halved.unet.get_submodule(op.name)
        if op.kind == "ffn":
            out, kept_cols = module.net[2], small.net[2].in_features
            assert kept_cols == out.in_features // 2
            keep = torch.zeros(out.in_features, dtype=torch.bool)
            for col in small.net[2].weight.T:  # find each kept column in the original
                keep |= (col == out.weight.T).all(1)
        else:
            assert small.heads == module.heads // 2
            out, kept_cols = module.to_out[0], 0
            keep = torch.zeros(out.in_features, dtype=torch.bool)
            for col in small.to_out[0].weight.T:
                keep |= (col == out.weight.T).all(1)
        assert int(keep.sum()) == (kept_cols if op.kind == "ffn" else small.to_out[0].in_features)
        with torch.no_grad():
            out.weight[:, ~keep] = 0
        torch.testing.assert_close(_eps(halved), _eps(masked), rtol=1e-4, atol=1e-5)


def test_halving_a_resnet_keeps_the_largest_filters(ldm) -> None:
    op = next(o for o in enumerate_operators(ldm.unet) if o.kind == "resnet")
    block = ldm.unet.get_submodule(op.name)
    model = copy.deepcopy(ldm)
    apply_candidates(model.unet, [Candidate(op, "halve")])
    small = model.unet.get_submodule(op.name)
    norms = block.conv1.weight.flatten(1).norm(dim=1)
    kept = torch.sort(torch.topk(norms, small.conv1.out_channels).indices).values
    assert small.conv1.out_channels == block.conv1.out_channels // 2
    assert torch.equal(small.conv1.weight, block.conv1.weight[kept])
    assert torch.equal(small.conv2.weight, block.conv2.weight[:, kept])
    assert torch.equal(small.time_emb_proj.weight, block.time_emb_proj.weight[kept])


def test_bad_candidates_raise_before_touching(ldm) -> None:
    op = enumerate_operators(ldm.unet)[0]
    before = copy.deepcopy(ldm.unet.state_dict())
    with pytest.raises(ValueError, match="twice"):
        apply_candidates(ldm.unet, [Candidate(op, "halve"), Candidate(op, "remove")])
    with pytest.raises(ValueError, match="keep_ratio"):
        apply_candidates(ldm.unet, [Candidate(op, "halve")], keep_ratio=1.5)
    with pytest.raises(ValueError, match="unknown"):
        apply_candidates(ldm.unet, [Candidate(op, "prune")])
    after = ldm.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
