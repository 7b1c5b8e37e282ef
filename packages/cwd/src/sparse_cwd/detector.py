"""A small anchor-free (CenterNet-style) detector with a YOLOv8-like C2f backbone and neck.

The paper compresses YOLOv8m (Sabaghian et al., arXiv 2509.12918). At CPU scale this module
builds the same kinds of blocks in plain PyTorch, so that Torch-Pruning (through
`sparsecore.groups`) sees the same couplings the fork's rules are written for:

* `ConvBNAct`: ``Conv2d`` (no bias) → ``BatchNorm2d`` → ``SiLU``, ultralytics' ``Conv``;
* `Bottleneck`: two 3×3 `ConvBNAct` with an optional residual sum (``add``);
* `C2f`: the YOLOv8 cross-stage block. ultralytics computes one 1×1 conv and splits it in two
  halves (``chunk``); here the halves are two 1×1 convs, ``cv0`` and ``cv1`` (Torch-Pruning's
  own YOLOv8 example makes the same change, ``C2f_v2``, because pruning a chunked tensor
  breaks the equal split). The output of ``cv1`` feeds the bottlenecks (and, with
  ``shortcut``, their residual sums), all outputs are concatenated and fused by ``cv2``;
* `CenterNetHead`: per output (class heatmap, box size, centre offset) two 3×3 `ConvBNAct`
  and a 1×1 output conv, like the branches (``cv2`` / ``cv3``) of YOLOv8's ``Detect``.

`TinyDetector` is backbone (strides 2, 4, 4, 8, 8) → top-down neck (upsample, concat, `C2f`
without shortcut, as in YOLOv8's head) → stride-4 head. Its forward returns
``(heatmap logits, sizes, offsets)``.

`fork_ignored_norms` is the fork's ``get_ignore_bn`` written for these names: the BatchNorms of a
residual bottleneck (its ``cv1`` and ``cv2``), the C2f half feeding it (``cv1``), and every
BatchNorm of the detection head.
"""

from __future__ import annotations

import torch
from torch import nn

from sparsecore.validation import check_int

__all__ = ["Bottleneck", "C2f", "CenterNetHead", "ConvBNAct", "TinyDetector", "fork_ignored_norms"]


class ConvBNAct(nn.Module):
    """``Conv2d`` → ``BatchNorm2d`` → ``SiLU`` (ultralytics' ``Conv``)."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """Two 3×3 convolutions, with the input added when ``shortcut`` (``add``)."""

    def __init__(self, channels: int, shortcut: bool) -> None:
        super().__init__()
        self.cv1 = ConvBNAct(channels, channels, 3)
        self.cv2 = ConvBNAct(channels, channels, 3)
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """YOLOv8's C2f block with the split written as two 1×1 convolutions (module docstring)."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = False) -> None:
        super().__init__()
        hidden = c_out // 2
        self.cv0 = ConvBNAct(c_in, hidden)
        self.cv1 = ConvBNAct(c_in, hidden)
        self.m = nn.ModuleList(Bottleneck(hidden, shortcut) for _ in range(n))
        self.cv2 = ConvBNAct((2 + n) * hidden, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y = self.cv1(x)
        outs = [self.cv0(x), y]
        for block in self.m:
            y = block(y)
            outs.append(y)
        return self.cv2(torch.cat(outs, 1))


class CenterNetHead(nn.Module):
    """Heatmap / size / offset branches, each two 3×3 `ConvBNAct` and a 1×1 output conv."""

    def __init__(self, channels: int, num_classes: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or channels

        def branch(out: int) -> nn.Sequential:
            return nn.Sequential(
                ConvBNAct(channels, hidden, 3),
                ConvBNAct(hidden, hidden, 3),
                nn.Conv2d(hidden, out, 1),
            )

        self.heat = branch(num_classes)
        self.size = branch(2)
        self.offset = branch(2)
        with torch.no_grad():  # CenterNet's prior: p = 0.1 on the heatmap at initialisation
            self.heat[2].bias.fill_(-2.19)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # noqa: D102
        return self.heat(x), self.size(x), self.offset(x)


class TinyDetector(nn.Module):
    """Anchor-free detector: C2f backbone, C2f neck, CenterNet head at stride 4.

    Args:
        num_classes: Object classes.
        width: Channels of the stride-2 stem and of the head branches (YOLOv8's head is
            narrower than its neck); the stages use ``2×`` and ``4×`` of it.
        depth: Bottlenecks per C2f block.

    Raises:
        ValueError: A bad option (named).
    """

    stride = 4

    def __init__(self, num_classes: int = 3, width: int = 8, depth: int = 1) -> None:
        super().__init__()
        check_int(num_classes, "num_classes", 1)
        check_int(width, "width", 2)
        check_int(depth, "depth", 1)
        w1, w2, w3 = width, 2 * width, 4 * width
        self.stem = ConvBNAct(3, w1, 3, 2)
        self.down1 = ConvBNAct(w1, w2, 3, 2)
        self.stage1 = C2f(w2, w2, depth, shortcut=True)
        self.down2 = ConvBNAct(w2, w3, 3, 2)
        self.stage2 = C2f(w3, w3, depth, shortcut=True)
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
        self.neck = C2f(w3 + w2, w2, depth, shortcut=False)
        self.head = CenterNetHead(w2, num_classes, hidden=w1)
        self.num_classes = num_classes

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The neck output (stride 4), the tensor the head reads and CWD distils."""
        p3 = self.stage1(self.down1(self.stem(x)))
        p4 = self.stage2(self.down2(p3))
        return self.neck(torch.cat([self.up(p4), p3], 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(heatmap logits (N, C, H/4, W/4), sizes (N, 2, ·), offsets (N, 2, ·))``."""
        return self.head(self.features(x))


def fork_ignored_norms(model: nn.Module) -> list[str]:
    """BatchNorm names the fork's ``get_ignore_bn`` leaves out of the L1 term and the pruning.

    For every `Bottleneck` with ``add``: its ``cv1.bn`` and ``cv2.bn`` and the ``cv1.bn`` of the
    enclosing `C2f` (the half whose output the residual sums reuse); every BatchNorm of a
    `CenterNetHead` (the fork lists all of ``Detect``'s ``cv2/cv3/cv4`` BatchNorms).

    Args:
        model: A model built from this module's blocks.

    Returns:
        Module names of the ignored BatchNorms, in model order.
    """
    ignored: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, C2f) and any(b.add for b in module.m):
            ignored.append(f"{name}.cv1.bn")
            for i, block in enumerate(module.m):
                if block.add:
                    ignored += [f"{name}.m.{i}.cv1.bn", f"{name}.m.{i}.cv2.bn"]
        if isinstance(module, CenterNetHead):
            ignored += [
                f"{name}.{sub}"
                for sub, m in module.named_modules()
                if isinstance(m, nn.BatchNorm2d)
            ]
    return ignored
