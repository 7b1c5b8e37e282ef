"""Export (finalize, compact checkpoint, semi-structured on CUDA) and option validation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparse_ast import (
    AdaptiveSparseTrainer,
    ASTConfig,
    load_compact,
    restore_slorb,
    save_compact,
    to_semi_structured,
)
from sparse_ast.layers import linear_view

from ._helpers import tiny_gpt2, tiny_llama, tokens

torch.set_num_threads(1)


def _trained(build, slorb: bool):
    model = build(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    method = AdaptiveSparseTrainer(slorb=slorb, slorb_k=8, mask_update_every=2).setup(model, opt)
    for step in range(4):
        x = tokens(step)
        loss = method.loss(model(x, labels=x).loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, method


@pytest.mark.parametrize("slorb", [False, True])
@pytest.mark.parametrize("build", [tiny_gpt2, tiny_llama])
def test_finalize_then_compact_round_trip(build, slorb: bool, tmp_path) -> None:
    model, method = _trained(build, slorb)
    model.eval()
    x = tokens(99)
    with torch.no_grad():
        before = model(x).logits
    names = list(method.masks.names)
    final = method.finalize()
    with torch.no_grad():
        assert torch.allclose(final(x).logits, before, atol=1e-5)
    params = dict(final.named_parameters())
    for name in names:
        module = final.get_submodule(name.rpartition(".")[0])
        w = linear_view(params[name].detach(), type(module).__name__ == "Conv1D")
        assert (w.ne(0).reshape(w.shape[0], -1, 4).sum(-1) <= 2).all(), name
    path = tmp_path / "model.safetensors"
    save_compact(final, path)
    fresh = build(5)
    state = load_compact(path)
    assert bool(restore_slorb(fresh, state)) == slorb
    load_compact(path, fresh)
    fresh.eval()
    with torch.no_grad():
        assert torch.allclose(fresh(x).logits, before, atol=1e-5)


def test_compact_file_is_smaller_than_dense(tmp_path) -> None:
    _, method = _trained(tiny_llama, False)
    final = method.finalize()
    save_compact(final, tmp_path / "sparse.safetensors")
    dense = tiny_llama(0)
    save_compact(dense, tmp_path / "dense.safetensors")
    sparse_bytes = (tmp_path / "sparse.safetensors").stat().st_size
    assert sparse_bytes < (tmp_path / "dense.safetensors").stat().st_size


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU error path")
def test_semi_structured_raises_cleanly_on_cpu() -> None:
    _, method = _trained(tiny_gpt2, True)
    final = method.finalize()
    types = [type(m) for m in final.modules()]
    with pytest.raises(RuntimeError, match="CUDA"):
        to_semi_structured(final)
    assert [type(m) for m in final.modules()] == types  # untouched


@pytest.mark.skipif(not torch.cuda.is_available(), reason="semi-structured sparsity needs CUDA")
def test_semi_structured_on_cuda_keeps_outputs() -> None:  # pragma: no cover - GPU only
    from sparsecore.bench.models import tiny_gpt2 as build

    model = build(seed=0, vocab_size=256, n_embd=128, n_layer=1, n_head=2, n_positions=64)
    method = AdaptiveSparseTrainer(distill=False, slorb_k=16).setup(model)
    final = method.finalize().cuda().half().eval()
    x = torch.randint(0, 256, (4, 64), device="cuda")
    with torch.no_grad():
        before = final(x).logits.float()
    converted = to_semi_structured(final)
    assert converted
    with torch.no_grad():
        after = final(x).logits.float()
    assert torch.allclose(after, before, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("pattern", "unstructured", ValueError),
        ("pattern", "channel", ValueError),
        ("mask_metric", "taylor", ValueError),
        ("mask_update_every", 0, ValueError),
        ("mask_update_every", 2.5, TypeError),
        ("srste_decay", -1.0, ValueError),
        ("srste_decay", "big", TypeError),
        ("increase_steps", -3, ValueError),
        ("temperature", 0.0, ValueError),
        ("alpha_kl", float("nan"), ValueError),
        ("distill", 1, TypeError),
        ("slorb_k", 0, ValueError),
        ("slorb_init", "normal", ValueError),
    ],
)
def test_bad_options_name_the_parameter(option: str, value: object, error: type) -> None:
    with pytest.raises(error, match=option):
        ASTConfig(**{option: value})


def test_pattern_must_run_along_input_dimension() -> None:
    from sparsecore import NM

    with pytest.raises(ValueError, match="pattern"):
        ASTConfig(pattern=NM(2, 4, dim=0))
    assert ASTConfig(pattern="1:4").pattern == NM(1, 4)


def test_non_linear_target_and_bad_width_raise_before_touching_model() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(6, 4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"1\.weight"):
        AdaptiveSparseTrainer(targets=("1.weight",), slorb=False).setup(model)
    with pytest.raises(ValueError, match=r"2\.weight"):
        AdaptiveSparseTrainer(targets=("2.weight",), slorb=False).setup(model)
    with pytest.raises(ValueError, match=r"targets: AST prunes Linear"):
        AdaptiveSparseTrainer(targets=("1.weight",), slorb=False).setup(
            nn.Sequential(nn.Linear(4, 4), nn.Conv2d(4, 4, 1))
        )
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_one_four_pattern_keeps_one_per_group() -> None:
    model = tiny_llama(0)
    method = AdaptiveSparseTrainer(pattern="1:4", distill=False, slorb=False).setup(model)
    assert method.masks.sparsity() == 0.75
    for mask in method.masks.masks().values():
        assert (mask.reshape(mask.shape[0], -1, 4).sum(-1) == 1).all()
