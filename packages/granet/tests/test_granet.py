"""GraNet's paper-specific properties, checked against independent brute-force references."""

import math
from typing import Any

import pytest
import torch
from torch import nn

from sparse_granet import GraNet, global_magnitude_prune, regenerate_layer
from sparsecore import erk, keep_count

torch.set_num_threads(1)

D_F_SPARSITY = 0.9


def tanh_mlp(seed: int = 0) -> nn.Module:
    """Tanh activations: no dead units, so most dense gradient entries are distinct."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 4)
    )


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(step)
    return torch.randn(16, 16, generator=gen), torch.randint(0, 4, (16,), generator=gen)


def train(model: nn.Module, method: GraNet, opt: torch.optim.Optimizer, steps: int) -> None:
    for step in range(steps):
        x, y = batch(step)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def official_sparsity(c: int, c0: int, cf: int, d_i: float, d_f: float) -> float:
    """s_c as written in the official `Masking.pruning`."""
    decay = (1 - (c - c0) / (cf - c0)) ** 3
    return (1 - d_i) + (d_i - d_f) * (1 - decay)


class Recording(GraNet):
    """GraNet that snapshots its state before each of the two updates."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prunes: list[dict[str, Any]] = []
        self.regens: list[dict[str, Any]] = []

    def _snapshot(self) -> dict[str, Any]:
        opt = self.masks.optimizer
        return {
            "step": self.step,
            "w": {n: p.detach().clone() for n, p in self.masks.params().items()},
            "m": {n: m.clone() for n, m in self.masks.masks().items()},
            "mom": {
                n: opt.state[p]["momentum_buffer"].clone()
                for n, p in self.masks.params().items()
                if "momentum_buffer" in opt.state.get(p, {})
            },
        }

    def prune_to(self, sparsity: float) -> int:
        snap = self._snapshot()
        nnz = super().prune_to(sparsity)
        snap.update(sparsity=sparsity, after=self._snapshot())
        self.prunes.append(snap)
        return nnz

    def regenerate(self, fraction: float) -> dict[str, int]:
        snap = self._snapshot()
        snap["g"] = {n: g.clone() for n, g in (self.dense_grads or {}).items()}
        regrown = super().regenerate(fraction)
        snap.update(fraction=fraction, regrown=regrown, after=self._snapshot())
        self.regens.append(snap)
        return regrown


CASES = {
    "dense-to-sparse": {"init_density": 1.0},
    "sparse-to-sparse": {"init_density": 0.5},
    "late-start": {"init_density": 1.0, "begin_step": 10},
}


def run(case: str, steps: int = 60) -> tuple[nn.Module, Recording]:
    model = tanh_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    options = {"sparsity": D_F_SPARSITY, "update_every": 5, "end_step": 40, "total_steps": 60}
    method = Recording(**{**options, **CASES[case]}).setup(model, opt)
    train(model, method, opt, steps)
    return model, method


@pytest.fixture(scope="module", params=list(CASES))
def trained(request: pytest.FixtureRequest) -> tuple[str, nn.Module, Recording]:
    return (request.param, *run(request.param))


