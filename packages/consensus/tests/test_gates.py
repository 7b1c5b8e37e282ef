import copy

import pytest
import torch

from sparse_consensus import (
    POLARIZERS,
    binary_gate,
    detach_gates,
    find_gates,
    gated_resnet,
    polarization,
    register_polarizer,
)


def test_variance_polarizer_is_zero_at_0_and_1_and_largest_at_one_half():
    grid = torch.linspace(0, 1, 101)
    values = torch.stack([polarization("variance", [g.reshape(1)]) for g in grid])
    assert values[0].item() == 0.0 and values[-1].item() == 0.0
    assert int(values.argmax()) == 50 and values[50].item() == pytest.approx(0.25)
    assert torch.all(values[1:-1] > 0)
    # for binary decisions, g(1-g) is exactly the variance of the decisions over the batch
    decisions = (torch.rand(64, 5, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    mean = decisions.mean(0)
    assert torch.allclose(mean * (1 - mean), decisions.var(0, unbiased=False))


def test_zhuang_polarizer_and_registry():
    assert set(POLARIZERS) >= {"variance", "zhuang", "none"}
    split = torch.tensor([0.0, 0.0, 1.0, 1.0])
    same = torch.full((4,), 0.5)  # same L1 mass, no spread: higher penalty
    assert polarization("zhuang", [split]) < polarization("zhuang", [same])
    register_polarizer("l1", lambda means, t: torch.cat([m.reshape(-1) for m in means]).sum())
    assert polarization("l1", [split]).item() == 2.0
    with pytest.raises(ValueError, match="polarization"):
        polarization("nope", [split])


def test_forward_gates_are_exactly_binary_and_logits_get_the_ste_gradient():
    logits = torch.randn(64, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
    gates = binary_gate(logits)
    assert set(gates.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(gates, (logits > 0).float())
    upstream = torch.randn_like(gates)
    (gates * upstream).sum().backward()
    s = torch.sigmoid(logits.detach())
    assert torch.allclose(logits.grad, upstream * s * (1 - s))
    assert logits.grad.abs().min() > 0


def test_gated_model_decisions_are_binary_and_gate_nets_receive_gradients():
    torch.manual_seed(0)
    model = gated_resnet((1, 8, 8), 10, width=8)
    gates = find_gates(model)
    for g in gates.all():
        torch.nn.init.normal_(g.net.fc2.weight, std=2.0)
        torch.nn.init.zeros_(g.net.fc2.bias)
    x = torch.randn(16, 1, 8, 8)
    out = model(x)
    for g in gates.all():
        assert set(g.last.unique().tolist()) <= {0.0, 1.0}
    # input-conditioned: some gate decides differently for different samples
    assert any(bool((g.last != g.last[:1]).any()) for g in gates.all())
    out.square().sum().backward()
    for g in gates.blocks.values():  # d out / d g = block(x) - x: nonzero even when closed
        assert g.net.fc2.weight.grad.abs().sum() > 0
    model.zero_grad()
    # a channel gate inside a skipped block gets no gradient (the block's output is unused)
    with gates.forced({g.target: torch.ones(1) for g in gates.blocks.values()}):
        model(x).square().sum().backward()
    for g in gates.channels.values():
        assert g.net.fc2.weight.grad.abs().sum() > 0


def test_disabled_or_all_open_gates_compute_the_plain_network_and_detach_restores_it():
    torch.manual_seed(0)
    model = gated_resnet((1, 8, 8), 10, width=8).eval()
    gates = find_gates(model)
    x = torch.randn(8, 1, 8, 8)
    with gates.disabled():
        plain = model(x)
    with gates.forced({g.target: torch.ones(g.size) for g in gates.all()}):
        assert torch.equal(model(x), plain)
    with gates.forced({g.target: torch.zeros(g.size) for g in gates.blocks.values()}):
        skipped = model(x)
    copied = copy.deepcopy(model)  # detaching a copy leaves the original gated
    detach_gates(copied)
    assert torch.equal(copied(x), plain) and find_gates(model) is gates
    with gates.forced({g.target: torch.zeros(g.size) for g in gates.blocks.values()}):
        assert torch.equal(model(x), skipped) and not torch.equal(skipped, plain)
    detach_gates(model)
    assert find_gates(model) is None and torch.equal(model(x), plain)
    with pytest.raises(ValueError, match="no consensus gates"):
        detach_gates(model)
