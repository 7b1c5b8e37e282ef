"""The lightweight bypass LAPP adds to every convolution it prunes, before training starts.

The paper (abstract, the only part of arXiv 2309.14157 available to us, see
`sparse_lapp.method`) says: "in order to maintain the expressive power of the pruned layer,
before training starts, we introduce an additional lightweight bypass for each convolutional
layer to be pruned, which only adds relatively few additional burdens". Its exact form is not in
the material we could read.

CHOICE (reconstructed): the bypass is a parallel ``1×1`` convolution with the same input and
output channels and the same stride as the pruned ``k×k`` convolution, summed with it before the
normalisation: ``y = conv_k(x) + conv_1(x)``. Reasons: it is the cheapest branch that keeps every
input channel connected to every output channel (it costs ``1/k²`` of the main branch: 11% for
3×3), it is linear and shape-preserving so it needs no extra normalisation, and it is the reading
the project digest assumed. Because a pruned output channel must disappear from the network, the
bypass's output channel ``i`` is pruned together with filter ``i`` of the main convolution (they
form one channel unit), and pruned input channels disappear from both branches.

The padding of the bypass is chosen so that both branches have the same output size:
``p1 = p - d(k-1)/2`` per spatial dimension; a convolution for which that is not a non-negative
integer (even kernels, asymmetric or ``"valid"`` padding smaller than the kernel's half-width),
or a grouped convolution, gets no bypass and `add_bypasses` says so with a ``ValueError``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["BypassConv", "add_bypasses", "bypass_padding"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def bypass_padding(conv: nn.Module) -> tuple[int, ...] | None:
    """Padding that gives a ``1×1`` bypass the output size of ``conv`` (``None``: impossible).

    Args:
        conv: A ``Conv1d`` / ``Conv2d`` / ``Conv3d``.
    """
    if not isinstance(conv, _CONVS) or conv.groups != 1:
        return None
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        return None
    pads = []
    for k, p, d in zip(conv.kernel_size, conv.padding, conv.dilation, strict=True):
        half = d * (k - 1)
        if half % 2:
            return None
        pad = p - half // 2
        if pad < 0:
            return None
        pads.append(pad)
    return tuple(pads)


class BypassConv(nn.Module):
    """A convolution with a parallel ``1×1`` bypass: ``forward(x) = conv(x) + bypass(x)``.

    Both are standard ``nn.Conv*d`` layers, so Torch-Pruning and
    `sparsecore.export.remove_channels` shrink them like any other convolution.

    Args:
        conv: The convolution to wrap (kept as ``self.conv``, weights untouched).
        generator: Optional generator for the bypass initialisation (default: global RNG).
    """

    def __init__(self, conv: nn.Module, generator: torch.Generator | None = None) -> None:
        super().__init__()
        pad = bypass_padding(conv)
        if pad is None:
            raise ValueError(f"BypassConv: no shape-preserving 1x1 bypass exists for {conv}")
        cls = type(conv)
        self.conv = conv
        self.bypass = cls(
            conv.in_channels,
            conv.out_channels,
            1,
            stride=conv.stride,
            padding=pad,
            bias=False,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        # Kaiming-uniform like PyTorch's default, drawn from ``generator`` when given.
        bound = 1.0 / conv.in_channels**0.5
        with torch.no_grad():
            values = torch.rand(self.bypass.weight.shape, generator=generator) * 2 - 1
            self.bypass.weight.copy_(values.to(self.bypass.weight) * bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Main branch plus bypass."""
        return self.conv(x) + self.bypass(x)


def add_bypasses(
    model: nn.Module, names: Iterable[str], generator: torch.Generator | None = None
) -> list[str]:
    """Replace the named convolutions of ``model`` by `BypassConv` wrappers, in place.

    Call it before creating the optimizer (the bypass parameters are new). The usual way is
    ``add_bypasses(model, LAPP.prunable_convs(model, input_shape))``.

    Args:
        model: The model.
        names: Module names of convolutions (``fnmatch`` globs allowed). Convolutions that are
            already wrapped are left as they are.
        generator: Generator for the bypass initialisation (reproducible runs).

    Returns:
        The module names that were wrapped now.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: A name matches no convolution, or a convolution cannot get a bypass
            (grouped, even kernel, padding too small). Nothing is changed then.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(names, str):
        names = [names]
    modules = dict(model.named_modules())
    chosen: list[str] = []
    for spec in names:
        hits = [
            n
            for n, m in modules.items()
            if isinstance(m, (*_CONVS, BypassConv)) and fnmatch.fnmatchcase(n, spec)
        ]
        if not hits:
            raise ValueError(f"names: {spec!r} matches no convolution of the model")
        chosen.extend(h for h in hits if h not in chosen)
    todo = []
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = modules[parent_name] if parent_name else model
        if isinstance(parent, BypassConv) or isinstance(modules[name], BypassConv):
            continue  # already wrapped (or a branch of a wrapper)
        if bypass_padding(modules[name]) is None:
            raise ValueError(
                f"names: convolution {name!r} cannot get a shape-preserving 1x1 bypass "
                "(grouped, even kernel, or padding smaller than half the kernel)"
            )
        todo.append((parent, child, name))
    for parent, child, _ in todo:
        setattr(parent, child, BypassConv(getattr(parent, child), generator))
    return [name for _, _, name in todo]
