import math

import pytest
import torch
from torch import nn

from sparse_sms import SMSConfig, SparseModelSoup, removal_count
from sparse_sms.method import proportional_removals

torch.set_num_threads(1)


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(12, 20), nn.ReLU(), nn.Linear(20, 20), nn.ReLU(), nn.Linear(20, 5)
    )


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("weight")}


def brute_force_global(ws: dict[str, torch.Tensor], active: dict[str, torch.Tensor], remove: int):
    """Reference: drop the `remove` smallest |w| among active entries (ties: higher index first)."""
    entries = []
    for li, (name, w) in enumerate(ws.items()):
        flat, act = w.abs().reshape(-1).tolist(), active[name].reshape(-1).tolist()
        entries += [(v, li, i) for i, (v, a) in enumerate(zip(flat, act, strict=True)) if a]
    # kept first: larger magnitude, then lower global position
    entries.sort(key=lambda e: (-e[0], e[1], e[2]))
    keep = entries[: len(entries) - remove]
    out = {n: torch.zeros_like(w, dtype=torch.bool) for n, w in ws.items()}
    names = list(ws)
    for _, li, i in keep:
        out[names[li]].view(-1)[i] = True
    return out


@pytest.mark.parametrize("n_phases", [1, 2, 3, 5])
def test_sparsity_after_p_phases_matches_formula(n_phases):
    model = mlp()
    total = sum(w.numel() for w in weights(model).values())
    method = SparseModelSoup(sparsity=0.9, n_phases=n_phases, phase=0).setup(model)
    q = 1 - 0.1 ** (1 / n_phases)
    active = total
    for p in range(1, n_phases + 1):
        method.next_phase()
        active -= round(q * active)  # torch's round(amount * n) on the active entries
        assert sum(method.masks.nnz().values()) == active
        nominal = 1 - (1 - q) ** p
        assert abs(method.masks.sparsity() - nominal) <= p / total
    assert abs(method.masks.sparsity() - 0.9) <= n_phases / total
    with pytest.raises(RuntimeError, match="phases"):
        method.next_phase()


def test_each_phase_is_global_magnitude_over_active_entries():
    model = mlp(1)
    method = SparseModelSoup(sparsity=0.8, n_phases=2, phase=0).setup(model)
    active = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights(model).items()}
    q = method.config.prune_fraction
    for _ in range(2):
        # perturb the surviving weights so phase 2 ranks by new magnitudes
        with torch.no_grad():
            for p in method.masks.params().values():
                p.mul_(torch.rand_like(p) + 0.5)
            method.masks.apply()
        ws = weights(model)
        nnz = sum(int(a.sum()) for a in active.values())
        expected = brute_force_global(ws, active, removal_count(nnz, q))
        method.next_phase()
        for name, mask in method.masks.masks().items():
            assert torch.equal(mask, expected[name]), name
            assert not (mask & ~active[name]).any()  # masks only shrink
        active = {n: m.clone() for n, m in method.masks.masks().items()}


def test_uniform_selector_prunes_each_tensor_by_q():
    model = mlp(2)
    method = SparseModelSoup(sparsity=0.75, n_phases=2, phase=0, selector="uniform").setup(model)
    q = method.config.prune_fraction
    before = method.masks.nnz()
    method.next_phase()
    for name, nnz in method.masks.nnz().items():
        assert nnz == before[name] - round(q * before[name])
        w = method.masks.param(name).detach().abs()
        mask = method.masks.mask(name)
        if (~mask).any():
            assert w[mask].min() >= w[~mask].max() or nnz == 0


def test_random_selector_is_seeded():
    masks = []
    for _ in range(2):
        m = SparseModelSoup(sparsity=0.5, n_phases=1, selector="random", seed=3).setup(mlp())
        masks.append({n: k.clone() for n, k in m.masks.masks().items()})
    assert all(torch.equal(masks[0][n], masks[1][n]) for n in masks[0])
    magnitude = SparseModelSoup(sparsity=0.5, n_phases=1).setup(mlp())
    assert any(not torch.equal(masks[0][n], k) for n, k in magnitude.masks.masks().items())


def test_setup_with_masks_installs_them_without_pruning():
    model = mlp()
    gen = torch.Generator().manual_seed(0)
    given = {n: torch.rand(w.shape, generator=gen) > 0.6 for n, w in weights(model).items()}
    method = SparseModelSoup(sparsity=0.9, n_phases=3).setup(model, masks=given, phases_done=1)
    for name, mask in method.masks.masks().items():
        assert torch.equal(mask, given[name])
        assert not method.masks.param(name)[~mask].any()
    assert method.phases_done == 1
    before = sum(method.masks.nnz().values())
    method.next_phase()
    q = method.config.prune_fraction
    assert sum(method.masks.nnz().values()) == before - round(q * before)


