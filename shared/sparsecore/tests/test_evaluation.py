"""Sparsity reports, FLOP and parameter counters, latency probe, comparison protocol."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sparsecore import NM, OneShotMagnitude, RigL, Unstructured
from sparsecore.bench import make_model, task_spec, tiny_bert, tiny_gpt2, tiny_llama
from sparsecore.evaluation import (
    FlopCount,
    LatencyResult,
    Row,
    SparsityReport,
    check_protocol,
    compare_latency,
    count_flops,
    count_params,
    failed_row,
    format_table,
    measure_latency,
    over_seeds,
    plot_rows,
    scratch_budgets,
    snapshot,
    write_results,
)

torch.set_num_threads(1)


def reference_macs(model: nn.Module, *args: object, **kwargs: object) -> int:
    """MACs by torch's own FLOP counter (train mode: no fused MHA fast path)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(*args, **kwargs)
    return counter.get_total_flops() // 2


# ---------------------------------------------------------------------- FLOPs
def test_linear_flops_dense_and_effective() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(30, 20)
    x = torch.randn(7, 30)
    flops = count_flops(layer, x)
    assert isinstance(flops, FlopCount)
    assert flops.dense == 7 * 30 * 20 and flops.effective == flops.dense
    method = OneShotMagnitude(sparsity=0.9).setup(layer)
    nnz = method.masks.nnz()["weight"]
    assert nnz == 60
    masked = count_flops(layer, x)
    assert masked.dense == 7 * 30 * 20
    assert masked.effective == nnz * 7
    assert masked.ratio == pytest.approx(0.1)


def test_linear_on_sequences_counts_every_row() -> None:
    layer = nn.Linear(8, 4)
    assert count_flops(layer, torch.randn(2, 5, 8)).dense == 2 * 5 * 8 * 4


def test_conv_flops_formula() -> None:
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, groups=1)
    x = torch.randn(2, 3, 9, 9)
    out = conv(x)
    positions = out.shape[0] * out.shape[2] * out.shape[3]
    assert count_flops(conv, x).dense == positions * conv.weight.numel()
    grouped = nn.Conv1d(4, 8, 3, groups=2)
    x1 = torch.randn(3, 4, 10)
    assert count_flops(grouped, x1).dense == 3 * 8 * grouped.weight.numel()
    with torch.no_grad():
        grouped.weight[:, :, 0] = 0
    assert count_flops(grouped, x1).effective == 3 * 8 * int((grouped.weight != 0).sum())


@pytest.mark.parametrize(
    ("name", "task"), [("mlp", "mnist1d"), ("convbase", "mnist1d"), ("resnet", "digits")]
)
def test_model_flops_match_torch_counter(name: str, task: str) -> None:
    spec = task_spec(task)
    model = make_model(name, spec).eval()
    x = torch.randn(4, *spec.input_shape)
    assert count_flops(model, x).dense == reference_macs(model, x)


def test_attention_flops_match_torch_counter() -> None:
    mha = nn.MultiheadAttention(32, 4, kdim=16, vdim=8)
    q, k, v = torch.randn(5, 2, 32), torch.randn(7, 2, 16), torch.randn(7, 2, 8)
    assert count_flops(mha, (q, k, v)).dense == reference_macs(mha, q, k, v)
    ids = torch.randint(0, 1000, (2, 12))
    for build in (tiny_bert, tiny_gpt2, tiny_llama):
        model = build().eval()
        flops = count_flops(model, {"input_ids": ids})
        assert flops.dense == reference_macs(model, input_ids=ids), build.__name__
    # the attention matmuls are part of it: 2 layers x 2 matmuls x B*L*L*hidden
    names = [n for n in flops.by_module if n.endswith("self_attn")]
    assert len(names) == 2 and flops.by_module[names[0]] == (2 * 2 * 12 * 12 * 64,) * 2


