"""NIRVANA's quantization on a magnitude-pruned patch INR: zeros stay zeros, weights on a grid.

The core's one-shot magnitude pruning (50 %, through the registry) masks a patch INR
(``weight_mask`` buffers); NIRVANA's training-time quantization (a procedure, through its
registry) then trains the sparse network's integer latents under the entropy penalty. The
composition must keep the mask's exact zeros (the decoded weight is multiplied by the mask,
masked entries are neither penalised nor coded), leave every decoded weight on its layer's grid
``b + s·ℤ``, and after detach and the method's finalize give a plain model that holds exactly
those weights.
"""

from __future__ import annotations

import torch

from sparse_nirvana import NirvanaQuantization, PatchINR, patch_coords
from sparsecore import available_methods, available_procedures

torch.set_num_threads(1)


def test_magnitude_masks_then_nirvana_quantization():
    model = PatchINR(group=2, patch=8, width=12, depth=2, freqs=2, up_channels=2, seed=0)
    coords = patch_coords(16, 16, 8)
    target = torch.rand(4, 2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    magnitude = available_methods()["magnitude"](sparsity=0.5).setup(model)
    masks = {
        n: m.weight_mask.clone() for n, m in model.named_modules() if hasattr(m, "weight_mask")
    }
    assert masks and all(int((~m).sum()) > 0 for m in masks.values())

    cls = available_procedures()["nirvana"]
    assert cls is NirvanaQuantization
    quant = cls(init_bits=4).attach(model)
    opt = torch.optim.Adam(quant.param_groups(5e-3))
    for _ in range(20):
        opt.zero_grad()
        loss = ((model(coords) - target) ** 2).mean() + 1e-3 * quant.rate_bits() / 512
        loss.backward()
        opt.step()
    ints = quant.integers()
    for name, mask in masks.items():
        key = f"{name.replace('.', '__')}__weight"
        assert int(ints[key][~mask].abs().sum()) == 0  # masked latents are coded as 0
    decoded = {k: quant.decoded(k).detach().clone() for k in quant.states}
    with torch.no_grad():
        expected = model(coords)
    quant.detach()
    model = magnitude.finalize()
    for name, mask in masks.items():
        weight = model.get_submodule(name).weight
        assert torch.all(weight[~mask] == 0)  # zeros stay zeros
    for key, value in decoded.items():
        param = model.get_parameter(key.replace("__", "."))
        assert torch.equal(param, value)
        state = quant.states[key]
        k = (value - state.shift.detach()) / state.scale.detach()
        kept = value != 0
        assert torch.allclose(k[kept], torch.round(k[kept]), atol=1e-3)  # on the grid
    with torch.no_grad():
        assert torch.equal(model(coords), expected)
    assert not any(hasattr(m, "weight_mask") for m in model.modules())
