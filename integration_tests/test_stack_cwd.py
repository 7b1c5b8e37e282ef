"""sparse-cwd's BN channel pruning stacked with the core's unstructured magnitude pruning, then
fine-tuning with channel-wise distillation from the unpruned teacher.

The structured step (the registry name ``"cwd"``: sparsity-aware BN-L1 steps, per-layer |γ|
pruning, exact rebuild) thins the detector; the core's ``"magnitude"`` method then sparsifies
the rebuilt thin model's conv weights; CWD fine-tunes it with 1×1 adapters from the pruned
widths to the teacher's. The composition must keep each part's invariants: the rebuilt model
equals the masked one, the unstructured masks keep exactly their count through CWD steps (the
adapters are not masked), and the distillation loss is finite and decreases.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from sparse_cwd import (
    ChannelWiseDistillation,
    TinyDetector,
    detection_loss,
    encode_targets,
    fork_ignored_norms,
    make_scenes,
)
from sparsecore import registry
from sparsecore.export import remove_channels
from sparsecore.select import keep_count

torch.set_num_threads(1)
SHAPE = (3, 32, 32)


def test_bn_pruning_then_magnitude_then_cwd_fine_tuning():
    torch.manual_seed(0)
    scenes = make_scenes(16, 0, size=32)
    targets = encode_targets(scenes.boxes, scenes.labels, 3, 32, 4)
    teacher = TinyDetector(3, width=4)
    student = copy.deepcopy(teacher)
    opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
    slim = registry.get_method("cwd")(
        sparsity=0.5,
        input_shape=SHAPE,
        ignore=tuple(fork_ignored_norms(student)),
        prune_step=3,
        l1_rate=1e-2,
    ).setup(student, opt)
    for step in range(4):
        idx = torch.arange(4 * step, 4 * step + 4) % 16
        loss = detection_loss(student(scenes.images[idx]), {k: v[idx] for k, v in targets.items()})
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert slim.pruned
    keeps = slim.keeps
    thin = slim.finalize().eval()
    x = scenes.images[:2]
    masked = [t.clone() for t in thin(x)]
    remove_channels(thin, x[:1])
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(thin(x), masked, strict=True))
    widths = {n: m.num_features for n, m in thin.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert widths["stem.bn"] == int(keeps["stem.conv"].sum()) == 2

    thin.train()
    cwd = ChannelWiseDistillation(thin, teacher, ["stage2", "neck"], x, tau=2.0)
    assert isinstance(cwd.adapters["1"], nn.Conv2d)  # the neck lost channels
    params = list(thin.parameters()) + list(cwd.parameters())
    opt2 = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    convs = [f"{n}.weight" for n, m in thin.named_modules() if isinstance(m, nn.Conv2d)]
    mag = registry.get_method("magnitude")(sparsity=0.5, targets=tuple(convs)).setup(thin, opt2)
    counts = {n: int(m.sum()) for n, m in mag.masks.masks().items()}
    assert counts == {n: keep_count(m.numel(), 0.5) for n, m in mag.masks.masks().items()}
    distill = []
    for step in range(6):
        idx = torch.arange(4 * step, 4 * step + 4) % 16
        det = detection_loss(thin(scenes.images[idx]), {k: v[idx] for k, v in targets.items()})
        kd = cwd.loss(scenes.images[idx])
        opt2.zero_grad()
        (det + kd).backward()
        opt2.step()
        distill.append(float(kd))
    assert all(torch.isfinite(torch.tensor(distill)))
    assert distill[-1] < distill[0]
    assert {n: int(m.sum()) for n, m in mag.masks.masks().items()} == counts
    weights = dict(thin.named_parameters())
    for name, mask in mag.masks.masks().items():
        assert not weights[name].detach()[~mask].any()
    cwd.close()
