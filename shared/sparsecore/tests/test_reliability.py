"""Hostile-user probes kept as tests (issue 18): layer floors, meta models, errors before setup,
compact-checkpoint integrity, `sparse report` on compact files, NaN-safe masking."""

from __future__ import annotations

import json
import math
import struct
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from sparsecore import GMP, IMP, SNIP, OneShotMagnitude, RandomPruning
from sparsecore.evaluation import SparsityReport, load_checkpoint
from sparsecore.export import load_compact, save_compact
from sparsecore.select import keep_count, select_global
from sparsecore.testing import tiny_mlp

torch.set_num_threads(1)


def _lopsided_mlp() -> nn.Module:
    """The conformance MLP with later layers much smaller in magnitude (global ranking bait)."""
    model = tiny_mlp()
    with torch.no_grad():
        model[2].weight.mul_(1e-2)
        model[4].weight.mul_(1e-3)
    return model


# ---------------------------------------------------------------- layer floor (item 3)
@pytest.mark.parametrize(
    "make",
    [
        lambda: OneShotMagnitude(sparsity=0.99, scope="global"),
        lambda: IMP(sparsity=0.99),
        lambda: GMP(sparsity=0.99, scope="global", initial_sparsity=0.99, end_step=10),
    ],
)
def test_global_selection_keeps_every_layer(make) -> None:
    method = make().setup(_lopsided_mlp())
    nnz = method.masks.nnz()
    assert all(n >= 1 for n in nnz.values()), nnz
    total = sum(m.numel() for m in method.masks.masks().values())
    assert sum(nnz.values()) == keep_count(total, 0.01)  # the exact total still holds


def test_layer_floor_opt_out_is_the_plain_ranking() -> None:
    nnz = OneShotMagnitude(sparsity=0.99, scope="global", min_per_layer=0)
    nnz = nnz.setup(_lopsided_mlp()).masks.nnz()
    assert nnz["2.weight"] == 0 and nnz["4.weight"] == 0  # what the floor prevents


def test_select_global_floor_brute_force() -> None:
    gen = torch.Generator().manual_seed(3)
    scores = {
        "a": torch.rand(40, generator=gen) + 10,
        "b": torch.rand(7, generator=gen),
        "c": torch.rand(5, generator=gen),
    }
    for floor in (1, 2, 3):
        keeps = select_global(scores, 0.2, min_per_tensor=floor)
        budget = keep_count(52, 0.2)
        assert sum(int(k.sum()) for k in keeps.values()) == budget
        for name in ("b", "c"):  # the floor: exactly the top `floor` of each small tensor
            want = torch.zeros(scores[name].numel(), dtype=torch.bool)
            want[torch.argsort(scores[name], descending=True)[:floor]] = True
            assert torch.equal(keeps[name], want)
        rest = budget - 2 * floor  # the rest: the top of "a"
        assert torch.equal(
            keeps["a"], scores["a"] >= scores["a"].sort(descending=True)[0][rest - 1]
        )
    unconstrained = select_global(scores, 0.9, min_per_tensor=0)
    assert all(
        torch.equal(unconstrained[n], k) for n, k in select_global(scores, 0.9).items()
    )  # nobody below the floor: identical to the plain ranking


def test_select_global_floor_does_not_revive_excluded_entries() -> None:
    scores = {"a": torch.arange(10.0), "b": torch.full((4,), -math.inf)}
    keeps = select_global(scores, 0.3)
    assert not keeps["b"].any() and int(keeps["a"].sum()) == keep_count(14, 0.3)


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_min_per_layer_validated(bad) -> None:
    with pytest.raises((TypeError, ValueError), match="min_per_layer"):
        OneShotMagnitude(scope="global", min_per_layer=bad)


# ---------------------------------------------------------------- meta models (item 2)
@pytest.mark.parametrize("cls", [GMP, SNIP, OneShotMagnitude, RandomPruning])
def test_meta_model_refused_with_clear_error(cls) -> None:
    with torch.device("meta"):
        model = tiny_mlp()
    with pytest.raises(ValueError, match="meta device"):
        cls(sparsity=0.5).setup(model)
    assert not any(k.endswith("_mask") for k in model.state_dict())


# ---------------------------------------------------------------- errors (item 8)
def test_calibrate_before_setup_is_a_runtime_error() -> None:
    with pytest.raises(RuntimeError, match="setup"):
        SNIP(sparsity=0.5).calibrate([(torch.randn(2, 16), torch.tensor([0, 1]))])