def test_pruning_steps_and_exact_global_nnz(trained: tuple[str, nn.Module, Recording]) -> None:
    """(a) Pruning runs at every ΔT step with c0 <= c <= cf; global nnz == floor(N (1 - s_c))."""
    case, _, method = trained
    cfg = method.config
    c0, cf = cfg.begin_step // 5, cfg.end_step // 5
    expected_steps = [c * 5 for c in range(max(c0, 1), cf + 1) if c * 5 >= cfg.begin_step]
    assert [p["step"] for p in method.prunes] == expected_steps
    total = sum(m.numel() for m in method.masks.masks().values())
    for prune in method.prunes:
        s_c = official_sparsity(prune["step"] // 5, c0, cf, cfg.init_density, 1 - D_F_SPARSITY)
        assert prune["sparsity"] == pytest.approx(s_c, abs=1e-12)
        before = sum(int(m.sum()) for m in prune["m"].values())
        after = sum(int(m.sum()) for m in prune["after"]["m"].values())
        # floor(N (1 - s_c)) up to float rounding of the product; masks never grow
        assert after == min(before, math.floor(total * (1 - s_c) + 1e-6)), case
    assert method.prunes[-1]["sparsity"] == pytest.approx(D_F_SPARSITY)


def test_pruning_keeps_global_top_k_of_active_magnitudes(
    trained: tuple[str, nn.Module, Recording],
) -> None:
    """(a) The kept set is the brute-force global top-k of |w| over active entries."""
    _, _, method = trained
    for prune in method.prunes:
        names = list(prune["w"])
        entries = [
            (float(prune["w"][n].reshape(-1)[i].abs()), n, i)
            for n in names
            for i in torch.nonzero(prune["m"][n].reshape(-1)).flatten().tolist()
        ]
        k = sum(int(m.sum()) for m in prune["after"]["m"].values())
        kept = {(n, i) for _, n, i in sorted(entries, key=lambda e: -e[0])[:k]}
        got = {
            (n, i)
            for n in names
            for i in torch.nonzero(prune["after"]["m"][n].reshape(-1)).flatten().tolist()
        }
        assert got == kept
        for n in names:  # pruned weights and their momentum are zeroed
            off = ~prune["after"]["m"][n]
            assert not prune["after"]["w"][n][off].any()
            if n in prune["after"]["mom"]:
                assert not prune["after"]["mom"][n][off].any()


def test_regeneration_matches_brute_force(trained: tuple[str, nn.Module, Recording]) -> None:
    """(b, c) nnz unchanged, #regrown = #dropped = ceil(p_t n), regrown set = top-r |grad|."""
    case, _, method = trained
    assert method.regens, case
    for regen in method.regens:
        for name, weight in regen["w"].items():
            mask, grad = regen["m"][name].reshape(-1), regen["g"][name].reshape(-1)
            w = weight.reshape(-1)
            n = int(mask.sum())
            r = math.ceil(regen["fraction"] * n)
            assert regen["regrown"][name] == r
            active = torch.nonzero(mask).flatten().tolist()
            # ties (e.g. |g| = 0 under a unit whose outputs are all pruned): lower index kept
            # first, higher index dropped first (sparsecore's rule)
            dropped = set(sorted(active, key=lambda i: (float(w[i].abs()), -i))[:r])
            candidates = [i for i in range(w.numel()) if not mask[i] or i in dropped]
            grown = set(sorted(candidates, key=lambda i: (-float(grad[i].abs()), i))[:r])
            assert any(float(grad[i]) != 0 for i in grown)
            expected = (set(active) - dropped) | grown
            new_mask = regen["after"]["m"][name].reshape(-1)
            assert set(torch.nonzero(new_mask).flatten().tolist()) == expected
            assert int(new_mask.sum()) == n


def test_regrown_weights_start_at_zero(trained: tuple[str, nn.Module, Recording]) -> None:
    """Newly grown weights are exactly 0 with zero momentum; survivors keep their values."""
    _, _, method = trained
    newly_grown = 0
    for regen in method.regens:
        after = regen["after"]
        for name, old in regen["m"].items():
            new = after["m"][name]
            grown = new & ~old
            newly_grown += int(grown.sum())
            assert not after["w"][name][grown].any()
            if name in after["mom"]:
                assert not after["mom"][name][grown].any()
                assert torch.equal(after["mom"][name][new & old], regen["mom"][name][new & old])
            # kept and dropped-then-regrown weights keep their exact values (official behaviour)
            assert torch.equal(after["w"][name][new & old], regen["w"][name][new & old])
            assert not after["w"][name][~new].any()
    assert newly_grown > 0


def test_fraction_follows_official_cosine_annealing() -> None:
    """(d) p_t equals torch's CosineAnnealingLR(0.5, T, eta_min=0.005) stepped t times."""
    _, method = run("dense-to-sparse")
    param = nn.Parameter(torch.zeros(1))
    sgd = torch.optim.SGD([param], lr=0.5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(sgd, T_max=60, eta_min=0.005)
    reference = {}
    for t in range(1, 61):
        sgd.step()
        sched.step()
        reference[t] = sgd.param_groups[0]["lr"]
    records = [h for h in method.history if h["fraction"] is not None]
    assert [h["step"] for h in records] == list(range(5, 61, 5))
    for h in records:
        closed = 0.005 + 0.5 * (0.5 - 0.005) * (1 + math.cos(math.pi * h["step"] / 60))
        assert h["fraction"] == pytest.approx(closed, abs=1e-12)
        assert h["fraction"] == pytest.approx(reference[h["step"]], abs=1e-9)
    assert method.fraction_at(10_000) == pytest.approx(0.005)


def test_regeneration_continues_after_final_pruning_step(
    trained: tuple[str, nn.Module, Recording],
) -> None:
    """Step (b) keeps running every ΔT after t_f; the sparsity stays at its target."""
    _, _, method = trained
    late = [h for h in method.history if h["step"] > method.config.end_step]
    assert [h["step"] for h in late] == [45, 50, 55, 60]
    target = sum(keep_count(m.numel(), 1.0) for m in method.masks.masks().values())
    target = math.floor(target * (1 - D_F_SPARSITY) + 1e-6)
    for h in late:
        assert h["sparsity"] is None and sum(h["regrown"].values()) > 0
        assert h["nnz"] == target


def test_regeneration_runs_after_pruning_on_the_same_step(
    trained: tuple[str, nn.Module, Recording],
) -> None:
    """At a pruning step, r is computed from the per-layer nnz *after* pruning."""
    _, _, method = trained
    by_step = {r["step"]: r for r in method.regens}
    for prune in method.prunes:
        regen = by_step[prune["step"]]
        for name, mask in prune["after"]["m"].items():
            assert torch.equal(regen["m"][name], mask)


def test_nothing_happens_before_begin_step() -> None:
    _, method = run("late-start")
    assert min(h["step"] for h in method.history) == 10


def test_initial_masks() -> None:
    """d_i = 1: dense. d_i = 0.5: exact ERK layer counts, seeded, identical for equal seeds."""
    dense = GraNet(sparsity=0.9, init_density=1.0).setup(tanh_mlp())
    assert all(bool(m.all()) for m in dense.masks.masks().values())
    shapes = {n: p.shape for n, p in dense.masks.params().items()}
    densities = erk(shapes, 0.5)
    a = GraNet(sparsity=0.9, init_density=0.5, seed=3).setup(tanh_mlp())
    b = GraNet(sparsity=0.9, init_density=0.5, seed=3).setup(tanh_mlp(seed=1))
    c = GraNet(sparsity=0.9, init_density=0.5, seed=4).setup(tanh_mlp())
    for name, mask in a.masks.masks().items():
        assert int(mask.sum()) == keep_count(mask.numel(), densities[name])
        assert torch.equal(mask, b.masks.mask(name))
    assert any(not torch.equal(m, c.masks.mask(n)) for n, m in a.masks.masks().items())
    assert a.masks.sparsity() == pytest.approx(0.5, abs=0.01)
    uniform = GraNet(sparsity=0.9, init_distribution="uniform").setup(tanh_mlp())
    for mask in uniform.masks.masks().values():
        assert int(mask.sum()) == keep_count(mask.numel(), 0.5)


def test_without_regeneration_masks_only_shrink() -> None:
    """regenerate=False is GraNet's global GMP: masks only shrink and freeze after t_f."""
    model = tanh_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    method = GraNet(
        sparsity=0.9, init_density=1.0, update_every=5, end_step=40, regenerate=False
    ).setup(model, opt)
    previous = {n: m.clone() for n, m in method.masks.masks().items()}
    for step in range(60):
        x, y = batch(step)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        for name, mask in method.masks.masks().items():
            assert not (mask & ~previous[name]).any()
            previous[name] = mask.clone()
        assert method.dense_grads is None
    assert all(h["fraction"] is None and h["regrown"] == {} for h in method.history)
    assert method.masks.sparsity() == pytest.approx(D_F_SPARSITY, abs=1e-3)


def test_regenerate_layer_by_hand() -> None:
    weight = torch.tensor([0.1, -0.5, 0.3, 0.0, 0.0, 0.9])
    mask = torch.tensor([True, True, True, False, False, True])
    grad = torch.tensor([0.2, 0.0, 5.0, -3.0, 1.0, 0.0])
    after_drop, new_mask, r = regenerate_layer(weight, mask, grad, 0.5)
    assert r == 2  # ceil(0.5 * 4)
    assert after_drop.tolist() == [False, True, False, False, False, True]
    # candidates {0, 2, 3, 4}: |g| = 0.2, 5, 3, 1 -> grow 2 and 3
    assert new_mask.tolist() == [False, True, True, True, False, True]
    _, same, zero = regenerate_layer(weight, mask, grad, 0.0)
    assert zero == 0 and torch.equal(same, mask)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_sparsity() -> None:
    model = tanh_mlp().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    method = GraNet(sparsity=0.9, update_every=5, end_step=40).setup(model, opt)
    for step in range(60):
        x, y = batch(step)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x.cuda()), y.cuda()).backward()
        opt.step()
    assert all(m.device.type == "cuda" for m in method.masks.masks().values())
    assert method.masks.sparsity() == pytest.approx(D_F_SPARSITY, abs=1e-3)


