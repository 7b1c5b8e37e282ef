"""The lightweight bypass LAPP adds to every convolution it prunes, before training starts.

The paper (arXiv 2309.14157; only its abstract could be read, see `sparse_lapp.method`) says:
"Since too narrow network blocks information flow for training, automatic pruning rate setting
cannot explore a high pruning rate for a specific layer. [...] in order to maintain the
expressive power of the pruned layer, before training starts, we introduce an additional
lightweight bypass for each convolutional layer to be pruned, which only adds relatively few
additional burdens". The bypass's exact form is not in the material we could read [unconfirmed].

CHOICE (reconstructed from those sentences): the bypass is a parallel ``1×1`` convolution from
the layer's input to *all* of the layer's output channels (same stride), summed with the main
``k×k`` convolution before the normalisation: ``y = bypass(x) + scatter(conv_k(x))``. LAPP
prunes the filters of the main convolution only; the bypass is *not* pruned, so a pruned output
channel ``i`` still carries ``bypass_i(x)`` (a linear mix of every input channel) to the next
layer, which keeps its full input width. A layer pruned to a few filters therefore stays a
full-width layer whose spatial (``k×k``) capacity is narrow, instead of a narrow layer that
blocks the information flow; this is what "maintain the expressive power of the pruned layer"
and "too narrow network blocks information flow" describe. The burden is ``1/k²`` of the
layer's full cost (11% for 3×3, 20% for kernel 5), counted in the FLOPs budget.

An earlier version of this package pruned the bypass with the same channel mask as its layer;
then the bypass folds exactly into the centre tap of the ``k×k`` kernel and adds nothing at
inference (issue 25). That reading is gone.

After compaction the main convolution keeps only its kept filters and `BypassConv` adds its
output into the kept channels (``kept_index``); the bypass keeps its full shape.

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
    """A convolution with a parallel, unpruned ``1×1`` bypass.

    ``forward(x) = bypass(x) + conv(x)`` while the main convolution has every filter; after
    `compact_bypass` keeps ``n`` of them, the main branch's ``n`` outputs are added into the
    channels ``kept_index`` of the bypass output.

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
        index = torch.arange(conv.out_channels, device=conv.weight.device)
        self.register_buffer("kept_index", index)
        # Kaiming-uniform like PyTorch's default, drawn from ``generator`` when given.
        bound = 1.0 / conv.in_channels**0.5
        with torch.no_grad():
            values = torch.rand(self.bypass.weight.shape, generator=generator) * 2 - 1
            self.bypass.weight.copy_(values.to(self.bypass.weight) * bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Bypass plus the main branch (added into its kept channels)."""
        out = self.bypass(x)
        main = self.conv(x)
        if main.shape[1] == out.shape[1]:
            return out + main
        return out.index_add(1, self.kept_index, main)

    @torch.no_grad()
    def compact_bypass(self, keep: torch.Tensor) -> None:
        """Keep only the main convolution's filters ``keep`` (bool, one per output channel).

        The bypass keeps every output channel; nothing else in the model changes shape.

        Args:
            keep: Boolean mask over the *current* main filters (at least one ``True``).

        Raises:
            ValueError: ``keep`` does not fit or keeps nothing.
        """
        if keep.dtype != torch.bool or keep.shape != (self.conv.out_channels,):
            raise ValueError(
                f"keep must be a bool tensor of shape ({self.conv.out_channels},), got "
                f"{keep.dtype} {tuple(keep.shape)}"
            )
        if not bool(keep.any()):
            raise ValueError("keep must keep at least one filter")
        idx = torch.nonzero(keep.to(self.kept_index.device)).flatten()
        old = self.conv
        new = type(old)(
            old.in_channels,
            int(idx.numel()),
            old.kernel_size,
            stride=old.stride,
            padding=old.padding,
            dilation=old.dilation,
            bias=old.bias is not None,
            device=old.weight.device,
            dtype=old.weight.dtype,
        )
        new.weight.copy_(old.weight[idx.to(old.weight.device)])
        if old.bias is not None:
            new.bias.copy_(old.bias[idx.to(old.weight.device)])
        new.train(old.training)
        self.conv = new
        self.kept_index = self.kept_index[idx]


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
