"""Hugging Face ``transformers.Trainer`` adapter: any sparsecore method as a ``TrainerCallback``.

```python
from sparsecore import GMP
from sparsecore.integrations.hf import SparseTrainerCallback

method = GMP(sparsity=0.9, end_step=1000, update_every=100)
trainer = Trainer(model=model, args=args, train_dataset=train,
                  callbacks=[SparseTrainerCallback(method, finalize=True)])
trainer.train()
```

How it works: the callback sets the method up (masks in place, no optimizer yet) at
``on_init_end``, at the end of ``Trainer.__init__``, so that a ``train(resume_from_checkpoint=...)``
loads the saved mask buffers into real buffers instead of dropping them as unexpected keys. The
Trainer creates its optimizer lazily, inside ``train()``, before it fires ``on_train_begin``; the
callback attaches the method to it there. From then on the method runs entirely through the
optimizer's step hooks, exactly as in a plain loop, so gradient accumulation, clipping and LR
schedules need nothing special. An ``accelerate`` ``AcceleratedOptimizer`` wrapper is unwrapped to
the torch optimizer it drives (hooks on the wrapper would never fire). A second ``train()`` call
re-attaches the set-up method to the new optimizer. (A callback added after the Trainer was built,
with ``trainer.add_callback``, misses ``on_init_end`` and is set up at ``on_train_begin``: fine
for a fresh run, but a resume then loses the masks.)

Checkpoints and resume: ``on_save`` writes the method's ``state_dict()`` (step, generator,
method-specific state; the masks are buffers of the model and are in the Trainer's own model
file) to ``sparse_method.pt`` in the checkpoint folder. When ``train()`` resumes at step
``state.global_step``, ``on_train_begin`` loads ``<output_dir>/checkpoint-<step>/sparse_method.pt``
(with ``weights_only=True``), so the resumed run continues with the same masks, step and random
stream as an uninterrupted one.

Schedule lengths: at ``on_train_begin`` the config fields ``total_steps`` (the whole run) and
``end_step`` (75% of it, as in ``sparse bench``) that are ``None`` or still at their dataclass
default are set from ``state.max_steps``, the Trainer's real number of optimizer steps; pass
``fit_schedule=False`` to keep the config exactly as given. The fitted values are logged.

Limits: a method whose `sparsecore.method.PruningMethod.regularization` is not zero needs
its term in the loss, which a callback cannot add: override ``Trainer.compute_loss`` and add
``method.regularization()``. Methods that need `sparsecore.method.PruningMethod.calibrate`
must be set up and calibrated before ``train()`` (the callback then only attaches the optimizer).

``transformers`` is an optional extra (``pip install 'sparse-core[hf]'``); the Trainer itself also
needs ``accelerate``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import torch
from torch import nn

from sparsecore.method import PruningMethod

try:
    from transformers import TrainerCallback
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "sparsecore.integrations.hf needs transformers: pip install 'sparse-core[hf]'"
    ) from err

__all__ = ["METHOD_STATE_FILE", "SparseTrainerCallback", "fit_schedule_lengths", "unwrap_optimizer"]

_log = logging.getLogger(__name__)

#: File the callback writes into every Trainer checkpoint folder.
METHOD_STATE_FILE = "sparse_method.pt"
#: Schedule-length fields and the fraction of the run they get when not given.
SCHEDULE_LENGTHS = {"total_steps": 1.0, "end_step": 0.75}


def fit_schedule_lengths(method: PruningMethod, max_steps: int) -> dict[str, int]:
    """Set ``method``'s schedule lengths that were not given from the run's ``max_steps``.

    A field of `SCHEDULE_LENGTHS` on the method's config counts as not given when it is
    ``None`` or equal to its dataclass default. The config is replaced (and so re-validated).

    Args:
        method: The method (set up or not; the schedule is read at every step).
        max_steps: Optimizer steps of the whole run.

    Returns:
        The fitted fields and their new values (empty when nothing changed).
    """
    if max_steps <= 0:
        return {}
    config = method.config
    fitted = {}
    for f in dataclasses.fields(config):
        if f.name not in SCHEDULE_LENGTHS:
            continue
        value = getattr(config, f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        if value is None or value == default:
            fitted[f.name] = max(1, int(SCHEDULE_LENGTHS[f.name] * max_steps))
    fitted = {k: v for k, v in fitted.items() if getattr(config, k) != v}
    if fitted:
        try:
            method.config = dataclasses.replace(config, **fitted)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"cannot fit the schedule of {type(method).__name__} to max_steps={max_steps} "
                f"({fitted}): {err}; give the schedule fields explicitly"
            ) from err
        _log.info(
            "%s: schedule fitted to max_steps=%d: %s", type(method).__name__, max_steps, fitted
        )
    return fitted


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The innermost ``torch.optim.Optimizer`` of an (accelerate-)wrapped optimizer.

    Raises:
        TypeError: No torch optimizer is found.
    """
    for _ in range(8):  # wrappers (accelerate, DeepSpeed-like) keep the real one as .optimizer
        inner = getattr(optimizer, "optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer):
            break
        optimizer = inner
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"expected a torch.optim.Optimizer, got {type(optimizer).__name__}")
    return optimizer


