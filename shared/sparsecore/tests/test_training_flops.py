"""count_training_flops: the three GEMMs of every weight layer, by hand."""

import pytest
import torch
from torch import nn

from sparsecore import OneShotMagnitude
from sparsecore.evaluation import count_flops, count_training_flops

torch.set_num_threads(1)


def test_three_gemms_by_hand():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4))
    x = torch.randn(5, 8)
    dense = count_training_flops(model, x)
    assert dense.forward.dense == dense.backward_data.dense == dense.weight_grad.dense == 5 * 32
    assert dense.ratio == 1.0
    OneShotMagnitude(sparsity=0.75).setup(model)  # 8 of 32 weights left, hard mode
    masked = count_training_flops(model, x)
    assert masked.forward.effective == 5 * 8
    assert masked.backward_data.effective == 5 * 32  # a masked W's transpose counts dense
    assert masked.weight_grad.effective == 5 * 32
    backward = torch.zeros(4, 8)
    backward[:, :2] = 1.0
    given = count_training_flops(model, x, {"0": backward})
    assert given.backward_data.effective == 5 * 8
    assert given.effective == 5 * 8 + 5 * 8 + 5 * 32
    assert given.ratio == pytest.approx(48 / 96)


def test_conv_counts_positions_and_bad_names_raise():
    conv = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1))
    x = torch.randn(1, 2, 5, 5)
    count = count_training_flops(conv, x)
    assert count.forward.dense == count_flops(conv, x).dense == 25 * 4 * 2 * 9
    assert count.weight_grad.dense == count.forward.dense
    with pytest.raises(ValueError, match="backward_weights"):
        count_training_flops(conv, x, {"nope": torch.ones(4, 2, 3, 3)})
    with pytest.raises(ValueError, match="backward_weights"):
        count_training_flops(conv, x, {"0": torch.ones(3)})
