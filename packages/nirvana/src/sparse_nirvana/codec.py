"""The NIRVANA video codec: per-group patch INRs, autoregressive init, coded weight residuals.

Paper: Maiya et al., "NIRVANA: Neural Implicit Representations of Videos with Adaptive
Networks and Autoregressive Patch-wise Modeling", CVPR 2023, arXiv 2212.14593. No official code
was found; what the abstract, the project page and Fig. 2's caption state is marked [paper],
the rest [recall] (the digest, partly from memory) or [recon] (chosen here).

`encode_video` (one `PatchINR` with `NirvanaQuantization` attached, trained group after group):

1. the video is split into groups of ``G`` consecutive frames [paper]; each group is fitted by
   the patch-wise INR, all ``(H/p)·(W/p)`` patches as one batch [paper: patch-wise prediction
   of all G frames at once];
2. group ``g`` starts from group ``g − 1``'s final state (latents, decoders, priors: the model
   simply keeps training) [paper: "networks fit on a current group initialized using weights
   from the previous group's model"]; ``autoregressive=False`` (the ablation) re-initialises the
   network and the quantized state for every group and codes each group on its own;
3. the loss is ``MSE + λ · rate / pixels``, the rate being `NirvanaQuantization.rate_bits` of
   the residual ``ΔŴ_g = Ŵ_g − Ŵ_{g−1}`` (``Ŵ_0`` itself for the first group) [paper: an entropy
   penalty during training; residual coding of the quantized weights after training];
4. adaptive iterations [recall]: the first group trains ``first_iters`` steps; every later group
   is checked every ``check_every`` steps (from step 0) and stops as soon as the PSNR of its
   *quantized* reconstruction reaches ``target_psnr`` (by default the first group's final
   PSNR minus ``tolerance`` dB), else after ``max_iters`` — a static group that the previous
   network already explains trains zero steps and costs a residual of zeros;
5. after training, the priors are refitted to the final integers (50 Adam steps on the rate with
   the weights frozen: the prior's optimum of the same objective) [recon], and every tensor's
   residual is range-coded under its prior (`sparsecore.export.entropy`).

Bitstream [recon]: a 20-byte header (magic ``NIRV``, version, T, H, W, G, p, width, depth,
freqs, up_channels, flags: bit 0 biases quantized, bit 1 autoregressive); per group, per
tensor one flag byte (bit 0: a non-zero residual follows, bit 1: a new decoder follows), then
for flagged tensors ``lo, hi`` (int16) and the prior ``μ, σ`` (float16), the decoder ``s, b``
(float32); then the group's range-coded stream (its length as a LEB128 varint).
`decode_video` rebuilds every group's network from the bytes alone; bits per pixel are
``8·len(bytes) / (T·H·W)``.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from sparse_nirvana.model import PatchINR, assemble, patch_coords
from sparse_nirvana.quant import NirvanaQuantization
from sparse_nirvana.video import psnr
from sparsecore.export.entropy import RangeCoder, decode_range, logistic_pmf
from sparsecore.validation import check_bool, check_int, check_number

__all__ = ["CodecConfig", "EncodedVideo", "decode_video", "encode_video"]

_MAGIC = b"NIRV"
_HEAD = struct.Struct("<4sBHHHBBBBBBB")


@dataclass(frozen=True)
class CodecConfig:
    """Options of `encode_video` (module docstring).

    Attributes:
        group: Frames per group ``G``.
        patch: Patch side ``p``.
        width / depth / freqs / up_channels: `PatchINR` sizes.
        lam: Weight ``λ`` of the rate (bits per pixel) in the loss.
        lr: Adam learning rate (weight units).
        first_iters: Steps of the first group.
        max_iters: Most steps of a later group.
        check_every: Steps between quality checks of a later group.
        target_psnr: Stop a later group at this PSNR (dB); ``None``: the first group's minus
            ``tolerance``.
        tolerance: dB below the first group's PSNR that still counts as reached.
        adaptive: Stop early on the quality criterion (``False``: always ``max_iters``).
        autoregressive: Initialise group ``g`` from group ``g − 1`` (``False``: the ablation).
        init_bits: Initial grid of the quantization (`QuantConfig.init_bits`).
        seed: Seed of the network initialisation.
    """

    group: int = 4
    patch: int = 8
    width: int = 32
    depth: int = 2
    freqs: int = 3
    up_channels: int = 8
    lam: float = 1e-4
    lr: float = 5e-3
    first_iters: int = 400
    max_iters: int = 200
    check_every: int = 10
    target_psnr: float | None = None
    tolerance: float = 0.5
    adaptive: bool = True
    autoregressive: bool = True
    init_bits: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("group", "patch", "width", "depth", "up_channels", "check_every"):
            check_int(getattr(self, name), name, 1)
        for name in ("freqs", "first_iters", "max_iters", "seed"):
            check_int(getattr(self, name), name, 0)
        if self.patch % 2:
            raise ValueError(f"patch must be even, got {self.patch}")
        check_number(self.lam, "lam", 0.0, finite=True)
        check_number(self.lr, "lr", 0.0, open_low=True, finite=True)
        check_number(self.tolerance, "tolerance", 0.0, finite=True)
        if self.target_psnr is not None:
            check_number(self.target_psnr, "target_psnr", 0.0, open_low=True, finite=True)
        check_bool(self.adaptive, "adaptive")
        check_bool(self.autoregressive, "autoregressive")
        check_int(self.init_bits, "init_bits", 2)


@dataclass
class EncodedVideo:
    """The bitstream and what the encoder measured.

    Attributes:
        data: The bytes (everything `decode_video` needs).
        bpp: ``8·len(data) / (T·H·W)``.
        estimate_bits: The priors' ``Σ −log₂ p`` of everything range-coded.
        coded_bits: Bits of the range-coded streams alone.
        iterations: Training steps per group.
        psnr_groups: PSNR of each group's quantized reconstruction at the end of its training.
        zeros: Fraction of zeros in each later group's residual ``ΔŴ``.
        encode_seconds: Wall time of training and coding.
        initial: Per group, the integer weights it started from (``{tensor: int64}``).
        final: Per group, its final integer weights.
    """

    data: bytes
    bpp: float
    estimate_bits: float
    coded_bits: int
    iterations: list[int] = field(default_factory=list)
    psnr_groups: list[float] = field(default_factory=list)
    zeros: list[float] = field(default_factory=list)
    encode_seconds: float = 0.0
    initial: list[dict[str, torch.Tensor]] = field(default_factory=list)
    final: list[dict[str, torch.Tensor]] = field(default_factory=list)


def _to_patches(frames: torch.Tensor, patch: int) -> torch.Tensor:
    """``(G, 3, H, W)`` → ``(N, G, 3, p, p)`` row-major patches."""
    g, c, h, w = frames.shape
    x = frames.view(g, c, h // patch, patch, w // patch, patch).permute(2, 4, 0, 1, 3, 5)
    return x.reshape(-1, g, c, patch, patch)


def _fit_priors(quant: NirvanaQuantization, steps: int = 50) -> None:
    params = [p for s in quant.states.values() for p in (s.prior_loc, s.prior_log_scale)]
    opt = torch.optim.Adam(params, lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        quant.rate_bits().backward()
        opt.step()
    for s in quant.states.values():
        s.latent.grad = s.scale.grad = s.shift.grad = None


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return n, pos


def _new(config: CodecConfig, seed: int) -> tuple[PatchINR, NirvanaQuantization]:
    c = config
    model = PatchINR(c.group, c.patch, c.width, c.depth, c.freqs, c.up_channels, seed=seed)
    quant = NirvanaQuantization(init_bits=c.init_bits, seed=seed).attach(model)
    return model, quant


def encode_video(video: torch.Tensor, config: CodecConfig | None = None) -> EncodedVideo:
    """Fit and code ``video`` (``(T, 3, H, W)`` in [0, 1]); see the module docstring.

    Raises:
        ValueError: A video whose shape does not fit ``group`` / ``patch`` (naming ``video``).
    """
    c = config or CodecConfig()
    if not isinstance(video, torch.Tensor) or video.dim() != 4 or video.shape[1] != 3:
        raise ValueError("video must be a (T, 3, H, W) tensor")
    t, _, h, w = video.shape
    if t % c.group or h % c.patch or w % c.patch:
        raise ValueError(f"video shape {tuple(video.shape)} must divide by group and patch")
    start = time.perf_counter()
    coords = patch_coords(h, w, c.patch)
    model, quant = _new(c, c.seed)
    keys = list(quant.states)
    flags = 1 | (2 if c.autoregressive else 0)
    out = bytearray(_HEAD.pack(_MAGIC, 1, t, h, w, c.group, c.patch, c.width, c.depth,
                               c.freqs, c.up_channels, flags))  # fmt: skip
    result = EncodedVideo(b"", 0.0, 0.0, 0)
    target = c.target_psnr
    prev_decoder: dict[str, tuple[float, float]] = {}
    pixels = c.group * h * w
    for g in range(t // c.group):
        frames = video[g * c.group : (g + 1) * c.group]
        truth = _to_patches(frames, c.patch)
        if g > 0 and not c.autoregressive:
            quant.detach()
            model, quant = _new(c, c.seed + g)
            prev_decoder = {}
        elif g > 0:
            quant.set_reference()
        result.initial.append({k: v.clone() for k, v in quant.integers().items()})
        opt = torch.optim.Adam(quant.param_groups(c.lr))
        budget = c.first_iters if g == 0 or not c.autoregressive else c.max_iters
        steps = 0
        while True:
            if g > 0 and c.adaptive and steps % c.check_every == 0 and target is not None:
                with torch.no_grad():
                    if psnr(model(coords).clamp(0, 1), truth) >= target:
                        break
            if steps >= budget:
                break
            opt.zero_grad()
            loss = ((model(coords) - truth) ** 2).mean() + c.lam * quant.rate_bits() / pixels
            loss.backward()
            opt.step()
            steps += 1
        _fit_priors(quant)
        with torch.no_grad():
            quality = psnr(model(coords).clamp(0, 1), truth)
        if g == 0 and target is None:
            target = quality - c.tolerance
        result.iterations.append(steps)
        result.psnr_groups.append(quality)
        result.final.append({k: v.clone() for k, v in quant.integers().items()})
        residuals = quant.residuals()
        if g > 0:
            n = sum(r.numel() for r in residuals.values())
            result.zeros.append(sum(int((r == 0).sum()) for r in residuals.values()) / n)
        coder = RangeCoder()
        for key in keys:
            r = residuals[key].flatten().numpy()
            state = quant.states[key]
            decoder = (float(state.scale.detach()), float(state.shift.detach()))
            flag = (1 if r.size and (r != 0).any() else 0) | (
                2 if decoder != prev_decoder.get(key) else 0
            )
            out.append(flag)
            if flag & 1:
                lo, hi = int(r.min()), int(r.max())
                if lo < -32768 or hi > 32767:
                    raise ValueError(f"residual of {key} outside int16; lower init_bits")
                loc, sigma = (float(np.float16(v)) for v in quant.prior(key))
                out += struct.pack("<hhee", lo, hi, loc, sigma)
                if hi > lo:
                    coder.encode(r, logistic_pmf(loc, sigma, lo, hi), lo)
            if flag & 2:
                out += struct.pack("<ff", *decoder)
                prev_decoder[key] = decoder
        stream = coder.finish() if coder.estimate_bits > 0 else b""
        out += _varint(len(stream)) + stream
        result.estimate_bits += coder.estimate_bits
        result.coded_bits += 8 * len(stream)
    quant.detach()
    result.encode_seconds = time.perf_counter() - start
    result.data = bytes(out)
    result.bpp = 8 * len(out) / (t * h * w)
    return result


def decode_video(data: bytes) -> torch.Tensor:
    """Rebuild the ``(T, 3, H, W)`` video from `encode_video`'s bytes alone.

    Raises:
        ValueError: Not a NIRVANA bitstream.
    """
    if len(data) < _HEAD.size or data[:4] != _MAGIC:
        raise ValueError("data: not a NIRVANA bitstream")
    _, version, t, h, w, group, patch, width, depth, freqs, up, flags = _HEAD.unpack_from(data)
    if version != 1:
        raise ValueError(f"data: unknown version {version}")
    model = PatchINR(group, patch, width, depth, freqs, up)
    names = [n for n, _ in model.named_parameters()]
    shapes = {n.replace(".", "__"): p.shape for n, p in model.named_parameters()}
    ints = {k: torch.zeros(s, dtype=torch.int64) for k, s in shapes.items()}
    decoders = {k: (1.0, 0.0) for k in shapes}
    coords = patch_coords(h, w, patch)
    pos = _HEAD.size
    frames = []
    for g in range(t // group):
        if g > 0 and not flags & 2:  # not autoregressive: every group coded on its own
            ints = {k: torch.zeros(s, dtype=torch.int64) for k, s in shapes.items()}
        tables, order = [], []
        constant = {}
        for key in shapes:
            flag = data[pos]
            pos += 1
            if flag & 1:
                lo, hi, loc, sigma = struct.unpack_from("<hhee", data, pos)
                pos += 8
                if hi > lo:
                    tables.append((logistic_pmf(loc, sigma, lo, hi), lo, int(np.prod(shapes[key]))))
                    order.append(key)
                else:
                    constant[key] = lo
            if flag & 2:
                decoders[key] = struct.unpack_from("<ff", data, pos)
                pos += 8
        length, pos = _read_varint(data, pos)
        decoded = decode_range(data[pos : pos + length], tables) if tables else []
        pos += length
        for key, r in zip(order, decoded, strict=True):
            ints[key] += torch.from_numpy(r).view(shapes[key])
        for key, value in constant.items():
            ints[key] += value
        with torch.no_grad():
            for name in names:
                key = name.replace(".", "__")
                s, b = (torch.tensor(v, dtype=torch.float32) for v in decoders[key])
                model.get_parameter(name).copy_(s * ints[key].float() + b)
            frames.append(assemble(model(coords), h, w).clamp(0, 1))
    return torch.cat(frames)
