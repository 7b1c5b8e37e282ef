"""Lossless speculative sampling with a (trimmed) drafter, batched, on KV-cached causal LMs.

The algorithm of Leviathan et al. (2023) / Chen et al. (2023), as VocabTrim uses it (arXiv
2506.22694, Sec. 2): per block the drafter proposes ``γ`` tokens ``d_j ~ q_j``; the target
scores all of them in one forward pass; ``d_j`` is accepted with probability
``min(1, p_j(d_j) / q_j(d_j))``, scanning left to right; at the first rejection a token is drawn
from the residual ``norm(max(p_j − q_j, 0))``, and when all ``γ`` are accepted a bonus token is
drawn from ``p_γ``. With a trimmed drafter ``q_j`` is zero outside the kept ids, which is still
a distribution on the full vocabulary, so the output distribution is exactly the target's.
Greedy decoding is the same procedure with one-hot ``p`` and ``q`` (argmax of the logits): it
returns exactly the target's greedy tokens.

Choices, labelled:

* **Batching**: the rows of a batch advance together: with ``n_b`` drafts accepted in row
  ``b``, every row emits ``m = min_b n_b`` drafts plus one token at position ``m`` (its
  accepted draft ``d_m`` when ``n_b > m``, else its residual / bonus sample), so all rows keep
  the same length and no padding is needed. This stays lossless: whether row ``b`` stops at
  ``m`` because of the other rows does not depend on row ``b``'s own draws at or after ``m``.
  `SpeculativeOutput.block_efficiency` reports the per-row ``n_b + 1`` (what one sequence
  decoded alone would get from that block; batch 1 makes the two equal) and
  ``tokens_per_target_call`` the batch's ``m + 1``.
* **KV caches**: ``transformers.DynamicCache``, cropped to the accepted prefix after every
  block; the drafter is re-fed the tokens its cache lacks (the last accepted draft and the
  block's final token) at the start of the next block.
* **Temperature** ``T > 0`` divides the logits of both models; ``T = 0`` is greedy.
  No top-k / top-p (the paper's experiments use greedy and temperature-1 sampling).
* **Randomness**: one ``torch.Generator`` draws the drafts, the acceptance uniforms and the
  residual samples, in that order, on the CPU (reproducible across devices).
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from sparse_vocabtrim.trim import TrimmedLMHead, lm_head_of
from sparsecore.validation import check_int, check_number

__all__ = [
    "CausalLMRunner",
    "Runner",
    "SpeculativeOutput",
    "autoregressive_generate",
    "probabilities",
    "speculative_generate",
    "verify_block",
]


class Runner(Protocol):
    """A causal LM with a KV cache, as the decoding loops drive it."""

    #: Full-vocabulary id of every output column (``None``: column ``i`` is id ``i``).
    token_ids: torch.Tensor | None
    #: Tokens in the cache.
    length: int

    def forward(self, ids: torch.Tensor, last_only: bool) -> torch.Tensor:
        """Logits ``(B, T, W)`` of the new tokens ``ids`` ``(B, T)`` (``T = 1`` if last_only)."""
        ...

    def crop(self, length: int) -> None:
        """Keep the first ``length`` cached tokens."""
        ...


def _crop_cache(cache: Any, remove: int) -> None:
    if remove <= 0:
        return
    params = inspect.signature(cache.crop).parameters
    if "tokens_to_remove" in params:  # transformers >= 5: a negative count
        cache.crop(-remove)
    else:  # transformers 4.x: the length to keep
        cache.crop(cache.get_seq_length() - remove)


class CausalLMRunner:
    """Drives a Hugging Face causal LM with a ``DynamicCache`` (one per generation).

    The output columns are the model's LM head outputs: a `TrimmedLMHead` (without
    ``full_width``) gives ``k`` columns and its ``token_ids`` map them to the full vocabulary.
    """

    def __init__(self, model: nn.Module) -> None:
        from transformers import DynamicCache

        self.model = model
        self.cache = DynamicCache()
        self.length = 0
        head = lm_head_of(model)
        trimmed = isinstance(head, TrimmedLMHead) and not head.full_width
        self.token_ids = head.token_ids.cpu() if trimmed else None
        self.device = next(model.parameters()).device
        # transformers >= 5.2x names the argument ``cache`` (``past_key_values`` is deprecated)
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    @torch.no_grad()
    def forward(self, ids: torch.Tensor, last_only: bool) -> torch.Tensor:  # noqa: D102
        out = self.model(
            input_ids=ids.to(self.device),
            use_cache=True,
            logits_to_keep=1 if last_only else 0,
            **{self._cache_arg: self.cache},
        )
        self.length += ids.shape[1]
        return out.logits.float().cpu()

    def crop(self, length: int) -> None:  # noqa: D102
        _crop_cache(self.cache, self.length - length)
        self.length = min(self.length, length)


def probabilities(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(logits / T)`` over the last dimension; one-hot argmax when ``T == 0``."""
    if temperature == 0:
        index = logits.argmax(-1, keepdim=True)
        return torch.zeros_like(logits).scatter_(-1, index, 1.0)
    return torch.softmax(logits / temperature, dim=-1)