class SparseTrainerCallback(TrainerCallback):
    """Drive a `sparsecore.method.PruningMethod` from a ``transformers.Trainer``.

    Args:
        method: A method, not yet set up (or set up on the Trainer's model already, e.g. after
            calibration: it is then only attached to the Trainer's optimizer).
        finalize: At ``on_train_end``, bake the masks into the weights and remove the buffers
            and hooks, leaving a plain model that ``save_pretrained`` writes and any
            ``from_pretrained`` reads. Default ``False`` (the masks stay, e.g. for more training).
        fit_schedule: Set schedule lengths not given from ``state.max_steps`` (see the module
            docstring).
    """

    def __init__(
        self, method: PruningMethod, finalize: bool = False, fit_schedule: bool = True
    ) -> None:
        if not isinstance(method, PruningMethod):
            raise TypeError(f"method must be a PruningMethod, got {type(method).__name__}")
        self.method = method
        self.finalize = finalize
        self.fit_schedule = fit_schedule
        self.finalized = False

    @property
    def is_setup(self) -> bool:
        """Whether the method holds masks on a model."""
        return self.method._masks is not None

    def on_init_end(
        self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kwargs: Any
    ) -> None:
        """Put the masks on the model before ``train()`` can load a checkpoint into it."""
        if model is not None and not self.is_setup and not self.finalized:
            self.method.setup(model)

    def on_train_begin(
        self,
        args: Any,
        state: Any,
        control: Any,
        model: nn.Module | None = None,
        optimizer: Any = None,
        **kwargs: Any,
    ) -> None:
        """Fit the schedule, attach the optimizer, and restore the method state on resume."""
        if model is None or optimizer is None:
            raise RuntimeError(
                "SparseTrainerCallback: the Trainer passed no model/optimizer to on_train_begin"
            )
        if self.finalized:
            raise RuntimeError("SparseTrainerCallback: the method was finalized; make a new one")
        if self.fit_schedule:
            fit_schedule_lengths(self.method, int(getattr(state, "max_steps", 0) or 0))
        torch_optimizer = unwrap_optimizer(optimizer)
        if not self.is_setup:
            self.method.setup(model, torch_optimizer)
        else:
            if self.method.model is not model:
                raise RuntimeError("SparseTrainerCallback: the method is set up on another model")
            if self.method.masks.optimizer is not torch_optimizer:
                self.method.attach(torch_optimizer)
        step = int(getattr(state, "global_step", 0) or 0)
        if step > 0 and self.method.step != step:
            self._resume(args, step)

    def _resume(self, args: Any, step: int) -> None:
        path = os.path.join(str(args.output_dir), f"checkpoint-{step}", METHOD_STATE_FILE)
        if os.path.isfile(path):
            self.method.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return
        _log.warning(
            "SparseTrainerCallback: resuming at step %d without %s; the method's step is set "
            "to %d but its random state and method-specific state start fresh",
            step,
            path,
            step,
        )
        self.method.step = step

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Write the method state next to the Trainer's checkpoint."""
        if not self.is_setup or not getattr(state, "is_world_process_zero", True):
            return
        folder = os.path.join(str(args.output_dir), f"checkpoint-{state.global_step}")
        if os.path.isdir(folder):
            torch.save(self.method.state_dict(), os.path.join(folder, METHOD_STATE_FILE))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Finalize the method when ``finalize`` was requested."""
        if self.finalize and self.is_setup:
            self.method.finalize()
            self.finalized = True
