"""Tiny latent diffusion models pretrained on digits, built once and cached on disk.

`pretrained_tiny_ldm("tiny")` trains an `AutoencoderKL` on 16×16 digits, then a class-conditional
`UNet2DConditionModel` on its latents with the DDPM loss, and the `DigitsClassifier` used for FID
and accuracy; saves the UNet and the autoencoder with diffusers' ``save_pretrained``
(safetensors) and the class embedding and the classifier as safetensors files, and returns them
reloaded with ``from_pretrained`` / ``safetensors.torch.load_file``. Later calls only load.

Cache: the core's (`sparsecore.bench.pretrained.cache_dir`, i.e. ``$SPARSE_CACHE_DIR`` or
``~/.cache/sparse``), in ``ldm/<name>-<key>``, where ``key`` hashes the config, the recipe, the
data split, the seed, the torch and diffusers versions (as the core's tiny LMs); written to a
temporary sibling and renamed.

Sizes (`LDM_SIZES`): ``micro`` (for ``--quick`` runs; seconds) and ``tiny`` (the full
reproduction; a few CPU minutes). Recipe choices (labelled): Adam; autoencoder loss
``MSE + 1e-4·KL``; UNet AdamW (weight decay 0) with linear warm-up over 5% then cosine to 10%;
batches drawn by a generator seeded with ``seed + 1`` (not the weight seed).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparse_ldpruner.ldm import LDMConfig, TinyLDM, diffusion_loss
from sparse_ldpruner.quality import DigitsClassifier, load_digits_16, train_classifier
from sparsecore.bench.pretrained import write_cache_entry
from sparsecore.validation import check_int

__all__ = ["LDM_SIZES", "Pretrained", "ldm_path", "pretrained_tiny_ldm", "train_unet"]

LDM_SIZES: dict[str, dict[str, Any]] = {
    "micro": {
        "config": LDMConfig(channels=(8, 16), heads=2, context_dim=8, vae_channels=(8, 16),
                            groups=4),
        "train": dict(vae_steps=60, unet_steps=60, batch=32, lr=3e-3, classifier_steps=100),
    },
    "tiny": {
        "config": LDMConfig(channels=(16, 32), heads=2, context_dim=16, vae_channels=(16, 32),
                            groups=8),
        "train": dict(vae_steps=400, unet_steps=1500, batch=64, lr=3e-3, classifier_steps=400),
    },
}  # fmt: skip


@dataclass
class Pretrained:
    """A cached model with what evaluates it."""

    ldm: TinyLDM
    classifier: DigitsClassifier
    data: dict[str, torch.Tensor]
    meta: dict[str, Any]


def _key(name: str, seed: int) -> str:
    import diffusers

    recipe = {
        "name": name,
        "config": asdict(LDM_SIZES[name]["config"]),
        "train": LDM_SIZES[name]["train"],
        "data": "sklearn-digits-16px-split25-v1",
        "seed": seed,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def ldm_path(name: str = "tiny", seed: int = 0) -> Path:
    """Where `pretrained_tiny_ldm` keeps (or will keep) that model."""
    from sparsecore.bench.pretrained import cache_dir

    if name not in LDM_SIZES:
        raise ValueError(f"name: unknown LDM size {name!r}; available: {', '.join(LDM_SIZES)}")
    return cache_dir() / "ldm" / f"{name}-{_key(name, seed)}"


def _lr(step: int, steps: int, peak: float) -> float:
    warm = max(1, steps // 20)
    if step < warm:
        return peak * (step + 1) / warm
    ratio = (step - warm) / max(1, steps - warm)
    return 0.1 * peak + 0.45 * peak * (1 + math.cos(math.pi * ratio))


def train_unet(
    ldm: TinyLDM,
    latents: torch.Tensor,
    labels: torch.Tensor,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    progress: bool = False,
) -> list[float]:
    """Train (or fine-tune) ``ldm.unet`` and its class embedding with the diffusion loss.

    Args:
        ldm: The model (trained in place; the autoencoder is left alone).
        latents: Clean scaled latents of the training images.
        labels: Their classes.
        steps: Optimizer steps.
        batch: Batch size.
        lr: Peak learning rate (warm-up then cosine, see the module docstring).
        seed: Seeds the batch / timestep / noise generator.
        progress: Show a progress bar.

    Returns:
        The loss of every step.
    """
    from tqdm.auto import tqdm

    check_int(steps, "steps", 0)
    check_int(batch, "batch", 1)
    gen = torch.Generator().manual_seed(seed)
    params = [*ldm.unet.parameters(), *ldm.class_embedding.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    losses: list[float] = []
    ldm.unet.train()
    for step in tqdm(range(steps), desc="diffusion", disable=not progress, leave=False):
        for group in opt.param_groups:
            group["lr"] = _lr(step, steps, lr)
        idx = torch.randint(0, len(labels), (batch,), generator=gen)
        loss = diffusion_loss(ldm, latents[idx], labels[idx], gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
    ldm.eval()
    return losses


def _train_vae(vae: nn.Module, images: torch.Tensor, steps: int, batch: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(vae.parameters(), lr=2e-3)
    vae.train()
    for _ in range(steps):
        x = images[torch.randint(0, len(images), (batch,), generator=gen)]
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
        loss = nn.functional.mse_loss(vae.decode(z).sample, x) + 1e-4 * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    vae.eval()


def _build(name: str, seed: int, path: Path, progress: bool) -> None:
    from safetensors.torch import save_file

    start = time.perf_counter()
    recipe = LDM_SIZES[name]["train"]
    data = load_digits_16()
    ldm = TinyLDM.from_config(LDM_SIZES[name]["config"], seed=seed)
    _train_vae(ldm.vae, data["train_x"], recipe["vae_steps"], recipe["batch"], seed + 1)
    with torch.no_grad():
        raw = ldm.vae.encode(data["train_x"]).latent_dist.mean
        ldm.scaling_factor.fill_(float(raw.std()))
        recon = ldm.vae.decode(ldm.vae.encode(data["test_x"]).latent_dist.mean).sample
    latents = raw / ldm.scaling_factor
    losses = train_unet(
        ldm, latents, data["train_y"], recipe["unet_steps"], recipe["batch"], recipe["lr"],
        seed + 2, progress,
    )  # fmt: skip
    classifier, acc = train_classifier(data, seed + 3, recipe["classifier_steps"])
    meta = {
        "size": name,
        "seed": seed,
        "scaling_factor": float(ldm.scaling_factor),
        "vae_test_mse": float(nn.functional.mse_loss(recon, data["test_x"])),
        "final_loss_mean_last_50": sum(losses[-50:]) / len(losses[-50:]),
        "classifier_test_accuracy": acc,
        "train": recipe,
        "torch": torch.__version__,
        "train_seconds": time.perf_counter() - start,
    }

    def write(tmp: Path) -> None:
        ldm.unet.save_pretrained(tmp / "unet", safe_serialization=True)
        ldm.vae.save_pretrained(tmp / "vae", safe_serialization=True)
        save_file({"weight": ldm.class_embedding.weight.detach().contiguous()},
                  str(tmp / "class_embedding.safetensors"))  # fmt: skip
        save_file({k: v.contiguous() for k, v in classifier.state_dict().items()},
                  str(tmp / "classifier.safetensors"))  # fmt: skip

    write_cache_entry(path, write, meta)


def pretrained_tiny_ldm(name: str = "tiny", seed: int = 0, progress: bool = True) -> Pretrained:
    """A digits LDM and its judging classifier: loaded from the cache, or trained once.

    Args:
        name: ``"micro"`` or ``"tiny"`` (see `LDM_SIZES`).
        seed: Weight seed (the data order uses derived seeds).
        progress: Show a progress bar while training.

    Returns:
        The `Pretrained` bundle (models in eval mode on the CPU).

    Raises:
        ValueError: Unknown size or a negative seed.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import load_file

    check_int(seed, "seed", 0)
    path = ldm_path(name, seed)
    if not (path / "sparse_meta.json").exists():
        _build(name, seed, path, progress)
    meta = json.loads((path / "sparse_meta.json").read_text())
    unet = UNet2DConditionModel.from_pretrained(path / "unet")
    vae = AutoencoderKL.from_pretrained(path / "vae")
    weight = load_file(str(path / "class_embedding.safetensors"))["weight"]
    embedding = nn.Embedding.from_pretrained(weight, freeze=False)
    ldm = TinyLDM(unet, vae, embedding, meta["scaling_factor"]).eval()
    classifier = DigitsClassifier()
    classifier.load_state_dict(load_file(str(path / "classifier.safetensors")))
    return Pretrained(ldm, classifier.eval(), load_digits_16(), meta)
