"""Hugging Face ``transformers.Trainer`` adapter: any sparsecore method as a ``TrainerCallback``.

.. code-block:: python

    from sparsecore import GMP
    from sparsecore.integrations.hf import SparseTrainerCallback

    method = GMP(sparsity=0.9, end_step=1000, update_every=100)
    trainer = Trainer(model=model, args=args, train_dataset=train,
                      callbacks=[SparseTrainerCallback(method, finalize=True)])
    trainer.train()

How it works: the Trainer creates its optimizer lazily, inside ``train()``, before it fires
``on_train_begin``; the callback sets the method up there on the Trainer's (unwrapped) model and
its optimizer. From then on the method runs entirely through the optimizer's step hooks, exactly as
in a plain loop, so gradient accumulation, clipping and LR schedules need nothing special. An
``accelerate`` ``AcceleratedOptimizer`` wrapper is unwrapped to the torch optimizer it drives
(hooks on the wrapper would never fire). A second ``train()`` call re-attaches the set-up method to
the new optimizer.

Limits: a method whose :meth:`~sparsecore.method.PruningMethod.regularization` is not zero needs
its term in the loss, which a callback cannot add: override ``Trainer.compute_loss`` and add
``method.regularization()``. Methods that need :meth:`~sparsecore.method.PruningMethod.calibrate`
must be set up and calibrated before ``train()`` (the callback then only attaches the optimizer).

``transformers`` is an optional extra (``pip install 'sparse-core[hf]'``); the Trainer itself also
needs ``accelerate``.
"""

from __future__ import annotations

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

__all__ = ["SparseTrainerCallback", "unwrap_optimizer"]


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
    """Drive a :class:`~sparsecore.method.PruningMethod` from a ``transformers.Trainer``.

    Args:
        method: A method, not yet set up (or set up on the Trainer's model already, e.g. after
            calibration: it is then only attached to the Trainer's optimizer).
        finalize: At ``on_train_end``, bake the masks into the weights and remove the buffers
            and hooks, leaving a plain model that ``save_pretrained`` writes and any
            ``from_pretrained`` reads. Default ``False`` (the masks stay, e.g. for more training).
    """

    def __init__(self, method: PruningMethod, finalize: bool = False) -> None:
        if not isinstance(method, PruningMethod):
            raise TypeError(f"method must be a PruningMethod, got {type(method).__name__}")
        self.method = method
        self.finalize = finalize
        self.finalized = False

    @property
    def is_setup(self) -> bool:
        """Whether the method holds masks on a model."""
        return self.method._masks is not None

    def on_train_begin(
        self,
        args: Any,
        state: Any,
        control: Any,
        model: nn.Module | None = None,
        optimizer: Any = None,
        **kwargs: Any,
    ) -> None:
        """Set the method up on the Trainer's model and optimizer (or re-attach the optimizer)."""
        if model is None or optimizer is None:
            raise RuntimeError(
                "SparseTrainerCallback: the Trainer passed no model/optimizer to on_train_begin"
            )
        if self.finalized:
            raise RuntimeError("SparseTrainerCallback: the method was finalized; make a new one")
        torch_optimizer = unwrap_optimizer(optimizer)
        if not self.is_setup:
            self.method.setup(model, torch_optimizer)
            return
        if self.method.model is not model:
            raise RuntimeError("SparseTrainerCallback: the method is set up on another model")
        if self.method.masks.optimizer is not torch_optimizer:
            self.method.attach(torch_optimizer)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Finalize the method when ``finalize`` was requested."""
        if self.finalize and self.is_setup:
            self.method.finalize()
            self.finalized = True
