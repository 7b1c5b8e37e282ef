import pytest
import torch
from torch.nn import functional as F

from sparse_lth import (
    LotteryTicket,
    TrainSpec,
    error_barrier,
    evaluate,
    instability_analysis,
    interpolate_states,
    linear_interpolation,
    train_subnetwork,
)

torch.set_num_threads(1)


def _brute_force_errors(state_a, state_b, alphas, x, y):
    """Interpolate each Linear layer by hand and run the MLP forward with F.linear."""
    errors = []
    for alpha in alphas:
        h = x
        for i, layer in enumerate((0, 2, 4)):
            w = (1 - alpha) * state_a[f"{layer}.weight"] + alpha * state_b[f"{layer}.weight"]
            b = (1 - alpha) * state_a[f"{layer}.bias"] + alpha * state_b[f"{layer}.bias"]
            h = F.linear(h, w, b)
            if i < 2:
                h = h.relu()
        wrong = sum(int(p != t) for p, t in zip(h.argmax(1).tolist(), y.tolist(), strict=True))
        errors.append(wrong / len(y))
    return errors


def test_barrier_of_a_model_with_itself_is_zero(make_model, data):
    model = make_model(0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    result = linear_interpolation(model, state, state, data.x_test, data.y_test, points=11)
    assert result.barrier == 0.0
    assert len(set(result.errors)) == 1
    assert result.errors[0] == evaluate(model, data.x_test, data.y_test)["error"]


def test_two_minima_match_brute_force(make_model, data):
    a, b = make_model(1), make_model(2)
    state_a, state_b = a.state_dict(), b.state_dict()
    probe = make_model(3)
    before = {k: v.clone() for k, v in probe.state_dict().items()}
    result = linear_interpolation(probe, state_a, state_b, data.x_test, data.y_test, points=9)
    expected = _brute_force_errors(state_a, state_b, result.alphas, data.x_test, data.y_test)
    assert result.alphas[0] == 0.0 and result.alphas[-1] == 1.0 and len(result.alphas) == 9
    assert result.errors == pytest.approx(expected, abs=1e-12)
    assert result.barrier == pytest.approx(max(expected) - (expected[0] + expected[-1]) / 2)
    assert result.barrier > 0  # random networks: the midpoint is not an average of the ends
    # endpoints reproduce the two networks' own errors; the probe model is restored
    assert result.errors[0] == evaluate(a, data.x_test, data.y_test)["error"]
    assert result.errors[-1] == evaluate(b, data.x_test, data.y_test)["error"]
    assert all(torch.equal(v, before[k]) for k, v in probe.state_dict().items())


def test_error_barrier_formula():
    assert error_barrier([0.1, 0.5, 0.3]) == pytest.approx(0.5 - 0.2)
    assert error_barrier([0.2, 0.1, 0.2]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="endpoints"):
        error_barrier([0.1])


def test_interpolation_endpoints_exact_and_masks_checked(make_model):
    a, b = make_model(1), make_model(2)
    LotteryTicket(sparsity=0.5).setup(a)
    LotteryTicket(sparsity=0.5).setup(b)
    sa, sb = a.state_dict(), b.state_dict()
    with pytest.raises(ValueError, match="differ"):
        interpolate_states(sa, sb, 0.5)
    sb = {k: (sa[k] if k.endswith("_mask") else v) for k, v in sb.items()}
    assert all(torch.equal(v, sa[k]) for k, v in interpolate_states(sa, sb, 0.0).items())
    assert all(torch.equal(v, sb[k]) for k, v in interpolate_states(sa, sb, 1.0).items())
    with pytest.raises(ValueError, match="alpha"):
        interpolate_states(sa, sb, 1.5)
    with pytest.raises(ValueError, match="points"):
        linear_interpolation(a, sa, sb, torch.zeros(2, 12), torch.zeros(2, dtype=torch.long), 1)


def test_instability_analysis_trains_two_noisy_copies(make_model, data):
    spec = TrainSpec(steps=12, batch_size=16, lr=0.1)
    init = make_model(0).state_dict()
    probe = LotteryTicket(fraction=0.5).setup(make_model(0))
    probe.prune_round()
    masks = {n: m.clone() for n, m in probe.masks.masks().items()}
    result = instability_analysis(
        make_model, data, spec, init, masks, start_step=3, seeds=(5, 6), points=5
    )
    copies = []
    for seed in (5, 6):
        model, method, stats = train_subnetwork(
            make_model,
            data,
            spec,
            state=init,
            masks=masks,
            start_step=3,
            data_seed=seed,
            noise_seed=seed,
        )
        assert stats["steps"] == spec.steps - 3
        assert all(torch.equal(method.masks.mask(n), m) for n, m in masks.items())
        copies.append(evaluate(model, data.x_test, data.y_test)["error"])
    assert result.errors[0] == copies[0] and result.errors[-1] == copies[1]
    assert result.barrier == error_barrier(result.errors)
    assert result.extras["start_step"] == 3
    with pytest.raises(ValueError, match="seeds"):
        instability_analysis(make_model, data, spec, init, masks, seeds=(1, 1))
