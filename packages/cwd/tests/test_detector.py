import pytest
import torch
from torch import nn

from sparse_cwd import (
    TinyDetector,
    decode,
    detection_loss,
    encode_targets,
    fork_ignored_norms,
    make_scenes,
    mean_ap50,
)


def test_scenes_are_deterministic_and_boxes_lie_inside():
    a, b = make_scenes(6, 3, size=48), make_scenes(6, 3, size=48)
    assert torch.equal(a.images, b.images) and all(map(torch.equal, a.boxes, b.boxes))
    assert not torch.equal(a.images, make_scenes(6, 4, size=48).images)
    for boxes, labels in zip(a.boxes, a.labels, strict=True):
        assert len(boxes) >= 2 and len(boxes) == len(labels)
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 48).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all() and set(labels.tolist()) <= {0, 1, 2}


class _Oracle(nn.Module):
    """Returns encoded ground truth as 'predictions' (a perfect detector)."""

    stride = 4

    def __init__(self, scenes, shuffle=False):
        super().__init__()
        t = encode_targets(scenes.boxes, scenes.labels, 3, scenes.images.shape[-1], 4)
        self.heat = torch.logit(t["heat"].clamp(1e-4, 1 - 1e-4))
        self.size, self.offset = t["size"], t["offset"]
        if shuffle:
            self.size = self.size.roll(1, 0)
            self.offset = self.offset.roll(1, 0)
            self.heat = self.heat.roll(1, 0)
        self.images = scenes.images

    def forward(self, x):
        i = next(k for k in range(len(self.images)) if torch.equal(self.images[k], x[0]))
        return self.heat[i : i + len(x)], self.size[i : i + len(x)], self.offset[i : i + len(x)]


def test_targets_decode_back_to_the_boxes_and_map_is_one_for_a_perfect_detector():
    scenes = make_scenes(8, 5, size=64)
    t = encode_targets(scenes.boxes, scenes.labels, 3, 64, 4)
    n_objects = sum(len(b) for b in scenes.boxes)
    assert int(t["mask"].sum()) <= n_objects and int(t["heat"].eq(1).sum()) == t["mask"].sum()
    oracle = _Oracle(scenes)
    dets = decode(oracle(scenes.images[:1]), 4, top_k=40)[0]
    top = dets["scores"] > 0.99
    got = sorted(map(tuple, dets["boxes"][top].round(decimals=3).tolist()))
    want = sorted(map(tuple, scenes.boxes[0].tolist()))
    assert torch.allclose(torch.tensor(got), torch.tensor(want), atol=1e-3)
    assert mean_ap50(oracle, scenes, batch_size=8) == pytest.approx(1.0)
    assert mean_ap50(_Oracle(scenes, shuffle=True), scenes, batch_size=8) < 0.3


def test_detector_shapes_loss_and_fork_ignore_list():
    model = TinyDetector(3, width=4)
    heat, size, offset = model(torch.zeros(2, 3, 32, 32))
    assert heat.shape == (2, 3, 8, 8) and size.shape == offset.shape == (2, 2, 8, 8)
    scenes = make_scenes(2, 0, size=32)
    t = encode_targets(scenes.boxes, scenes.labels, 3, 32, 4)
    loss = detection_loss(model(scenes.images), t)
    loss.backward()
    assert torch.isfinite(loss) and model.stem.conv.weight.grad.abs().sum() > 0
    names = dict(model.named_modules())
    ignored = fork_ignored_norms(model)
    assert all(isinstance(names[n], nn.BatchNorm2d) for n in ignored)
    assert "stage1.cv1.bn" in ignored and "stage1.m.0.cv2.bn" in ignored
    assert "neck.cv1.bn" not in ignored  # the neck's C2f has no shortcut (YOLOv8's head C2f)
    assert sum(n.startswith("head.") for n in ignored) == 6
    with pytest.raises(ValueError, match="width"):
        TinyDetector(3, width=1)