def test_physically_smaller_model_has_smaller_dense_count() -> None:
    spec = task_spec("mnist1d")
    x = torch.randn(1, 40)
    narrow = count_flops(make_model("mlp", spec, width=64), x).dense
    assert narrow < count_flops(make_model("mlp", spec, width=128), x).dense


def test_count_params_uses_masks_and_dedupes_tied_weights() -> None:
    model = make_model("mlp", task_spec("mnist1d"), width=16)
    total, nonzero = count_params(model)
    assert total == sum(p.numel() for p in model.parameters()) == nonzero
    OneShotMagnitude(sparsity=0.5).setup(model)
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    _, after = count_params(model)
    assert after == total - weights // 2
    tied = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10, bias=False))
    tied[1].weight = tied[0].weight
    assert count_params(tied) == (40, 40)


# ---------------------------------------------------------------------- report
def test_report_from_masks_counts_and_changes() -> None:
    model = make_model("mlp", task_spec("mnist1d"), width=32)
    method = RigL(sparsity=0.75, update_every=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    method.setup(model, opt)
    before = snapshot(method.masks)
    report = SparsityReport.from_masks(method.masks)
    assert report.nnz == sum(method.masks.nnz().values())
    assert [t.nnz for t in report.tensors] == list(method.masks.nnz().values())
    assert report.sparsity == pytest.approx(method.masks.sparsity())
    assert report.valid and report.changed is None
    loss = model(torch.randn(16, 40)).square().mean()
    loss.backward()
    opt.step()  # one RigL update: drops and regrows 30% of each layer's active weights
    after = SparsityReport.from_masks(method, previous=before)
    flipped = sum(int((before[n] != m).sum()) for n, m in method.masks.masks().items())
    assert flipped > 0
    assert after.changed == pytest.approx(flipped / after.numel)
    assert after.nnz == report.nnz  # RigL keeps nnz per layer
    with pytest.raises(TypeError, match="snapshot"):
        SparsityReport.from_masks(method.masks, previous=report)  # type: ignore[arg-type]
    text = str(after)
    assert "net.1.weight" in text and "total" in text and f"{after.nnz}" in text


def test_report_checks_pattern_validity() -> None:
    good = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 1]], dtype=torch.bool)
    bad = torch.tensor([[1, 1, 1, 0], [0, 1, 0, 1]], dtype=torch.bool)
    model = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(good.float())
    assert SparsityReport.from_model(model, NM(2, 4)).valid
    with torch.no_grad():
        model.weight.copy_(bad.float())
    report = SparsityReport.from_model(model, NM(2, 4))
    assert not report.valid and not report["weight"].valid
    assert "NO" in str(report)
    assert SparsityReport.from_masks({"w": bad}).valid  # unstructured: anything goes
    method = OneShotMagnitude(sparsity=0.5, pattern="2:4").setup(nn.Linear(8, 4))
    assert SparsityReport.from_masks(method.masks).tensors[0].pattern == "2:4"
    assert SparsityReport.from_masks(method.masks).valid


def test_report_from_state_dict_uses_mask_entries() -> None:
    model = make_model("mlp", task_spec("mnist1d"), width=16)
    method = OneShotMagnitude(sparsity=0.8).setup(model)
    report = SparsityReport.from_state_dict(model.state_dict())
    assert report.nnz == sum(method.masks.nnz().values())
    assert report.to_dict()["tensors"][0]["name"] == "net.1.weight"
    json.dumps(report.to_dict())
    with pytest.raises(ValueError, match="no weight"):
        SparsityReport.from_state_dict({"bias": torch.zeros(3)})
    assert isinstance(Unstructured(), Unstructured)


# ---------------------------------------------------------------------- latency
def test_measure_latency_counts_calls_and_takes_the_median() -> None:
    calls = []
    result = measure_latency(lambda: calls.append(1), warmup=2, repeats=5)
    assert isinstance(result, LatencyResult)
    assert len(calls) == 7 and len(result.all_s) == 5
    assert result.median_s == sorted(result.all_s)[2]
    with pytest.raises(ValueError):
        measure_latency(lambda: None, repeats=0)


