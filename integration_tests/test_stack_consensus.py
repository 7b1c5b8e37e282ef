"""Consensus one-pass gating, then unstructured magnitude pruning of the static sub-network.

`sparse_consensus` trains input-conditioned gates once and extracts a plain, physically smaller
ResNet (blocks removed, inner channels removed by Torch-Pruning). That model is an ordinary
network, so sparsecore's `OneShotMagnitude` can prune its weights further: the masks must hold
exactly 50% per layer through hard-mode fine-tuning, the architecture must stay the consensus
one, and the effective FLOPs must drop below the static sub-network's.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from sparse_consensus import ConsensusPruning, consensus_subnetwork, gated_resnet
from sparsecore import OneShotMagnitude
from sparsecore.evaluation import count_flops

torch.set_num_threads(1)
SHAPE = (1, 8, 8)


def data(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(256, *SHAPE, generator=gen)
    y = (x[:, 0, :4].mean((1, 2)) > 0).long() + 2 * (x[:, 0, :, :4].mean((1, 2)) > 0).long()
    return x, y


def train(model, optimizer, x, y, steps, seed, method=None):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (32,), generator=gen)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        if method is not None:
            loss = loss + method.regularization()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_consensus_subnetwork_then_magnitude_pruning_and_fine_tune():
    x, y = data()
    torch.manual_seed(0)
    model = gated_resnet(SHAPE, 4, width=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    consensus = ConsensusPruning(sparsity=0.5, input_shape=SHAPE).setup(model, optimizer)
    train(model, optimizer, x, y, 30, seed=0, method=consensus)
    small, report = consensus_subnetwork(consensus, x[:8], x)
    assert report["macs"] < report["dense_macs"]
    shapes = {n: p.shape for n, p in small.named_parameters()}

    optimizer = torch.optim.SGD(small.parameters(), lr=0.02, momentum=0.9)
    magnitude = OneShotMagnitude(sparsity=0.5, exclude=("fc.weight",)).setup(small, optimizer)
    masks = {n: m.clone() for n, m in magnitude.masks.masks().items()}
    train(small, optimizer, x, y, 10, seed=1)
    for name, mask in masks.items():
        assert torch.equal(magnitude.masks.mask(name), mask), name
        assert int(mask.sum()) == mask.numel() - mask.numel() // 2, name
    final = magnitude.finalize().eval()
    assert {n: p.shape for n, p in final.named_parameters()} == shapes
    flops = count_flops(final, x[:1])
    assert flops.dense == report["macs"] and flops.effective < flops.dense
    assert torch.isfinite(final(x[:16])).all()
