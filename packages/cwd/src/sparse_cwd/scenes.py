"""Synthetic aerial-like scenes with boxes, generated offline and deterministically.

The paper evaluates on VisDrone (drone views: many small objects on cluttered ground). At CPU
scale `make_scenes` draws ``size × size`` RGB images of textured ground (a smooth random colour
field, fine noise, sometimes a road band) with 2 to `max_objects` objects of three classes:

* ``0`` vehicle: a small bright rectangle (about 3×6 px), horizontal or vertical;
* ``1`` building: a larger square roof (7 to 12 px) with a darker edge and a cast shadow;
* ``2`` tree: a dark-green disc (radius 2 to 4 px).

Objects are placed with rejection of overlaps (IoU > 0.2 with an earlier box) so that every box
is visible. The generator is a `torch.Generator`: the same seed gives the same scenes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from sparsecore.validation import check_int

__all__ = ["CLASSES", "Scenes", "make_scenes"]

CLASSES = ("vehicle", "building", "tree")


@dataclass
class Scenes:
    """Images and their boxes.

    Attributes:
        images: ``(N, 3, size, size)`` float images in about ``[0, 1]``.
        boxes: Per image a ``(K, 4)`` float tensor of ``x1, y1, x2, y2`` pixel boxes.
        labels: Per image a ``(K,)`` long tensor of class indices (`CLASSES`).
    """

    images: torch.Tensor
    boxes: list[torch.Tensor]
    labels: list[torch.Tensor]

    def __len__(self) -> int:
        return self.images.shape[0]


def _iou(box: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    lt = torch.maximum(box[:2], others[:, :2])
    rb = torch.minimum(box[2:], others[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area = (box[2:] - box[:2]).prod()
    areas = (others[:, 2:] - others[:, :2]).prod(1)
    return inter / (area + areas - inter)


def _background(size: int, gen: torch.Generator) -> torch.Tensor:
    base = torch.tensor([0.35, 0.45, 0.25]) + 0.12 * torch.randn(3, generator=gen)
    low = F.interpolate(
        0.12 * torch.randn(1, 3, 6, 6, generator=gen), size=(size, size), mode="bilinear"
    )[0]
    image = base[:, None, None] + low + 0.04 * torch.randn(3, size, size, generator=gen)
    if torch.rand((), generator=gen) < 0.5:  # a road band
        width = int(torch.randint(5, 9, (), generator=gen))
        start = int(torch.randint(0, size - width, (), generator=gen))
        grey = 0.5 + 0.05 * torch.randn((), generator=gen)
        if torch.rand((), generator=gen) < 0.5:
            image[:, start : start + width, :] = grey
        else:
            image[:, :, start : start + width] = grey
    return image


def _object(cls: int, size: int, gen: torch.Generator) -> tuple[int, int]:
    if cls == 0:
        short, long_ = (
            int(torch.randint(3, 5, (), generator=gen)),
            int(torch.randint(5, 8, (), generator=gen)),
        )
        return (short, long_) if torch.rand((), generator=gen) < 0.5 else (long_, short)
    if cls == 1:
        side = int(torch.randint(7, 13, (), generator=gen))
        return side, side
    diameter = 2 * int(torch.randint(2, 5, (), generator=gen)) + 1
    return diameter, diameter


def _draw(image: torch.Tensor, cls: int, x: int, y: int, w: int, h: int, gen) -> None:
    if cls == 0:
        colour = torch.rand(3, generator=gen) * 0.6 + 0.4
        image[:, y : y + h, x : x + w] = colour[:, None, None]
    elif cls == 1:
        size = image.shape[-1]
        image[:, min(y + 2, size - 1) : y + h + 2, min(x + 2, size - 1) : x + w + 2] *= 0.5
        roof = torch.tensor([0.65, 0.35, 0.3]) + 0.1 * torch.randn(3, generator=gen)
        image[:, y : y + h, x : x + w] = roof[:, None, None] * 0.7
        image[:, y + 1 : y + h - 1, x + 1 : x + w - 1] = roof[:, None, None]
    else:
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        r = (w - 1) / 2
        disc = ((yy - r) ** 2 + (xx - r) ** 2) <= r * r + 0.5
        green = torch.tensor([0.08, 0.28, 0.08]) + 0.03 * torch.randn(3, generator=gen)
        patch = image[:, y : y + h, x : x + w]
        patch[:, disc] = green[:, None]


def make_scenes(count: int, seed: int, size: int = 64, max_objects: int = 10) -> Scenes:
    """Draw ``count`` scenes (see the module docstring).

    Args:
        count: Number of images.
        seed: Seed of the scene generator.
        size: Image side in pixels (at least 32).
        max_objects: Most objects per image (at least 2).

    Returns:
        The `Scenes`.

    Raises:
        ValueError: A bad option (named).
    """
    check_int(count, "count", 1)
    check_int(seed, "seed", 0)
    check_int(size, "size", 32)
    check_int(max_objects, "max_objects", 2)
    gen = torch.Generator().manual_seed(seed)
    images, all_boxes, all_labels = [], [], []
    for _ in range(count):
        image = _background(size, gen)
        wanted = int(torch.randint(2, max_objects + 1, (), generator=gen))
        boxes: list[torch.Tensor] = []
        labels: list[int] = []
        for _ in range(4 * wanted):
            if len(boxes) == wanted:
                break
            cls = int(torch.randint(0, len(CLASSES), (), generator=gen))
            w, h = _object(cls, size, gen)
            x = int(torch.randint(0, size - w + 1, (), generator=gen))
            y = int(torch.randint(0, size - h + 1, (), generator=gen))
            box = torch.tensor([x, y, x + w, y + h], dtype=torch.float32)
            if boxes and bool((_iou(box, torch.stack(boxes)) > 0.2).any()):
                continue
            _draw(image, cls, x, y, w, h, gen)
            boxes.append(box)
            labels.append(cls)
        images.append(image.clamp(0, 1))
        all_boxes.append(torch.stack(boxes) if boxes else torch.zeros(0, 4))
        all_labels.append(torch.tensor(labels, dtype=torch.long))
    return Scenes(torch.stack(images), all_boxes, all_labels)
