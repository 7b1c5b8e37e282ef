"""Seeded synthetic spatio-temporal forecasting data (no downloads).

Two generators, both with a known set of *uninformative* sensors, so that a sensor-selection
method can be checked for finding them:

* `advection_diffusion_grid`: a scalar field on a periodic ``H×W`` grid transported by a
  constant wind and diffused, solved exactly in Fourier space
  (``û_k(t+1) = û_k(t)·exp(-(D|k|² + i k·v))``). Every sample starts from an independent smooth
  random field (power spectrum ``∝ exp(-|k|²/(2κ²))``). A square block of sensors reports pure
  i.i.d. Gaussian noise instead of the field (broken sensors) in the *inputs*; the targets are the
  true field at every location, including under the noise block.
* `diffusion_graph`: a small sensor graph (random points in the unit square, symmetric
  k-nearest-neighbour edges) whose node values evolve by diffusion along edges plus a drift
  along a wind direction and small innovations; a random quarter of the nodes report noise.

Both return a `SpatioTemporalData` with inputs ``(S, T_in, ...)`` and targets
``(S, T_out, ...)`` normalised to unit variance, in the layout `sparse_dynst.SensorGate`
expects: grid ``(S, T, 1, H, W)``, graph ``(S, T, N, 1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["SpatioTemporalData", "advection_diffusion_grid", "diffusion_graph"]


@dataclass
class SpatioTemporalData:
    """A forecasting dataset with a known block of uninformative sensors.

    Attributes:
        x_train: Training inputs.
        y_train: Training targets (all locations).
        x_test: Test inputs.
        y_test: Test targets.
        noise_mask: Bool, spatial shape: True where the sensor reports pure noise.
        layout: ``"grid"`` or ``"graph"``.
        spatial_shape: ``(H, W)`` or ``(N,)``.
        adjacency: ``(N, N)`` float adjacency for graphs, ``None`` for grids.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    noise_mask: torch.Tensor
    layout: str
    spatial_shape: tuple[int, ...]
    adjacency: torch.Tensor | None = None


