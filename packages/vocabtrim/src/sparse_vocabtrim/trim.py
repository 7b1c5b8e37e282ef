"""The VocabTrim operation itself: token counts, the top-k vocabulary and the trimmed LM head.

Paper: Goel et al., "VocabTrim: Vocabulary Pruning for Efficient Speculative Decoding in
LLMs", arXiv 2506.22694 (ICML 2025 workshop version). No official code exists.

With calibration token counts ``c`` over the full vocabulary ``V`` (Sec. 3 of the paper):
``V_trim = V[TopK(c, k)]`` and ``W_trim = W[TopK(c, k), :]``, where ``W`` is the drafter's LM
head. Drafting then samples from ``softmax(h W_trimᵀ)`` over the ``k`` kept tokens only (every
other token has draft probability zero); the target model and its verification are unchanged.

Choices the paper leaves open (labelled):

* **Ties** in the counts (in particular the many never-seen tokens when ``k`` exceeds the
  number of distinct calibration tokens) go to the lower token id.
* **Bias**: a head with a bias keeps the bias entries of the kept rows (Llama heads have none).
* **Input embedding**: untouched (the paper trims the LM head only; an embedding lookup reads
  one row per token, so it does not cost memory bandwidth in proportion to ``V``).
* **Index map**: kept as an ``int64`` buffer ``token_ids`` on the trimmed head, sorted by
  token id (not by count), so trimmed position ``i`` is full id ``token_ids[i]``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from sparsecore.validation import check_bool, check_int

__all__ = ["TrimmedLMHead", "lm_head_of", "token_counts", "top_k_vocab", "trim_drafter"]


def token_counts(tokens: Iterable[torch.Tensor] | torch.Tensor, vocab_size: int) -> torch.Tensor:
    """How often every token id occurs in ``tokens`` (``c`` of the paper).

    Args:
        tokens: A tensor of token ids, or an iterable of them (any shapes).
        vocab_size: ``V``; every id must be in ``[0, V)``.

    Returns:
        ``int64`` counts of shape ``(V,)``.

    Raises:
        ValueError: An id outside ``[0, V)``.
    """
    check_int(vocab_size, "vocab_size", 1)
    counts = torch.zeros(vocab_size, dtype=torch.long)
    chunks = [tokens] if isinstance(tokens, torch.Tensor) else tokens
    for chunk in chunks:
        flat = torch.as_tensor(chunk).reshape(-1).to("cpu", torch.long)
        if flat.numel() == 0:
            continue
        if int(flat.min()) < 0 or int(flat.max()) >= vocab_size:
            raise ValueError(
                f"tokens: ids must lie in [0, {vocab_size}), got [{int(flat.min())}, "
                f"{int(flat.max())}]"
            )
        counts += torch.bincount(flat, minlength=vocab_size)
    return counts


def top_k_vocab(counts: torch.Tensor, k: int) -> torch.Tensor:
    """``TopK(c, k)``: the ``k`` most frequent token ids, sorted by id (ties: lower id first).

    Raises:
        ValueError: ``k`` outside ``[1, V]`` or ``counts`` not 1-D.
    """
    if counts.ndim != 1:
        raise ValueError(f"counts must be 1-D (V,), got shape {tuple(counts.shape)}")
    check_int(k, "k", 1)
    if k > counts.numel():
        raise ValueError(f"k must be <= the vocabulary size {counts.numel()}, got {k}")
    ids = torch.arange(counts.numel())
    # stable sort by count descending keeps the lower id first among equal counts
    order = torch.sort(-counts.to(torch.long), stable=True).indices
    return torch.sort(ids[order[:k]]).values


class TrimmedLMHead(nn.Module):
    """A drafter LM head restricted to ``k`` token ids: ``logits = h W_trimᵀ (+ b_trim)``.

    Args:
        weight: The kept rows ``W_trim`` ``(k, d)``.
        token_ids: Full-vocabulary id of every kept row ``(k,)``.
        vocab_size: ``V`` of the full vocabulary.
        bias: The kept bias entries ``(k,)`` (``None``: no bias).
        full_width: Return ``(..., V)`` logits with ``-inf`` outside the kept ids (for code
            that expects the full vocabulary, e.g. ``transformers`` assisted generation); the
            matrix product is still the trimmed one. Default ``False``: ``(..., k)`` logits.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        token_ids: torch.Tensor,
        vocab_size: int,
        bias: torch.Tensor | None = None,
        full_width: bool = False,
    ) -> None:
        super().__init__()
        check_int(vocab_size, "vocab_size", 1)
        check_bool(full_width, "full_width")
        if weight.ndim != 2 or token_ids.shape != (weight.shape[0],):
            raise ValueError("weight must be (k, d) and token_ids (k,)")
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        self.register_buffer("token_ids", token_ids.detach().to(torch.long).clone())
        self.vocab_size = vocab_size
        self.full_width = full_width

    @property
    def k(self) -> int:
        """Number of kept tokens."""
        return int(self.token_ids.numel())

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Trimmed logits ``(..., k)``, or ``(..., V)`` with ``-inf`` fill when ``full_width``."""
        logits = nn.functional.linear(hidden, self.weight, self.bias)
        if not self.full_width:
            return logits
        full = logits.new_full((*logits.shape[:-1], self.vocab_size), float("-inf"))
        return full.index_copy(-1, self.token_ids.to(logits.device), logits)

    def extra_repr(self) -> str:  # noqa: D102
        return f"k={self.k}, vocab_size={self.vocab_size}, full_width={self.full_width}"


def lm_head_of(model: nn.Module) -> nn.Module:
    """The output head of a Hugging Face causal LM (``get_output_embeddings()``).

    Raises:
        TypeError: The model has no ``get_output_embeddings`` or it returns ``None``.
    """
    getter = getattr(model, "get_output_embeddings", None)
    head = getter() if callable(getter) else None
    if head is None:
        raise TypeError("model: expected a causal LM with get_output_embeddings() (an LM head)")
    return head


@torch.no_grad()
def trim_drafter(model: nn.Module, token_ids: torch.Tensor, full_width: bool = False) -> nn.Module:
    """A copy of the drafter ``model`` whose LM head keeps only ``token_ids`` (VocabTrim).

    The copy's input embedding, body and config are unchanged; its head is a `TrimmedLMHead`
    (so ``model(ids).logits`` has ``k`` columns, or ``V`` with ``full_width``). Weight tying is
    broken on the copy (the embedding stays full).

    Args:
        model: A Hugging Face causal LM (the drafter); not modified.
        token_ids: The kept full-vocabulary ids (e.g. `top_k_vocab`), unique, in ``[0, V)``.
        full_width: See `TrimmedLMHead`.

    Returns:
        The trimmed drafter, in the mode of ``model``.

    Raises:
        TypeError: ``model`` has no LM head.
        ValueError: Bad ``token_ids``.
    """
    head = lm_head_of(model)
    weight = head.weight
    vocab = weight.shape[0]
    ids = torch.as_tensor(token_ids).to(torch.long).reshape(-1).cpu()
    if ids.numel() == 0 or ids.unique().numel() != ids.numel():
        raise ValueError("token_ids must be non-empty and unique")
    if int(ids.min()) < 0 or int(ids.max()) >= vocab:
        raise ValueError(f"token_ids must lie in [0, {vocab})")
    ids = torch.sort(ids).values
    bias = getattr(head, "bias", None)
    device = weight.device
    trimmed_head = TrimmedLMHead(
        weight[ids.to(device)],
        ids.to(device),
        vocab,
        None if bias is None else bias[ids.to(device)],
        full_width=full_width,
    )
    # deep-copy everything but the head, which the memo maps to the trimmed one
    memo = {id(head): trimmed_head}
    drafter = copy.deepcopy(model, memo)
    if hasattr(drafter, "config"):
        drafter.config.tie_word_embeddings = False
    return drafter
