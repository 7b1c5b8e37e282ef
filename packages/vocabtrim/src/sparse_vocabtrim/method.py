"""VocabTrim as a sparsecore method: a row (token) mask on the drafter's LM head.

Paper: Goel et al., "VocabTrim: Vocabulary Pruning for Efficient Speculative Decoding in
LLMs", arXiv 2506.22694. No official code exists.

`VocabTrim` is set up on the *drafter* of a speculative-decoding pair. `VocabTrim.calibrate`
counts the token ids of the calibration batches (the paper's best source: target-model
generations on task prompts, `sparse_vocabtrim.calibration.calibration_tokens`) and keeps the
``k = keep`` (or ``floor((1 - sparsity) · V)``) most frequent rows of the head: the mask has
whole rows, pattern ``channel(dim=0)``. The deployable drafter is `VocabTrim.trimmed`: the
head physically cut to the ``k`` rows with the id map (`sparse_vocabtrim.trim.trim_drafter`);
a masked (zero-row) head is *not* the same drafter (a zero row still has logit 0, not -inf).

Choices, labelled:

* **What is counted**: every id of the first tensor of each batch (the generated or raw
  token sequences); prompt tokens are the caller's choice (`calibration_tokens` counts only
  generated tokens for the generation sources).
* **Before calibration** the mask keeps everything (the head is dense until counts exist).
* **Training with the mask**: allowed (the lifecycle keeps removed rows at zero), not part of
  the paper, which is training-free.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from sparse_vocabtrim.trim import token_counts, top_k_vocab, trim_drafter
from sparsecore.method import MethodConfig, PruningMethod
from sparsecore.patterns import Channel, Pattern
from sparsecore.select import keep_count
from sparsecore.targets import Target
from sparsecore.taxonomy import Taxonomy
from sparsecore.validation import check_int

__all__ = ["VocabTrim", "VocabTrimConfig"]


@dataclass(frozen=True)
class VocabTrimConfig(MethodConfig):
    """Options of `VocabTrim`.

    Attributes:
        sparsity: Fraction of the vocabulary removed from the drafter head, ``1 - k/V``
            (ignored when ``keep`` is set).
        pattern: ``channel`` (whole head rows); the only supported pattern.
        targets: The LM head weight, ``("lm_head.weight",)`` for Hugging Face Llama/GPT-2.
        keep: ``k``, the number of kept tokens (``None``: from ``sparsity``).
    """

    sparsity: float = 0.75
    pattern: Pattern | str = "channel"
    targets: tuple[str, ...] | None = ("lm_head.weight",)
    keep: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.keep is not None:
            check_int(self.keep, "keep", 1)


class VocabTrim(PruningMethod):
    """Vocabulary trimming of a drafter LM head (Goel et al., arXiv 2506.22694).

    ```python
    vt = VocabTrim(keep=512).setup(drafter)
    vt.calibrate([calibration_tokens(target, prompts, source="target")])
    small = vt.trimmed()              # the drafter with a k-row head and the id map
    out = speculative_generate(target, small, prompt, 64, gamma=4)
    ```

    Attributes:
        counts: Calibration token counts ``(V,)`` (after `calibrate`).
        kept_ids: The kept token ids, sorted (after `calibrate`).
    """

    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("channel",),
        "after",
        "dense-to-sparse",
        "static",
        note="rows of the drafter's LM head (vocabulary entries), chosen by calibration counts",
    )
    name = "vocabtrim"
    config_class: ClassVar[type[MethodConfig]] = VocabTrimConfig
    supported_patterns: ClassVar[tuple[type[Pattern], ...]] = (Channel,)
    needs_calibration: ClassVar[bool] = True
    bench_scenario: ClassVar[str] = "spec-decoding"
    config: VocabTrimConfig

    def __init__(self, config: MethodConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.counts: torch.Tensor | None = None
        self.kept_ids: torch.Tensor | None = None

    def validate(self, model: nn.Module, targets: list[Target]) -> None:
        """Exactly one 2-D target (the head), pattern ``channel(dim=0)`` (its rows)."""
        if len(targets) != 1:
            raise ValueError(
                f"targets: VocabTrim trims one LM head, got {len(targets)} tensors "
                f"({', '.join(t.name for t in targets)})"
            )
        param = dict(model.named_parameters())[targets[0].name]
        if param.ndim != 2:
            raise ValueError(f"targets: {targets[0].name} is not a 2-D head (V, d)")
        if self.config.pattern != Channel(0):
            raise ValueError(
                f"pattern must be channel(dim=0) (head rows), got {self.config.pattern}"
            )
        if self.config.keep is not None and self.config.keep > param.shape[0]:
            raise ValueError(f"keep must be <= the vocabulary size {param.shape[0]}")

    @property
    def _head_name(self) -> str:
        return next(iter(self.masks.names))

    @property
    def vocab_size(self) -> int:
        """``V``, rows of the drafter head."""
        return int(self.masks.params()[self._head_name].shape[0])

    @property
    def k(self) -> int:
        """Number of kept tokens."""
        if self.config.keep is not None:
            return self.config.keep
        return keep_count(self.vocab_size, self.config.density)

    def calibrate(self, batches: Iterable[Any], loss_fn: Any = None) -> None:
        """Count the token ids of ``batches`` and keep the ``k`` most frequent head rows.

        Args:
            batches: Token tensors, or tuples whose first item is the token tensor.
            loss_fn: Unused (the counts need no loss).

        Raises:
            ValueError: Ids outside the head's vocabulary.
        """
        chunks = (b[0] if isinstance(b, tuple | list) else b for b in batches)
        counts = token_counts(chunks, self.vocab_size)
        self.counts = counts if self.counts is None else self.counts + counts
        self.kept_ids = top_k_vocab(self.counts, self.k)
        self._apply_rows()

    def _apply_rows(self) -> None:
        name = self._head_name
        param = self.masks.params()[name]
        rows = torch.zeros(param.shape[0], dtype=torch.bool, device=param.device)
        rows[self.kept_ids.to(param.device)] = True
        self.masks.update(name, rows.unsqueeze(1).expand_as(param).clone())
        self.masks.apply()

    def trimmed(self, model: nn.Module | None = None, full_width: bool = False) -> nn.Module:
        """The deployable drafter: a copy with the head cut to `kept_ids` (`trim_drafter`).

        Args:
            model: The drafter to cut (default: the one set up, masks applied or finalized).
            full_width: ``(..., V)`` logits with ``-inf`` outside the kept ids (see
                `sparse_vocabtrim.trim.TrimmedLMHead`).

        Raises:
            RuntimeError: Before `calibrate`.
        """
        if self.kept_ids is None:
            raise RuntimeError("VocabTrim: call calibrate(...) before trimmed()")
        source = model if model is not None else self.model
        if source is None:
            raise RuntimeError("VocabTrim: no model: call setup(model) or pass model=")
        if self._masks is not None and source is self.model:
            with torch.no_grad():
                self.masks.apply()
        return trim_drafter(source, self.kept_ids, full_width=full_width)

    def extra_state(self) -> dict[str, Any]:  # noqa: D102
        return {"counts": self.counts, "kept_ids": self.kept_ids}

    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: D102
        self.counts = state.get("counts")
        self.kept_ids = state.get("kept_ids")
