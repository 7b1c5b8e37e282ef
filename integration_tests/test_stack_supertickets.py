"""A SuperTicket drawn and physically shrunk, then retrained with its mask fixed by the core's
one-shot magnitude, then exported compactly: the "retrainable ticket" path.

SuperTickets searches channels (masked, then removed by `sparse_supertickets.shrink` through
`sparsecore.export.remove_channels`) and prunes weights progressively; the shrunk ticket's
nonzeros are exactly its mask, so `OneShotMagnitude` at the ticket's sparsity must find that mask
again, keep it through hard-mode retraining, and the compact checkpoint must reload to the same
function.
"""

from __future__ import annotations

import copy

import torch
from torch.nn import functional as F

from sparse_supertickets import SuperNet, SuperTickets, shrink
from sparsecore import OneShotMagnitude
from sparsecore.export import load_compact, save_compact

torch.set_num_threads(1)
SHAPE = (1, 8, 8)


def data(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(128, *SHAPE, generator=gen)
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


def test_superticket_then_fixed_mask_retrain_then_compact_export(tmp_path):
    x, y = data()
    torch.manual_seed(0)
    model = SuperNet(num_classes=4, stem=4, stages=((4, 1), (8, 2)), expand_ratio=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    method = SuperTickets(
        input_shape=SHAPE, total_steps=20, prune_interval=2, sparsity=0.6, rho=2.0,
        rho_warmup_steps=1, channel_every=4, channel_threshold=0.15,
    ).setup(model, optimizer)  # fmt: skip
    train(model, optimizer, x, y, 20, seed=0, method=method)
    params_before = sum(p.numel() for p in model.parameters())
    ticket, _, _ = shrink(method)
    shrunk = ticket.model
    assert sum(p.numel() for p in shrunk.parameters()) < params_before

    names = list(ticket.masks)
    optimizer = torch.optim.SGD(shrunk.parameters(), lr=0.02, momentum=0.9)
    fixed = OneShotMagnitude(
        sparsity=ticket.sparsity(), scope="global", targets=names, min_per_layer=0
    ).setup(shrunk, optimizer)
    for name, mask in ticket.masks.items():
        assert torch.equal(fixed.masks.mask(name), mask), name
    train(shrunk, optimizer, x, y, 10, seed=1)
    for name, mask in ticket.masks.items():
        assert torch.equal(fixed.masks.mask(name), mask), name
    final = fixed.finalize().eval()
    save_compact(final, tmp_path / "ticket.safetensors")
    reloaded = copy.deepcopy(final)
    with torch.no_grad():
        for p in reloaded.parameters():
            p.zero_()
    load_compact(tmp_path / "ticket.safetensors", reloaded)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x[:16]), final(x[:16]))
