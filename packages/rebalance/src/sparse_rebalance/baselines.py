"""Simple baselines against over-thinking, as procedures on the same hooks.

* `ReflectionSuppression`: never let a reasoning step *start* with a reflection token — the
  "NoWait" idea (Wang et al., "Wait, We Don't Need to 'Wait'! Removing Thinking Tokens Improves
  Reasoning Efficiency", arXiv 2506.08343, which bans the reflection keywords' tokens). Choice,
  labelled: on the byte-level toy a reflection step is the only step starting with the byte
  ``w`` (``wait, check ...``), so the banned ids default to that byte, and the ban applies at
  the first token after a separator inside ``<think>``.
* `ThinkingBudget`: a length cap on the thinking section, "budget forcing" of s1 (Muennighoff
  et al., "s1: Simple test-time scaling", arXiv 2501.19393): after ``budget`` tokens inside
  ``<think>`` the next token is forced to ``</think>``.

Both edit only the last position's logits in a forward hook, so they act on ``generate`` with
or without a KV cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from sparsecore.procedure import Procedure, ProcedureConfig
from sparsecore.taxonomy import Taxonomy
from sparsecore.validation import check_int

__all__ = ["ReflectionSuppression", "SuppressionConfig", "ThinkingBudget", "ThinkingBudgetConfig"]

_TAXONOMY = Taxonomy(("unstructured",), "after", "dense-to-sparse", "static", ("reasoning",))


def _ids(value: Any, name: str) -> tuple[int, ...]:
    if isinstance(value, int | str) or not value:
        raise TypeError(f"{name} must be a non-empty tuple of ints, got {value!r}")
    return tuple(check_int(i, name, 0) for i in value)


class _LogitProcedure(Procedure):
    """Tracks ``<think>`` per row from the inputs and edits the last position's logits."""

    taxonomy: ClassVar[Taxonomy | None] = _TAXONOMY

    def on_attach(self, model: nn.Module) -> None:
        self._think = torch.zeros(0, dtype=torch.bool)
        self._used = torch.zeros(0, dtype=torch.long)
        self._last = torch.zeros(0, dtype=torch.long)
        self.register(model.register_forward_pre_hook(self._read, with_kwargs=True))
        self.register(model.register_forward_hook(self._edit))

    def _read(self, _module: nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            return
        ids = ids.detach().cpu()
        c = self.config
        if ids.shape[1] > 1 or self._think.shape[0] != ids.shape[0]:
            self._think = (ids == c.think_start_id).any(1)
            self._used = torch.zeros(ids.shape[0], dtype=torch.long)
        last = ids[:, -1]
        self._think = (self._think | (last == c.think_start_id)) & (last != c.think_end_id)
        self._used += (self._think & (last != c.think_start_id)).long()
        self._last = last

    def _edit(self, _module: nn.Module, _args: tuple, output: Any) -> Any:
        logits = output.logits if hasattr(output, "logits") else output[0]
        rows = self._rows()
        if rows is None or not rows.any():
            return None
        edited = logits.clone()
        self._apply(edited, rows.to(logits.device))
        if hasattr(output, "logits"):
            output.logits = edited
            return output
        return (edited, *output[1:])

    def _rows(self) -> torch.Tensor | None:
        raise NotImplementedError

    def _apply(self, logits: torch.Tensor, rows: torch.Tensor) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class SuppressionConfig(ProcedureConfig):
    """Options of `ReflectionSuppression` (token ids of the toy's tokenizer by default)."""

    think_start_id: int = 256
    think_end_id: int = 257
    split_ids: tuple[int, ...] = (258,)
    banned_ids: tuple[int, ...] = (ord("w"),)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self.think_start_id, "think_start_id", 0)
        check_int(self.think_end_id, "think_end_id", 0)
        object.__setattr__(self, "split_ids", _ids(self.split_ids, "split_ids"))
        object.__setattr__(self, "banned_ids", _ids(self.banned_ids, "banned_ids"))


class ReflectionSuppression(_LogitProcedure):
    """Ban reflection tokens at the start of every step inside ``<think>`` (module docstring)."""

    name = "reflection-suppression"
    config_class: ClassVar[type[ProcedureConfig]] = SuppressionConfig
    config: SuppressionConfig

    def _rows(self) -> torch.Tensor | None:
        return self._think & torch.isin(self._last, torch.tensor(self.config.split_ids))

    def _apply(self, logits: torch.Tensor, rows: torch.Tensor) -> None:
        banned = torch.tensor(self.config.banned_ids, device=logits.device)
        index = rows.nonzero().flatten()
        logits[index[:, None], -1, banned[None, :]] = float("-inf")


@dataclass(frozen=True)
class ThinkingBudgetConfig(ProcedureConfig):
    """Options of `ThinkingBudget`."""

    budget: int = 64
    think_start_id: int = 256
    think_end_id: int = 257

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self.budget, "budget", 1)
        check_int(self.think_start_id, "think_start_id", 0)
        check_int(self.think_end_id, "think_end_id", 0)


class ThinkingBudget(_LogitProcedure):
    """Force ``</think>`` once ``budget`` thinking tokens were generated (module docstring)."""

    name = "thinking-budget"
    config_class: ClassVar[type[ProcedureConfig]] = ThinkingBudgetConfig
    config: ThinkingBudgetConfig

    def _rows(self) -> torch.Tensor | None:
        return self._think & (self._used >= self.config.budget)

    def _apply(self, logits: torch.Tensor, rows: torch.Tensor) -> None:
        index = rows.nonzero().flatten()
        forced = torch.full_like(logits[index, -1], float("-inf"))
        forced[:, self.config.think_end_id] = 0.0
        logits[index, -1] = forced
