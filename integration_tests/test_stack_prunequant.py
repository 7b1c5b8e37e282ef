"""Channel pruning with a core baseline, physical shrinking, then APoT quantization-aware
fine-tuning with sparse-prunequant and its integer-code export: a deployment path that stacks a
structured pruner and a quantizer.

sparsecore's `OneShotMagnitude` removes 50% of the channels of every prunable group (L2
magnitude, whole groups); `remove_channels` shrinks the network; `PruneQuant` in its
quantize-only form (``sparsity=0``) then trains the *compact* model with APoT weights and
activations; `export_compact` encodes it, and the reload computes the fake-quantized outputs.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from sparse_prunequant import PruneQuant, export_compact, load_compact, quant_layers
from sparsecore import OneShotMagnitude
from sparsecore.bench.models import ResNet
from sparsecore.evaluation import count_bops, count_params
from sparsecore.export import remove_channels

torch.set_num_threads(1)
SHAPE = (1, 8, 8)


def resnet(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return ResNet(SHAPE, 4, width=8)


def train(model, optimizer, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(32, *SHAPE, generator=gen)
        y = (x[:, 0, :4].mean((1, 2)) > 0).long() + 2 * (x[:, 0, :, :4].mean((1, 2)) > 0).long()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_core_channel_pruning_then_apot_qat_then_integer_export(tmp_path):
    model = resnet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    pruner = OneShotMagnitude(sparsity=0.5, pattern="channel", input_shape=SHAPE)
    pruner.setup(model, optimizer)
    train(model, optimizer, 4, seed=0)
    pruned = pruner.finalize().eval()
    example = torch.zeros(1, *SHAPE)
    removed = remove_channels(pruned, example)
    assert removed["stages.0.conv1"] == 4
    compact_params = count_params(pruned)[0]

    optimizer = torch.optim.SGD(pruned.parameters(), lr=0.02, momentum=0.9)
    quant = PruneQuant(sparsity=0.0, weight_bits=4).setup(pruned.train(), optimizer)
    assert len(optimizer.param_groups) == 2  # the clips alpha joined the optimizer
    train(pruned, optimizer, 4, seed=1)
    final = quant.finalize().eval()
    assert count_params(final)[0] == compact_params + 2 * (len(quant_layers(final)) - 2)

    export = export_compact(final, example, tmp_path / "stack.safetensors")
    assert export.removed == {}  # nothing left to remove: the core already shrank it
    reloaded = load_compact(tmp_path / "stack.safetensors", resnet(seed=3))
    x = torch.randn(16, *SHAPE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), final(x), rtol=0, atol=1e-5)
    assert export.nbytes < 4 * compact_params / 3  # BatchNorm and level tables stay float32
    assert count_bops(reloaded, example).total < count_bops(resnet(), example).total / 40
