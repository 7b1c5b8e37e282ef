"""Stage-1 PEFT importances: first-order rank importance and module importance ``p2``.

Read in gccnlp/Light-PEFT:

* **Rank importance** (``NLU/trainer_base.py``, after each ``backward``): with ``A`` of shape
  ``(r, in)`` and ``B`` of shape ``(out, r)``,
  ``I = |mean_in(A ⊙ ∇A)| + |mean_out(B ⊙ ∇B)|`` (``imp_A.mean(1).abs() + imp_B.mean(0).abs()``),
  one value per rank dimension.
* **Module importance p2** (``peft/src/peft/tuners/lora.py``, in the training forward): per
  token ``‖ΔW x‖₂ / ‖W x + b‖₂`` (``torch.norm(lora_result, dim=2) / torch.norm(result,
  dim=2)``, where ``result`` is the frozen layer's output and ``lora_result = s · B A
  dropout(x)``), averaged over the tokens whose ``attention_mask`` is 1.
* **Averaging** (``NLU/estimate.py``, ``process_peft_imp``): over the second half of the recorded
  steps (``imp[total_steps // 2:]``), after replacing NaN and Inf by 0.

Choices:

* [choice] Running sums over the window ``[estimate_steps // 2, estimate_steps)`` instead of a
  list of every step (same mean, constant memory; the window is known up front here).
* [choice] The rank importance is read in the optimizer's pre-step hook, i.e. after gradient
  clipping when a Trainer clips (the official code reads it right after ``backward``); with
  gradient accumulation it sees the accumulated gradient once per optimizer step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["ImportanceRecorder", "finite_or_zero", "lora_layers", "p2_ratio", "rank_importance"]


def finite_or_zero(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` with NaN and ±Inf replaced by 0 (the official ``process_peft_imp``)."""
    return torch.where(torch.isfinite(tensor), tensor, torch.zeros_like(tensor))


def rank_importance(
    a: torch.Tensor, grad_a: torch.Tensor, b: torch.Tensor, grad_b: torch.Tensor
) -> torch.Tensor:
    """First-order importance of each rank: ``|mean_in(A ⊙ ∇A)| + |mean_out(B ⊙ ∇B)|``.

    Args:
        a: ``lora_A`` weight, ``(r, in)``.
        grad_a: Its gradient.
        b: ``lora_B`` weight, ``(out, r)``.
        grad_b: Its gradient.

    Returns:
        ``(r,)`` importances (NaN / Inf replaced by 0).
    """
    imp = (a * grad_a).mean(1).abs() + (b * grad_b).mean(0).abs()
    return finite_or_zero(imp.detach().float())


