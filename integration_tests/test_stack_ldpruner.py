"""LD-Pruner's operator pruning of a diffusers LDM, then 2:4 magnitude sparsity on what is left,
with fine-tuning under the fixed masks: structured and semi-structured compression stacked.

LD-Pruner removes / halves UNet operators physically (weights of survivors preserved); the core's
`OneShotMagnitude` at 2:4 then masks the surviving Linear weights; a few diffusion-loss steps
keep the 2:4 pattern exact and the pruned operators absent.
"""

from __future__ import annotations

import torch

from sparse_ldpruner import (
    LDMConfig,
    ShortcutOnly,
    TinyLDM,
    ZeroOperator,
    diffusion_loss,
    enumerate_operators,
    ld_prune,
)
from sparsecore import OneShotMagnitude
from sparsecore.patterns import NM

torch.set_num_threads(1)


def test_ldpruner_then_two_four_magnitude_fine_tune():
    config = LDMConfig(channels=(8, 16), heads=2, context_dim=8, vae_channels=(8, 16), groups=4)
    ldm = TinyLDM.from_config(config, seed=0).eval()
    result = ld_prune(ldm, 0.85, n_samples=3, steps=1, actions=("remove",), seed=7)
    pruned = result.ldm
    assert result.macs <= 0.85 * result.dense_macs
    remaining = {op.name for op in enumerate_operators(pruned.unet)}
    removed = {c.split(":", 1)[1] for c in result.chosen}
    targets = [
        n for n, p in pruned.unet.named_parameters()
        if n.endswith("weight") and p.ndim == 2 and p.shape[1] % 4 == 0
        and "time_embedding" not in n
    ]  # fmt: skip
    opt = torch.optim.AdamW(pruned.unet.parameters(), lr=1e-3)
    method = OneShotMagnitude(sparsity=0.5, pattern="2:4", targets=targets).setup(pruned.unet, opt)
    latents = torch.randn(16, *pruned.latent_shape, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(16) % 10
    gen = torch.Generator().manual_seed(2)
    pruned.unet.train()
    for _ in range(3):
        loss = diffusion_loss(pruned, latents, labels, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = method.finalize()
    params = dict(final.named_parameters())
    for name in targets:
        assert NM(2, 4).is_valid(params[name] != 0), name
    assert removed and removed <= remaining
    for name in removed:  # removed operators stay removed (a shortcut or a zero branch)
        assert isinstance(final.get_submodule(name), ShortcutOnly | ZeroOperator), name
    out = pruned.generate(torch.arange(2), pruned.initial_noise(2, 0), steps=1)
    assert torch.isfinite(out).all()
