"""One training loop that drives any `sparsecore.method.PruningMethod` on a task.

Used by the CLI, by every package's ``benchmarks/reproduce.py`` and by tests. The loop is the
ordinary one a user writes (forward, ``loss + method.regularization()``, backward, step): the
method acts through the optimizer's step hooks, so what is measured here is what a user gets.

Determinism: for a given ``seed`` the run is bit-for-bit repeatable on the CPU. The global torch
generator is seeded (dropout and the like), and the epoch permutations come from a separate
generator seeded with ``seed``. The model's initialisation is fixed by
`sparsecore.bench.make_model`'s own seed, the method's randomness by its config's ``seed``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from sparsecore.bench.tasks import TASKS, Task, task_spec
from sparsecore.method import PruningMethod
from sparsecore.patterns import NM
from sparsecore.targets import default_targets

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "TrainResult",
    "applicability",
    "build_method",
    "evaluate",
    "fixed_sparsity",
    "model_sparsity",
    "train",
]

#: Optimizer names accepted by `train`.
OPTIMIZERS = ("sgd", "adam", "adamw")
#: Learning-rate schedules accepted by `train` (stepped once per optimizer step).
SCHEDULES = ("cosine", "linear", "constant")

Callback = Callable[[int, nn.Module], None]


@dataclass
class TrainResult:
    """What `train` returns.

    Attributes:
        accuracy: Test accuracy after the last epoch, in ``[0, 1]``.
        wall_s: Wall-clock seconds of the whole run (calibration and evaluation included).
        sparsity: Fraction of masked entries over the method's targets, or of zero entries over
            every Linear/Conv weight when there is no method.
        history: One dict per epoch: ``epoch``, ``loss`` (mean training loss), ``accuracy``
            (test), ``lr`` (at the end of the epoch), ``sparsity``, ``wall_s`` (since the start).
        steps: Optimizer steps taken.
    """

    accuracy: float
    wall_s: float
    sparsity: float
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Classification accuracy of ``model`` on ``(x, y)`` in eval mode (the mode is restored).

    Args:
        model: Maps a batch of inputs to logits ``(batch, classes)``.
        x: Inputs.
        y: Integer labels.
        batch_size: Evaluation batch size.

    Returns:
        The fraction of correct predictions, in ``[0, 1]``.
    """
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
    if len(y) == 0:
        raise ValueError("cannot evaluate on an empty set")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = _device_of(model)
    was_training = model.training
    model.eval()
    try:
        correct = 0
        for start in range(0, len(y), batch_size):
            logits = model(x[start : start + batch_size].to(device))
            correct += int((logits.argmax(-1).cpu() == y[start : start + batch_size]).sum())
    finally:
        model.train(was_training)
    return correct / len(y)


def model_sparsity(model: nn.Module, method: PruningMethod | None = None) -> float:
    """Masked fraction over ``method``'s targets, else zero fraction over Linear/Conv weights.

    Args:
        model: The model.
        method: A set-up method (its masks are used), or ``None``.
    """
    if method is not None and method._masks is not None:
        return method.masks.sparsity()
    params = dict(model.named_parameters())
    names = [n for n in default_targets(model) if n in params]
    total = sum(params[n].numel() for n in names)
    if total == 0:
        return 0.0
    zeros = sum(int((params[n] == 0).sum()) for n in names)
    return zeros / total


