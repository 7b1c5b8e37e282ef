"""DynST's paper-specific properties: one mask for all timestamps, exact counts, masked sensors
contribute nothing, gradient regrowth against a brute-force reference, noise sensors pruned first,
export, and clear errors on bad input."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from sparse_dynst import (
    DynST,
    GraphForecaster,
    GridConvForecaster,
    SensorGate,
    advection_diffusion_grid,
    diffusion_graph,
    dimension_map,
    stream_morph,
)

torch.set_num_threads(1)


class Recorder(nn.Module):
    """Identity backbone that remembers what it was fed."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.detach().clone()
        return x * self.scale


def grid_model(seed: int = 0, size: int = 6, t: int = 3) -> SensorGate:
    torch.manual_seed(seed)
    return SensorGate(
        GridConvForecaster(t, 2, channels=2, hidden=8, layers=2), "grid", (size, size)
    )


def graph_model(seed: int = 0, n: int = 10, t: int = 3) -> SensorGate:
    torch.manual_seed(seed)
    adj = (torch.rand(n, n, generator=torch.Generator().manual_seed(seed)) > 0.6).float()
    return SensorGate(GraphForecaster(adj + adj.T, t, 2, channels=2, hidden=8), "graph", n)


def grid_batch(step: int, b: int = 8, size: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(step)
    return torch.randn(b, 3, 2, size, size, generator=gen), torch.randn(
        b, 2, 2, size, size, generator=gen
    )


def graph_batch(step: int, b: int = 8, n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(step)
    return torch.randn(b, 3, n, 2, generator=gen), torch.randn(b, 2, n, 2, generator=gen)


def train(model, method, batch_fn, steps, on_step=None):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    method.setup(model, opt)
    for step in range(steps):
        x, y = batch_fn(step)
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        if on_step is not None:
            on_step(method)
        opt.step()
    return opt


# --------------------------------------------------------------------------- stream morph
@pytest.mark.parametrize("layout", ["grid", "graph"])
def test_stream_morph_round_trip(layout: str) -> None:
    x = torch.randn(2, 3, 4, 5, 6) if layout == "grid" else torch.randn(2, 3, 7, 4)
    steps, channels = x.shape[1], (x.shape[2] if layout == "grid" else x.shape[3])
    z = stream_morph(x, layout)
    assert z.shape[1] == steps * channels
    assert torch.equal(dimension_map(z, layout, steps, channels), x)


@pytest.mark.parametrize("layout", ["grid", "graph"])
def test_mask_identical_across_timestamps_and_channels(layout: str) -> None:
    rec = Recorder()
    spatial = (5, 4) if layout == "grid" else (9,)
    model = SensorGate(rec, layout, spatial)
    method = DynST(sparsity=0.5, init="random", dynamic=False, seed=3)
    method.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    with torch.no_grad():
        model.sensor_gate.mul_(torch.rand(spatial) + 0.5)  # non-trivial gate values
    x = torch.ones(2, 4, 3, *spatial) if layout == "grid" else torch.ones(2, 4, 9, 3)
    for ctx in (torch.enable_grad, torch.no_grad):
        with ctx():
            model(x)
        seen = rec.seen
        assert seen is not None
        slices = (
            [seen[:, t, c] for t in range(4) for c in range(3)]
            if layout == "grid"
            else [seen[:, t, :, c] for t in range(4) for c in range(3)]
        )
        expected = (model.sensor_gate * method.mask).detach()
        for part in slices:  # every timestamp and channel sees the same spatial gate
            assert torch.equal(part, expected.expand_as(part))
        assert torch.equal(slices[0][0] != 0, method.mask)


# --------------------------------------------------------------------------- exact counts
@pytest.mark.parametrize("layout", ["grid", "graph"])
def test_active_count_after_every_prune_and_regrow(layout: str) -> None:
    model = grid_model() if layout == "grid" else graph_model()
    batch_fn = grid_batch if layout == "grid" else graph_batch
    n = model.num_sensors
    sparsity = 0.7
    method = DynST(
        sparsity=sparsity, prune_end=12, regrow_end=30, update_every=3, drop_fraction=0.5
    )
    history = []
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    method.setup(model, opt)
    for step in range(30):
        x, y = batch_fn(step)
        before = method.sensor_mask()
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        history.append((method.step, before, method.sensor_mask()))
    changed_by_regrow = 0
    for step, before, after in history:
        active = int(after.sum())
        if method.is_prune_step(step):
            s_t = method.config.schedule(step)
            assert active == max(1, math.floor((1 - s_t) * n + 1e-6))
        elif method.is_regrow_step(step):
            assert active == math.floor((1 - sparsity) * n + 1e-6)
            changed_by_regrow += int(not torch.equal(before, after))
        else:
            assert torch.equal(before, after)  # no change between updates
    assert int(method.mask.sum()) == math.floor((1 - sparsity) * n + 1e-6)
    assert changed_by_regrow > 0  # cycles really swapped sensors


# --------------------------------------------------------------------------- masked sensors
@pytest.mark.parametrize("layout", ["grid", "graph"])
def test_masked_sensors_contribute_nothing(layout: str) -> None:
    model = grid_model() if layout == "grid" else graph_model()
    batch_fn = grid_batch if layout == "grid" else graph_batch
    method = DynST(sparsity=0.6, prune_end=6, regrow_end=12, update_every=2)
    train(model, method, batch_fn, 12)
    off = ~method.mask
    assert off.any()
    x, _ = batch_fn(99)
    spatial_off = off if layout == "grid" else off.unsqueeze(-1)
    noise = torch.randn_like(x) * 100
    x2 = torch.where(off if layout == "grid" else spatial_off, noise, x)
    assert not torch.equal(x, x2)
    for ctx in (torch.enable_grad, torch.no_grad):
        with ctx():
            assert torch.equal(model(x), model(x2))
    with torch.no_grad():  # undeployed sensors may even be NaN at inference
        x3 = torch.where(off if layout == "grid" else spatial_off, float("nan"), x)
        assert torch.equal(model(x3), model(x))
    # gradient check: the output does not depend on a masked sensor's input at all
    xg = x.clone().requires_grad_(True)
    model(xg).sum().backward()
    grad = xg.grad
    masked_grad = grad[..., off] if layout == "grid" else grad[:, :, off, :]
    active_grad = grad[..., ~off] if layout == "grid" else grad[:, :, ~off, :]
    assert torch.equal(masked_grad, torch.zeros_like(masked_grad))
    assert active_grad.abs().sum() > 0


# --------------------------------------------------------------------------- regrowth
def test_regrowth_picks_top_gradient_inactive_sensors_brute_force() -> None:
    model = graph_model(seed=1, n=12)
    method = DynST(
        sparsity=0.5,
        init="random",
        prune_end=1,
        regrow_end=50,
        update_every=2,
        drop_fraction=0.5,
        seed=4,
    )
    grads: list[torch.Tensor] = []
    gates: list[torch.Tensor] = []

    def capture(m: DynST) -> None:  # after backward, before the optimizer: dense gradient
        grads.append(m.gate.grad.detach().clone().double())
        gates.append(m.gate.detach().clone().double())

    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    method.setup(model, opt)
    masks = [method.sensor_mask()]
    for step in range(3):  # steps 1, 2, 3: the cycle runs after step 3 ((3 - 1) % 2 == 0)
        x, y = graph_batch(step, n=12)
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        capture(method)
        opt.step()
        masks.append(method.sensor_mask())
    assert torch.equal(masks[0], masks[2])  # no update before step 3
    before, after = masks[2].tolist(), masks[3].tolist()
    # brute force: importance and regrowth score are means over the 3 steps since setup
    imp = [
        sum(abs(g[i] * s[i]).item() for g, s in zip(grads, gates, strict=True)) / 3
        for i in range(12)
    ]
    grw = [sum(abs(g[i]).item() for g in grads) / 3 for i in range(12)]
    active = [i for i in range(12) if before[i]]
    frac = method.drop_fraction_at(3)
    k = math.floor(frac * len(active))
    assert k >= 1
    dropped = sorted(active, key=lambda i: (imp[i], -i))[:k]
    survivors = [i for i in active if i not in dropped]
    inactive = [i for i in range(12) if i not in survivors]
    grown = sorted(inactive, key=lambda i: (-grw[i], i))[:k]
    expected = sorted(survivors + grown)
    assert [i for i in range(12) if after[i]] == expected
    # regrown sensors restart with gate 1
    for i in grown:
        if not before[i]:
            assert method.gate[i].item() == 1.0


def test_calibrate_keeps_top_gradient_sensors() -> None:
    model = grid_model(seed=2)
    method = DynST(sparsity=0.75, init="random", dynamic=False, seed=0)
    method.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    batches = [grid_batch(s) for s in range(3)]
    score = torch.zeros(6, 6, dtype=torch.float64)
    ref = copy.deepcopy(model)
    with torch.no_grad():
        ref.sensor_gate.fill_(1.0)  # brute force: every sensor on, gate 1
    for x, y in batches:
        ref.zero_grad()
        nn.functional.mse_loss(ref.model(x * ref.sensor_gate), y).backward()
        score += ref.sensor_gate.grad.abs().double()
    with torch.no_grad():
        model.sensor_gate.fill_(1.0)
    method.calibrate(batches)
    flat = score.reshape(-1).tolist()
    keep = sorted(sorted(range(36), key=lambda i: (-flat[i], i))[:9])
    assert [i for i in range(36) if method.mask.reshape(-1)[i]] == keep


# --------------------------------------------------------------------------- noise sensors
def test_noise_block_sensors_are_pruned_first() -> None:
    data = advection_diffusion_grid(
        train=256, test=32, size=8, noise_block=4, seed=0, velocity=(0.6, 0.4)
    )
    torch.manual_seed(0)
    model = SensorGate(GridConvForecaster(4, 4, hidden=8, layers=3), "grid", (8, 8))
    n_noise = int(data.noise_mask.sum())  # 16 of 64
    method = DynST(
        sparsity=n_noise / 64,
        prune_begin=8,
        prune_end=48,
        update_every=8,
        drop_fraction=0.0,
        regrow_end=48,
    )
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    method.setup(model, opt)
    for step in range(48):
        idx = torch.arange(step * 32, step * 32 + 32) % 256
        loss = nn.functional.mse_loss(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    removed = method.removal_order[:n_noise]
    assert len(removed) == n_noise
    in_noise = sum(bool(data.noise_mask.reshape(-1)[i]) for i in removed)
    assert in_noise >= 0.8 * n_noise, (in_noise, n_noise)


def test_graph_generator_noise_nodes_are_uninformative() -> None:
    data = diffusion_graph(train=64, test=16, nodes=12, seed=1)
    assert data.x_train.shape == (64, 4, 12, 1) and data.y_train.shape == (64, 4, 12, 1)
    assert int(data.noise_mask.sum()) == 3
    again = diffusion_graph(train=64, test=16, nodes=12, seed=1)
    assert torch.equal(data.x_train, again.x_train)  # seeded
    # the noise nodes' inputs are uncorrelated with their own targets
    xn = data.x_train[:, -1, data.noise_mask, 0].reshape(-1)
    yn = data.y_train[:, 0, data.noise_mask, 0].reshape(-1)
    xs = data.x_train[:, -1, ~data.noise_mask, 0].reshape(-1)
    ys = data.y_train[:, 0, ~data.noise_mask, 0].reshape(-1)
    corr = lambda a, b: torch.corrcoef(torch.stack([a, b]))[0, 1].abs().item()  # noqa: E731
    assert corr(xn, yn) < 0.3 < corr(xs, ys)


# --------------------------------------------------------------------------- export
@pytest.mark.parametrize("layout", ["grid", "graph"])
def test_exported_sensors_match_mask_and_model_predicts_everywhere(layout: str) -> None:
    model = grid_model() if layout == "grid" else graph_model()
    batch_fn = grid_batch if layout == "grid" else graph_batch
    method = DynST(sparsity=0.5, prune_end=4, regrow_end=8, update_every=2)
    train(model, method, batch_fn, 8)
    sensors = method.deployed_sensors()
    mask = method.sensor_mask()
    assert len(sensors) == int(mask.sum()) == math.floor(0.5 * mask.numel())
    rebuilt = torch.zeros_like(mask)
    for s in sensors:
        rebuilt[s] = True
    assert torch.equal(rebuilt, mask)
    x, y = batch_fn(5)
    with torch.no_grad():
        before = model(x)
    final = method.finalize()
    assert not any(k.endswith("_mask") for k in final.state_dict())
    with torch.no_grad():
        after = final(x)
    assert after.shape == y.shape  # every location is still predicted
    assert torch.equal(before, after)
    assert torch.equal(final.sensor_mask, mask)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad", [-0.1, 1.0, 2.0, float("nan")])
def test_bad_sparsity(bad: float) -> None:
    with pytest.raises(ValueError, match="sparsity"):
        DynST(sparsity=bad)


@pytest.mark.parametrize(
    ("field", "value", "exc"),
    [
        ("init", "zeros", ValueError),
        ("importance", "random", ValueError),
        ("prune_end", 0, ValueError),
        ("regrow_end", 1, ValueError),
        ("update_every", 0, ValueError),
        ("drop_fraction", 1.5, ValueError),
        ("initial_sparsity", 0.95, ValueError),
        ("learn_gate", 1, TypeError),
        ("power", 0, ValueError),
    ],
)
def test_bad_config_names_the_field(field: str, value: object, exc: type) -> None:
    kwargs = {"sparsity": 0.9, "prune_end": 10, "regrow_end": 20, field: value}
    with pytest.raises(exc, match=field):
        DynST(**kwargs)


def test_dynamic_false_needs_a_fixed_subset() -> None:
    with pytest.raises(ValueError, match="dynamic"):
        DynST(sparsity=0.5, dynamic=False)


@pytest.mark.parametrize(
    ("layout", "shape", "label"),
    [
        ("grid", (2, 3, 2, 5, 6), "H"),
        ("grid", (2, 3, 2, 6, 7), "W"),
        ("graph", (2, 3, 9, 2), "N"),
    ],
)
def test_shape_mismatch_names_the_dimension(layout: str, shape: tuple, label: str) -> None:
    model = grid_model() if layout == "grid" else graph_model()
    with pytest.raises(ValueError, match=f"dimension {label}"):
        model(torch.randn(shape))


def test_wrong_rank_and_bad_wrapper_arguments() -> None:
    with pytest.raises(ValueError, match="5-D"):
        grid_model()(torch.randn(2, 3, 6, 6))
    with pytest.raises(ValueError, match="layout"):
        SensorGate(nn.Identity(), "video", (4, 4))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="spatial_shape"):
        SensorGate(nn.Identity(), "grid", 16)
    with pytest.raises(TypeError, match="model"):
        SensorGate("net", "graph", 4)  # type: ignore[arg-type]


def test_setup_without_sensor_gate_raises_before_touching_model() -> None:
    plain = nn.Sequential(nn.Linear(4, 4))
    state = copy.deepcopy(plain.state_dict())
    with pytest.raises(ValueError, match="sensor_gate"):
        DynST(sparsity=0.5).setup(plain)
    assert plain.state_dict().keys() == state.keys()

    class Fake(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.sensor_gate = nn.Parameter(torch.ones(4))

    fake = Fake()
    with pytest.raises(ValueError, match="SensorGate"):
        DynST(sparsity=0.5).setup(fake)
    assert not hasattr(fake, "sensor_gate_mask")
    two = nn.ModuleDict({"a": graph_model(), "b": graph_model()})
    with pytest.raises(ValueError, match="exactly one"):
        DynST(sparsity=0.5).setup(two)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_step() -> None:
    model = graph_model().cuda()
    method = DynST(sparsity=0.5, prune_end=2, regrow_end=4, update_every=1)
    train(model, method, lambda s: tuple(t.cuda() for t in graph_batch(s)), 4)
    assert int(method.mask.sum()) == 5


@pytest.mark.parametrize(
    ("steps", "field"), [(8, "prune_end=12"), (20, "regrow_end=30"), (30, None)]
)
def test_finalize_warns_until_prune_and_regrow_phases_end(steps: int, field: str | None) -> None:
    import warnings

    from sparsecore.window import ScheduleIncompleteWarning

    model = grid_model()
    method = DynST(sparsity=0.7, prune_end=12, regrow_end=30, update_every=5, drop_fraction=0.5)
    train(model, method, grid_batch, steps)
    assert method.schedule_complete == (field is None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ScheduleIncompleteWarning)
        method.finalize()
    messages = [str(w.message) for w in caught if w.category is ScheduleIncompleteWarning]
    assert len(messages) == (0 if field is None else 1)
    assert field is None or field in messages[0]


# --------------------------------------------------------------------------- dimensional mapping
@pytest.mark.parametrize("layout", ["grid", "graph"])
def test_dimensional_mapping_differs_from_broadcasting_but_keeps_sensors_off(layout: str) -> None:
    """Issue 25: with a learned Φ the wrapper is not the gate broadcast over time."""
    rec = Recorder()
    spatial = (5, 4) if layout == "grid" else (9,)
    model = SensorGate(rec, layout, spatial, history=(4, 3))
    method = DynST(sparsity=0.5, init="random", dynamic=False, seed=3)
    method.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 3, *spatial, generator=gen)
    if layout == "graph":
        x = torch.randn(2, 4, 9, 3, generator=gen)
    gate = (model.sensor_gate * method.mask).detach()
    broadcast = dimension_map(stream_morph(x, layout) * gate, layout, 4, 3)
    with torch.no_grad():
        assert torch.equal(model(x), broadcast)  # Φ = I at init: broadcasting
        model.dimension_mapping.copy_(torch.randn(12, 12, generator=gen))
        mapped = model(x)
    assert (mapped - broadcast).abs().max() > 1e-2  # a real mapping across timestamps
    off = ~method.mask
    sensor_axis = (3, 4) if layout == "grid" else (2,)
    moved = mapped.movedim(sensor_axis, tuple(range(len(sensor_axis))))
    assert torch.all(moved[off] == 0)  # deactivated sensors stay zero at every timestamp
    garbage = x.clone()
    if layout == "grid":
        garbage[:, :, :, off] = float("nan")
    else:
        garbage[:, :, off, :] = float("nan")
    with torch.no_grad():
        assert torch.equal(model(garbage), mapped)  # ... and are never read


def test_dimensional_mapping_is_trained() -> None:
    torch.manual_seed(0)
    model = SensorGate(
        GridConvForecaster(3, 2, channels=2, hidden=8, layers=2), "grid", (6, 6), history=(3, 2)
    )
    method = DynST(sparsity=0.5, init="random", dynamic=False, seed=1)
    train(model, method, grid_batch, 5)
    assert not torch.allclose(model.dimension_mapping, torch.eye(6))
    with pytest.raises(ValueError, match="history"):
        model(torch.zeros(1, 4, 2, 6, 6))
    with pytest.raises(ValueError, match="history"):
        SensorGate(nn.Identity(), "grid", (6, 6), history=(3, 0))


@pytest.mark.parametrize("layout", ["grid", "graph"])
def test_forward_active_reads_only_active_sensors(layout: str) -> None:
    model = grid_model() if layout == "grid" else graph_model()
    method = DynST(sparsity=0.6, init="random", dynamic=False, seed=2)
    method.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    x, _ = grid_batch(0) if layout == "grid" else graph_batch(0)
    index = model.active_index()
    assert index.numel() == math.floor(0.4 * model.num_sensors)
    # (B, T, C, k) for a grid, (B, T, k, C) for a graph
    readings = x.flatten(3)[..., index] if layout == "grid" else x[:, :, index, :]
    model.eval()
    with torch.no_grad():
        full = model(x)
        skipped = model.forward_active(readings)
    assert torch.allclose(full, skipped, atol=1e-6)
    assert readings.numel() / x.numel() == pytest.approx(index.numel() / model.num_sensors)
    with pytest.raises(ValueError, match="readings"):
        model.forward_active(x.flatten(3) if layout == "grid" else x)