@pytest.mark.parametrize(
    ("field", "value"), [("pattern", 42), ("targets", 42), ("exclude", 42), ("targets", [1])]
)
def test_pattern_and_targets_of_wrong_type_name_the_field(field: str, value: object) -> None:
    with pytest.raises(TypeError, match=field):
        OneShotMagnitude(**{field: value})


# ---------------------------------------------------------------- compact checkpoints (4, 5)
def _sparse_model() -> nn.Module:
    model = tiny_mlp()
    method = OneShotMagnitude(sparsity=0.9).setup(model)
    return method.finalize()


def test_report_reads_compact_checkpoints(tmp_path: Path) -> None:
    model = _sparse_model()
    path = tmp_path / "model.safetensors"
    save_compact(model, path)
    report = SparsityReport.from_state_dict(load_checkpoint(path))
    want = SparsityReport.from_state_dict(model.state_dict())
    assert [r.nnz for r in report.tensors] == [r.nnz for r in want.tensors]
    assert report.sparsity == pytest.approx(want.sparsity) and report.sparsity > 0.89


def _header_span(data: bytes) -> tuple[int, int]:
    (length,) = struct.unpack("<Q", data[:8])
    return 8, 8 + length


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@given(position=st.floats(0.0, 1.0, exclude_max=True), byte=st.integers(1, 255))
def test_corrupted_compact_file_raises_or_loads_identical(
    tmp_path: Path, position: float, byte: int
) -> None:
    """Any single byte changed anywhere: a ValueError, or exactly the saved tensors."""
    path = tmp_path / "model.safetensors"
    if not path.exists():
        save_compact(_sparse_model(), path)
    good = path.read_bytes()
    original = load_compact(path)
    index = int(position * len(good))
    bad = bytearray(good)
    bad[index] ^= byte
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(bytes(bad))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a renamed "digests" key: unverified
            loaded = load_compact(corrupt)
    except ValueError:
        return
    assert loaded.keys() == original.keys()
    for key, value in original.items():
        assert value.dtype == loaded[key].dtype and torch.equal(value, loaded[key]), key


def test_flipped_value_byte_names_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_compact(_sparse_model(), path)
    data = bytearray(path.read_bytes())
    _, end = _header_span(bytes(data))
    data[end + 5] ^= 0x10  # inside the first stored tensor
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        load_compact(path)


def test_digest_less_checkpoint_loads_with_a_warning(tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    model = _sparse_model()
    save_compact(model, path)
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
        raw = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    header = json.loads(meta["sparsecore"])
    del header["digests"]
    old = tmp_path / "old.safetensors"
    save_file(raw, str(old), metadata={"sparsecore": json.dumps(header)})
    with pytest.warns(UserWarning, match="digests"):
        state = load_compact(old)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------- NaN-safe masking (item 6)
def test_inf_gradient_on_a_pruned_entry_stays_out_of_the_weights() -> None:
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    method = OneShotMagnitude(sparsity=0.5).setup(model, opt)
    pruned = ~method.masks.mask("0.weight")
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, 16)).sum().backward()
        model[0].weight.grad[pruned] = float("inf")
        opt.step()
    weight = model[0].weight
    assert torch.isfinite(weight).all() and not weight[pruned].any()
    model[0].weight.data[pruned] = float("inf")  # even a non-finite pruned value: finalize gives 0
    final = method.finalize()
    assert torch.isfinite(final[0].weight).all() and not final[0].weight[pruned].any()


@pytest.mark.parametrize("mode", ["ste", "soft"])
def test_ste_and_soft_forward_zero_pruned_inf(mode: str) -> None:
    from sparsecore.masks import MaskSet
    from sparsecore.targets import resolve_targets

    layer = nn.Linear(4, 2)
    keep = torch.tensor([[True, False, True, False], [False, True, True, True]])
    soft_fn = (lambda _name, w: keep.to(w.dtype)) if mode == "soft" else None
    masks = MaskSet(layer, resolve_targets(layer, ["weight"]), mode=mode, soft_fn=soft_fn)
    masks.update("weight", keep)
    with torch.no_grad():
        masks.param("weight")[~keep] = float("inf")
    out = layer(torch.ones(3, 4))
    assert torch.isfinite(out).all()
    assert torch.equal(layer.weight, masks.param("weight").detach().masked_fill(~keep, 0))
    out.sum().backward()
    grad = masks.param("weight").grad
    assert grad is not None and not torch.isnan(grad).any()
    if mode == "ste":  # straight-through: the dense gradient reaches pruned entries
        assert torch.equal(grad, torch.full((2, 4), 3.0))
