"""The NeRV-style baseline: one network per video, post-training quantization, the same coder.

Paper: Maiya et al., "NIRVANA", CVPR 2023, arXiv 2212.14593, compares against NeRV (Chen et
al., NeurIPS 2021, arXiv 2110.13903), which fits one network to the whole video (frame index →
frame) and compresses it after training (pruning, 8-bit quantization, Huffman coding) [paper:
NeRV's pipeline as NIRVANA describes it; pruning is left out here, recon].

`encode_nerv` [recon]: trains `NeRVNet` on all frames (full batch, Adam, ``iters`` steps), then
for each bit width ``b`` in ``bits`` quantizes every tensor uniformly and symmetrically
(``step = max|W| / (2^(b−1) − 1)``, ``q = round(W / step)``), fits a discretised logistic to each
tensor's integers by moments (`sparsecore.export.entropy.fit_logistic`) and range-codes them
with the coder NIRVANA uses; the decoded network's PSNR and the byte count give one point of the
rate–distortion curve per ``b``. Bytes counted: a 12-byte header, per tensor ``lo, hi`` (int16),
``μ, σ`` (float16) and the step (float32), and the coded stream.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from sparse_nirvana.model import NeRVNet
from sparse_nirvana.video import psnr
from sparsecore.export.entropy import RangeCoder, decode_range, fit_logistic, logistic_pmf
from sparsecore.validation import check_int, check_number

__all__ = ["NeRVConfig", "NeRVResult", "encode_nerv"]


@dataclass(frozen=True)
class NeRVConfig:
    """Options of `encode_nerv`.

    Attributes:
        width: MLP width.
        channels: Feature channels on the ``H/4`` grid.
        freqs: Fourier frequencies of the frame index.
        iters: Training steps.
        lr: Adam learning rate.
        bits: Bit widths of the post-training quantization (one curve point each).
        seed: Initialisation seed.
    """

    width: int = 64
    channels: int = 16
    freqs: int = 6
    iters: int = 1500
    lr: float = 2e-3
    bits: tuple[int, ...] = (4, 5, 6, 8)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("width", "channels", "iters"):
            check_int(getattr(self, name), name, 1)
        check_int(self.freqs, "freqs", 0)
        check_int(self.seed, "seed", 0)
        if self.channels % 2:
            raise ValueError(f"channels must be even, got {self.channels}")
        check_number(self.lr, "lr", 0.0, open_low=True, finite=True)
        if isinstance(self.bits, int) or not self.bits:
            raise TypeError(f"bits must be a non-empty tuple of ints, got {self.bits!r}")
        object.__setattr__(self, "bits", tuple(self.bits))
        for b in self.bits:
            check_int(b, "bits", 2)
            if b > 16:
                raise ValueError(f"bits must be <= 16, got {b}")


@dataclass
class NeRVResult:
    """One trained baseline: a point per bit width.

    Attributes:
        points: ``[{"bits", "bpp", "psnr", "estimate_bits", "coded_bits"}]`` (measured from the
            decoded bytes).
        float_psnr: PSNR of the unquantized network.
        train_seconds: Wall time of training.
        code_seconds: Wall time of quantizing and coding, per bit width.
    """

    points: list[dict[str, float]] = field(default_factory=list)
    float_psnr: float = 0.0
    train_seconds: float = 0.0
    code_seconds: list[float] = field(default_factory=list)


def _code(model: NeRVNet, bits: int) -> tuple[bytes, float]:
    coder = RangeCoder()
    head = bytearray(struct.pack("<HHHHBB", model.frames, model.size, model.mlp[0].out_features,
                                 model.channels, model.freqs, bits))  # fmt: skip
    for p in model.parameters():
        w = p.detach().float()
        step = max(float(w.abs().max()), 1e-8) / (2 ** (bits - 1) - 1)
        q = torch.round(w / step).to(torch.int64).flatten().numpy()
        lo, hi = int(q.min()), int(q.max())
        loc, sigma = (float(np.float16(v)) for v in fit_logistic(q))
        head += struct.pack("<hheef", lo, hi, loc, sigma, step)
        if hi > lo:
            coder.encode(q, logistic_pmf(loc, sigma, lo, hi), lo)
    return bytes(head) + coder.finish(), coder.estimate_bits


def _decode(data: bytes) -> NeRVNet:
    frames, size, width, channels, freqs, _bits = struct.unpack_from("<HHHHBB", data)
    model = NeRVNet(frames, size, width, freqs, channels)
    pos = struct.calcsize("<HHHHBB")
    tables, params = [], []
    for p in model.parameters():
        lo, hi, loc, sigma, step = struct.unpack_from("<hheef", data, pos)
        pos += struct.calcsize("<hheef")
        params.append((p, lo, hi, step))
        if hi > lo:
            tables.append((logistic_pmf(loc, sigma, lo, hi), lo, p.numel()))
    decoded = iter(decode_range(data[pos:], tables) if tables else [])
    with torch.no_grad():
        for p, lo, hi, step in params:
            q = next(decoded) if hi > lo else np.full(p.numel(), lo)
            p.copy_(
                torch.tensor(step, dtype=torch.float32) * torch.from_numpy(q).float().view_as(p)
            )
    return model


def encode_nerv(video: torch.Tensor, config: NeRVConfig | None = None) -> NeRVResult:
    """Train the baseline on ``video`` (``(T, 3, H, W)``) and code it at every bit width."""
    c = config or NeRVConfig()
    if not isinstance(video, torch.Tensor) or video.dim() != 4 or video.shape[1] != 3:
        raise ValueError("video must be a (T, 3, H, W) tensor")
    t, _, h, w = video.shape
    if h != w or h % 4:
        raise ValueError(f"video frames must be square with a side divisible by 4, got {h}x{w}")
    result = NeRVResult()
    start = time.perf_counter()
    model = NeRVNet(t, h, c.width, c.freqs, c.channels, seed=c.seed)
    idx = torch.arange(t)
    opt = torch.optim.Adam(model.parameters(), lr=c.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, c.iters)
    for _ in range(c.iters):
        opt.zero_grad()
        ((model(idx) - video) ** 2).mean().backward()
        opt.step()
        sched.step()
    result.train_seconds = time.perf_counter() - start
    with torch.no_grad():
        result.float_psnr = psnr(model(idx).clamp(0, 1), video)
    for b in c.bits:
        tic = time.perf_counter()
        data, estimate = _code(model, b)
        result.code_seconds.append(time.perf_counter() - tic)
        with torch.no_grad():
            decoded = _decode(data)(idx).clamp(0, 1)
        result.points.append({
            "bits": b, "bpp": 8 * len(data) / (t * h * w), "psnr": psnr(decoded, video),
            "estimate_bits": estimate, "bytes": len(data),
        })  # fmt: skip
    return result
