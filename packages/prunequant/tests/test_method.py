"""SPQ and PPQ schedules: soft FPGM, hard masks, quantizers on and off, masks after quantizing."""

import pytest
import torch
from prunequant_helpers import SHAPE, batch, plain_cnn, resnet
from torch.nn import functional as F

from sparse_prunequant import PruneQuant, quant_layers
from sparse_prunequant.config import ppq, spq

torch.set_num_threads(1)


def _train(model, optimizer, steps, seed=0):
    for step in range(steps):
        x, y = batch(seed * 1000 + step)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _zero_filters(layer) -> int:
    return int((layer.weight.detach().flatten(1).abs().sum(1) == 0).sum())


def test_spq_soft_filters_regrow_then_hard_masks_prune_exactly_floor_rn():
    model = plain_cnn()
    with torch.no_grad():  # trained-like BatchNorm shifts (with beta = 0, ReLU'(0) = 0 blocks it)
        model[1].bias.uniform_(0.05, 0.2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    method = PruneQuant(**spq(0.3, 4, SHAPE, prune_every=4)).setup(model, opt)
    assert _zero_filters(model[0]) == 3 and _zero_filters(model[3]) == 3  # step 0 selection
    _train(model, opt, 1)
    assert _zero_filters(model[0]) < 3, "soft pruning: zeroed filters keep training"
    _train(model, opt, 3, seed=1)  # step 4: a new soft selection
    assert _zero_filters(model[0]) == 3
    final = method.finalize()
    assert _zero_filters(final[0]) == 3 and _zero_filters(final[3]) == 3  # floor(0.3 * 10/12)
    assert not final[1].weight[final[0].weight.flatten(1).abs().sum(1) == 0].any()


def test_zeroed_channels_of_a_fresh_bn_relu_net_are_a_fixed_point_of_sgd():
    """With BatchNorm shift 0, a zeroed channel outputs ReLU(0) = 0 with derivative 0: the
    soft-zeroed filters get no gradient and stay zero (why soft = hard in the reproduction)."""
    model = plain_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    PruneQuant(**spq(0.3, 4, SHAPE, prune_every=100)).setup(model, opt)
    zero = model[0].weight.detach().flatten(1).abs().sum(1) == 0
    _train(model, opt, 5)
    assert int(zero.sum()) == 3
    assert not model[0].weight[zero].any() and not model[1].bias[zero].any()


def test_ppq_quantizes_only_after_the_hard_prune_and_pruned_filters_stay_zero():
    model = resnet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    method = PruneQuant(**ppq(0.5, 3, SHAPE, prune_every=2, prune_end=4)).setup(model, opt)
    layers = quant_layers(model)
    conv = layers["stages.0.conv1"]
    assert not bool(conv.weight_quantizer.active)
    assert torch.equal(conv.quantized_weight(), conv.weight)  # full precision before
    alphas = {id(p) for p in opt.param_groups[-1]["params"]}
    assert id(conv.weight_quantizer.alpha) in alphas and id(conv.input_quantizer.alpha) in alphas
    _train(model, opt, 4)
    assert method.hard and bool(conv.weight_quantizer.active)
    assert conv.weight_quantizer.alpha.grad is None  # no alpha gradient before quant_start
    _train(model, opt, 3, seed=1)
    assert conv.weight_quantizer.alpha.grad is not None
    for name, layer in layers.items():
        mask = getattr(layer, "weight_mask", None)
        if mask is None:
            continue
        rows = ~mask.flatten(1).any(1)
        q = layer.quantized_weight().detach()
        assert not q[rows].any(), f"{name}: pruned filters must be exactly 0 after quantizing"
        if rows.any():
            assert layer.weight_quantizer.encode(layer.weight.detach()).codes[rows].eq(0).all()
    assert int((~model.stages[0].conv1.weight_mask.flatten(1).any(1)).sum()) == 4  # floor(8/2)


def test_quantize_only_and_prune_only_variants():
    model = plain_cnn()
    PruneQuant(sparsity=0.0, weight_bits=4).setup(model)
    assert set(quant_layers(model)) == {"0", "3", "8"}
    assert quant_layers(model)["3"].input_quantizer.bits == 4
    assert quant_layers(model)["0"].input_quantizer is None  # first conv: 8-bit, float input
    model = plain_cnn()
    PruneQuant(sparsity=0.5, weight_bits=None, input_shape=SHAPE).setup(model)
    assert not quant_layers(model) and _zero_filters(model[0]) == 5


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"weight_bits": 6}, "weight_bits"),
        ({"act_bits": 1}, "act_bits"),
        ({"edge_bits": 9}, "edge_bits"),
        ({"prune_every": 0}, "prune_every"),
        ({"sparsity": 0.3, "input_shape": None}, "input_shape"),
        ({"weight_alpha": 0.0}, "weight_alpha"),
        ({"pattern": "2:4"}, "pattern"),
    ],
)
def test_bad_options_raise_naming_the_field_before_the_model_is_touched(options, field):
    model = plain_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises((ValueError, TypeError), match=field):
        PruneQuant(**{"input_shape": SHAPE, **options}).setup(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not quant_layers(model)
