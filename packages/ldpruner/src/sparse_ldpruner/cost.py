"""What pruning a UNet buys: parameters, multiply-accumulates and measured sampling latency.

`unet_macs` counts, for one UNet forward on one latent, every ``nn.Conv2d`` and ``nn.Linear``
(``positions × numel(W)`` / ``rows × in × out``, as `sparsecore.evaluation.count_flops`) plus
the two attention matmuls of every diffusers ``Attention`` (``2 × heads × L × S × head_dim``),
which the core's counter cannot see because diffusers' ``Attention`` stores no head size. Biases,
norms and activations are not counted (as in the core).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["count_parameters", "interleaved_latency", "unet_macs"]


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (shared ones once)."""
    return sum(p.numel() for p in module.parameters())


def unet_macs(ldm: nn.Module) -> int:
    """MACs of one UNet forward of `TinyLDM` ``ldm`` on one latent (batch 1)."""
    from diffusers.models.attention_processor import Attention

    total = 0
    handles = []

    def conv_hook(module: nn.Conv2d, args: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += out.shape[0] * out.shape[2] * out.shape[3] * module.weight.numel()

    def linear_hook(module: nn.Linear, args: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() // out.shape[-1] * module.in_features * module.out_features

    def attn_hook(module: nn.Module, args: tuple, kwargs: dict, out: torch.Tensor) -> None:
        nonlocal total
        x = args[0] if args else kwargs["hidden_states"]
        context = kwargs.get("encoder_hidden_states")
        length = x.shape[1] if x.ndim == 3 else x.shape[2] * x.shape[3]
        source = length if context is None else context.shape[1]
        total += 2 * x.shape[0] * length * source * module.inner_dim

    for module in ldm.unet.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
        elif isinstance(module, Attention):
            handles.append(module.register_forward_hook(attn_hook, with_kwargs=True))
    try:
        with torch.no_grad():
            latents = torch.zeros(1, *ldm.latent_shape)
            ldm.denoise(latents, torch.tensor([500]), torch.tensor([0]))
    finally:
        for h in handles:
            h.remove()
    return int(total)


def interleaved_latency(
    fns: Sequence[Callable[[], object]], repeats: int = 5, warmup: int = 1
) -> list[float]:
    """Median wall time (s) of each function, measured round-robin so that load hits all alike.

    Args:
        fns: The functions to time.
        repeats: Timed rounds.
        warmup: Untimed rounds first.

    Returns:
        The median seconds of each function, in order.
    """
    times: list[list[float]] = [[] for _ in fns]
    for round_ in range(warmup + repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            if round_ >= warmup:
                times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]
