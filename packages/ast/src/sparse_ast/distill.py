"""Knowledge distillation from the dense teacher: KL with temperature and SquareHead.

Official code: thu-ml/Adaptive-Sparse-Trainer ``sparse_modeling.py`` (``Distill_Model``):

* ``kl_loss``: ``T**2 * sum KL(softmax(z_t/T) || softmax(z_s/T)) / num_tokens`` with ``T = 2``,
  the sum running over every token and vocabulary entry (``F.kl_div(log_softmax(s/T),
  log_softmax(t/T), log_target=True, reduction="sum")``).
* ``layerwise_loss`` (SquareHead): ``sum_l mean((h_s - h_t)**2) / (mean(h_t**2) + eps)`` over the
  outputs of every transformer block, ``eps = finfo(bfloat16).eps``. With Hugging Face models we
  use ``hidden_states[1:]`` (the embedding output is skipped: teacher and student share it).
  Note on that indexing [documented, not changed]: in Hugging Face Llama / GPT-2 the *last*
  entry of ``hidden_states`` is taken after the final norm (``model.norm`` / ``ln_f``), while
  the others are the raw residual stream after each block. So the last term of SquareHead
  compares normalised states and the last block's raw output is not compared. The official
  code's ``Distill_Model`` reads the same ``hidden_states`` tuple, so this matches it.

`Distiller` makes this work with an unchanged training loop: a forward hook on the student
records the inputs and output of each training forward; ``regularization()`` then runs the
frozen teacher on the same inputs (without ``labels``, which only the task loss needs) and
returns ``alpha_kl * KL + alpha_squarehead * SquareHead``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["Distiller", "kl_distillation_loss", "logits_of", "squarehead_loss"]

SQUAREHEAD_EPS = torch.finfo(torch.bfloat16).eps


def logits_of(output: Any) -> torch.Tensor:
    """The logits of a model output (a tensor, an HF ``ModelOutput`` or a tuple)."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot find logits in a model output of type {type(output).__name__}")


def kl_distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0
) -> torch.Tensor:
    """``T**2 * KL(teacher || student)`` at temperature ``T``, summed over the vocabulary and
    averaged over tokens (every position but the last dimension counts as a token).
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs "
            f"{tuple(teacher_logits.shape)}"
        )
    num_tokens = student_logits.numel() / student_logits.shape[-1]
    kl = F.kl_div(
        F.log_softmax(student_logits.float() / temperature, dim=-1),
        F.log_softmax(teacher_logits.float() / temperature, dim=-1),
        log_target=True,
        reduction="sum",
    )
    return kl * temperature**2 / num_tokens


def squarehead_loss(
    student_hidden: list[torch.Tensor] | tuple[torch.Tensor, ...],
    teacher_hidden: list[torch.Tensor] | tuple[torch.Tensor, ...],
) -> torch.Tensor:
    """``sum_l mean((h_s - h_t)**2) / (mean(h_t**2) + eps)``."""
    if len(student_hidden) != len(teacher_hidden):
        raise ValueError("student and teacher have different numbers of hidden states")
    total = torch.zeros((), device=student_hidden[0].device)
    for h_s, h_t in zip(student_hidden, teacher_hidden, strict=True):
        h_t = h_t.float()
        total = total + (h_s.float() - h_t).pow(2).mean() / (h_t.pow(2).mean() + SQUAREHEAD_EPS)
    return total


class Distiller:
    """Records the student's training forwards and computes the distillation terms.

    Args:
        student: The model being trained (hooks are added to it).
        teacher: The frozen dense teacher.
        temperature: KL temperature.
        alpha_kl: Weight of the KL term.
        alpha_squarehead: Weight of the SquareHead term (0 turns it off).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        temperature: float,
        alpha_kl: float,
        alpha_squarehead: float,
    ) -> None:
        self.teacher = teacher
        self.temperature = temperature
        self.alpha_kl = alpha_kl
        self.alpha_squarehead = alpha_squarehead
        self.enabled = True
        self._last: tuple[tuple[Any, ...], dict[str, Any], Any] | None = None
        self._handles = [
            student.register_forward_pre_hook(self._pre_hook, with_kwargs=True),
            student.register_forward_hook(self._hook, with_kwargs=True),
        ]
        for p in teacher.parameters():
            p.requires_grad_(False)
        teacher.eval()

    def _recording(self, module: nn.Module) -> bool:
        return self.enabled and module.training and torch.is_grad_enabled()

    def _pre_hook(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        if self.alpha_squarehead > 0 and self._recording(module):
            return args, {**kwargs, "output_hidden_states": True}
        return None

    def _hook(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> None:
        if self._recording(module):
            self._last = (args, kwargs, output)

    def loss(self) -> torch.Tensor:
        """``alpha_kl * KL + alpha_squarehead * SquareHead`` for the last recorded forward
        (zero if none was recorded); the record is consumed.
        """
        if self._last is None:
            return torch.zeros(())
        args, kwargs, output = self._last
        self._last = None
        teacher_kwargs = {k: v for k, v in kwargs.items() if k != "labels"}
        with torch.no_grad():
            teacher_out = self.teacher(*args, **teacher_kwargs)
        total = self.alpha_kl * kl_distillation_loss(
            logits_of(output), logits_of(teacher_out), self.temperature
        )
        if self.alpha_squarehead > 0:
            h_s = getattr(output, "hidden_states", None)
            h_t = getattr(teacher_out, "hidden_states", None)
            if h_s is None or h_t is None:
                raise TypeError(
                    "alpha_squarehead > 0 needs a model whose output has hidden_states "
                    "(a Hugging Face model accepting output_hidden_states=True)"
                )
            total = total + self.alpha_squarehead * squarehead_loss(h_s[1:], h_t[1:])
        return total

    def remove(self) -> None:
        """Remove the hooks and forget the last record."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._last = None
