"""The radiance field (hash encoding, optional saliency gate, small MLP) and volume rendering.

Choices:

* Scene bounds: the unit cube ``[0, 1]^3``. Points outside get zero density (an axis-aligned
  bounding box, the same for every variant).
* Gate (HollowNeRF; labels as in `sparse_hollownerf.saliency`): a zero-skipping gate on the
  density [issue/summary], ``sigma(x) = tanh(s(x) / gate_temperature) · softplus(raw(x))``; the
  tanh form is [issue/summary], the temperature (default 0.1, so the gate is open for
  ``s ≳ 0.3``) is [reconstructed]. ``tanh(0) = 0``, so where ``s(x) = 0`` (all corners pruned)
  the density is exactly zero, and those samples are skipped: no hash lookup (the tables are
  neither read nor updated there, which is what frees table capacity for the salient regions)
  and no MLP evaluation; their colour is 0 (it has zero compositing weight) [reconstructed].
  ``skip_empty=False`` evaluates every sample and multiplies by the gate instead (same output,
  used to time the skipping). The hash features themselves are not scaled by ``s``
  [reconstructed; the previous version did, which gave the saliency a scale-ambiguous signal].
* MLP: ``L*F -> hidden -> hidden -> 4`` with ReLU (Instant-NGP uses 64-wide layers and a separate
  colour network with a spherical-harmonics view encoding; our synthetic scenes are Lambertian, so
  one small view-independent network suffices). Density ``softplus`` (more stable than Instant-
  NGP's truncated ``exp`` at CPU-scale learning rates), colour ``sigmoid``.
* Rendering: stratified samples, one per equal bin of ``[near, far]``; each sample's segment
  length is the bin width ``(far - near) / S`` (midpoint-rule quadrature), so a constant medium
  of density ``σ`` has transmittance exactly ``exp(-σ (far - near))`` regardless of jitter.
  Alpha compositing: ``α_i = 1 - exp(-σ_i δ)``, ``T_i = exp(-Σ_{j<i} σ_j δ)``,
  ``C = Σ T_i α_i c_i + T_S · background``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sparse_hollownerf.hashgrid import HashEncoding
from sparse_hollownerf.saliency import SaliencyGrid
from sparsecore.validation import check_bool, check_number

__all__ = ["HashNeRF", "Rendered", "composite", "render_rays", "stratified_samples"]


class HashNeRF(nn.Module):
    """Instant-NGP-style radiance field, optionally gated by a HollowNeRF saliency grid.

    Args:
        encoding: The hash encoding.
        hidden: Width of the two hidden MLP layers.
        saliency: A `SaliencyGrid` (HollowNeRF) or ``None`` (plain hash grid).
    """

    def __init__(
        self,
        encoding: HashEncoding,
        hidden: int = 32,
        saliency: SaliencyGrid | None = None,
        gate_temperature: float = 0.1,
        skip_empty: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(encoding, HashEncoding):
            raise TypeError(f"encoding must be a HashEncoding, got {type(encoding).__name__}")
        if saliency is not None and not isinstance(saliency, SaliencyGrid):
            raise TypeError(f"saliency must be a SaliencyGrid or None, got {saliency!r}")
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden must be a positive integer, got {hidden!r}")
        check_number(gate_temperature, "gate_temperature", 0.0, open_low=True)
        self.gate_temperature = float(gate_temperature)
        self.skip_empty = check_bool(skip_empty, "skip_empty")
        self.encoding = encoding
        self.saliency = saliency
        self.mlp = nn.Sequential(
            nn.Linear(encoding.output_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 4),
        )
        #: Samples evaluated / skipped by `forward` since construction (plain counters).
        self.samples_evaluated = 0
        self.samples_skipped = 0

    def gate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Density gate and the samples that are evaluated.

        Returns:
            ``(gate (N,), active (N,) bool)``: ``tanh(s(x) / gate_temperature)`` (1 without a
            saliency grid, 0 outside the unit cube) and ``inside & gate != 0``.
        """
        inside = ((x >= 0) & (x <= 1)).all(-1)
        if self.saliency is None:
            return inside.to(x.dtype), inside
        g = torch.tanh(self.saliency(x.clamp(0.0, 1.0)) / self.gate_temperature) * inside
        return g, inside & (g != 0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Density ``(N,)`` and colour ``(N, 3)`` at points ``x (N, 3)``."""
        if x.dim() != 2 or x.shape[-1] != 3:
            raise ValueError(f"x must have shape (N, 3), got {tuple(x.shape)}")
        g, active = self.gate(x)
        xc = x.clamp(0.0, 1.0)
        if not self.skip_empty:
            raw = self.mlp(self.encoding(xc))
            self.samples_evaluated += x.shape[0]
            return nn.functional.softplus(raw[:, 0]) * g, torch.sigmoid(raw[:, 1:])
        idx = active.nonzero().squeeze(1)
        self.samples_evaluated += int(idx.numel())
        self.samples_skipped += x.shape[0] - int(idx.numel())
        raw = self.mlp(self.encoding(xc[idx]))
        sigma = x.new_zeros(x.shape[0]).index_copy(
            0, idx, nn.functional.softplus(raw[:, 0]) * g[idx]
        )
        rgb = x.new_zeros(x.shape[0], 3).index_copy(0, idx, torch.sigmoid(raw[:, 1:]))
        return sigma, rgb


@dataclass
class Rendered:
    """Output of `composite`.

    Attributes:
        color: ``(R, 3)`` composited colours.
        weights: ``(R, S)`` per-sample weights ``T_i α_i``.
        transmittance: ``(R,)`` light left after the last sample, ``T_S``.
    """

    color: torch.Tensor
    weights: torch.Tensor
    transmittance: torch.Tensor


def stratified_samples(
    n_rays: int,
    near: float,
    far: float,
    n_samples: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, float]:
    """Sample distances ``t (R, S)``: one per equal bin, jittered (or bin midpoints).

    Args:
        n_rays: Number of rays ``R``.
        near: Start of the ray segment.
        far: End of the ray segment (``> near``).
        n_samples: Samples per ray ``S`` (≥ 1).
        generator: Jitter source; ``None`` gives the bin midpoints (deterministic, for testing).
        device: Device of the result.

    Returns:
        ``(t, delta)``: distances and the bin width ``(far - near) / S``.
    """
    if not far > near:
        raise ValueError(f"far must be > near, got near={near}, far={far}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    delta = (far - near) / n_samples
    edges = near + delta * torch.arange(n_samples, dtype=torch.float32, device=device)
    if generator is None:
        jitter = torch.full((n_rays, n_samples), 0.5, device=device)
    else:
        jitter = torch.rand(n_rays, n_samples, generator=generator).to(device)
    return edges[None, :] + delta * jitter, delta


def composite(
    sigma: torch.Tensor, rgb: torch.Tensor, delta: float, background: float = 1.0
) -> Rendered:
    """Alpha-composite samples front to back.

    Args:
        sigma: Densities ``(R, S)`` (≥ 0).
        rgb: Colours ``(R, S, 3)``.
        delta: Segment length of every sample (``> 0``).
        background: Grey level added with the remaining transmittance.
    """
    if sigma.dim() != 2 or rgb.shape != (*sigma.shape, 3):
        raise ValueError(
            f"sigma (R, S) and rgb (R, S, 3) expected, got {tuple(sigma.shape)} "
            f"and {tuple(rgb.shape)}"
        )
    if not delta > 0:
        raise ValueError(f"delta must be > 0, got {delta}")
    depth = sigma * delta
    alpha = 1.0 - torch.exp(-depth)
    acc = torch.cumsum(depth, dim=1)
    trans = torch.exp(-torch.cat([torch.zeros_like(acc[:, :1]), acc[:, :-1]], dim=1))
    weights = trans * alpha
    final = torch.exp(-acc[:, -1])
    color = (weights[..., None] * rgb).sum(1) + final[:, None] * background
    return Rendered(color, weights, final)


def render_rays(
    field: nn.Module,
    origins: torch.Tensor,
    dirs: torch.Tensor,
    near: float,
    far: float,
    n_samples: int,
    generator: torch.Generator | None = None,
    background: float = 1.0,
) -> Rendered:
    """Render rays through ``field`` (anything mapping points to ``(sigma, rgb)``).

    Args:
        field: E.g. a `HashNeRF`.
        origins: Ray origins ``(R, 3)``.
        dirs: Unit ray directions ``(R, 3)``.
        near: Start distance.
        far: End distance.
        n_samples: Samples per ray.
        generator: Jitter source (``None``: bin midpoints).
        background: Background grey level.
    """
    if origins.shape != dirs.shape or origins.dim() != 2 or origins.shape[-1] != 3:
        raise ValueError(
            f"origins and dirs must both be (R, 3), got {tuple(origins.shape)} and "
            f"{tuple(dirs.shape)}"
        )
    t, delta = stratified_samples(origins.shape[0], near, far, n_samples, generator, origins.device)
    pts = origins[:, None, :] + t[..., None] * dirs[:, None, :]
    sigma, rgb = field(pts.reshape(-1, 3))
    return composite(sigma.reshape(t.shape), rgb.reshape(*t.shape, 3), delta, background)
