"""AST's AdamW variant with the annealed SR-STE decay inside the update.

Official code: thu-ml/Adaptive-Sparse-Trainer ``adamw.py`` (``AdamW.step(closure, decay)``), used
by the GPT-2 runs. For a parameter with a mask ``m`` and decay ``λ_t``, one step is

```text
W ← W · (1 − lr · weight_decay)                     # decoupled weight decay, all entries
m₁ ← β₁ m₁ + (1 − β₁) g                              # first moment of the *loss* gradient only
u  ← m₁ + λ_t (1 − m) ⊙ W                            # SR-STE decay on pruned entries
v  ← β₂ v + (1 − β₂) u²                              # second moment of u (not of g!)
W ← W − lr / (1 − β₁ᵗ) · u / (√v / √(1 − β₂ᵗ) + ε)
```

so the decay bypasses momentum and is normalised together with the gradient. Note that the
official code feeds the second moment with ``u`` (the *first moment* plus the decay), not with
the raw gradient ``g``; we keep that. Parameters without a mask get plain AdamW (the same
decoupled decay, first and second moments of ``g``).

Where we deviate (and why):

* The official ``adamw.py`` computes ``~p.mask`` on an ``int32`` mask (``calculate_mask``
  returns ``.int()``), which is a bitwise NOT: −2 on kept and −1 on pruned entries, i.e. a
  *negative* decay on every entry. We implement the evident intent, shared by the paper, the
  SR-STE paper and the LLaMA code (``srste_change = (~mask) * W * decay`` with a bool mask):
  a positive decay on pruned entries only.
* ``amsgrad`` and closures returning a loss are supported as in ``torch.optim.AdamW``; the decay
  for the step is read from `ASTAdamW.srste_decay`, which
  `sparse_ast.AdaptiveSparseTrainer` sets before every step (the official loop passes it
  as ``optimizer.step(decay=...)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

__all__ = ["ASTAdamW"]


class ASTAdamW(torch.optim.Optimizer):
    """AdamW whose masked parameters get the SR-STE decay inside the update (see module doc).

    Args:
        params: Parameters or parameter groups.
        lr: Learning rate.
        betas: ``(β₁, β₂)`` (the official GPT-2 runs use ``(0.9, 0.95)``).
        eps: ε of the denominator.
        weight_decay: Decoupled weight decay (official 0.1 on 2-D tensors).
        amsgrad: Use the maximum of past second moments.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
    ) -> None:
        if not lr >= 0.0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not eps >= 0.0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
        }
        super().__init__(params, defaults)
        #: λ_t for the next step (set by the method before each step).
        self.srste_decay = 0.0
        self._masks: dict[torch.Tensor, torch.Tensor] = {}

    def set_masks(self, masks: dict[torch.Tensor, torch.Tensor]) -> None:
        """Register the live bool keep-masks of the masked parameters (keyed by parameter)."""
        self._masks = dict(masks)

    def mask_of(self, param: torch.Tensor) -> torch.Tensor | None:
        """The keep-mask registered for ``param`` (``None`` if it is not masked)."""
        return self._masks.get(param)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # noqa: D102
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        decay = float(self.srste_decay)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("ASTAdamW does not support sparse gradients")
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = torch.zeros((), dtype=torch.float64)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    if group["amsgrad"]:
                        state["max_exp_avg_sq"] = torch.zeros_like(
                            p, memory_format=torch.preserve_format
                        )
                state["step"] += 1
                t = float(state["step"])
                p.mul_(1.0 - group["lr"] * group["weight_decay"])
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                mask = self._masks.get(p)
                if mask is not None:
                    update = exp_avg + p * (~mask) * decay
                    exp_avg_sq.mul_(beta2).addcmul_(update, update, value=1.0 - beta2)
                else:
                    update = exp_avg
                    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                second = exp_avg_sq
                if group["amsgrad"]:
                    torch.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
                    second = state["max_exp_avg_sq"]
                bias1 = 1.0 - beta1**t
                bias2 = 1.0 - beta2**t
                denom = (second.sqrt() / math.sqrt(bias2)).add_(group["eps"])
                p.addcdiv_(update, denom, value=-group["lr"] / bias1)
        return loss
