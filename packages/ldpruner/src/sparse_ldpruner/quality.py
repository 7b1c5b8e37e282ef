"""Digits data and the quality of generated digits: FID on a digits classifier, accuracy.

Data: scikit-learn's bundled ``load_digits`` (1797 8×8 images, 10 classes, no download), scaled to
``[-1, 1]`` and upsampled bilinearly to 16×16; a fixed stratified split (25% held out).

FID: `torchmetrics.image.fid.FrechetInceptionDistance` with a custom feature network, since no
Inception weights exist offline: the 64-d penultimate layer of `DigitsClassifier`, a small CNN
trained on the training split (pytorch-fid's recipe with a domain network in place of Inception).
Reference statistics are the held-out real digits. Accuracy: the same classifier's agreement
with the class each digit was generated for.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DigitsClassifier", "fid_and_accuracy", "load_digits_16", "train_classifier"]


def load_digits_16(seed: int = 0) -> dict[str, torch.Tensor]:
    """Sklearn digits as ``(n, 1, 16, 16)`` images in ``[-1, 1]``, split 75/25 (stratified).

    Returns:
        ``{"train_x", "train_y", "test_x", "test_y"}``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    x = nn.functional.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    x = x * 2.0 - 1.0
    y = torch.tensor(data.target, dtype=torch.long)
    idx = torch.arange(len(y)).numpy()
    tr, te = train_test_split(idx, test_size=0.25, stratify=y.numpy(), random_state=seed)
    tr, te = torch.as_tensor(tr), torch.as_tensor(te)
    return {"train_x": x[tr], "train_y": y[tr], "test_x": x[te], "test_y": y[te]}


class DigitsClassifier(nn.Module):
    """A small CNN on 16×16 digits; `features` is the 64-d FID feature map."""

    num_features = 64

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 16, 64), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(64, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations, ``(n, 64)``."""
        return self.body(x.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, ``(n, 10)``."""
        return self.head(self.features(x))


class _Features(nn.Module):
    """The classifier's features as torchmetrics expects a feature network."""

    num_features = DigitsClassifier.num_features

    def __init__(self, classifier: DigitsClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x)


def train_classifier(
    data: dict[str, torch.Tensor], seed: int, steps: int = 400
) -> tuple[DigitsClassifier, float]:
    """Train `DigitsClassifier` (Adam 1e-3, batch 64, small random shifts).

    Returns:
        The classifier (eval mode) and its held-out accuracy.
    """
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitsClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = data["train_x"], data["train_y"]
    for _ in range(steps):
        idx = torch.randint(0, len(y), (64,), generator=gen)
        shift = torch.randint(-1, 2, (2,), generator=gen).tolist()
        batch = torch.roll(x[idx], shifts=shift, dims=(2, 3))
        loss = nn.functional.cross_entropy(model(batch), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(data["test_x"]).argmax(1) == data["test_y"]).float().mean())
    return model, acc


@torch.no_grad()
def fid_and_accuracy(
    classifier: DigitsClassifier,
    real: torch.Tensor,
    fake: torch.Tensor,
    fake_labels: torch.Tensor,
) -> tuple[float, float]:
    """FID (torchmetrics, classifier features) of ``fake`` against ``real``, and accuracy.

    Args:
        classifier: The feature / judging network.
        real: Real images in ``[-1, 1]``.
        fake: Generated images in ``[-1, 1]``.
        fake_labels: The class each generated image was conditioned on.

    Returns:
        ``(fid, accuracy)``.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    fid = FrechetInceptionDistance(
        feature=_Features(classifier), normalize=True, input_img_size=(1, 16, 16)
    )
    fid.update(real, real=True)
    fid.update(fake, real=False)
    acc = float((classifier(fake).argmax(1) == fake_labels).float().mean())
    return float(fid.compute()), acc