def test_global_magnitude_prune_by_hand() -> None:
    weights = {
        "a": torch.tensor([0.9, -0.1, 0.5, 0.7]),
        "b": torch.tensor([[0.2, -0.8], [0.3, 0.6]]),
    }
    masks = {"a": torch.tensor([True, True, False, True]), "b": torch.ones(2, 2, dtype=torch.bool)}
    # N = 8, s = 0.5 -> keep 4 of the active |w| {.9, .1, .7, .2, .8, .3, .6} globally (0.5 masked)
    keeps = global_magnitude_prune(weights, masks, 0.5)
    assert keeps["a"].tolist() == [True, False, False, True]
    assert keeps["b"].tolist() == [[False, True], [False, True]]
    # asking for more than is active keeps every active entry and re-admits nothing
    keeps = global_magnitude_prune(weights, masks, 0.0)
    assert all(torch.equal(keeps[n], masks[n]) for n in masks)


def test_sparse_init_independent_of_same_seed_model_init() -> None:
    """s2s GraNet's random start mask is not drawn from the numbers that drew the weights."""

    def first_mask(seed: int) -> tuple[float, torch.Tensor]:
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        weight = model[0].weight.detach().clone()
        method = GraNet(sparsity=0.9, init_density=0.5, seed=seed, end_step=100).setup(model)
        mask = method.masks.mask("0.weight").bool()
        return (weight[mask] > 0).float().mean().item(), mask.clone()

    fraction, mask = first_mask(5)
    assert mask.sum() > 1000
    assert 0.4 < fraction < 0.6  # was 1.0 with the raw seed
    again, mask_again = first_mask(5)
    assert fraction == again and torch.equal(mask, mask_again)


