"""Cost at scale: MaskSet.update touches only the layers it updates; lazy method discovery."""

from __future__ import annotations

import subprocess
import sys

import torch
from torch import nn

from sparsecore import RigL
from sparsecore.masks import MaskSet
from sparsecore.testing import tiny_mlp

torch.set_num_threads(1)


def _train_rigl(full_remask: bool, steps: int = 30) -> dict[str, torch.Tensor]:
    model = tiny_mlp(seed=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    method = RigL(sparsity=0.7, update_every=5, seed=11)
    method.setup(model, opt)
    original = MaskSet.update

    def legacy_update(self: MaskSet, name: str, keep: torch.Tensor) -> None:
        original(self, name, keep)
        if self.optimizer is not None:
            self.mask_optimizer_state()

    gen = torch.Generator().manual_seed(0)
    if full_remask:
        MaskSet.update = legacy_update  # type: ignore[method-assign]
    try:
        for _ in range(steps):
            x, y = torch.randn(8, 16, generator=gen), torch.randint(0, 4, (8,), generator=gen)
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        MaskSet.update = original  # type: ignore[method-assign]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for name, param in method.masks.params().items():
        for key, value in opt.state[param].items():
            if isinstance(value, torch.Tensor) and value.shape == param.shape:
                state[f"{name}.{key}"] = value.clone()
    return state


def test_per_layer_update_equals_full_remask_exactly():
    fast, slow = _train_rigl(False), _train_rigl(True)
    assert fast.keys() == slow.keys()
    for key in fast:
        assert torch.equal(fast[key], slow[key]), key


def test_update_masks_only_the_updated_layers_state():
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    method = RigL(sparsity=0.5, update_every=10**6)
    method.setup(model, opt)
    nn.functional.cross_entropy(model(torch.randn(8, 16)), torch.randint(0, 4, (8,))).backward()
    opt.step()
    masks = method.masks
    first, second = masks.names[:2]
    # Plant a value at a masked entry of the second layer's momentum: an update of the first
    # layer must not pass over the second layer's state (that pass is what made it quadratic).
    buf2 = opt.state[masks.param(second)]["momentum_buffer"]
    masked_at = (~masks.mask(second)).nonzero()[0]
    buf2[tuple(masked_at)] = 7.0
    keep = ~masks.mask(first)  # flip the first layer's mask
    masks.update(first, keep)
    buf1 = opt.state[masks.param(first)]["momentum_buffer"]
    assert torch.all(buf1[~keep] == 0)
    assert torch.all(masks.param(first)[~keep] == 0)
    assert buf2[tuple(masked_at)] == 7.0
    buf2[tuple(masked_at)] = 0.0  # undo the planted value (it would move a pruned weight)
    # The cached multiply factors follow the update: the next step keeps pruned weights at 0.
    nn.functional.cross_entropy(model(torch.randn(8, 16)), torch.randint(0, 4, (8,))).backward()
    opt.step()
    for name in masks.names:
        assert torch.all(masks.param(name)[~masks.mask(name)] == 0), name


def test_get_method_imports_only_its_entry_point():
    code = (
        "import sys\n"
        "from sparsecore import registry\n"
        "assert registry.get_method('rigl').__name__ == 'RigL'\n"
        "plugins = sorted(m for m in sys.modules if m.startswith('sparse_'))\n"
        "names = registry.method_names()\n"
        "from importlib.metadata import entry_points\n"
        "declared = sorted(ep.name for ep in entry_points(group='sparsecore.methods'))\n"
        "same = sorted(names) == declared\n"
        "print(plugins, 'transformers' in sys.modules, 'rigl' in names, same)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    # every installed entry point is named (plugins included when installed), none is imported
    assert out == ["[]", "False", "True", "True"]
