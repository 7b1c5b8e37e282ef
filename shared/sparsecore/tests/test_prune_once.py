"""sparsecore.prune_once: prune once at ``prune_step`` (or at finalize), derived from the step."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from sparsecore import PruningMethod
from sparsecore.method import MethodConfig
from sparsecore.prune_once import PruneOnce, require_batchnorm
from sparsecore.testing import tiny_mlp
from sparsecore.window import ScheduleIncompleteWarning

torch.set_num_threads(1)


@dataclass(frozen=True)
class _Config(MethodConfig):
    prune_step: int | None = None


class _RowPruner(PruneOnce, PruningMethod):
    """Zeroes the first row of every target, counting its prunings."""

    name = "row-pruner-test"
    config_class = _Config
    config: _Config

    def init_masks(self) -> None:
        self.prunings: list[int] = []

    def prune(self) -> None:
        self.prunings.append(self.step)
        for name in self.masks.params():
            keep = torch.ones_like(self.masks.mask(name))
            keep[0] = False
            self.masks.update(name, keep)


def _setup(method: _RowPruner) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    method.setup(model, opt)
    return model, opt


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        loss = model(torch.randn(4, 16, generator=gen)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def _quiet_finalize(method: _RowPruner) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScheduleIncompleteWarning)
        return method.finalize()


def test_prunes_exactly_once_at_prune_step_after_its_update() -> None:
    method = _RowPruner(sparsity=0.0, targets=("0.weight",), prune_step=3)
    model, opt = _setup(method)
    _train(model, opt, 2)
    assert not method.pruned and method.prunings == []
    assert method.schedule_gap() == "_RowPruner: prune_step=3 not reached after 2 steps"
    _train(model, opt, 3)
    assert method.pruned and method.prunings == [3] and method.schedule_gap() is None
    final = _quiet_finalize(method)
    assert method.prunings == [3]  # finalize does not prune twice
    assert int((final[0].weight[0] == 0).sum()) == 16 and bool((final[0].weight[1:] != 0).all())


def test_prune_step_none_prunes_at_finalize_without_a_warning() -> None:
    method = _RowPruner(sparsity=0.0, targets=("0.weight",))
    _train(*_setup(method), 2)
    assert not method.pruned and method.schedule_gap() is None
    final = _quiet_finalize(method)
    assert method.prunings == [2]
    assert int((final[0].weight == 0).sum()) == 16


def test_an_unreached_prune_step_warns_and_prunes_at_finalize() -> None:
    method = _RowPruner(sparsity=0.0, targets=("0.weight",), prune_step=50)
    _train(*_setup(method), 2)
    with pytest.warns(ScheduleIncompleteWarning, match="prune_step=50 not reached after 2"):
        final = method.finalize()
    assert method.prunings == [2] and int((final[0].weight == 0).sum()) == 16


def test_require_batchnorm() -> None:
    require_batchnorm(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)), "slimming")
    with pytest.raises(ValueError, match="slimming needs BatchNorm layers"):
        require_batchnorm(tiny_mlp(), "slimming")
