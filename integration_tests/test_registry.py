"""Every installed method, discovered through the entry point, on one shared scenario."""

from __future__ import annotations

import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
from torch import nn

from sparsecore import NM, Procedure, PruningMethod, available_methods, available_procedures
from sparsecore.bench.train import applicability, build_method, fixed_sparsity
from sparsecore.testing import tiny_mlp

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent
METHODS = available_methods()
STEPS = 40


def test_every_workspace_package_registers_a_loadable_method():
    declared = {}
    for pyproject in sorted(ROOT.glob("packages/*/pyproject.toml")):
        data = tomllib.loads(pyproject.read_text())
        # protocol packages (sparse-rethinking) define no method and declare no entry point
        declared.update(data["project"].get("entry-points", {}).get("sparsecore.methods", {}))
    assert declared, "no method package declares an entry point"
    loaded = {ep.name: ep for ep in entry_points(group="sparsecore.methods")}
    for name, target in declared.items():
        assert name in loaded, f"{name} is declared but not installed"
        cls = loaded[name].load()
        assert isinstance(cls, type) and issubclass(cls, PruningMethod | Procedure), target
        assert cls.name == name, f"{target}.name is {cls.name!r}, entry point says {name!r}"
        if issubclass(cls, PruningMethod):
            assert METHODS[name] is cls
        else:  # a procedure (rollouts, reasoning, actions...): listed apart from weight methods
            assert available_procedures()[name] is cls and name not in METHODS


def _scenario(name: str) -> tuple[type[PruningMethod], str | None]:
    cls = METHODS[name]
    return cls, applicability(cls, "mnist1d", tiny_mlp())


@pytest.mark.parametrize("name", sorted(METHODS))
def test_shared_scenario(name):
    cls, reason = _scenario(name)
    if reason is not None:
        pytest.skip(f"{name}: {reason} (covered by its package's own conformance tests)")
    sparsity = None if fixed_sparsity(cls) else 0.75
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    method = build_method(cls, sparsity, seed=0, total_steps=STEPS).setup(model, optimizer)
    gen = torch.Generator().manual_seed(0)
    for _ in range(STEPS):
        x, y = torch.randn(16, 16, generator=gen), torch.randint(0, 4, (16,), generator=gen)
        if method.needs_calibration and method.step == 0:
            method.calibrate([(x, y)])
        loss = nn.functional.cross_entropy(model(x), y) + method.regularization()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    masks = {n: m.clone() for n, m in method.masks.masks().items()}
    patterns = {n: t.pattern for n, t in method.masks.targets.items()}
    final = method.finalize()
    assert not any(k.endswith("_mask") for k in final.state_dict())
    params = dict(final.named_parameters())
    zeros = sum(int((params[n] == 0).sum()) for n in masks)
    total = sum(m.numel() for m in masks.values())
    for n, mask in masks.items():
        assert not params[n][~mask].any(), f"{name}: masked weights of {n} are not zero"
        assert patterns[n].is_valid(mask), f"{name}: invalid {patterns[n]} mask on {n}"
    if sparsity is not None:
        assert zeros / total == pytest.approx(sparsity, abs=0.02), name
    elif isinstance(method.config.pattern, NM):
        pattern = method.config.pattern
        assert zeros / total >= 1 - pattern.n / pattern.m - 1e-9
    out = final(torch.randn(4, 16))
    assert torch.isfinite(out).all()
