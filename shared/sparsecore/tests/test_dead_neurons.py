"""The dynamic dead neuron rate (sparsecore.evaluation.dead_neuron_rate) against hand counts."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from sparsecore.evaluation import DeadNeuronRate, dead_neuron_rate

torch.set_num_threads(1)


def constructed_layer() -> nn.Module:
    """Linear(2, 3) with W = [[1, 0], [0, 1], [-1, -1]], b = 0, then ReLU."""
    layer = nn.Linear(2, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        layer.bias.zero_()
    return nn.Sequential(layer, nn.ReLU())


def test_hand_computed_rate_on_a_constructed_layer():
    # x1 = (1, 1):   pre (1, 1, -2)  -> 1 of 3 units dead
    # x2 = (-1, 2):  pre (-1, 2, -1) -> 2 of 3 dead
    # x3 = (-1, -1): pre (-1, -1, 2) -> 2 of 3 dead
    # DNR = (1/3)(1/3 + 2/3 + 2/3) = 5/9; every unit is alive for some input.
    x = torch.tensor([[1.0, 1.0], [-1.0, 2.0], [-1.0, -1.0]])
    result = dead_neuron_rate(constructed_layer(), x)
    assert isinstance(result, DeadNeuronRate)
    assert result.rate == pytest.approx(5 / 9, abs=1e-12)
    assert result.by_layer == {"1": pytest.approx(5 / 9, abs=1e-12)}
    assert (result.units, result.samples) == (3, 3)
    assert result.always_dead == 0.0


def test_static_dead_units_and_batching_do_not_change_the_rate():
    # Only x2 and x3: unit 0 is dead for both inputs (static dead), unit 1 for x3 only.
    x = torch.tensor([[-1.0, 2.0], [-1.0, -1.0]])
    whole = dead_neuron_rate(constructed_layer(), x)
    single = dead_neuron_rate(constructed_layer(), [(x[:1], 0), (x[1:], 1)])
    assert whole.rate == pytest.approx(4 / 6) and single.rate == pytest.approx(4 / 6)
    assert whole.always_dead == pytest.approx(1 / 3) and single.always_dead == pytest.approx(1 / 3)


class Mixed(nn.Module):
    """One nn.ReLU module, one Tensor.relu call, one F.relu call on a conv feature map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 2, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv(x))  # (B, 2, 4): 8 units
        h = h.flatten(1).relu()  # 8 more (already non-negative: same zeros)
        return F.relu(self.fc(h))  # 4 units


def test_functional_calls_and_modules_are_each_counted_once():
    torch.manual_seed(0)
    model = Mixed().train()
    x = torch.randn(5, 1, 4)
    result = dead_neuron_rate(model, x)
    assert list(result.by_layer) == ["act", "relu0", "relu1"]
    assert result.units == 8 + 8 + 4
    with torch.no_grad():
        a = torch.relu(model.conv(x)).flatten(1)
        b = torch.relu(model.fc(a))
    zeros = 2 * int((a == 0).sum()) + int((b == 0).sum())
    assert result.rate == pytest.approx(zeros / (5 * 20), abs=1e-12)
    assert result.by_layer["relu1"] == pytest.approx(float((b == 0).float().mean()), abs=1e-6)
    assert model.training  # mode restored
    assert not model.conv._forward_hooks and not model._forward_pre_hooks  # hooks removed


def test_bad_inputs_raise():
    with pytest.raises(TypeError, match="model"):
        dead_neuron_rate("not a model", torch.zeros(1, 2))
    with pytest.raises(ValueError, match="batch_size"):
        dead_neuron_rate(constructed_layer(), torch.zeros(1, 2), batch_size=0)
    with pytest.raises(ValueError, match="no ReLU"):
        dead_neuron_rate(nn.Linear(2, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="no inputs"):
        dead_neuron_rate(constructed_layer(), [])
    with pytest.raises(TypeError, match="data"):
        dead_neuron_rate(constructed_layer(), [("text", 1)])
