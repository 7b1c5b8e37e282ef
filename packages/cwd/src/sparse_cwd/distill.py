"""Channel-wise knowledge distillation (Shu et al., "Channel-wise Knowledge Distillation for
Dense Prediction", ICCV 2021, arXiv 2011.13256), as the YOLOv8 compression recipe uses it
(Sabaghian et al., arXiv 2509.12918: the unpruned model teaches the pruned one on its neck
outputs; the fork melika-sce/YOLOv8_pruning has no CWD code, so this follows the two papers).

Per channel ``c`` of a feature map, a softmax over the ``H·W`` spatial positions at temperature
``τ``: ``φ(y_c)_i = exp(y_{c,i}/τ) / Σ_j exp(y_{c,j}/τ)``, and

    L_CWD = τ² / C · Σ_c Σ_i φ(y^T_c)_i · log(φ(y^T_c)_i / φ(y^S_c)_i)

averaged over the batch: the KL summed over images and channels is divided by ``N·C``, as
in the ``CriterionCWD`` of irfanICMLL/TorchDistiller (read in a derived copy of it). When the
student has fewer channels than the teacher (a pruned neck), a 1×1 convolution adapter maps
the student's channels to the teacher's, as in Shu et al.

* `cwd_loss`: the loss of two feature maps with equal shapes;
* `ChannelWiseDistillation`: an ``nn.Module`` holding the adapters (trainable: give its
  parameters to the optimizer) that taps the named modules of a student and a teacher with
  forward hooks and returns ``α · Σ_layers L_CWD``.

CHOICE: the adapters are created when distillation starts (`ChannelWiseDistillation` built
for the pruned student), initialised by the default ``Conv2d`` init, with a bias; an identity
(no adapter) when the channel counts already match. CHOICE: ``τ`` and ``α`` are not given in the
paper ("adjustable"); the defaults are Shu et al.'s τ = 4 and a weight α = 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from sparsecore.validation import check_number

__all__ = ["ChannelWiseDistillation", "cwd_loss"]


def cwd_loss(student: torch.Tensor, teacher: torch.Tensor, tau: float = 4.0) -> torch.Tensor:
    """L_CWD of two ``(N, C, H, W)`` feature maps (see the module docstring).

    Args:
        student: Student features (after the adapter), same shape as ``teacher``.
        teacher: Teacher features (no gradient flows into them).
        tau: Temperature ``τ > 0``.

    Returns:
        A scalar: ``τ²/(N·C) · Σ KL(φ(T_c) ‖ φ(S_c))``.

    Raises:
        ValueError: Shapes differ or ``tau`` is not positive.
    """
    check_number(tau, "tau", 0.0, open_low=True, finite=True)
    if student.shape != teacher.shape or student.dim() < 3:
        raise ValueError(
            f"student and teacher features must have the same (N, C, ...) shape, got "
            f"{tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    n, c = student.shape[:2]
    s = student.reshape(n * c, -1) / tau
    t = teacher.detach().reshape(n * c, -1) / tau
    log_t = F.log_softmax(t, 1)
    kl = (log_t.exp() * (log_t - F.log_softmax(s, 1))).sum()
    return kl * tau**2 / (n * c)


class _Tap:
    """Forward hooks that record the outputs of named modules."""

    def __init__(self, model: nn.Module, layers: Sequence[str]) -> None:
        modules = dict(model.named_modules())
        missing = [n for n in layers if n not in modules]
        if missing:
            raise ValueError(f"layers: {missing} are not modules of the model")
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = [modules[n].register_forward_hook(self._hook(n)) for n in layers]

    def _hook(self, name: str):
        def record(_module, _args, out) -> None:
            self.outputs[name] = out

        return record

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


class ChannelWiseDistillation(nn.Module):
    """CWD between a student and a frozen teacher on named feature layers.

    Args:
        student: The model being trained (e.g. the pruned detector).
        teacher: The unpruned model (put in eval mode; never updated here).
        layers: Module names whose outputs are distilled (the same names in both models).
        example: One input batch, used once to read the channel counts.
        tau: Temperature ``τ``.
        alpha: Weight ``α`` of the distillation term.

    Raises:
        ValueError: A bad option (named), or a layer missing from a model.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        layers: Sequence[str],
        example: torch.Tensor,
        tau: float = 4.0,
        alpha: float = 1.0,
    ) -> None:
        super().__init__()
        check_number(tau, "tau", 0.0, open_low=True, finite=True)
        check_number(alpha, "alpha", 0.0, finite=True)
        if isinstance(layers, str) or not layers:
            raise ValueError(f"layers must be a non-empty sequence of module names, got {layers!r}")
        self.layers = list(layers)
        self.tau, self.alpha = float(tau), float(alpha)
        self._teacher = (teacher.eval(),)  # a tuple: not a submodule, not in parameters()
        for p in teacher.parameters():
            p.requires_grad_(False)
        self._student_tap = _Tap(student, self.layers)
        self._teacher_tap = _Tap(teacher, self.layers)
        was_training = student.training
        student.eval()
        with torch.no_grad():
            student(example)
            teacher(example)
        student.train(was_training)
        adapters = {}
        for i, name in enumerate(self.layers):
            c_s = self._student_tap.outputs[name].shape[1]
            c_t = self._teacher_tap.outputs[name].shape[1]
            adapters[str(i)] = nn.Identity() if c_s == c_t else nn.Conv2d(c_s, c_t, 1)
        self.adapters = nn.ModuleDict(adapters)

    def loss(self, images: torch.Tensor) -> torch.Tensor:
        """``α · Σ L_CWD`` for the student features of its *last* forward and the teacher's
        features on ``images`` (the teacher runs here, without gradients).
        """
        with torch.no_grad():
            self._teacher[0](images)
        total = torch.zeros(())
        for i, name in enumerate(self.layers):
            student = self.adapters[str(i)](self._student_tap.outputs[name])
            teacher = self._teacher_tap.outputs[name]
            total = total + cwd_loss(student, teacher, self.tau)
        return self.alpha * total

    def close(self) -> None:
        """Remove the forward hooks from both models."""
        self._student_tap.remove()
        self._teacher_tap.remove()
