"""AP stacked on sparse-lth's lottery ticket (rewinding with the schedule position), then export.

AP is an add-on to a method with pruning rounds: here sparse-lth's `LotteryTicket`, reached only
through the registry name ``"lth"`` and its public API (``prune_round``, ``rewind(optimizer,
scheduler)``). The composed run is compared, round by round, with the same lottery ticket run
alone: its masks, its rewind point, its schedule position and its round counter must be exactly
the ticket's own, apart from the AP removals (negative weights, exactly ``num_ap`` per round).
The final AP ticket is then exported as a compact checkpoint and reloaded.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from sparse_ap import ActivateWhilePruning
from sparse_lth import LotteryTicket
from sparsecore.export import load_compact, save_compact
from sparsecore.testing import tiny_mlp

torch.set_num_threads(1)
K = 3  # rewind step
STEPS = 16


def data(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(STEPS * 16, 16, generator=gen)
    return x, (x @ torch.randn(16, 4, generator=gen)).argmax(1)


def make_run(model):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 - s / (2 * STEPS))
    return optimizer, scheduler


def train(model, optimizer, scheduler, start, seed):
    x, y = data(seed)
    for step in range(start, STEPS):
        batch = slice(16 * step, 16 * step + 16)
        loss = F.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()


def test_ap_on_a_lottery_ticket_keeps_the_tickets_rewinding_then_exports(tmp_path):
    model_t, model_a = tiny_mlp(0), tiny_mlp(0)
    opt_t, sched_t = make_run(model_t)
    opt_a, sched_a = make_run(model_a)
    ticket = LotteryTicket(fraction=0.27, rewind_step=K).setup(model_t, opt_t)
    ap = ActivateWhilePruning(
        base="lth", base_options={"rewind_step": K}, fraction=0.3, ap_fraction=0.03
    ).setup(model_a, opt_a)
    assert isinstance(ap.base, LotteryTicket)
    train(model_t, opt_t, sched_t, 0, seed=0)
    train(model_a, opt_a, sched_a, 0, seed=0)
    for level in (1, 2):
        nnz = sum(ap.masks.nnz().values())
        trained = {n: p.detach().clone() for n, p in ap.masks.params().items()}
        ap.prune_round()
        ticket.prune_round()
        record = ap.history[-1]
        assert record["nnz_after"] == nnz - math.ceil(0.3 * nnz)
        removed = 0
        for name, mask in ticket.masks.masks().items():
            final = ap.masks.mask(name)
            assert not (final & ~mask).any()
            extra = mask & ~final
            assert (trained[name][extra] < 0).all()
            removed += int(extra.sum())
        assert removed == record["num_ap"] > 0
        # the ticket's own rewinding: a new optimizer, the scheduler advanced to step k
        opt_t, sched_t = make_run(model_t)
        opt_a, sched_a = make_run(model_a)
        ticket.rewind(opt_t, sched_t)
        ap.rewind(opt_a, sched_a)
        assert sched_a.last_epoch == sched_t.last_epoch  # the ticket's own schedule rewind
        assert ap.step == ticket.step and ap.base.round == ticket.round == level
        for key, value in ticket.rewind_state.items():
            assert torch.equal(ap.base.rewind_state[key], value), key
        for name, mask in ap.masks.masks().items():
            theta_k = ticket.rewind_state[name]
            assert torch.equal(ap.masks.param(name), theta_k * mask)
        ticket.masks.update_all({n: m.clone() for n, m in ap.masks.masks().items()})
        train(model_t, opt_t, sched_t, K, seed=level)
        train(model_a, opt_a, sched_a, K, seed=level)
        for name, p in ticket.masks.params().items():
            assert torch.equal(ap.masks.param(name), p)  # same run apart from the AP removals

    masks = {n: m.clone() for n, m in ap.masks.masks().items()}
    final = ap.finalize()
    save_compact(final, tmp_path / "ap.safetensors")
    reloaded = tiny_mlp(1)
    load_compact(tmp_path / "ap.safetensors", reloaded)
    params = dict(reloaded.named_parameters())
    for name, mask in masks.items():
        assert torch.equal(params[name] != 0, mask)
    x, _ = data(9)
    torch.testing.assert_close(reloaded(x[:8]), final(x[:8]))