def test_bad_masks_raise_before_touching_model():
    model = mlp()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    names = list(weights(model))
    with pytest.raises(ValueError, match="masks"):
        SparseModelSoup().setup(model, masks={names[0]: torch.ones(12, 20, dtype=torch.bool)})
    bad = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights(model).items()}
    bad[names[1]] = torch.ones(3, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="shape"):
        SparseModelSoup().setup(model, masks=bad)
    bad[names[1]] = torch.ones_like(weights(model)[names[1]])
    with pytest.raises(TypeError, match="bool"):
        SparseModelSoup().setup(model, masks=bad)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert set(state) == set(model.state_dict())


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("n_phases", 0, ValueError),
        ("n_phases", 1.5, TypeError),
        ("phase", 4, ValueError),
        ("selector", "layer", ValueError),
        ("n_ingredients", 0, ValueError),
        ("vary", "momentum", ValueError),
        ("soup", "best", ValueError),
        ("retrain_epochs", 0, ValueError),
        ("retrain_schedule", "cosine", ValueError),
        ("max_lr", 0.0, ValueError),
        ("warmup_fraction", 1.0, ValueError),
        ("weight_decay", -1.0, ValueError),
        ("momentum", 1.5, ValueError),
        ("bn_recalibration_fraction", 1.2, ValueError),
        ("bn_cumulative", 1, TypeError),
        ("pretrain_epochs", 0, ValueError),
    ],
)
def test_config_errors_name_the_field(field, value, error):
    with pytest.raises(error, match=field):
        SMSConfig(**{field: value})


def test_values_validation():
    with pytest.raises(ValueError, match="values"):
        SMSConfig(vary="weight_decay")
    with pytest.raises(ValueError, match="values"):
        SMSConfig(vary="weight_decay", values=(1e-4, 5e-4))
    with pytest.raises(ValueError, match="values"):
        SMSConfig(vary="retrain_length", values=(1, 2.5, 3))
    cfg = SMSConfig(vary="lr", values=[0.1, 0.05, 0.01])
    assert cfg.values == (0.1, 0.05, 0.01)


def test_prune_fraction_formula():
    cfg = SMSConfig(sparsity=0.95, n_phases=4)
    q = cfg.prune_fraction
    assert math.isclose(1 - (1 - q) ** 4, 0.95)
    assert math.isclose(cfg.phase_sparsity(2), 1 - (1 - q) ** 2)


def test_prune_to_reaches_exact_count_and_only_shrinks():
    model = mlp()
    method = SparseModelSoup(sparsity=0.9, n_phases=1, phase=0).setup(model)
    total = sum(w.numel() for w in weights(model).values())
    method.prune_to(0.3)
    first = {n: m.clone() for n, m in method.masks.masks().items()}
    assert sum(method.masks.nnz().values()) == math.floor(0.7 * total + 1e-6)
    method.prune_to(0.6)
    assert sum(method.masks.nnz().values()) == math.floor(0.4 * total + 1e-6)
    assert all(not (m & ~first[n]).any() for n, m in method.masks.masks().items())


def test_declares_its_multi_run_procedure():
    # one training run with the mask method attached is not SMS: `sparse bench` must skip it
    from sparsecore.bench import make_model, task_spec
    from sparsecore.bench.train import applicability

    assert SparseModelSoup.procedure is not None and "soup" in SparseModelSoup.procedure
    reason = applicability(SparseModelSoup, "mnist1d", make_model("mlp", task_spec("mnist1d")))
    assert reason == f"own procedure ({SparseModelSoup.procedure})"


def test_prune_to_with_uniform_selector_is_exact_globally():
    model = mlp()
    method = SparseModelSoup(sparsity=0.9, n_phases=1, phase=0, selector="uniform").setup(model)
    total = sum(w.numel() for w in weights(model).values())
    for target in (0.31, 0.577, 0.83):
        before = method.masks.nnz()
        previous = {n: m.clone() for n, m in method.masks.masks().items()}
        method.prune_to(target)
        after = method.masks.nnz()
        assert sum(after.values()) == math.floor((1 - target) * total + 1e-6), target
        removed = sum(before.values()) - sum(after.values())
        for name, count in after.items():  # each tensor loses its share, up to one entry
            share = removed * before[name] / sum(before.values())
            assert abs((before[name] - count) - share) < 1.0
            assert not (method.masks.mask(name) & ~previous[name]).any()
            w = method.masks.param(name).detach().abs()
            m = method.masks.mask(name)
            if (previous[name] & ~m).any() and m.any():  # per tensor: the smallest |w| went
                assert w[m].min() >= w[previous[name] & ~m].max()


def test_proportional_removals_sum_exactly():
    for active, remove in (({"a": 7, "b": 5, "c": 1}, 6), ({"a": 3, "b": 3}, 3), ({"a": 4}, 9)):
        out = proportional_removals(active, remove)
        assert sum(out.values()) == min(remove, sum(active.values()))
        assert all(0 <= out[n] <= active[n] for n in active)
    assert proportional_removals({"a": 3, "b": 3}, 3) == {"a": 2, "b": 1}  # tie: earlier tensor
