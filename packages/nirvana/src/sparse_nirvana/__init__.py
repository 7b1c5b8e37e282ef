"""NIRVANA (Maiya et al., CVPR 2023, arXiv 2212.14593): video INRs with adaptive networks.

Public API:

* `NirvanaQuantization` / `QuantConfig`: training-time quantization of any model's Linear /
  Conv2d tensors (integer latents with STE, per-tensor affine decoders, a learned factorised
  prior and its entropy penalty), a `sparsecore.Procedure` (entry point ``nirvana``);
* `encode_video` / `decode_video` / `CodecConfig` / `EncodedVideo`: the codec (groups of
  frames, one patch-wise INR per group initialised from the previous one, adaptive iterations,
  range-coded weight residuals);
* `encode_nerv` / `NeRVConfig`: the NeRV-style per-video baseline (post-training uniform
  quantization, the same coder);
* `PatchINR`, `NeRVNet`, `synthetic_video`, `psnr`.
"""

from sparse_nirvana.baseline import NeRVConfig, NeRVResult, encode_nerv
from sparse_nirvana.codec import CodecConfig, EncodedVideo, decode_video, encode_video
from sparse_nirvana.model import NeRVNet, PatchINR, assemble, patch_coords
from sparse_nirvana.quant import NirvanaQuantization, QuantConfig, logistic_bits, ste_round
from sparse_nirvana.video import KINDS, SPEEDS, psnr, synthetic_video

__version__ = "0.1.0"

__all__ = [
    "KINDS",
    "SPEEDS",
    "CodecConfig",
    "EncodedVideo",
    "NeRVConfig",
    "NeRVNet",
    "NeRVResult",
    "NirvanaQuantization",
    "PatchINR",
    "QuantConfig",
    "__version__",
    "assemble",
    "decode_video",
    "encode_nerv",
    "encode_video",
    "logistic_bits",
    "patch_coords",
    "psnr",
    "ste_round",
    "synthetic_video",
]
