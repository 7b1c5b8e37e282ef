"""Embedded classification tasks, generated or loaded offline (no network, ever).

* ``mnist1d``: MNIST-1D (Greydanus, "Scaling down deep learning", arXiv 2011.14439), regenerated
  from the ``mnist1d`` package's templates with `mnist1d.data.make_dataset` (never
  ``get_dataset``, which downloads). The standard split: 4000 train / 1000 test sequences of
  length 40, 10 classes. Published reference: a small CNN ≈ 94%, an MLP ≈ 68–77%.
* ``mnist1d-large``: the same generator with 25000 samples (20000 train / 5000 test).
* ``digits``: scikit-learn's bundled ``load_digits`` (1797 images of 8×8, 10 classes), scaled to
  ``[0, 1]``, shaped ``(N, 1, 8, 8)``, with a fixed seeded 80/20 split.

``seed`` selects the *data*: ``seed=0`` is the standard dataset (MNIST-1D's generator seed 42,
the digits split seeded with 0); other values give another draw of the same distribution
(``42 + seed`` for MNIST-1D, a different split for digits). For the comparison protocol keep the
data fixed (``seed=0``) and vary the training seed of `sparsecore.bench.train`.

Generated arrays are cached in-process; every call returns fresh tensors, so a caller that
modifies a task's tensors in place cannot corrupt the cache.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

__all__ = ["TASKS", "TASK_SHAPES", "Task", "load_task", "task_spec"]

#: Names accepted by `load_task`, with a one-line description.
TASKS: dict[str, str] = {
    "mnist1d": "MNIST-1D, 4000 train / 1000 test, inputs (40,), 10 classes",
    "mnist1d-large": "MNIST-1D, 20000 train / 5000 test, inputs (40,), 10 classes",
    "digits": "sklearn digits, 1438 train / 359 test, inputs (1, 8, 8), 10 classes",
}

#: ``(input_shape, num_classes)`` of every task, known without generating any data.
TASK_SHAPES: dict[str, tuple[tuple[int, ...], int]] = {
    "mnist1d": ((40,), 10),
    "mnist1d-large": ((40,), 10),
    "digits": ((1, 8, 8), 10),
}

_MNIST1D_SEED = 42
_LARGE_SAMPLES = 25000


@dataclass(frozen=True, eq=False)
class Task:
    """A supervised classification task held in memory.

    Attributes:
        name: Task name (a key of `TASKS`).
        x_train: Training inputs, ``float32``, shape ``(N, *input_shape)``.
        y_train: Training labels, ``int64``, shape ``(N,)``.
        x_test: Test inputs, ``float32``.
        y_test: Test labels, ``int64``.
        input_shape: Shape of one input, without the batch dimension.
        num_classes: Number of classes.
        seed: The data seed the task was built with.
    """

    name: str
    x_train: torch.Tensor = field(repr=False)
    y_train: torch.Tensor = field(repr=False)
    x_test: torch.Tensor = field(repr=False)
    y_test: torch.Tensor = field(repr=False)
    input_shape: tuple[int, ...]
    num_classes: int
    seed: int = 0

    @property
    def num_train(self) -> int:
        """Number of training examples."""
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        """Number of test examples."""
        return int(self.x_test.shape[0])

    def subset(self, num_train: int | None = None, num_test: int | None = None) -> Task:
        """The same task on the first ``num_train`` training / ``num_test`` test examples.

        For quick runs of a benchmark's code path; ``None`` keeps a split whole.

        Raises:
            ValueError: A count below 1.
        """
        for count, what in ((num_train, "num_train"), (num_test, "num_test")):
            if count is not None and count < 1:
                raise ValueError(f"{what} must be >= 1, got {count}")
        return dataclasses.replace(
            self,
            x_train=self.x_train[:num_train],
            y_train=self.y_train[:num_train],
            x_test=self.x_test[:num_test],
            y_test=self.y_test[:num_test],
        )


def _mnist1d_arrays(num_samples: int, seed: int) -> tuple[np.ndarray, ...]:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "the mnist1d tasks need the 'mnist1d' package: pip install 'sparse-core[bench]'"
        ) from err
    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = _MNIST1D_SEED + seed
    # make_dataset seeds the global numpy and random generators: leave them as they were.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return data["x"], data["y"], data["x_test"], data["y_test"]


def _digits_arrays(seed: int) -> tuple[np.ndarray, ...]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "the digits task needs scikit-learn: pip install 'sparse-core[bench]'"
        ) from err
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    cut = round(0.8 * len(y))
    train, test = order[:cut], order[cut:]
    return x[train], y[train], x[test], y[test]


@lru_cache(maxsize=8)
def _arrays(name: str, seed: int) -> tuple[np.ndarray, ...]:
    if name == "mnist1d":
        return _mnist1d_arrays(5000, seed)
    if name == "mnist1d-large":
        return _mnist1d_arrays(_LARGE_SAMPLES, seed)
    if name == "digits":
        return _digits_arrays(seed)
    raise ValueError(f"unknown task {name!r}; available: {', '.join(TASKS)}")


def load_task(name: str = "mnist1d", seed: int = 0) -> Task:
    """Build an embedded task (cached in-process, no network).

    Args:
        name: ``"mnist1d"``, ``"mnist1d-large"`` or ``"digits"``; ``"stdlib-lm"`` returns the
            language-modelling task of `sparsecore.bench.lm.load_lm_task` (an ``LMTask``).
        seed: Data seed; ``0`` is the standard dataset (see the module docstring).

    Returns:
        A `Task` with fresh ``float32`` inputs and ``int64`` labels.

    Raises:
        ValueError: Unknown task name.
        TypeError: ``seed`` is not an integer.
    """
    if not isinstance(name, str):
        raise TypeError(f"task name must be a string, got {type(name).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    key = name.strip().lower()
    if key == "stdlib-lm":  # the language-modelling task lives in sparsecore.bench.lm
        from sparsecore.bench.lm import load_lm_task

        return load_lm_task(key)  # type: ignore[return-value]
    if key not in TASKS:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(TASKS)}, stdlib-lm")
    x_train, y_train, x_test, y_test = _arrays(key, seed)
    x_tr = torch.tensor(x_train, dtype=torch.float32)
    x_te = torch.tensor(x_test, dtype=torch.float32)
    return Task(
        name=key,
        x_train=x_tr,
        y_train=torch.tensor(y_train, dtype=torch.int64),
        x_test=x_te,
        y_test=torch.tensor(y_test, dtype=torch.int64),
        input_shape=tuple(x_tr.shape[1:]),
        num_classes=10,
        seed=seed,
    )


def task_spec(name: str) -> Task:
    """A `Task` with the right shapes but no data (empty tensors), built instantly.

    Enough to build a model for the task (`sparsecore.bench.make_model`) without
    generating the dataset, e.g. to check which methods apply to it.

    Args:
        name: A task name.

    Raises:
        ValueError: Unknown task name.
    """
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in TASK_SHAPES:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(TASKS)}")
    shape, classes = TASK_SHAPES[key]
    empty_x = torch.empty((0, *shape), dtype=torch.float32)
    empty_y = torch.empty((0,), dtype=torch.int64)
    return Task(key, empty_x, empty_y, empty_x, empty_y, shape, classes)