def test_regrowth_uses_the_gradient_of_the_triggering_step() -> None:
    """The grown set is the top-|g| of the minibatch gradient of the step that runs the update.

    The reference gradients are recorded by the training loop itself (after ``backward()``,
    before ``opt.step()``), not by the method.
    """
    model = tanh_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    options = {"sparsity": D_F_SPARSITY, "update_every": 5, "end_step": 40, "total_steps": 60}
    method = Recording(**options, init_density=1.0).setup(model, opt)
    names = dict(model.named_parameters())
    loop_grads: dict[int, dict[str, torch.Tensor]] = {}
    for step in range(1, 31):
        x, y = batch(step)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        loop_grads[step] = {n: names[n].grad.detach().clone() for n in method.masks.names}
        opt.step()
    assert [r["step"] for r in method.regens] == [5, 10, 15, 20, 25, 30]
    differs = False
    for regen in method.regens:
        step = regen["step"]
        for name, weight in regen["w"].items():
            mask, w = regen["m"][name].reshape(-1), weight.reshape(-1).abs().tolist()
            r = regen["regrown"][name]
            if r == 0:
                continue
            after_drop = mask.clone()
            dropped = sorted(torch.nonzero(mask).flatten().tolist(), key=lambda i: (w[i], -i))
            after_drop[dropped[:r]] = False

            def grown(
                grad: torch.Tensor, after_drop: torch.Tensor = after_drop, r: int = r
            ) -> set[int]:
                candidates = torch.nonzero(~after_drop).flatten().tolist()
                g = grad.reshape(-1).abs().tolist()
                return set(sorted(candidates, key=lambda i: (-g[i], i))[:r])

            new_mask = regen["after"]["m"][name].reshape(-1)
            got = set(torch.nonzero(new_mask & ~after_drop).flatten().tolist())
            assert got == grown(loop_grads[step][name]), (step, name)
            differs |= got != grown(loop_grads[step - 1][name])
    assert differs  # the previous step's gradient would have grown other weights
