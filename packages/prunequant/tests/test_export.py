"""Export: compact shapes, integer codes at their bit width, reload = fake-quantized outputs."""

import math

import pytest
import torch
from prunequant_helpers import SHAPE, batch, resnet
from safetensors import safe_open
from torch.nn import functional as F

from sparse_prunequant import PruneQuant, export_compact, load_compact, quant_layers
from sparse_prunequant.config import spq
from sparsecore.evaluation import count_bops, count_params

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def finalized():
    model = resnet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    method = PruneQuant(**spq(0.5, 3, SHAPE, prune_every=3)).setup(model, opt)
    for step in range(8):
        x, y = batch(step)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return method.finalize().eval()


def test_export_reloads_to_the_fake_quantized_outputs(finalized, tmp_path):
    x, _ = batch(99, n=16)
    with torch.no_grad():
        want = finalized(x)
        export = export_compact(finalized, x[:1], tmp_path / "m.safetensors")
        torch.testing.assert_close(export.model(x), want, rtol=0, atol=1e-5)
        reloaded = load_compact(tmp_path / "m.safetensors", resnet(seed=7))
        torch.testing.assert_close(reloaded(x), want, rtol=0, atol=1e-5)
    assert export.removed["stages.0.conv1"] == 4  # floor(0.5 * 8)
    assert count_params(reloaded)[0] < count_params(finalized)[0]
    frozen = {n: layer.weight.detach() for n, layer in quant_layers(reloaded).items()}
    for name, layer in quant_layers(export.model).items():
        assert torch.equal(frozen[name], layer.weight.detach()), name  # codes decode exactly


def test_codes_are_packed_to_their_bit_width_and_bytes_shrink(finalized, tmp_path):
    x, _ = batch(0, n=1)
    export = export_compact(finalized, x, tmp_path / "m.safetensors")
    with safe_open(tmp_path / "m.safetensors", "pt") as handle:
        keys = set(handle.keys())
    for name, layer in quant_layers(export.model).items():
        codes = export.tensors[f"{name}.weight_codes"]
        bits = layer.weight_quantizer.bits
        assert codes.dtype == torch.uint8
        assert codes.numel() == math.ceil(layer.weight.numel() * bits / 8)
        assert f"{name}.weight" not in keys and f"{name}.weight_codes" in keys
    dense_bytes = 4 * count_params(resnet())[0]
    assert export.nbytes < dense_bytes / 4
    bops = count_bops(export.model, x)
    assert bops.layers["stages.0.conv1"].weight_bits == 3
    assert bops.total < count_bops(resnet(), x).total / 50


def test_export_refuses_a_model_that_still_has_masks():
    model = resnet()
    PruneQuant(**spq(0.5, 3, SHAPE, prune_every=3)).setup(model)
    with pytest.raises(ValueError, match="finalize"):
        export_compact(model, torch.zeros(1, *SHAPE))
