"""Synthetic test videos, generated offline (NIRVANA is evaluated on UVG, which is not shipped).

Paper: Maiya et al., "NIRVANA", CVPR 2023, arXiv 2212.14593 (UVG 1080p; the bitrate adapts to
inter-frame motion, paper §4). At CPU scale [recon] a video is a smooth colour background with a
fine texture patch and a few anti-aliased discs and squares that move on a torus (positions wrap
around) at a chosen speed in pixels per frame:

* ``"static"``: speed 0 (every frame identical);
* ``"slow"``: 0.5 px/frame; ``"fast"``: 2 px/frame;
* ``"texture"``: fast shapes over a stronger high-frequency background.

Shapes are rendered with a soft edge (``sigmoid((r − d) / 0.5)``) so that sub-pixel motion
changes pixels smoothly. Values lie in [0, 1], shape ``(T, 3, H, W)``.
"""

from __future__ import annotations

import math

import torch

from sparsecore.validation import check_choice, check_int

__all__ = ["KINDS", "SPEEDS", "psnr", "synthetic_video"]

SPEEDS = {"static": 0.0, "slow": 0.5, "fast": 2.0, "texture": 2.0}
KINDS = tuple(SPEEDS)


def synthetic_video(
    kind: str = "slow", frames: int = 16, size: int = 32, seed: int = 0, shapes: int = 3
) -> torch.Tensor:
    """A ``(frames, 3, size, size)`` float32 video in [0, 1] (module docstring).

    Raises:
        ValueError / TypeError: An unknown ``kind`` or a bad count (naming the parameter).
    """
    check_choice(kind, "kind", KINDS)
    check_int(frames, "frames", 1)
    check_int(size, "size", 4)
    check_int(seed, "seed", 0)
    check_int(shapes, "shapes", 0)
    g = torch.Generator().manual_seed(1000 + seed)
    ys, xs = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    u, v = xs / size, ys / size
    bg = torch.empty(3, size, size)
    for c in range(3):
        fx, fy, ph = torch.rand(3, generator=g)
        bg[c] = 0.45 + 0.2 * torch.sin(2 * math.pi * (u * (1 + fx) + v * (1 + fy)) + 6 * ph)
    fine = 0.08 if kind != "texture" else 0.18
    stripes = torch.sin(2 * math.pi * (xs + ys) / 4.0) * torch.sin(2 * math.pi * xs / 6.0)
    region = ((u > 0.55) & (v > 0.55)).float() if kind != "texture" else torch.ones_like(u)
    bg = bg + fine * stripes * region
    speed = SPEEDS[kind]
    pos = torch.rand(shapes, 2, generator=g) * size
    angle = torch.rand(shapes, generator=g) * 2 * math.pi
    vel = torch.stack([torch.cos(angle), torch.sin(angle)], 1) * speed
    radius = 3.0 + 3.0 * torch.rand(shapes, generator=g)
    colour = torch.rand(shapes, 3, generator=g)
    square = torch.rand(shapes, generator=g) < 0.5
    video = torch.empty(frames, 3, size, size)
    for t in range(frames):
        img = bg.clone()
        for k in range(shapes):
            cx, cy = (pos[k] + t * vel[k]).tolist()
            dx = (xs - cx + size / 2) % size - size / 2  # torus distance
            dy = (ys - cy + size / 2) % size - size / 2
            d = torch.maximum(dx.abs(), dy.abs()) if square[k] else torch.sqrt(dx**2 + dy**2)
            alpha = torch.sigmoid((radius[k] - d) / 0.5)
            img = img * (1 - alpha) + colour[k][:, None, None] * alpha
        video[t] = img
    return video.clamp(0.0, 1.0)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two videos in [0, 1]."""
    mse = float(((a.float() - b.float()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)