def p2_ratio(
    lora_out: torch.Tensor, base_out: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over non-pad tokens of ``‖ΔW x‖₂ / ‖W x‖₂`` (a 0-d tensor, NaN / Inf → 0 per token).

    Args:
        lora_out: The LoRA branch output ``s · B A x``, ``(batch, seq, out)`` (or ``(n, out)``).
        base_out: The frozen layer output, same shape.
        attention_mask: ``(batch, seq)``, 1 on real tokens; ``None``: every token counts.
    """
    ratio = torch.linalg.vector_norm(lora_out.detach().float(), dim=-1) / torch.linalg.vector_norm(
        base_out.detach().float(), dim=-1
    )
    ratio = finite_or_zero(ratio)
    if attention_mask is not None and attention_mask.shape == ratio.shape:
        keep = attention_mask.to(ratio.device) == 1
        return ratio[keep].mean() if bool(keep.any()) else ratio.new_zeros(())
    return ratio.mean()


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Peft LoRA layers of ``model`` by module name (empty for a model without adapters)."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # pragma: no cover - peft is a dependency
        return {}
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, LoraLayer) and hasattr(m, "base_layer") and m.active_adapters
    }


def _adapter(module: nn.Module) -> str:
    return module.active_adapters[0]


class ImportanceRecorder:
    """Records ``p2`` (forward hooks) and rank importance (`record_ranks`) while ``active``.

    Args:
        model: The model whose forward receives ``attention_mask`` (captured by a pre-hook).
        layers: LoRA layers by name (`lora_layers`).
    """

    def __init__(self, model: nn.Module, layers: Mapping[str, nn.Module]) -> None:
        self.layers = dict(layers)
        self.active = False
        self.rank_sum = {
            n: torch.zeros(m.lora_A[_adapter(m)].weight.shape[0]) for n, m in self.layers.items()
        }
        self.rank_count = 0
        self.p2_sum = dict.fromkeys(self.layers, 0.0)
        self.p2_count = dict.fromkeys(self.layers, 0)
        self._mask: torch.Tensor | None = None
        self._base: dict[str, torch.Tensor] = {}
        self._lora: dict[str, torch.Tensor] = {}
        self.handles: list[Any] = []
        if self.layers:
            self.handles.append(model.register_forward_pre_hook(self._capture, with_kwargs=True))
        for name, m in self.layers.items():
            self.handles.append(m.base_layer.register_forward_hook(self._store(self._base, name)))
            lora_b = m.lora_B[_adapter(m)]
            self.handles.append(lora_b.register_forward_hook(self._store(self._lora, name)))
            self.handles.append(m.register_forward_hook(self._ratio(name)))

    def _capture(self, _module: nn.Module, args: tuple, kwargs: dict) -> None:
        mask = kwargs.get("attention_mask")
        self._mask = mask.detach() if isinstance(mask, torch.Tensor) else None

    def _store(self, into: dict[str, torch.Tensor], name: str):
        def hook(module: nn.Module, _args: tuple, out: torch.Tensor) -> None:
            if self.active and module.training:
                into[name] = out.detach()

        return hook

    def _ratio(self, name: str):
        def hook(module: nn.Module, _args: tuple, _out: torch.Tensor) -> None:
            base, lora = self._base.pop(name, None), self._lora.pop(name, None)
            if not self.active or not module.training or base is None or lora is None:
                return
            scaled = lora * module.scaling[_adapter(module)]
            self.p2_sum[name] += float(p2_ratio(scaled, base, self._mask))
            self.p2_count[name] += 1

        return hook

    @torch.no_grad()
    def record_ranks(self) -> None:
        """Add one step's first-order rank importance (call after backward, before the step)."""
        if not self.active:
            return
        for name, m in self.layers.items():
            a, b = m.lora_A[_adapter(m)].weight, m.lora_B[_adapter(m)].weight
            if a.grad is None or b.grad is None:
                continue
            self.rank_sum[name] += rank_importance(a, a.grad, b, b.grad).cpu()
        self.rank_count += 1

    def rank_scores(self) -> dict[str, torch.Tensor]:
        """Mean rank importance over the recorded steps."""
        count = max(self.rank_count, 1)
        return {n: s / count for n, s in self.rank_sum.items()}

    def p2_scores(self) -> dict[str, float]:
        """Mean ``p2`` per module over the recorded forwards."""
        return {n: self.p2_sum[n] / max(self.p2_count[n], 1) for n in self.layers}

    def state(self) -> dict[str, Any]:
        """Accumulators for an exact resume."""
        return {
            "rank_sum": {n: s.clone() for n, s in self.rank_sum.items()},
            "rank_count": self.rank_count,
            "p2_sum": dict(self.p2_sum),
            "p2_count": dict(self.p2_count),
        }

    def load(self, state: Mapping[str, Any]) -> None:
        """Restore `state`."""
        self.rank_sum = {n: torch.as_tensor(s).clone() for n, s in state["rank_sum"].items()}
        self.rank_count = int(state["rank_count"])
        self.p2_sum = {n: float(v) for n, v in state["p2_sum"].items()}
        self.p2_count = {n: int(v) for n, v in state["p2_count"].items()}

    def remove(self) -> None:
        """Remove every hook."""
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
