"""Action-space pruning as a `sparsecore.Procedure`: an LM restricted to the expert's action set.

Paper: Zhang et al. (Apple), "Learning to Reason as Action Abstractions with Scalable Mid-Training
RL" (RA3), arXiv 2509.25810. The paper's theory (Theorem 3.5, see `sparse_ra3.theory`) says what
mid-training should do: keep the actions the expert plays with frequency at least of order σ and
prune the rest, so that post-training RL searches a compact set ``Ẑ``. The paper realises the
pruning *implicitly* (the mid-trained LM puts little mass on pruned actions); this procedure
makes it *explicit and stackable* for any Hugging Face causal LM, with the token vocabulary as
the action set (a choice, labelled: for an LM a primitive action is a token).

Design (choices, recorded):

* `ActionPruning(counts, ...)` takes the expert action counts (``counts[v]`` = occurrences of
  token ``v`` in ``D_E``; `ActionPruning.from_demonstrations` computes them from token
  sequences). Token ``v`` is kept when ``counts[v] >= min_count`` and its frequency is at least
  ``sigma / 2`` (the rule of `sparse_ra3.theory.prune_by_frequency`; ``sigma = 0`` keeps every
  token seen ``min_count`` times), or when it is listed in ``always_keep`` (e.g. ``<eos>``).
* Attaching installs one forward hook on the output head (``get_output_embeddings()``) that
  returns the logits with every pruned token set to ``-inf`` (out of place; the kept logits are
  bit-identical). Sampling, greedy decoding and log-probabilities then live on ``Ẑ`` only
  (softmax renormalises over ``Ẑ``); a *label* on a pruned token gets an infinite loss, which
  is the honest value of its log-probability under the pruned policy.
* `validate` refuses, before touching the model, a model without an output head, a vocabulary
  whose size differs from ``len(counts)`` and a configuration that prunes every token.
* Nothing is trained and no weight is touched: detaching leaves the bit-identical model. The
  procedure's only state is the number of head calls it masked (`calls`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from sparsecore.procedure import Procedure, ProcedureConfig
from sparsecore.taxonomy import Taxonomy
from sparsecore.validation import check_int, check_number

__all__ = ["ActionPruning", "ActionPruningConfig", "token_counts"]


def token_counts(
    sequences: Iterable[Sequence[int] | torch.Tensor], vocab_size: int, ignore_index: int = -100
) -> torch.Tensor:
    """Occurrences of every token id in ``sequences`` (``ignore_index`` skipped).

    Raises:
        ValueError: A token id outside ``[0, vocab_size)``.
    """
    check_int(vocab_size, "vocab_size", 1)
    counts = torch.zeros(vocab_size, dtype=torch.long)
    for seq in sequences:
        ids = torch.as_tensor(seq, dtype=torch.long).flatten()
        ids = ids[ids != ignore_index]
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
            raise ValueError(f"sequences: token id outside [0, {vocab_size})")
        counts += torch.bincount(ids, minlength=vocab_size)
    return counts


@dataclass(frozen=True)
class ActionPruningConfig(ProcedureConfig):
    """Options of `ActionPruning`.

    Attributes:
        sigma: The theorem's σ in [0, 1]: keep tokens of frequency ``>= sigma / 2``.
        min_count: Keep only tokens seen at least this many times (``>= 1``).
        always_keep: Token ids kept whatever their count (e.g. ``<eos>``), each ``>= 0``.
    """

    sigma: float = 0.0
    min_count: int = 1
    always_keep: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number(self.sigma, "sigma", 0.0, 1.0)
        check_int(self.min_count, "min_count", 1)
        if not isinstance(self.always_keep, tuple):
            raise TypeError(f"always_keep must be a tuple of token ids, got {self.always_keep!r}")
        for i in self.always_keep:
            check_int(i, "always_keep", 0)


class ActionPruning(Procedure):
    """Restrict a causal LM's next-token (action) space to the expert's frequent tokens ``Ẑ``.

    Args:
        counts: ``(vocab,)`` expert token counts (non-negative integers).
        config: An `ActionPruningConfig`; or pass its fields as keywords.

    Example:
        >>> pruning = ActionPruning.from_demonstrations(expert_ids, vocab_size=260, sigma=0.01)
        >>> with pruning.attach(model):
        ...     out = model.generate(prompt, do_sample=True)   # only tokens of Ẑ are sampled
    """

    name: ClassVar[str] = "ra3"
    config_class = ActionPruningConfig
    taxonomy = Taxonomy(
        granularity=("unstructured",),
        timing="during",
        path="dense-to-sparse",
        dynamics="static",
        sparsifies=("actions",),
        note="RA3's action-set pruning: the LM's token (action) space restricted to the set Ẑ "
        "the expert plays frequently (decided in mid-training, fixed for post-training RL)",
    )
    bench_scenario = "action-pruning"
    config: ActionPruningConfig

    def __init__(
        self, counts: torch.Tensor, config: ActionPruningConfig | None = None, **overrides: Any
    ) -> None:
        super().__init__(config, **overrides)
        if not isinstance(counts, torch.Tensor) or counts.dim() != 1 or counts.numel() == 0:
            raise ValueError("counts must be a non-empty 1-D tensor of token counts")
        if counts.is_floating_point() or counts.is_complex() or bool((counts < 0).any()):
            raise ValueError("counts must hold non-negative integers")
        bad = [i for i in self.config.always_keep if i >= counts.numel()]
        if bad:
            raise ValueError(f"always_keep: ids {bad} outside the vocabulary of {counts.numel()}")
        self.counts = counts.detach().to(torch.long).cpu().clone()
        total = int(self.counts.sum())
        freq = self.counts.double() / max(total, 1)
        keep = (self.counts >= self.config.min_count) & (freq >= self.config.sigma / 2)
        keep[list(self.config.always_keep)] = True
        self.keep = keep
        self.calls = 0

    @classmethod
    def from_demonstrations(
        cls,
        sequences: Iterable[Sequence[int] | torch.Tensor],
        vocab_size: int,
        ignore_index: int = -100,
        **overrides: Any,
    ) -> ActionPruning:
        """Count the tokens of expert ``sequences`` (`token_counts`) and build the procedure."""
        return cls(token_counts(sequences, vocab_size, ignore_index), **overrides)

    @property
    def kept_ids(self) -> torch.Tensor:
        """Ids of ``Ẑ``."""
        return torch.nonzero(self.keep).flatten()

    @property
    def pruned_ids(self) -> torch.Tensor:
        """Ids of the pruned tokens."""
        return torch.nonzero(~self.keep).flatten()

    def validate(self, model: nn.Module) -> None:
        """Refuse a model without an output head or with another vocabulary size (untouched)."""
        get = getattr(model, "get_output_embeddings", None)
        head = get() if callable(get) else None
        if not isinstance(head, nn.Module) or getattr(head, "weight", None) is None:
            raise ValueError("model: needs an output head (get_output_embeddings()) to prune")
        if head.weight.shape[0] != self.counts.numel():
            raise ValueError(
                f"counts: {self.counts.numel()} entries, but the model's vocabulary has "
                f"{head.weight.shape[0]} tokens"
            )
        if not bool(self.keep.any()):
            raise ValueError("sigma/min_count: the configuration prunes every token")

    def on_attach(self, model: nn.Module) -> None:
        """Register the forward hook on the output head that sets pruned logits to -inf."""
        head = model.get_output_embeddings()
        pruned = ~self.keep

        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return output.masked_fill(pruned.to(output.device), float("-inf"))

        self.register(head.register_forward_hook(hook))

    def extra_state(self) -> dict[str, Any]:
        """The masked head calls and the counts (checked on load)."""
        return {"calls": self.calls, "counts": self.counts.clone()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore `calls`; refuse a state saved with other counts."""
        counts = state.get("counts")
        if counts is not None and not torch.equal(counts, self.counts):
            raise ValueError("state: saved counts differ from this procedure's counts")
        self.calls = int(state.get("calls", 0))
