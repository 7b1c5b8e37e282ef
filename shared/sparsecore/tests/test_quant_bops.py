"""`sparsecore.quant` (codes, packing) and `sparsecore.evaluation.bops` (Σ MACs · b_w · b_a)."""

import math

import pytest
import torch
from torch import nn

from sparsecore.evaluation import count_bops
from sparsecore.quant import QuantizedTensor, Quantizer, layer_bits, pack_codes, unpack_codes


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 7, 8])
@pytest.mark.parametrize("signed", [True, False])
def test_pack_roundtrip_and_exact_size(bits, signed):
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    gen = torch.Generator().manual_seed(bits)
    codes = torch.randint(low, high + 1, (37,), generator=gen)
    packed = pack_codes(codes, bits, signed)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(37 * bits / 8)
    assert torch.equal(unpack_codes(packed, bits, 37, signed), codes)


def test_pack_rejects_codes_that_do_not_fit():
    with pytest.raises(ValueError, match="bits=3"):
        pack_codes(torch.tensor([4]), 3, True)
    with pytest.raises(ValueError, match="bits"):
        pack_codes(torch.tensor([1]), 0, True)


def test_quantized_tensor_decodes_with_sign_and_counts_bytes():
    levels = torch.tensor([0.0, 0.25, 1.0])
    q = QuantizedTensor(torch.tensor([[0, -1], [2, -2]]), levels, 2.0, 3, True)
    assert torch.equal(q.dequantize(), torch.tensor([[0.0, -0.5], [2.0, -2.0]]))
    assert q.nbytes == math.ceil(4 * 3 / 8) + 4 * 3 + 4


class _FakeBits(Quantizer):
    def __init__(self, bits):
        super().__init__()
        self.bits = bits


def _net():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 10))


def test_bops_equal_the_formula_on_a_hand_counted_net():
    net = _net()
    x = torch.zeros(1, 1, 6, 6)
    conv_macs = 4 * 4 * 4 * (1 * 3 * 3)  # 4 filters x 4x4 outputs x 9 taps = 576
    fc_macs = 64 * 10
    dense = count_bops(net, x)
    assert dense.layers["0"].macs == conv_macs and dense.layers["3"].macs == fc_macs
    assert dense.total == (conv_macs + fc_macs) * 32 * 32
    given = count_bops(net, x, bits={"0": (4, 8), "3": (8, 32)})
    assert given.total == conv_macs * 4 * 8 + fc_macs * 8 * 32
    assert given.ratio_to(dense) == pytest.approx(dense.total / given.total)
    net[0].add_module("weight_quantizer", _FakeBits(3))  # read from the layer's quantizers
    net[0].add_module("input_quantizer", _FakeBits(2))
    assert layer_bits(net[0]) == (3, 2) and layer_bits(net[3]) == (32, 32)
    assert count_bops(net, x).total == conv_macs * 3 * 2 + fc_macs * 32 * 32
    assert count_bops(net, torch.zeros(2, 1, 6, 6)).macs == 2 * (conv_macs + fc_macs)


def test_bops_rejects_unknown_layers_and_bad_widths():
    with pytest.raises(ValueError, match="bits"):
        count_bops(_net(), torch.zeros(1, 1, 6, 6), bits={"nope": (4, 4)})
    with pytest.raises(ValueError, match="bits"):
        count_bops(_net(), torch.zeros(1, 1, 6, 6), bits={"0": (0, 4)})
