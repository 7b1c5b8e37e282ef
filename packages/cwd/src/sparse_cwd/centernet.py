"""CenterNet targets, loss and decoding (Zhou et al., "Objects as Points", arXiv 1904.07850),
and mAP@0.5 by torchmetrics' ``MeanAveragePrecision`` (COCO evaluation, pycocotools backend).

* `encode_targets`: per box a Gaussian peak on its class heatmap at the centre cell (radius by
  CenterNet's ``gaussian_radius`` with minimum overlap 0.7, at least 0), the box size in
  output cells and the sub-cell centre offset at that cell;
* `detection_loss`: CenterNet's penalty-reduced focal loss (α = 2, β = 4) normalised by the
  number of objects, plus L1 on sizes (weight 0.1) and offsets (weight 1) at object centres;
* `decode`: peaks of the sigmoid heatmap (3×3 max-pool suppression), the `top_k` best, boxes
  from sizes and offsets, in input pixels;
* `mean_ap50`: runs a model over scenes and returns torchmetrics' COCO AP at IoU 0.5.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from sparse_cwd.scenes import Scenes

__all__ = ["decode", "detection_loss", "encode_targets", "mean_ap50"]


def _radius(h: float, w: float, min_overlap: float = 0.7) -> float:
    """CenterNet's ``gaussian_radius`` (the smallest of its three quadratic cases)."""
    b1, c1 = h + w, w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1**2 - 4 * c1)) / 2
    b2, c2 = 2 * (h + w), (1 - min_overlap) * w * h
    r2 = (b2 + math.sqrt(b2**2 - 16 * c2)) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (h + w), (min_overlap - 1) * w * h
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def encode_targets(
    boxes: list[torch.Tensor], labels: list[torch.Tensor], num_classes: int, size: int, stride: int
) -> dict[str, torch.Tensor]:
    """CenterNet training targets of a batch of boxes (see the module docstring).

    Args:
        boxes: Per image ``(K, 4)`` ``x1, y1, x2, y2`` pixel boxes.
        labels: Per image ``(K,)`` class indices.
        num_classes: Heatmap channels.
        size: Input side in pixels.
        stride: Output stride of the detector.

    Returns:
        ``heat (N, C, S, S)``, ``size (N, 2, S, S)``, ``offset (N, 2, S, S)``, ``mask (N, S, S)``.
    """
    cells = size // stride
    n = len(boxes)
    heat = torch.zeros(n, num_classes, cells, cells)
    wh = torch.zeros(n, 2, cells, cells)
    offset = torch.zeros(n, 2, cells, cells)
    mask = torch.zeros(n, cells, cells)
    ys, xs = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
    for i, (image_boxes, image_labels) in enumerate(zip(boxes, labels, strict=True)):
        if image_boxes.numel() == 0:
            continue
        b = image_boxes / stride
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
        ix, iy = cx.long().clamp(max=cells - 1), cy.long().clamp(max=cells - 1)
        radii = [max(0, int(_radius(float(hh), float(ww)))) for hh, ww in zip(h, w, strict=True)]
        sigma = (2 * torch.tensor(radii, dtype=torch.float32) + 1) / 6
        dist = (xs[None] - ix[:, None, None]) ** 2 + (ys[None] - iy[:, None, None]) ** 2
        peaks = torch.exp(-dist / (2 * sigma[:, None, None] ** 2))
        for cls in image_labels.unique().tolist():
            heat[i, cls] = peaks[image_labels == cls].amax(0)
        wh[i][:, iy, ix] = torch.stack([w, h])
        offset[i][:, iy, ix] = torch.stack([cx - ix, cy - iy])
        mask[i, iy, ix] = 1.0
    return {"heat": heat, "size": wh, "offset": offset, "mask": mask}


def detection_loss(
    outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor], targets: dict[str, torch.Tensor]
) -> torch.Tensor:
    """CenterNet loss: focal heatmap loss + 0.1 · L1 size + L1 offset (module docstring)."""
    logits, wh, offset = outputs
    pred = logits.sigmoid().clamp(1e-4, 1 - 1e-4)
    gt = targets["heat"]
    pos = gt.eq(1).float()
    pos_loss = (torch.log(pred) * (1 - pred) ** 2 * pos).sum()
    neg_loss = (torch.log(1 - pred) * pred**2 * (1 - gt) ** 4 * (1 - pos)).sum()
    mask = targets["mask"].unsqueeze(1)
    count = mask.sum().clamp(min=1.0)
    focal = -(pos_loss + neg_loss) / count
    size_loss = (F.l1_loss(wh, targets["size"], reduction="none") * mask).sum() / count
    off_loss = (F.l1_loss(offset, targets["offset"], reduction="none") * mask).sum() / count
    return focal + 0.1 * size_loss + off_loss


@torch.no_grad()
def decode(
    outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor], stride: int, top_k: int = 40
) -> list[dict[str, torch.Tensor]]:
    """Detections per image: ``{"boxes" (K, 4) xyxy pixels, "scores" (K,), "labels" (K,)}``."""
    logits, wh, offset = outputs
    heat = logits.sigmoid()
    n, c, h, w = heat.shape
    peaks = heat * (F.max_pool2d(heat, 3, 1, 1) == heat)
    scores, index = peaks.reshape(n, -1).topk(min(top_k, c * h * w))
    labels = index // (h * w)
    cell = index % (h * w)
    cy, cx = (cell // w).float(), (cell % w).float()
    take = cell.unsqueeze(1).expand(n, 2, -1)
    sizes = wh.reshape(n, 2, -1).gather(2, take)
    offs = offset.reshape(n, 2, -1).gather(2, take)
    x, y = cx + offs[:, 0], cy + offs[:, 1]
    half_w, half_h = sizes[:, 0].clamp(min=0) / 2, sizes[:, 1].clamp(min=0) / 2
    boxes = torch.stack([x - half_w, y - half_h, x + half_w, y + half_h], 2) * stride
    return [{"boxes": boxes[i], "scores": scores[i], "labels": labels[i]} for i in range(n)]


@torch.no_grad()
def mean_ap50(model: nn.Module, scenes: Scenes, batch_size: int = 128) -> float:
    """COCO AP at IoU 0.5 of ``model`` on ``scenes`` (torchmetrics, pycocotools backend).

    Args:
        model: A detector returning ``(heatmap logits, sizes, offsets)`` with a ``stride``.
        scenes: `sparse_cwd.scenes.Scenes`.
        batch_size: Images per forward pass.

    Returns:
        mAP@0.5 over the classes, in ``[0, 1]``.
    """
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(box_format="xyxy", iou_thresholds=[0.5], backend="pycocotools")
    was_training = model.training
    model.eval()
    stride = int(getattr(model, "stride", 4))
    try:
        for start in range(0, len(scenes), batch_size):
            images = scenes.images[start : start + batch_size]
            preds = decode(model(images), stride)
            truth = [
                {"boxes": b, "labels": lab}
                for b, lab in zip(
                    scenes.boxes[start : start + batch_size],
                    scenes.labels[start : start + batch_size],
                    strict=True,
                )
            ]
            metric.update(preds, truth)
        return float(metric.compute()["map_50"])
    finally:
        model.train(was_training)
