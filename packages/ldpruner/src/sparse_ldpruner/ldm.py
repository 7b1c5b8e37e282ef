"""A tiny class-conditional latent diffusion model built from `diffusers` parts.

`TinyLDM` holds a `diffusers.AutoencoderKL` (1-channel 16×16 digits ↔ a 2×8×8 latent), a
`diffusers.UNet2DConditionModel` (ResNet blocks, self-attention, cross-attention and GEGLU
feed-forwards, the operator set LD-Pruner prunes) and a class embedding that gives the UNet one
context token per image (the "prompt" of a class-conditional model). Sampling runs a
`diffusers.DDIMScheduler`; training uses a `diffusers.DDPMScheduler`'s noising.

Choices (labelled, none of them LD-Pruner's):

* **Conditioning:** one learned context token per class through cross-attention; no
  classifier-free guidance (a class-conditional model, sampled at guidance 1).
* **Latent scaling:** latents are divided by their training standard deviation
  (``scaling_factor``, as Stable Diffusion's 0.18215 was chosen).
* **Sampler:** DDIM, ``eta = 0``, ``steps`` evenly spaced timesteps of 1000 (deterministic given
  the initial noise, which LD-Pruner's latent score needs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sparsecore.validation import check_int

__all__ = ["LDMConfig", "TinyLDM", "diffusion_loss"]


@dataclass(frozen=True)
class LDMConfig:
    """Shape of a `TinyLDM`.

    Attributes:
        channels: UNet ``block_out_channels`` (one down/up level per entry).
        heads: Attention heads (diffusers' ``attention_head_dim``, which UNet2DConditionModel
            reads as the head count).
        context_dim: Width of the class context token (``cross_attention_dim``).
        latent_channels: Channels of the autoencoder's 8×8 latent.
        vae_channels: Autoencoder ``block_out_channels``.
        groups: GroupNorm groups in the UNet and the autoencoder.
        classes: Number of classes.
    """

    channels: tuple[int, ...] = (32, 64)
    heads: int = 4
    context_dim: int = 32
    latent_channels: int = 2
    vae_channels: tuple[int, ...] = (16, 32)
    groups: int = 8
    classes: int = 10

    def unet_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `diffusers.UNet2DConditionModel`."""
        levels = len(self.channels)
        return dict(
            sample_size=8,
            in_channels=self.latent_channels,
            out_channels=self.latent_channels,
            block_out_channels=tuple(self.channels),
            layers_per_block=1,
            down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (levels - 1),
            up_block_types=("CrossAttnUpBlock2D",) * (levels - 1) + ("UpBlock2D",),
            mid_block_type="UNetMidBlock2DCrossAttn",
            cross_attention_dim=self.context_dim,
            attention_head_dim=self.heads,
            norm_num_groups=self.groups,
        )

    def vae_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `diffusers.AutoencoderKL` (one downsampling: 16×16 to 8×8)."""
        levels = len(self.vae_channels)
        return dict(
            in_channels=1,
            out_channels=1,
            down_block_types=("DownEncoderBlock2D",) * levels,
            up_block_types=("UpDecoderBlock2D",) * levels,
            block_out_channels=tuple(self.vae_channels),
            latent_channels=self.latent_channels,
            norm_num_groups=self.groups,
            layers_per_block=1,
            sample_size=16,
        )


class TinyLDM(nn.Module):
    """Autoencoder + conditional UNet + class embedding, with a DDIM sampler.

    Args:
        unet: A `diffusers.UNet2DConditionModel`.
        vae: A `diffusers.AutoencoderKL`.
        class_embedding: ``nn.Embedding(classes, cross_attention_dim)``.
        scaling_factor: Latents are ``vae latent / scaling_factor`` inside the diffusion.
    """

    def __init__(
        self, unet: nn.Module, vae: nn.Module, class_embedding: nn.Embedding, scaling_factor: float
    ) -> None:
        super().__init__()
        self.unet = unet
        self.vae = vae
        self.class_embedding = class_embedding
        self.register_buffer("scaling_factor", torch.tensor(float(scaling_factor)))

    @classmethod
    def from_config(cls, config: LDMConfig, seed: int = 0) -> TinyLDM:
        """A randomly initialised model (deterministic for ``seed``)."""
        from diffusers import AutoencoderKL, UNet2DConditionModel

        check_int(seed, "seed", 0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            unet = UNet2DConditionModel(**config.unet_kwargs())
            vae = AutoencoderKL(**config.vae_kwargs())
            embedding = nn.Embedding(config.classes, config.context_dim)
        return cls(unet, vae, embedding, 1.0)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of one latent."""
        size = int(self.unet.config.sample_size)
        return (int(self.unet.config.in_channels), size, size)

    def context(self, labels: torch.Tensor) -> torch.Tensor:
        """The cross-attention context of each label: ``(batch, 1, context_dim)``."""
        return self.class_embedding(labels)[:, None, :]

    def denoise(self, latents: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The UNet's noise prediction for ``latents`` at timesteps ``t``."""
        return self.unet(latents, t, encoder_hidden_states=self.context(labels)).sample

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in ``[-1, 1]`` to scaled latents (the posterior mean)."""
        return self.vae.encode(images).latent_dist.mean / self.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents to images in ``[-1, 1]``."""
        return self.vae.decode(latents * self.scaling_factor).sample.clamp(-1, 1)

    def initial_noise(self, n: int, seed: int) -> torch.Tensor:
        """``n`` initial latents drawn from a generator seeded with ``seed``."""
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(n, *self.latent_shape, generator=gen)

    @torch.no_grad()
    def sample_latents(
        self, labels: torch.Tensor, noise: torch.Tensor, steps: int = 10
    ) -> torch.Tensor:
        """Run the DDIM sampler from ``noise``: the final latents, before the decoder.

        Args:
            labels: Class of each sample, shape ``(n,)``.
            noise: Initial latents, shape ``(n, *latent_shape)``.
            steps: DDIM steps.

        Returns:
            The denoised latents, shape ``(n, *latent_shape)``.
        """
        from diffusers import DDIMScheduler

        check_int(steps, "steps", 1)
        scheduler = DDIMScheduler(num_train_timesteps=1000, clip_sample=False)
        scheduler.set_timesteps(steps)
        latents = noise.to(next(self.unet.parameters()).device)
        labels = labels.to(latents.device)
        for t in scheduler.timesteps:
            eps = self.denoise(latents, t.expand(latents.shape[0]).to(latents.device), labels)
            latents = scheduler.step(eps, t, latents).prev_sample
        return latents

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, noise: torch.Tensor, steps: int = 10) -> torch.Tensor:
        """Images in ``[-1, 1]``: `sample_latents` then `decode`."""
        return self.decode(self.sample_latents(labels, noise, steps))


def diffusion_loss(
    ldm: TinyLDM, latents: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """The DDPM noise-prediction loss (epsilon MSE) at uniformly drawn timesteps.

    Args:
        ldm: The model.
        latents: Clean scaled latents.
        labels: Their classes.
        generator: Draws the timesteps and the noise (CPU generator).

    Returns:
        The scalar loss.
    """
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=1000)
    n = latents.shape[0]
    t = torch.randint(0, 1000, (n,), generator=generator)
    noise = torch.randn(latents.shape, generator=generator)
    noisy = scheduler.add_noise(latents, noise, t)
    device = latents.device
    pred = ldm.denoise(noisy.to(device), t.to(device), labels.to(device))
    return nn.functional.mse_loss(pred, noise.to(device))
