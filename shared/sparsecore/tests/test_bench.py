"""Embedded tasks, reference models and the training loop."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from sparsecore import SNIP, OneShotMagnitude, RigL
from sparsecore.bench import (
    TASKS,
    ConvBase,
    Task,
    TrainResult,
    evaluate,
    load_task,
    make_model,
    task_spec,
    tiny_bert,
    tiny_gpt2,
    tiny_llama,
    train,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def mnist1d() -> Task:
    return load_task("mnist1d", seed=0)


@pytest.fixture(scope="module")
def small(mnist1d: Task) -> Task:
    """A 512-sample slice of MNIST-1D for fast training tests."""
    small = mnist1d.subset(num_train=512, num_test=256)
    assert (small.num_train, small.num_test) == (512, 256)
    assert torch.equal(small.x_train, mnist1d.x_train[:512]) and small.seed == mnist1d.seed
    return small


def test_mnist1d_standard_split(mnist1d: Task) -> None:
    assert mnist1d.x_train.shape == (4000, 40) and mnist1d.x_test.shape == (1000, 40)
    assert mnist1d.x_train.dtype == torch.float32 and mnist1d.y_train.dtype == torch.int64
    assert mnist1d.input_shape == (40,) and mnist1d.num_classes == 10
    assert set(mnist1d.y_train.unique().tolist()) == set(range(10))


def test_mnist1d_is_the_standard_dataset_and_leaves_global_rng_alone(mnist1d: Task) -> None:
    # The standard MNIST-1D (seed 42) is regenerated, not downloaded: its templates give exactly
    # 500 examples per class over the 5000 samples.
    labels = torch.cat([mnist1d.y_train, mnist1d.y_test])
    assert torch.bincount(labels).tolist() == [500] * 10
    np.random.seed(123)
    random.seed(123)
    expect_np, expect_py = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    from sparsecore.bench.tasks import _arrays

    _arrays.cache_clear()
    again = load_task("mnist1d")
    assert np.random.rand() == expect_np and random.random() == expect_py
    assert torch.equal(again.x_train, mnist1d.x_train)


def test_load_task_returns_fresh_tensors(mnist1d: Task) -> None:
    other = load_task("mnist1d")
    other.x_train.zero_()
    assert load_task("mnist1d").x_train.abs().sum() > 0
    assert mnist1d.x_train.abs().sum() > 0


def test_digits_split() -> None:
    task = load_task("digits")
    assert task.x_train.shape[1:] == (1, 8, 8) and task.input_shape == (1, 8, 8)
    assert task.num_train + task.num_test == 1797
    assert task.num_test == 359
    assert float(task.x_train.min()) >= 0.0 and float(task.x_train.max()) <= 1.0
    assert torch.equal(load_task("digits").y_test, task.y_test)
    assert not torch.equal(load_task("digits", seed=1).y_test, task.y_test)


def test_unknown_task_and_bad_seed() -> None:
    with pytest.raises(ValueError, match="unknown task"):
        load_task("cifar10")
    with pytest.raises(TypeError):
        load_task("mnist1d", seed=1.5)  # type: ignore[arg-type]
    assert set(TASKS) == {"mnist1d", "mnist1d-large", "digits"}


def test_convbase_matches_the_paper_shapes(mnist1d: Task) -> None:
    model = make_model("convbase", mnist1d)
    assert isinstance(model, ConvBase)
    assert model.conv1.weight.shape == (25, 1, 5) and model.conv1.stride == (2,)
    assert model.conv2.weight.shape == (25, 25, 3) and model.conv3.weight.shape == (25, 25, 3)
    assert model.linear.weight.shape == (10, 125)
    assert model(mnist1d.x_train[:3]).shape == (3, 10)


@pytest.mark.parametrize(
    ("name", "task"),
    [("mlp", "mnist1d"), ("resnet", "mnist1d"), ("resnet", "digits"), ("mlp", "digits")],
)
def test_models_forward_and_seeded_init(name: str, task: str) -> None:
    spec = task_spec(task)
    torch.manual_seed(7)
    state = torch.get_rng_state()
    a, b = make_model(name, spec, seed=3), make_model(name, spec, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # global generator untouched
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    c = make_model(name, spec, seed=4)
    assert any(not torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters(), strict=True))
    x = torch.randn(5, *spec.input_shape)
    assert a(x).shape == (5, 10)
    if name == "resnet":
        assert any(isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) for m in a.modules())


def test_mlp_width_and_bad_models() -> None:
    spec = task_spec("mnist1d")
    model = make_model("mlp", spec, width=32, depth=3)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(32, 40), (32, 32), (32, 32), (10, 32)]
    with pytest.raises(ValueError, match="unknown model"):
        make_model("vgg", spec)
    with pytest.raises(ValueError, match="1-D"):
        make_model("convbase", task_spec("digits"))


def test_tiny_transformers() -> None:
    ids = torch.randint(0, 1000, (2, 8))
    bert = tiny_bert(num_labels=3)
    assert bert(input_ids=ids).logits.shape == (2, 3)
    assert tiny_gpt2()(input_ids=ids).logits.shape == (2, 8, 1000)
    llama = tiny_llama(hidden_size=32, intermediate_size=64)
    assert llama(input_ids=ids).logits.shape == (2, 8, 1000)
    assert sum(p.numel() for p in bert.parameters()) < 300_000


def test_train_dense_is_deterministic_and_learns(small: Task) -> None:
    results = []
    for _ in range(2):
        model = make_model("mlp", small, seed=0, width=64)
        results.append((train(model, small, epochs=8, progress=False), model))
    (r1, m1), (r2, m2) = results
    assert isinstance(r1, TrainResult)
    assert r1.accuracy == r2.accuracy
    assert [h["loss"] for h in r1.history] == [h["loss"] for h in r2.history]
    for p, q in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.equal(p, q)
    assert len(r1.history) == 8 and r1.steps == 8 * 4
    assert r1.history[-1]["loss"] < r1.history[0]["loss"]
    assert r1.accuracy > 0.2  # chance is 0.1
    assert r1.sparsity == 0.0
    assert r1.history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine to zero
    other = train(
        make_model("mlp", small, seed=0, width=64), small, epochs=8, seed=1, progress=False
    )
    assert other.history[0]["loss"] != r1.history[0]["loss"]


def test_train_drives_a_method_and_callbacks(small: Task) -> None:
    model = make_model("mlp", small, seed=0, width=64)
    method = RigL(sparsity=0.8, update_every=2, end_step=8)
    seen: list[int] = []
    result = train(
        model,
        small,
        method,
        epochs=2,
        progress=False,
        callbacks=[lambda step, m: seen.append(step)],
    )
    assert seen == list(range(1, 9))
    assert method.step == 8
    assert result.sparsity == pytest.approx(method.masks.sparsity())
    assert result.sparsity == pytest.approx(0.8, abs=0.01)
    for name, weight in method.masks.params().items():  # not finalized, but masked
        assert int((weight[~method.masks.mask(name)] != 0).sum()) == 0
    assert method._masks is not None


def test_train_calibrates_methods_that_need_it(small: Task) -> None:
    model = make_model("mlp", small, seed=0, width=64)
    method = SNIP(sparsity=0.9)
    calls: list[int] = []
    original = method.calibrate

    def spy(batches, loss_fn=None):
        batches = list(batches)
        calls.append(len(batches))
        assert all(x.shape == (128, 40) for x, _ in batches)
        return original(batches, loss_fn)

    method.calibrate = spy  # type: ignore[method-assign]
    result = train(model, small, method, epochs=1, calibration_batches=3, progress=False)
    assert calls == [3]
    assert result.sparsity == pytest.approx(0.9, abs=0.01)


class _WithExtraParams(OneShotMagnitude):
    """A method that adds its own parameter group at setup (as AST's SLoRB does)."""

    def setup(self, model, optimizer=None):
        super().setup(model, optimizer)
        self.extra = nn.Parameter(torch.ones(3))
        self.optimizer = optimizer
        optimizer.add_param_group({"params": [self.extra], "lr": 0.5})
        return self


def test_train_schedules_parameter_groups_a_method_adds_at_setup(small: Task) -> None:
    model = make_model("mlp", small, seed=0, width=32)
    method = _WithExtraParams(sparsity=0.5)
    lrs: list[float] = []
    train(
        model,
        small,
        method,
        epochs=2,
        lr_schedule="linear",
        progress=False,
        callbacks=[lambda step, m: lrs.append(method.optimizer.param_groups[1]["lr"])],
    )
    steps = len(lrs)
    assert lrs[0] == pytest.approx(0.5 * (1 - 1 / steps)) and lrs[-1] == pytest.approx(0.0)


def test_train_with_a_set_up_method_attaches_and_validates(small: Task) -> None:
    model = make_model("mlp", small, seed=0, width=32)
    method = OneShotMagnitude(sparsity=0.5).setup(model)
    result = train(
        model,
        small,
        method,
        epochs=1,
        optimizer="adam",
        lr=1e-3,
        lr_schedule="constant",
        progress=False,
    )
    assert result.sparsity == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ValueError, match="optimizer"):
        train(model, small, epochs=1, optimizer="lion", progress=False)
    with pytest.raises(ValueError, match="lr_schedule"):
        train(model, small, epochs=1, lr_schedule="step", progress=False)
    with pytest.raises(ValueError):
        train(model, small, epochs=0, progress=False)


def test_evaluate_counts_correct_predictions_and_restores_mode() -> None:
    class Fixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dummy = nn.Parameter(torch.zeros(()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot(x[:, 0].long(), 3).float()

    model = Fixed().train()
    x = torch.tensor([[0.0], [1.0], [2.0], [1.0]])
    y = torch.tensor([0, 1, 0, 1])
    assert evaluate(model, x, y, batch_size=3) == 0.75
    assert model.training
    with pytest.raises(ValueError):
        evaluate(model, x, y[:2])


def test_subset_keeps_everything_but_the_cut(mnist1d: Task) -> None:
    only_train = mnist1d.subset(num_train=10)
    assert only_train.num_train == 10 and only_train.num_test == mnist1d.num_test
    assert only_train.input_shape == mnist1d.input_shape and only_train.name == mnist1d.name
    assert torch.equal(only_train.y_train, mnist1d.y_train[:10])
    with pytest.raises(ValueError, match="num_test"):
        mnist1d.subset(num_test=0)
