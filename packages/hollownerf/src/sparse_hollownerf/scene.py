"""Synthetic scenes with analytic ground truth: coloured primitives in an empty unit cube.

Every primitive (sphere or axis-aligned box) has a constant density and colour inside and
nothing outside; primitives are disjoint. Along a ray each convex primitive occupies one interval,
and disjoint convex sets give disjoint intervals, so the volume-rendering integral has a closed
form: sort the intervals by entry, ``C = Σ_p T_p (1 - exp(-σ_p L_p)) c_p + T_end · background``
with ``T`` the product of the earlier ``exp(-σ L)``. Images are rendered with it exactly (no
quadrature), from pinhole cameras on a circle around the cube looking at its centre; test views sit
half-way between training views.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["Primitive", "Scene", "Views", "camera_rays", "make_views", "psnr", "random_scene"]


@dataclass(frozen=True)
class Primitive:
    """A sphere (``size`` = radius) or a box (``size`` = half-extent) of constant density/colour."""

    kind: str
    center: tuple[float, float, float]
    size: float
    density: float
    color: tuple[float, float, float]

    def __post_init__(self) -> None:
        if self.kind not in ("sphere", "box"):
            raise ValueError(f"kind must be 'sphere' or 'box', got {self.kind!r}")
        if not self.size > 0 or not self.density >= 0:
            raise ValueError(f"size must be > 0 and density >= 0, got {self.size}, {self.density}")

    def interval(self, o: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Entry/exit distances ``(t0, t1)`` of rays ``o + t d`` (``t0 >= t1`` means a miss)."""
        c = torch.tensor(self.center, dtype=o.dtype, device=o.device)
        if self.kind == "sphere":
            oc = o - c
            b = (oc * d).sum(-1)
            disc = b * b - ((oc * oc).sum(-1) - self.size**2)
            root = torch.sqrt(disc.clamp(min=0))
            t0, t1 = -b - root, -b + root
            miss = disc <= 0
            return torch.where(miss, 1.0, t0), torch.where(miss, 0.0, t1)
        inv = 1.0 / torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
        a = (c - self.size - o) * inv
        b = (c + self.size - o) * inv
        return torch.minimum(a, b).amax(-1), torch.maximum(a, b).amin(-1)

    def bounding_radius(self) -> float:
        """Radius of a sphere containing the primitive."""
        return self.size * (math.sqrt(3.0) if self.kind == "box" else 1.0)