def _to_full(probs: torch.Tensor, token_ids: torch.Tensor | None, vocab: int) -> torch.Tensor:
    if token_ids is None:
        return probs
    full = probs.new_zeros((*probs.shape[:-1], vocab))
    return full.index_copy(-1, token_ids, probs)


def _sample(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])


def verify_block(
    p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The acceptance test of speculative sampling for a batch of draft blocks.

    Args:
        p: Target probabilities ``(B, γ+1, V)`` at the ``γ`` draft positions and the bonus one.
        q: Drafter probabilities ``(B, γ, V)`` on the full vocabulary (zero outside a trimmed
            drafter's kept ids).
        drafts: The drafted full-vocabulary ids ``(B, γ)``, drawn from ``q``.
        generator: Draws the uniforms and the residual / bonus samples.

    Returns:
        ``(accepted, fallback)``: drafts accepted before the first rejection per row ``(B,)``
        and the token for position ``accepted`` per row ``(B,)`` (a residual sample
        ``norm(max(p − q, 0))`` after a rejection, a sample of ``p_γ`` when all were accepted).
    """
    batch, gamma = drafts.shape
    p_draft = p[:, :gamma].gather(-1, drafts.unsqueeze(-1)).squeeze(-1)
    q_draft = q.gather(-1, drafts.unsqueeze(-1)).squeeze(-1)
    uniform = torch.rand((batch, gamma), generator=generator)
    ok = uniform * q_draft < p_draft  # u < p/q without dividing by a zero q
    accepted = torch.where(ok.all(1), gamma, (~ok).to(torch.long).argmax(1))
    rows = torch.arange(batch)
    at = accepted.clamp(max=gamma - 1) if gamma else accepted
    residual = (p[rows, at] - q[rows, at]).clamp(min=0) if gamma else p[rows, 0]
    mass = residual.sum(-1, keepdim=True)
    # p == q exactly (no rejection possible): fall back to p to keep the draw well defined
    residual = torch.where(mass > 0, residual, p[rows, at])
    dist = torch.where((accepted == gamma).unsqueeze(-1), p[rows, gamma], residual)
    return accepted, _sample(dist, generator)


@dataclass
class SpeculativeOutput:
    """Tokens and counters of one `speculative_generate` call.

    Attributes:
        tokens: Generated ids ``(B, N)`` (the prompt excluded).
        target_calls: Target forward passes after the prefill (one per block).
        drafter_calls: Drafter forward passes after the prefill.
        drafted: Draft tokens proposed per row (``γ`` per block).
        accepted_per_block: Per block, the drafts accepted in every row ``(B,)``.
        seconds: Wall-clock seconds of the decoding (prefill included).
    """

    tokens: torch.Tensor
    target_calls: int = 0
    drafter_calls: int = 0
    drafted: int = 0
    accepted_per_block: list[torch.Tensor] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def block_efficiency(self) -> float:
        """τ: mean over blocks and rows of ``accepted + 1`` (tokens per target call, batch 1)."""
        if not self.accepted_per_block:
            return float("nan")
        return float(torch.stack(self.accepted_per_block).double().add(1).mean())

    @property
    def acceptance_rate(self) -> float:
        """Accepted drafts over proposed drafts (per row)."""
        if not self.accepted_per_block:
            return float("nan")
        return float(torch.stack(self.accepted_per_block).double().mean()) / max(
            self.drafted / len(self.accepted_per_block), 1
        )

    @property
    def tokens_per_target_call(self) -> float:
        """Tokens each row actually gained per block (``min_b accepted_b + 1``)."""
        if not self.accepted_per_block:
            return float("nan")
        return float(torch.stack([a.min() + 1 for a in self.accepted_per_block]).double().mean())


def _runner(model: nn.Module | Runner) -> Runner:
    return CausalLMRunner(model) if isinstance(model, nn.Module) else model


def _check(prompt: torch.Tensor, max_new_tokens: int, temperature: float) -> None:
    if not isinstance(prompt, torch.Tensor) or prompt.ndim != 2 or prompt.shape[1] < 1:
        raise ValueError("prompt must be an int64 tensor (batch, length >= 1)")
    check_int(max_new_tokens, "max_new_tokens", 1)
    check_number(temperature, "temperature", 0.0, finite=True)


@torch.no_grad()
def speculative_generate(
    target: nn.Module | Runner,
    drafter: nn.Module | Runner,
    prompt: torch.Tensor,
    max_new_tokens: int,
    gamma: int = 4,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> SpeculativeOutput:
    """Decode ``max_new_tokens`` per row with speculative sampling (see the module docstring).

    Args:
        target: The target causal LM (full vocabulary ``V``), or a `Runner`.
        drafter: The drafter: a full or VocabTrim-trimmed causal LM (same tokenizer), or a
            `Runner`; its columns map to full ids through its ``token_ids``.
        prompt: Prompt ids ``(B, L)``, the same length for every row (no padding).
        max_new_tokens: Tokens to generate per row.
        gamma: Draft length ``γ`` per block.
        temperature: Sampling temperature of both models; ``0`` for greedy decoding.
        generator: Random generator (default: a fresh one seeded with 0).

    Returns:
        A `SpeculativeOutput`.

    Raises:
        ValueError: Bad prompt, ``gamma`` or ``temperature``.
    """
    _check(prompt, max_new_tokens, temperature)
    check_int(gamma, "gamma", 1)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    start = time.perf_counter()
    target_run, draft_run = _runner(target), _runner(drafter)
    seq = prompt.to("cpu", torch.long)
    prompt_len = seq.shape[1]
    if prompt_len > 1:  # prefill every prompt token but the last, which starts the first block
        target_run.forward(seq[:, :-1], last_only=True)
        draft_run.forward(seq[:, :-1], last_only=True)
    out = SpeculativeOutput(tokens=seq[:, :0])
    while seq.shape[1] - prompt_len < max_new_tokens:
        length = seq.shape[1]
        feed = seq[:, draft_run.length :]
        drafts, q_full = [], []
        for _ in range(gamma):
            logits = draft_run.forward(feed, last_only=True)[:, -1]
            out.drafter_calls += 1
            q_trim = probabilities(logits, temperature)
            pick = _sample(q_trim, generator)
            ids = pick if draft_run.token_ids is None else draft_run.token_ids[pick]
            drafts.append(ids)
            q_full.append((q_trim, ids))
            feed = ids.unsqueeze(1)
        draft_ids = torch.stack(drafts, 1)
        logits = target_run.forward(torch.cat([seq[:, -1:], draft_ids], 1), last_only=False)
        out.target_calls += 1
        vocab = logits.shape[-1]
        p = probabilities(logits, temperature)
        q = torch.stack([_to_full(qt, draft_run.token_ids, vocab) for qt, _ in q_full], 1)
        accepted, fallback = verify_block(p, q, draft_ids, generator)
        m = int(accepted.min())
        last = fallback if m == gamma else torch.where(accepted > m, draft_ids[:, m], fallback)
        seq = torch.cat([seq, draft_ids[:, :m], last.unsqueeze(1)], 1)
        out.accepted_per_block.append(accepted)
        out.drafted += gamma
        # caches keep the accepted prefix: everything but the block's final token
        target_run.crop(length + m)
        draft_run.crop(min(draft_run.length, length + m))
    out.tokens = seq[:, prompt_len : prompt_len + max_new_tokens]
    out.seconds = time.perf_counter() - start
    return out


@torch.no_grad()
def autoregressive_generate(
    model: nn.Module | Runner,
    prompt: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, float]:
    """Plain KV-cached decoding with the same sampling code (the baseline).

    Returns:
        ``(tokens (B, N), seconds)``; full-vocabulary ids (a trimmed model's columns are mapped).
    """
    _check(prompt, max_new_tokens, temperature)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    start = time.perf_counter()
    run = _runner(model)
    seq = prompt.to("cpu", torch.long)
    feed = seq
    new = []
    for _ in range(max_new_tokens):
        logits = run.forward(feed, last_only=True)[:, -1]
        pick = _sample(probabilities(logits, temperature), generator)
        ids = pick if run.token_ids is None else run.token_ids[pick]
        new.append(ids)
        feed = ids.unsqueeze(1)
    return torch.stack(new, 1), time.perf_counter() - start