def _check_pos(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _split(x: torch.Tensor, y: torch.Tensor, train: int) -> tuple[torch.Tensor, ...]:
    return x[:train], y[:train], x[train:], y[train:]


def advection_diffusion_grid(
    train: int = 1024,
    test: int = 256,
    size: int = 16,
    t_in: int = 4,
    t_out: int = 4,
    velocity: tuple[float, float] = (1.2, 0.7),
    diffusion: float = 0.05,
    length_scale: float = 3.0,
    noise_block: int = 8,
    seed: int = 0,
) -> SpatioTemporalData:
    """Advection–diffusion on a periodic ``size×size`` grid with a noise block of sensors.

    Args:
        train: Training samples.
        test: Test samples.
        size: Grid side ``H = W``.
        t_in: Input frames.
        t_out: Frames to forecast.
        velocity: Wind ``(v_row, v_col)`` in cells per frame.
        diffusion: Diffusion coefficient ``D`` (cells² per frame).
        length_scale: Correlation length of the initial fields, in cells.
        noise_block: Side of the square block of noise sensors (top-left corner; 0: none).
        seed: Seed of everything random.
    """
    for value, name in ((train, "train"), (test, "test"), (size, "size")):
        _check_pos(value, name)
    _check_pos(t_in, "t_in")
    _check_pos(t_out, "t_out")
    if not 0 <= noise_block < size:
        raise ValueError(f"noise_block must lie in [0, size), got {noise_block}")
    gen = torch.Generator().manual_seed(seed)
    total, steps = train + test, t_in + t_out
    k = 2 * math.pi * torch.fft.fftfreq(size, dtype=torch.float64)
    kr, kc = torch.meshgrid(k, k, indexing="ij")
    k2 = kr**2 + kc**2
    spectrum = torch.exp(-k2 * length_scale**2 / 2)
    white = torch.randn(total, size, size, generator=gen, dtype=torch.float64)
    u_hat = torch.fft.fft2(white) * spectrum.sqrt()
    propagator = torch.exp(-diffusion * k2 - 1j * (kr * velocity[0] + kc * velocity[1]))
    frames = []
    for _ in range(steps):
        frames.append(torch.fft.ifft2(u_hat).real)
        u_hat = u_hat * propagator
    field = torch.stack(frames, dim=1)  # (S, T, H, W)
    field = (field / field.std()).to(torch.float32).unsqueeze(2)  # (S, T, 1, H, W)
    x, y = field[:, :t_in].clone(), field[:, t_in:].clone()
    noise_mask = torch.zeros(size, size, dtype=torch.bool)
    noise_mask[:noise_block, :noise_block] = True
    noise = torch.randn(x.shape, generator=gen)
    x = torch.where(noise_mask, noise, x)
    return SpatioTemporalData(
        *_split(x, y, train),
        noise_mask=noise_mask,
        layout="grid",
        spatial_shape=(size, size),
    )


def _knn_adjacency(points: torch.Tensor, k: int) -> torch.Tensor:
    dist = torch.cdist(points, points)
    dist.fill_diagonal_(math.inf)
    idx = dist.topk(k, largest=False).indices
    adj = torch.zeros(len(points), len(points), dtype=torch.float64)
    adj.scatter_(1, idx, 1.0)
    return ((adj + adj.T) > 0).to(torch.float64)


def diffusion_graph(
    train: int = 1024,
    test: int = 256,
    nodes: int = 32,
    t_in: int = 4,
    t_out: int = 4,
    neighbours: int = 4,
    mixing: float = 0.5,
    drift: float = 0.6,
    innovation: float = 0.05,
    noise_fraction: float = 0.25,
    seed: int = 0,
) -> SpatioTemporalData:
    """Diffusion with drift on a k-nearest-neighbour sensor graph, a quarter of nodes noisy.

    One step: ``x ← (1 − mixing)·x + mixing·P x + innovation·ε`` where ``P`` is row-stochastic:
    ``(1 − drift)`` of the weight spread evenly over neighbours (diffusion) and ``drift`` of it
    given to neighbours in proportion to how far *upwind* they lie (transport along a fixed wind
    direction).

    Args:
        train: Training samples.
        test: Test samples.
        nodes: Number of sensors ``N``.
        t_in: Input frames.
        t_out: Frames to forecast.
        neighbours: ``k`` of the k-NN graph.
        mixing: Fraction of a node's value exchanged per step.
        drift: Share of the exchange that follows the wind.
        innovation: Std of fresh noise added per step (unpredictable part).
        noise_fraction: Fraction of nodes whose readings are replaced by noise.
        seed: Seed of everything random.
    """
    for value, name in ((train, "train"), (test, "test"), (nodes, "nodes")):
        _check_pos(value, name)
    _check_pos(t_in, "t_in")
    _check_pos(t_out, "t_out")
    if not 0.0 <= noise_fraction < 1.0:
        raise ValueError(f"noise_fraction must lie in [0, 1), got {noise_fraction}")
    gen = torch.Generator().manual_seed(seed)
    points = torch.rand(nodes, 2, generator=gen, dtype=torch.float64)
    adj = _knn_adjacency(points, min(neighbours, nodes - 1))
    diffuse = adj / adj.sum(1, keepdim=True).clamp_min(1)
    wind = torch.tensor([0.8, 0.6], dtype=torch.float64)
    upwind = ((points.unsqueeze(1) - points.unsqueeze(0)) @ wind).clamp_min(0) * adj
    advect = upwind / upwind.sum(1, keepdim=True).clamp_min(1e-12)
    advect = torch.where(upwind.sum(1, keepdim=True) > 0, advect, diffuse)
    transition = (1 - drift) * diffuse + drift * advect
    total, steps = train + test, t_in + t_out
    state = torch.randn(total, nodes, generator=gen, dtype=torch.float64)
    for _ in range(3):  # burn-in: spatially smooth starts
        state = 0.5 * state + 0.5 * state @ transition.T
    frames = []
    for _ in range(steps):
        frames.append(state)
        eps = torch.randn(total, nodes, generator=gen, dtype=torch.float64)
        state = (1 - mixing) * state + mixing * state @ transition.T + innovation * eps
    series = torch.stack(frames, dim=1)
    series = (series / series.std()).to(torch.float32).unsqueeze(-1)  # (S, T, N, 1)
    x, y = series[:, :t_in].clone(), series[:, t_in:].clone()
    noisy = torch.randperm(nodes, generator=gen)[: int(noise_fraction * nodes)]
    noise_mask = torch.zeros(nodes, dtype=torch.bool)
    noise_mask[noisy] = True
    noise = torch.randn(x.shape, generator=gen)
    x = torch.where(noise_mask.unsqueeze(-1), noise, x)
    return SpatioTemporalData(
        *_split(x, y, train),
        noise_mask=noise_mask,
        layout="graph",
        spatial_shape=(nodes,),
        adjacency=adj.to(torch.float32),
    )