@dataclass(frozen=True)
class Scene:
    """Disjoint primitives inside ``[0, 1]^3`` and a background grey level."""

    primitives: tuple[Primitive, ...]
    background: float = 1.0

    def render(self, origins: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        """Exact colours ``(R, 3)`` of rays (unit ``dirs``), by the closed form above."""
        if not self.primitives:
            return torch.full_like(origins, self.background)
        spans = [p.interval(origins, dirs) for p in self.primitives]
        t0 = torch.stack([s[0] for s in spans], 1).clamp(min=0)
        t1 = torch.stack([s[1] for s in spans], 1)
        length = (t1 - t0).clamp(min=0)
        dens = torch.tensor([p.density for p in self.primitives], dtype=origins.dtype)
        cols = torch.tensor([p.color for p in self.primitives], dtype=origins.dtype)
        order = torch.argsort(t0, dim=1)
        depth = torch.gather(length * dens[None], 1, order)
        col = cols[order]  # (R, P, 3)
        alpha = 1 - torch.exp(-depth)
        acc = torch.cumsum(depth, 1)
        trans = torch.exp(-torch.cat([torch.zeros_like(acc[:, :1]), acc[:, :-1]], 1))
        out = ((trans * alpha)[..., None] * col).sum(1)
        return out + torch.exp(-acc[:, -1])[:, None] * self.background


def random_scene(
    seed: int = 0,
    n_primitives: int = 4,
    density: tuple[float, float] = (15.0, 40.0),
    background: float = 1.0,
) -> Scene:
    """Random disjoint spheres and boxes (bounding spheres do not overlap) in ``[0.15, 0.85]^3``."""
    if isinstance(n_primitives, bool) or not isinstance(n_primitives, int) or n_primitives < 1:
        raise ValueError(f"n_primitives must be a positive integer, got {n_primitives!r}")
    gen = torch.Generator().manual_seed(seed)
    prims: list[Primitive] = []
    tries = 0
    while len(prims) < n_primitives:
        tries += 1
        if tries > 10_000:
            raise ValueError(f"could not place {n_primitives} disjoint primitives")
        u = torch.rand(8, generator=gen).tolist()
        kind = "sphere" if u[0] < 0.5 else "box"
        size = 0.1 + 0.08 * u[1]
        prim = Primitive(
            kind,
            (0.25 + 0.5 * u[2], 0.25 + 0.5 * u[3], 0.25 + 0.5 * u[4]),
            size,
            density[0] + (density[1] - density[0]) * u[5],
            tuple(0.1 + 0.8 * v for v in torch.rand(3, generator=gen).tolist()),  # type: ignore[arg-type]
        )
        r = prim.bounding_radius()
        if any(not c - r >= 0.02 and c + r <= 0.98 for c in prim.center):
            continue
        if all(math.dist(prim.center, q.center) > r + q.bounding_radius() + 0.02 for q in prims):
            prims.append(prim)
    return Scene(tuple(prims), background)


def camera_rays(
    origin: torch.Tensor, target: torch.Tensor, image_size: int, fov_deg: float = 40.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pinhole rays through pixel centres, ``(H*W, 3)`` origins and unit directions."""
    forward = target - origin
    forward = forward / forward.norm()
    up = torch.tensor([0.0, 0.0, 1.0])
    right = torch.linalg.cross(forward, up)
    right = right / right.norm()
    true_up = torch.linalg.cross(right, forward)
    half = math.tan(math.radians(fov_deg) / 2)
    coords = (torch.arange(image_size, dtype=torch.float32) + 0.5) / image_size * 2 - 1
    v, u = torch.meshgrid(-coords * half, coords * half, indexing="ij")
    dirs = forward + u[..., None] * right + v[..., None] * true_up
    dirs = (dirs / dirs.norm(dim=-1, keepdim=True)).reshape(-1, 3)
    return origin.expand_as(dirs).clone(), dirs


@dataclass
class Views:
    """Posed images: ``origins``/``dirs`` ``(V, H*W, 3)``, ``colors`` ``(V, H*W, 3)``."""

    origins: torch.Tensor
    dirs: torch.Tensor
    colors: torch.Tensor
    image_size: int
    near: float
    far: float
    background: float


def make_views(
    scene: Scene,
    n_views: int,
    image_size: int = 24,
    radius: float = 1.3,
    elevation_deg: float = 25.0,
    offset: float = 0.0,
    fov_deg: float = 45.0,
) -> Views:
    """Views on a circle around the cube centre; ``offset`` (in steps) shifts the azimuths.

    ``near``/``far`` bracket the cube: ``radius ∓ sqrt(3)/2``.
    """
    if isinstance(n_views, bool) or not isinstance(n_views, int) or n_views < 1:
        raise ValueError(f"n_views must be a positive integer, got {n_views!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    if not radius > math.sqrt(3) / 2:
        raise ValueError(f"radius must exceed the cube's half-diagonal, got {radius}")
    center = torch.tensor([0.5, 0.5, 0.5])
    el = math.radians(elevation_deg)
    origins, dirs, colors = [], [], []
    for i in range(n_views):
        az = 2 * math.pi * (i + offset) / n_views
        eye = center + radius * torch.tensor(
            [math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)]
        )
        o, d = camera_rays(eye, center, image_size, fov_deg)
        origins.append(o)
        dirs.append(d)
        colors.append(scene.render(o, d))
    half = math.sqrt(3) / 2
    return Views(
        torch.stack(origins),
        torch.stack(dirs),
        torch.stack(colors),
        image_size,
        radius - half,
        radius + half,
        scene.background,
    )


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB for values in ``[0, 1]``: ``-10 log10(MSE)``."""
    if pred.shape != target.shape:
        raise ValueError(f"shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    mse = float(((pred - target) ** 2).mean())
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)
