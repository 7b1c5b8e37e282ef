"""The Hugging Face ``Trainer`` path: the core's callback plus the L1 term in the loss.

The official code subclasses ``Trainer`` (``NLU/trainer_base.py``, ``MaskTrainer``) to add the
mask penalty to ``compute_loss``, to give the masks their own optimizer group and to read the
rank importances after ``backward``. Here the core's
`sparsecore.integrations.hf.SparseTrainerCallback` sets the method up, attaches it to the
Trainer's optimizer (`sparse_lightpeft.LightPEFT.attach` moves the gates into their own
group and reads the rank importances in the optimizer's pre-step hook) and saves its state with
every checkpoint; `LightPEFTTrainer` only adds `sparse_lightpeft.LightPEFT.regularization` to the
loss, which a callback cannot do.

Usage::

    method = LightPEFT(estimate_steps=800)
    trainer = LightPEFTTrainer(model=peft_model, args=args, train_dataset=data, lightpeft=method)
    trainer.train()                     # estimation, then in-place fine-tuning after step 800
    light = method.lighten()            # or: stop at 800 steps, lighten, fine-tune light.model
"""

from __future__ import annotations

from typing import Any

from transformers import Trainer

from sparse_lightpeft.method import LightPEFT
from sparsecore.integrations.hf import SparseTrainerCallback

__all__ = ["LightPEFTTrainer"]


class LightPEFTTrainer(Trainer):
    """A ``transformers.Trainer`` running `sparse_lightpeft.LightPEFT` (see the module docstring).

    Args:
        *args: ``Trainer`` arguments.
        lightpeft: The method (not yet set up).
        **kwargs: ``Trainer`` keyword arguments (``callbacks`` are kept).

    Raises:
        TypeError: ``lightpeft`` is not a `sparse_lightpeft.LightPEFT`.
    """

    def __init__(self, *args: Any, lightpeft: LightPEFT, **kwargs: Any) -> None:
        if not isinstance(lightpeft, LightPEFT):
            raise TypeError(f"lightpeft must be a LightPEFT, got {type(lightpeft).__name__}")
        self.lightpeft = lightpeft
        self.lightpeft_callback = SparseTrainerCallback(lightpeft)
        callbacks = [*(kwargs.pop("callbacks", None) or []), self.lightpeft_callback]
        super().__init__(*args, callbacks=callbacks, **kwargs)

    def create_optimizer(self, *args: Any, **kwargs: Any) -> Any:
        """The Trainer's optimizer, with the method's groups added before the LR scheduler."""
        optimizer = super().create_optimizer(*args, **kwargs)
        if self.lightpeft._masks is not None:
            from sparsecore.integrations.hf import unwrap_optimizer

            self.lightpeft.join_optimizer(unwrap_optimizer(optimizer))
        return optimizer

    def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, **kwargs: Any):
        """The task loss plus ``λ (Σ|m_h| + Σ|m_f|)`` during estimation."""
        result = super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)
        loss = result[0] if return_outputs else result
        loss = loss + self.lightpeft.regularization().to(loss.device)
        return (loss, result[1]) if return_outputs else loss