def _optimizer(
    name: str, model: nn.Module, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def _lr_factor(schedule: str, total: int) -> Callable[[int], float]:
    if schedule == "cosine":
        return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    if schedule == "linear":
        return lambda step: max(0.0, 1.0 - step / total)
    if schedule == "constant":
        return lambda step: 1.0
    raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {schedule!r}")


def _batches(
    task: Task, batch_size: int, generator: torch.Generator, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    order = torch.randperm(task.num_train, generator=generator)
    for start in range(0, task.num_train, batch_size):
        idx = order[start : start + batch_size]
        yield task.x_train[idx].to(device), task.y_train[idx].to(device)


def train(
    model: nn.Module,
    task: Task,
    method: PruningMethod | None = None,
    epochs: int = 10,
    lr: float = 0.1,
    batch_size: int = 128,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    lr_schedule: str = "cosine",
    seed: int = 0,
    progress: bool = True,
    calibration_batches: int = 4,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Train ``model`` on ``task`` with cross-entropy, driving ``method`` if one is given.

    The method is set up on the model and the new optimizer unless it already is (then it is
    attached to the new optimizer). If ``method.needs_calibration``, ``method.calibrate`` runs
    right after setup on the first ``calibration_batches`` training batches of the epoch-0 order.
    The learning rate follows ``lr_schedule`` per optimizer step. The method is **not**
    finalized: the caller decides (``method.finalize()`` bakes the masks).

    Args:
        model: The model (trained in place, on its current device).
        task: The task.
        method: A pruning method, or ``None`` for dense training.
        epochs: Passes over the training set.
        lr: Peak learning rate.
        batch_size: Training batch size (the last batch of an epoch may be smaller).
        optimizer: ``"sgd"`` (with ``momentum``), ``"adam"`` or ``"adamw"``.
        momentum: SGD momentum.
        weight_decay: Weight decay (coupled for SGD/Adam, decoupled for AdamW).
        lr_schedule: ``"cosine"`` (to zero), ``"linear"`` (to zero) or ``"constant"``.
        seed: Training seed (batch order, global torch generator).
        progress: Show a tqdm progress bar (on stderr).
        calibration_batches: Batches given to ``method.calibrate`` when it needs calibration.
        callbacks: Each is called as ``callback(step, model)`` after every optimizer step
            (``step`` counts from 1).

    Returns:
        A `TrainResult`.

    Raises:
        ValueError: A non-positive ``epochs``, ``batch_size``, ``lr`` or
            ``calibration_batches``, or an unknown optimizer or schedule.
    """
    if epochs < 1 or batch_size < 1 or calibration_batches < 1:
        raise ValueError(
            f"epochs, batch_size and calibration_batches must be >= 1, "
            f"got {epochs}, {batch_size}, {calibration_batches}"
        )
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    start = time.perf_counter()
    device = _device_of(model)
    torch.manual_seed(seed)
    opt = _optimizer(optimizer, model, lr, momentum, weight_decay)
    steps_per_epoch = math.ceil(task.num_train / batch_size)
    total = epochs * steps_per_epoch
    if method is not None:
        if method._masks is None:
            method.setup(model, opt)
            if method.needs_calibration:
                calib = torch.Generator().manual_seed(seed)
                first = list(_batches(task, batch_size, calib, device))[:calibration_batches]
                method.calibrate(first, F.cross_entropy)
        else:
            method.attach(opt)
    # after setup: a method may add parameter groups (AST's SLoRB) that the schedule must cover
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_factor(lr_schedule, total))
    generator = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []
    bar = _progress(total, progress, method)
    step = 0
    model.train()
    try:
        for epoch in range(epochs):
            loss_sum, seen = 0.0, 0
            for x, y in _batches(task, batch_size, generator, device):
                loss = F.cross_entropy(model(x), y)
                if method is not None:
                    loss = loss + method.regularization().to(loss.device)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                for callback in callbacks:
                    callback(step, model)
                loss_sum += float(loss.detach()) * len(y)
                seen += len(y)
                bar.update(1)
            record = {
                "epoch": epoch + 1,
                "loss": loss_sum / max(seen, 1),
                "accuracy": evaluate(model, task.x_test, task.y_test),
                "lr": opt.param_groups[0]["lr"],
                "sparsity": model_sparsity(model, method),
                "wall_s": time.perf_counter() - start,
            }
            history.append(record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['accuracy']:.3f}")
    finally:
        bar.close()
    return TrainResult(
        accuracy=history[-1]["accuracy"],
        wall_s=time.perf_counter() - start,
        sparsity=model_sparsity(model, method),
        history=history,
        steps=step,
    )


def _progress(total: int, enabled: bool, method: PruningMethod | None) -> Any:
    from tqdm.auto import tqdm

    label = method.name if method is not None else "dense"
    return tqdm(total=total, desc=f"train {label}", disable=not enabled, leave=False)


# ---------------------------------------------------------------------- fitting methods to a run
def build_method(
    cls: type[PruningMethod],
    sparsity: float | None,
    seed: int,
    total_steps: int,
    input_shape: tuple[int, ...] | None = None,
    options_given: Mapping[str, Any] | None = None,
) -> PruningMethod:
    """Instantiate ``cls`` for one training run of ``total_steps`` optimizer steps.

    Schedule fields found on the config are fitted to the run: ``end_step`` at 75% of the steps,
    ``update_every`` at 5% (so GMP reaches its target and RigL/SET stop updating before the
    end, as in their papers) and ``total_steps`` at the run's length. A class may refine this
    with a classmethod ``bench_config(total_steps, sparsity) -> dict`` of config overrides
    (``sparsity`` as passed here, ``None`` for the config's default).

    Args:
        cls: The method class.
        sparsity: Target sparsity, or ``None`` for the config's default (see
            `fixed_sparsity`).
        seed: The method's seed.
        total_steps: Optimizer steps of the run.
        input_shape: Shape of one input example, given to configs with an ``input_shape``
            field (methods that count FLOPs on the model, such as LAPP).
        options_given: Config fields set by the user (``--set`` / ``--config``), applied last.
    """
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    options: dict[str, Any] = {"seed": seed}
    if sparsity is not None:
        options["sparsity"] = sparsity
    fitted = {
        "end_step": max(1, int(0.75 * total_steps)),
        "update_every": max(1, total_steps // 20),
        "total_steps": total_steps,
    }
    options.update({k: v for k, v in fitted.items() if k in fields})
    if input_shape is not None and "input_shape" in fields:
        options["input_shape"] = tuple(input_shape)
    hook = getattr(cls, "bench_config", None)
    if callable(hook):
        options.update(hook(total_steps, sparsity))
    options.update(options_given or {})
    return cls(**options)


def fixed_sparsity(cls: type[PruningMethod]) -> bool:
    """Whether the sparsity is not a knob of ``cls``: an N:M default pattern (the pattern fixes
    it) or a default sparsity of 0 (methods that compress otherwise, e.g. by rank).

    Args:
        cls: The method class.
    """
    try:
        config = cls.config_class()
    except Exception:
        return False
    return isinstance(config.pattern, NM) or config.sparsity == 0.0


def applicability(cls: type[PruningMethod], task: str, model: nn.Module) -> str | None:
    """Why ``cls`` cannot run in one `train` call on ``task`` with ``model``, or ``None``.

    Rules: a class may restrict itself with a ``tasks`` ``ClassVar`` of task names; a method
    whose `sparsecore.method.PruningMethod.procedure` is set (IMP's rounds and rewinds,
    SMS's phases of ingredients) is more than one training run; otherwise the method is set up
    with its default config on a copy of ``model`` and anything it raises is the reason.

    Args:
        cls: A method class.
        task: Task name.
        model: The task's model (not modified).
    """
    tasks = getattr(cls, "tasks", None)
    if tasks is not None and task not in tasks:
        return f"only for tasks {', '.join(tasks)}"
    if cls.procedure is not None:
        return f"own procedure ({cls.procedure})"
    try:
        trial = copy.deepcopy(model)
        optimizer = torch.optim.SGD(trial.parameters(), lr=0.1)
        shape = task_spec(task).input_shape if task in TASKS else None
        build_method(cls, None, 0, 100, shape).setup(trial, optimizer)
    except Exception as err:  # any failure means "cannot host it"
        reason = " ".join(str(err).split()) or type(err).__name__
        return f"does not fit the model: {reason[:200]}"
    return None