def test_compare_latency_is_interleaved_and_ratio_is_right() -> None:
    order: list[str] = []

    def slow() -> None:
        order.append("s")
        time.sleep(0.004)

    def fast() -> None:
        order.append("f")

    ratio = compare_latency(fast, slow, warmup=1, repeats=4)
    assert ratio < 0.5 and ratio.speedup > 2
    assert float(ratio) == pytest.approx(ratio.candidate.median_s / ratio.reference.median_s)
    assert order[2:] == ["f", "s", "s", "f", "f", "s", "s", "f"]


# ---------------------------------------------------------------------- protocol
def test_over_seeds_statistics_and_extras() -> None:
    values = {0: 0.5, 1: 0.7, 2: 0.6}
    row = over_seeds("x", [0, 1, 2], lambda s: (values[s], {"sparsity": 0.9, "wall_s": s}))
    assert isinstance(row, Row)
    assert row.mean == pytest.approx(0.6) and row.std == pytest.approx(0.1)
    assert row.seeds == [0.5, 0.7, 0.6] and row.sparsity == 0.9 and row.wall_s == 1.0
    assert math.isnan(row.flops_ratio)
    single = over_seeds("d", [3], lambda s: 0.25, sparsity=0.0, flops_ratio=1.0)
    assert single.std == 0.0 and single.flops_ratio == 1.0 and single.wall_s >= 0


def test_format_table_write_results_and_plot(tmp_path) -> None:
    rows = [
        Row("dense", 0.0, 1.0, "accuracy", 0.8, 0.01, [0.79, 0.8, 0.81], 2.0),
        Row("rigl", 0.9, 0.1, "accuracy", 0.7, 0.02, [0.68, 0.7, 0.72], 2.5),
        failed_row("broken", "it raised\nValueError", 0.9),
    ]
    table = format_table(rows)
    assert "0.8000 ± 0.0100" in table and "failed: it raised ValueError" in table
    assert len(table.splitlines()) == 5
    data = write_results(
        tmp_path / "r" / "out.json",
        method="rigl",
        task="mnist1d",
        claim="c",
        holds=True,
        rows=rows,
        command="cmd",
    )
    loaded = json.loads((tmp_path / "r" / "out.json").read_text())
    assert loaded == data
    assert set(loaded) >= {
        "method",
        "task",
        "claim",
        "holds",
        "rows",
        "command",
        "python",
        "torch",
        "machine",
    }
    assert set(loaded["rows"][0]) == {
        "variant",
        "sparsity",
        "flops_ratio",
        "metric",
        "mean",
        "std",
        "seeds",
        "wall_s",
    }
    assert loaded["rows"][2]["mean"] is None and loaded["rows"][2]["note"].startswith("failed")
    png = plot_rows(rows, tmp_path / "plot.png", "t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scratch_budgets_and_protocol_checks() -> None:
    assert scratch_budgets(10, pruned_flops=50, dense_flops=100) == (10, 20)
    assert scratch_budgets(10, pruned_flops=80, dense_flops=100) == (10, 13)
    assert scratch_budgets(10, pruned_flops=10, dense_flops=100) == (10, 20)  # capped at 2x
    assert scratch_budgets(10, 10, 100, max_factor=5) == (10, 50)
    assert scratch_budgets(10, 100, 100) == (10, 10)
    with pytest.raises(ValueError):
        scratch_budgets(0, 1, 1)
    with pytest.raises(ValueError):
        scratch_budgets(5, 0, 1)
    rows = [Row("rigl", 0.9, 0.1, "accuracy", 0.7, 0.0, [0.7], 1.0)]
    problems = check_protocol(rows)
    assert any("dense" in p for p in problems) and any("1 seed" in p for p in problems)
    rows = [Row(v, 0.5, 1.0, "accuracy", 0.7, 0.0, [0.7] * 3, 1.0) for v in ("dense", "rigl")]
    assert check_protocol(rows) == []
