import pytest
import torch
from torch import nn

from sparse_consensus import (
    ConsensusPruning,
    accuracy,
    attach_gates,
    consensus_subnetwork,
    find_gates,
    gated_resnet,
)
from sparsecore.bench import make_model, task_spec
from sparsecore.evaluation import count_flops
from sparsecore.testing import MethodConformance

SHAPE = (1, 8, 8)


def _model(seed: int = 0, trained_like: bool = False, gate_blocks: bool = True) -> nn.Module:
    torch.manual_seed(seed)
    model = gated_resnet(SHAPE, 10, width=8, gate_blocks=gate_blocks)
    if trained_like:  # distinct BatchNorm statistics and affine parameters
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    n = m.num_features
                    m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                    m.bias.copy_(torch.randn(n, generator=gen) * 0.2)
                    m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                    m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
    return model


class TestConsensusConformance(MethodConformance):
    method_cls = ConsensusPruning
    sparsity = 0.5
    #: the masks stay all ones while the gates prune dynamically; the static decision (and the
    #: FLOPs target) is checked by the tests below
    check_sparsity_after_training = False

    def make_model(self, seed: int = 0) -> nn.Module:
        # channel gates only: a block removed by finalize becomes nn.Identity, so its parameters
        # leave the model and the suite's finalize check could not index them; block removal is
        # tested below (exact equality with the gated model)
        return _model(seed, gate_blocks=False)

    def input_shape(self) -> tuple[int, ...]:
        return SHAPE

    def make_method(self, **overrides):
        return ConsensusPruning(**{"sparsity": self.sparsity, "input_shape": SHAPE, **overrides})


def test_removed_structures_equal_the_gated_model_with_those_gates_forced_to_zero():
    model = _model(trained_like=True)
    method = ConsensusPruning(sparsity=0.5, input_shape=SHAPE).setup(model)
    gates = find_gates(model)
    gen = torch.Generator().manual_seed(7)
    forced = {}
    for g in gates.all():
        decision = (torch.rand(g.size, generator=gen) < 0.5).float()
        if g.size > 1:
            decision[0] = 1.0  # keep one channel per group (a group removed whole is kept)
        forced[g.target] = decision
        g.average.copy_(decision * 0.8 + 0.1)  # averages on the decided side of 0.5
    x = torch.randn(16, *SHAPE, generator=gen)
    model.eval()
    with gates.forced(forced):
        gated = model(x)
    small, report = consensus_subnetwork(method, x[:4])
    assert find_gates(small) is None and not any("consensus" in k for k in small.state_dict())
    assert torch.allclose(small.eval()(x), gated, atol=1e-5)
    removed_blocks = {b for b, d in forced.items() if d.numel() == 1 and d.item() == 0}
    assert set(report["removed_blocks"]) == removed_blocks
    for b in removed_blocks:
        assert isinstance(small.get_submodule(b), nn.Identity)
    for i, block in enumerate(small.stages):  # every kept block has exactly its kept channels
        name = f"stages.{i}"
        if name not in removed_blocks:
            assert block.conv1.out_channels == int(forced[f"{name}.conv1"].sum())
            assert block.bn1.num_features == block.conv2.in_channels == block.conv1.out_channels
    assert report["macs"] < report["dense_macs"]
    assert report["macs"] == count_flops(small, x[:1]).dense


def _train(model, method, task, epochs: int, lr: float = 0.05):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    method.attach(opt)
    gen = torch.Generator().manual_seed(5)
    for _ in range(epochs):
        perm = torch.randperm(task.num_train, generator=gen)
        for i in range(0, task.num_train, 64):
            idx = perm[i : i + 64]
            loss = nn.functional.cross_entropy(model(task.x_train[idx]), task.y_train[idx])
            loss = loss + method.regularization()
            opt.zero_grad()
            loss.backward()
            opt.step()


def test_final_flops_density_is_within_tolerance_of_the_target(digits):
    model = _model(seed=3)
    method = ConsensusPruning(sparsity=0.5, input_shape=SHAPE).setup(model)
    _train(model, method, digits, epochs=10)
    dynamic = accuracy(model, digits.x_test, digits.y_test)
    small, report = consensus_subnetwork(method, digits.x_train[:8], digits.x_train)
    assert abs(report["flops_ratio"] - 0.5) <= 0.1, report["flops_ratio"]
    assert report["statistics"].consensus_rate > 0.95
    static = accuracy(small, digits.x_test, digits.y_test)
    assert dynamic > 0.5 and static > 0.5  # it learned (10 classes)


def test_polarization_changes_the_gate_gradient():
    torch.manual_seed(0)
    x = torch.randn(32, *SHAPE)
    grads = []
    for name in ("none", "variance"):
        model = _model(seed=1)
        gates = find_gates(model)
        for g in gates.all():  # gates undecided: about half the samples open
            nn.init.normal_(g.net.fc2.weight, std=2.0)
            nn.init.zeros_(g.net.fc2.bias)
        method = ConsensusPruning(
            sparsity=0.5, input_shape=SHAPE, polarization=name, sparsity_weight=0.0
        ).setup(model)
        model(x)
        reg = method.regularization()
        if name == "none":
            assert reg.item() == 0.0
        else:
            assert reg.item() > 0.0
            reg.backward()
            grads.append(torch.cat([g.net.fc2.weight.grad.flatten() for g in gates.all()]))
    assert grads and grads[0].abs().sum() > 0


def test_bad_options_name_the_field_and_ungated_models_are_refused():
    with pytest.raises(ValueError, match="input_shape"):
        ConsensusPruning(sparsity=0.5)
    with pytest.raises(ValueError, match="pattern"):
        ConsensusPruning(sparsity=0.5, input_shape=SHAPE, pattern="unstructured")
    for field, bad in (
        ("polarization", "nope"),
        ("budget", "params"),
        ("threshold", 0.0),
        ("polarization_weight", -1.0),
        ("sparsity_weight", float("nan")),
    ):
        with pytest.raises(ValueError, match=field):
            ConsensusPruning(sparsity=0.5, input_shape=SHAPE, **{field: bad})
    plain = make_model("resnet", task_spec("digits"), width=8)
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    with pytest.raises(ValueError, match="attach_gates"):
        ConsensusPruning(sparsity=0.5, input_shape=SHAPE).setup(plain)
    assert before.keys() == plain.state_dict().keys()


def test_attach_gates_finds_identity_blocks_and_single_producer_groups():
    model = make_model("resnet", task_spec("digits"), width=8, blocks=(2, 2, 2))
    gates = attach_gates(model, SHAPE)
    assert [g.target for g in gates.blocks.values()] == [
        "stages.0",
        "stages.1",
        "stages.3",
        "stages.5",
    ]
    assert {g.target: g.gated for g in gates.channels.values()} == {
        f"stages.{i}.conv1": f"stages.{i}.bn1" for i in range(6)
    }
    with pytest.raises(ValueError, match="already"):
        attach_gates(model, SHAPE)
    with pytest.raises(ValueError, match="no module"):
        attach_gates(make_model("resnet", task_spec("digits")), blocks=("nope",), channels={})
