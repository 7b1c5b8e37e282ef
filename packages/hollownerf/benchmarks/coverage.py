"""Diagnostic: how much of the objects and of empty space the pruned saliency keeps.

Trains hollownerf-T/4 exactly as ``reproduce.py`` does (full settings) on the given seeds and
reports, on 200 000 uniform points, the object volume, the fraction of object / empty points
with ``s(x) > 0`` after the prune, and the first/last ADMM budget violation ``Σm − B``.

Usage: ``python benchmarks/coverage.py [SEED ...]`` (default seeds 0 and 2).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import reproduce as rep

from sparse_hollownerf import HollowNeRF, fit, make_optimizer, make_views, random_scene


def main(seeds: list[int]) -> None:
    """Print the coverage line of every seed."""
    torch.set_num_threads(1)
    cfg = rep.FULL
    for seed in seeds:
        scene = random_scene(seed)
        train = make_views(scene, cfg["train_views"], cfg["image"])
        model = rep.build(rep.TABLE // 4, seed, saliency=True)
        opt = make_optimizer(model)
        method = HollowNeRF(
            sparsity=rep.SALIENCY_SPARSITY, seed=seed + 1000, **rep.schedule(cfg["steps"])
        ).setup(model, opt)
        fit(model, train, cfg["steps"], opt, method, rep.RAYS, rep.SAMPLES, seed)
        x = torch.rand(200_000, 3, generator=torch.Generator().manual_seed(9))
        inside = torch.zeros(len(x), dtype=torch.bool)
        for p in scene.primitives:
            d = x - torch.tensor(p.center)
            inside |= d.norm(dim=-1) <= p.size if p.kind == "sphere" else d.abs().amax(-1) <= p.size
        with torch.no_grad():
            s = model.saliency(x)
        h = method.history
        print(
            f"seed {seed}: object volume {inside.float().mean():.3f}; s>0 covers "
            f"{(s[inside] > 0).float().mean():.3f} of the objects, "
            f"{(s[~inside] > 0).float().mean():.3f} of empty space; violation first/last "
            f"{h[0]['violation']:.1f}/{h[-1]['violation']:.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [0, 2])
