"""Schedules reach what was asked (issue 39): GMP off the update grid, RigL near the end.

Side by side in one run, on the conformance MLP (16-32-32-4, SGD) with random batches:

* GMP at 0.90 with ``update_every=100`` and ``end_step`` 150 / 50, trained ``end_step + 10``
  steps: the previous rule (updates only at ``begin + k ΔT``) against the core's window rule
  (the last update lands on ``end_step``);
* RigL at 0.90, ``update_every=100``, 500 steps: ``end_step=None`` without ``total_steps``
  (updates to the end; the last one at the final step) against ``total_steps=500`` (updates stop
  at ``min(0.75 T, T - ΔT) = 375``); the fraction of exact zeros in the finalized weights.

Usage: ``uv run python shared/sparsecore/benchmarks/schedules.py`` (a few seconds on CPU).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from sparsecore import GMP, RigL, ScheduleIncompleteWarning
from sparsecore.testing import tiny_mlp


class GridOnlyGMP(GMP):
    """GMP with the previous update rule: only ``begin + k ΔT`` (no update at ``end_step``)."""

    def on_after_optimizer_step(self) -> None:  # noqa: D102
        cfg, schedule = self.config, self.config.schedule
        step = self.step
        if (
            cfg.begin_step <= step <= cfg.end_step
            and (step - cfg.begin_step) % cfg.update_every == 0
        ):
            self.prune_to(schedule(step))


def train(method, steps: int) -> tuple[float, float, list[str]]:
    """Train ``steps`` steps; return (mask sparsity, zero fraction after finalize, warnings)."""
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    method.setup(model, opt)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x, y = torch.randn(8, 16, generator=gen), torch.randint(0, 4, (8,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    names = list(method.masks.names)
    mask_sparsity = method.masks.sparsity()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ScheduleIncompleteWarning)
        final = method.finalize()
    params = dict(final.named_parameters())
    zeros = sum(int((params[n] == 0).sum()) for n in names) / sum(params[n].numel() for n in names)
    return mask_sparsity, zeros, [str(w.message)[:60] for w in caught]


def main() -> None:
    """Print the comparison table."""
    torch.set_num_threads(1)
    print("| case | mask sparsity | zeros after finalize | finalize warning |")
    print("|---|---|---|---|")
    for end in (150, 50):
        for label, cls in (("previous rule", GridOnlyGMP), ("window rule", GMP)):
            result = train(cls(sparsity=0.9, end_step=end, update_every=100), end + 10)
            print(f"| GMP end_step={end}, {label} | {result[0]:.4f} | {result[1]:.4f} | "
                  f"{result[2] or '-'} |")  # fmt: skip
    for label, extra in (("end_step=None", {}), ("total_steps=500", {"total_steps": 500})):
        result = train(RigL(sparsity=0.9, update_every=100, **extra), 500)
        print(f"| RigL {label} | {result[0]:.4f} | {result[1]:.4f} | {result[2] or '-'} |")


if __name__ == "__main__":
    main()
