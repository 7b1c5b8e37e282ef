"""Compresso's L0 module: gate parameters, expected size, Lagrangian, target warm-up.

Read in github.com/microsoft/Moonlit ``Compresso/models/l0_module.py`` (default
``pruning_type = structured_heads+structured_mlp+hidden``):

* one ``log α`` per head (``L × H``), per FFN intermediate channel (``L × d_ff``) and per hidden
  dimension (``d``, shared by all layers);
* expected size for LLaMA (``get_num_parameters_and_constraint_for_hidden``):
  ``E = Σ outer(q_hidden, q_head) · (4d²/H) / d + Σ outer(q_hidden, q_int) · 3``, i.e. each
  (head, hidden dim) pair carries ``4 · head_dim`` weights (query, key, value rows, output
  column) and each (channel, hidden dim) pair 3 (gate, up rows, down column); the prunable size
  is ``L (4d² + 3 d d_ff)`` (norms and embeddings ignored, as the official code says);
* expected sparsity ``ŝ = 1 - E / prunable``; Lagrangian ``λ₁ (ŝ - t) + λ₂ (ŝ - t)²``
  (``lagrangian_regularization``), ``λ₁ = λ₂ = 0`` at the start;
* target ``t`` linear from ``start_sparsity`` (0) to ``target_sparsity`` over the warm-up steps,
  or ``t + (t₀ - t)(1 - min(1, k / warmup))³`` for ``"cubic"`` (``get_target_sparsity``).

[choice] With grouped-query attention a gate covers a key/value group and its query heads
(``(2 · group + 2) · head_dim`` weights per hidden dim); without GQA this is the official
``4 · head_dim``. [choice] The model's layers must have equal widths (an unpruned model), as
the official module assumes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from sparse_compresso.hard_concrete import (
    BETA,
    MAGICAL_NUMBER,
    constrain_,
    deterministic_gate,
    init_log_alpha,
    keep_probability,
    sample_gate,
)
from sparsecore.structures import ModelLayout

__all__ = ["GATE_KINDS", "L0Gates", "target_sparsity"]

#: The prunable structure kinds, in the official order.
GATE_KINDS = ("heads", "ffn", "hidden")


def target_sparsity(
    step: int, target: float, warmup: int, scheduler: str = "linear", start: float = 0.0
) -> float:
    """The Lagrangian's target after ``step`` pruning steps (``get_target_sparsity``).

    ``warmup = 0`` gives the final target from the first step.
    """
    if warmup <= 0:
        return target
    frac = min(1.0, step / warmup)
    if scheduler == "cubic":
        return target + (start - target) * (1.0 - frac) ** 3
    return (target - start) * frac + start


class L0Gates(nn.Module):
    """The trainable gate parameters and Lagrange multipliers of one model.

    Args:
        layout: The model's structure layout (`sparsecore.structures.describe`).
        kinds: Which of ``"heads"``, ``"ffn"``, ``"hidden"`` get gates.
        droprate_init: ``p₀`` of the FFN gates' init (0.01 in ``train.sh``).
        generator: Generator of the init noise.

    Raises:
        ValueError: Layers of different widths.
    """

    def __init__(
        self,
        layout: ModelLayout,
        kinds: tuple[str, ...],
        droprate_init: float,
        generator: torch.Generator,
        beta: float = BETA,
        magical_number: float = MAGICAL_NUMBER,
    ) -> None:
        super().__init__()
        self.check_layout(layout)
        first = layout.layers[0]
        self.kinds = tuple(kinds)
        self.beta, self.magical_number = beta, magical_number
        self.num_layers, self.hidden = len(layout.layers), layout.hidden
        self.groups, self.intermediate = first.kv_heads, first.intermediate
        #: Weights per (head group, hidden dim) pair and per (channel, hidden dim) pair.
        self.per_head = (2 * first.group_size + 2) * first.head_dim
        self.per_channel = len(first.ffn_in) + 1
        ffn_mean = math.log(1.0 - droprate_init) - math.log(droprate_init)
        shapes = {
            "heads": ((self.num_layers, self.groups), 10.0),
            "ffn": ((self.num_layers, self.intermediate), ffn_mean),
            "hidden": ((self.hidden,), 10.0),
        }
        self.log_alpha = nn.ParameterDict(
            {
                k: nn.Parameter(init_log_alpha(shapes[k][0], shapes[k][1], generator))
                for k in GATE_KINDS
                if k in self.kinds
            }
        )
        self.lambda_1 = nn.Parameter(torch.tensor(0.0))
        self.lambda_2 = nn.Parameter(torch.tensor(0.0))

    @staticmethod
    def check_layout(layout: ModelLayout) -> None:
        """Raise ``ValueError`` unless every layer has the widths of layer 0."""
        first = layout.layers[0]
        for lay in layout.layers:
            widths = (lay.kv_heads, lay.heads, lay.intermediate, lay.head_dim)
            if widths != (first.kv_heads, first.heads, first.intermediate, first.head_dim):
                raise ValueError(
                    f"model: layer {lay.index} has other head / FFN widths than layer 0; "
                    "Compresso prunes an unpruned model (equal widths in every layer)"
                )

    @property
    def prunable_size(self) -> int:
        """Weights the gates can remove: ``L (G · per_head · d + d_ff · per_channel · d)``."""
        per_layer = self.groups * self.per_head + self.intermediate * self.per_channel
        return self.num_layers * per_layer * self.hidden

    def gate_parameters(self) -> list[nn.Parameter]:
        """The ``log α`` tensors (minimised)."""
        return list(self.log_alpha.values())

    def multipliers(self) -> list[nn.Parameter]:
        """``λ₁, λ₂`` (maximised)."""
        return [self.lambda_1, self.lambda_2]

    def _scores(self, kind: str) -> torch.Tensor:
        if kind in self.log_alpha:
            return keep_probability(self.log_alpha[kind], self.beta)
        device = self.lambda_1.device
        shape = {
            "heads": (self.num_layers, self.groups),
            "ffn": (self.num_layers, self.intermediate),
        }
        return torch.ones(shape.get(kind, (self.hidden,)), device=device)

    def expected_size(self) -> torch.Tensor:
        """``Σ outer(q_hidden, q_head) · per_head + Σ outer(q_hidden, q_int) · per_channel``."""
        hidden = self._scores("hidden")
        heads = self._scores("heads").reshape(-1)
        ffn = self._scores("ffn").reshape(-1)
        total = torch.outer(hidden, heads).sum() * self.per_head
        return total + torch.outer(hidden, ffn).sum() * self.per_channel

    def expected_sparsity(self) -> torch.Tensor:
        """``ŝ = 1 - E[size] / prunable size`` (differentiable)."""
        return 1.0 - self.expected_size() / self.prunable_size

    def lagrangian(self, target: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(λ₁ (ŝ - t) + λ₂ (ŝ - t)², ŝ)``."""
        s = self.expected_sparsity()
        gap = s - target
        return self.lambda_1 * gap + self.lambda_2 * gap * gap, s

    def sample(self, generator: torch.Generator) -> dict[str, Any]:
        """One training sample of every gate, as group masks (per-layer lists, differentiable)."""
        out: dict[str, Any] = {}
        for kind, log_alpha in self.log_alpha.items():
            z = sample_gate(log_alpha, self.beta, generator)
            out[kind] = z if kind == "hidden" else list(z.unbind(0))
        return out

    @torch.no_grad()
    def deterministic(self) -> dict[str, Any]:
        """The evaluation gates (`deterministic_gate` per layer and for the hidden dims)."""
        out: dict[str, Any] = {}
        for kind, log_alpha in self.log_alpha.items():
            dev = log_alpha.device
            if kind == "hidden":
                out[kind] = deterministic_gate(log_alpha, self.beta, self.magical_number).to(dev)
            else:
                out[kind] = [
                    deterministic_gate(row, self.beta, self.magical_number).to(dev)
                    for row in log_alpha
                ]
        return out

    @torch.no_grad()
    def constrain(self) -> None:
        """Clamp every ``log α`` to ``[ln 0.01, ln 100]``."""
        for log_alpha in self.log_alpha.values():
            constrain_(log_alpha)

    @torch.no_grad()
    def remaining_size(self, gates: dict[str, Any]) -> int:
        """Prunable weights kept by (deterministic) gates (``calculate_model_size``)."""
        hidden = int((gates["hidden"] != 0).sum()) if "hidden" in gates else self.hidden
        heads = (
            sum(int((z != 0).sum()) for z in gates["heads"])
            if "heads" in gates
            else self.num_layers * self.groups
        )
        ffn = (
            sum(int((z != 0).sum()) for z in gates["ffn"])
            if "ffn" in gates
            else self.num_layers * self.intermediate
        )
        return hidden * (heads * self.per_head + ffn * self.per_channel)
