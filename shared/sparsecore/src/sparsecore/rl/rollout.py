"""Rollout generation for RL on a causal LM: KV cache, per-row stopping, mid-generation pruning.

`generate_rollouts` samples ``num_samples`` completions for each of a batch of prompts with a
Hugging Face causal LM, one token per forward pass, reusing the KV cache (``past_key_values``).
The batch *shrinks* as it goes: a row that samples the end-of-sequence token is removed from the
active batch, and at step ``detect_step`` an optional ``detect`` callback may name the rollouts that
survive; the others are removed too. Removing a row index-selects every tensor the cache holds
(``DynamicCache.batch_select_indices``, transformers 4.45+ and 5.x; a legacy tuple cache is
index-selected directly), the attention mask and the position counters, so a removed rollout takes
part in no later forward pass: it truly generates no more tokens. `RolloutBatch.tokens_generated`
counts the tokens sampled, `RolloutBatch.row_forwards` the rows of every forward pass after the
prompt (the compute actually spent), `RolloutBatch.seconds` the wall time.

Design choices (labelled):

* Prompts are left-padded (``pad_token_id``); position ids are ``cumsum(attention_mask) - 1`` so a
  padded prompt sees the same positions as an unpadded one (what ``model.generate`` does).
* Sampling: softmax of ``logits / temperature`` with the caller's ``torch.Generator``
  (``temperature = 0`` is greedy). No top-k / top-p (the RLVR papers sample at temperature 1).
* The hidden state handed to ``detect`` is the input of the output embedding (the LM head),
  i.e. the final (normed) hidden state, ``hidden_states[-1]`` of a Llama, at the last position
  of the forward pass over the prompt and the first ``detect_step`` generated tokens (the state
  that predicts token ``detect_step + 1``). A rollout that ended earlier reports the state
  of the last forward pass it took part in. It is read by a forward pre-hook on
  ``model.get_output_embeddings()`` that lives only for the call, not through
  ``output_hidden_states=True`` (transformers 5.x installs persistent capture hooks on the
  decoder layers the first time that flag is used, which would leave the model changed).
* ``detect`` is called exactly once when given: at step ``detect_step``, or when every rollout
  has ended before that step (then it only selects which completed rollouts are kept).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from sparsecore.validation import check_int, check_number

__all__ = ["DetectInfo", "RolloutBatch", "generate_rollouts", "left_pad"]


@dataclass
class DetectInfo:
    """What a ``detect`` callback sees at the detection step (over *all* rollouts).

    Attributes:
        step: Tokens generated so far by a rollout still running (the detection length).
        hidden: ``[R, H]`` last-layer hidden state of each rollout (see the module docstring).
        tokens: ``[R, step]`` tokens generated so far (``pad_token_id`` after an ended rollout).
        lengths: ``[R]`` tokens generated so far per rollout.
        logprobs: ``[R]`` sum of the sampling log-probabilities (at the sampling temperature) of
            the tokens generated so far (a confidence signal).
        finished: ``[R]`` whether the rollout already sampled the end-of-sequence token.
        groups: ``[R]`` index of each rollout's prompt.
    """

    step: int
    hidden: torch.Tensor
    tokens: torch.Tensor
    lengths: torch.Tensor
    logprobs: torch.Tensor
    finished: torch.Tensor
    groups: torch.Tensor


#: ``detect(info) -> indices of the surviving rollouts`` (any integer sequence or tensor).
DetectFn = Callable[[DetectInfo], "torch.Tensor | Sequence[int]"]


@dataclass
class RolloutBatch:
    """Completed (and pruned) rollouts.

    Attributes:
        prompts: ``[R, P]`` left-padded prompt of each rollout (rows ``repeat_interleave``-d).
        prompt_mask: ``[R, P]`` attention mask of the prompts (1 = real token).
        completions: ``[R, T]`` generated tokens, ``pad_token_id`` after the end.
        lengths: ``[R]`` generated tokens per rollout (EOS included when sampled).
        finished: ``[R]`` whether the rollout sampled EOS (else it hit ``max_new_tokens`` or was
            pruned).
        survivors: ``[R]`` bool, ``False`` for rollouts the ``detect`` callback removed.
        groups: ``[R]`` prompt index of each rollout.
        detect_hidden: ``[R, H]`` hidden states handed to ``detect`` (``None`` without it).
        detect_logprobs: ``[R]`` the log-prob sums handed to ``detect`` (``None`` without it).
        tokens_generated: Tokens sampled in all (``lengths.sum()``).
        row_forwards: Rows summed over every forward pass after the prompt's.
        seconds: Wall time of the generation.
    """

    prompts: torch.Tensor
    prompt_mask: torch.Tensor
    completions: torch.Tensor
    lengths: torch.Tensor
    finished: torch.Tensor
    survivors: torch.Tensor
    groups: torch.Tensor
    detect_hidden: torch.Tensor | None
    detect_logprobs: torch.Tensor | None
    tokens_generated: int
    row_forwards: int
    seconds: float

    def completion_mask(self) -> torch.Tensor:
        """``[R, T]`` float mask of the generated tokens."""
        steps = torch.arange(self.completions.shape[1])
        return (steps[None, :] < self.lengths[:, None]).float()

    def select(self, index: torch.Tensor) -> RolloutBatch:
        """The rollouts at ``index`` (counters and time are kept: they describe the generation)."""
        hidden = None if self.detect_hidden is None else self.detect_hidden[index]
        logp = None if self.detect_logprobs is None else self.detect_logprobs[index]
        return RolloutBatch(
            self.prompts[index], self.prompt_mask[index], self.completions[index],
            self.lengths[index], self.finished[index], self.survivors[index], self.groups[index],
            hidden, logp, self.tokens_generated, self.row_forwards, self.seconds,
        )  # fmt: skip


def left_pad(
    prompts: Sequence[Sequence[int]], pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into ``(ids [B, P], attention_mask [B, P])``."""
    if len(prompts) == 0:
        raise ValueError("prompts must not be empty")
    width = max(len(p) for p in prompts)
    if width == 0:
        raise ValueError("prompts must not contain an empty prompt")
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise ValueError("prompts must not contain an empty prompt")
        ids[row, width - len(prompt) :] = torch.as_tensor(list(prompt), dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    return ids, mask


def _select_cache(cache: object, keep: torch.Tensor) -> object:
    if hasattr(cache, "batch_select_indices"):
        cache.batch_select_indices(keep)  # in place (DynamicCache)
        return cache
    if isinstance(cache, tuple):  # legacy ((k, v), ...) cache
        return tuple(tuple(t.index_select(0, keep) for t in layer) for layer in cache)
    raise TypeError(f"cannot index-select a cache of type {type(cache).__name__}")


def _cache_kwarg(model: nn.Module) -> str:
    """``"cache"`` (transformers >= 5.2x) or ``"past_key_values"`` (earlier)."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def _out_cache(out: object) -> object:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _sample(logits: torch.Tensor, temperature: float, generator: torch.Generator | None):
    """``(tokens, their log-probabilities)`` (greedy: log-probs of the plain softmax)."""
    logp = torch.log_softmax(logits.float() / (temperature or 1.0), dim=-1)
    if temperature == 0.0:
        token = logits.argmax(-1)
    else:
        token = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
    return token, logp.gather(-1, token[:, None]).squeeze(-1)


@torch.no_grad()
def generate_rollouts(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    num_samples: int,
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
    *,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    detect_step: int | None = None,
    detect: DetectFn | None = None,
) -> RolloutBatch:
    """Sample ``num_samples`` rollouts per prompt with the KV cache, removing ended/pruned rows.

    Args:
        model: A Hugging Face causal LM (``model(input_ids, attention_mask, position_ids,
            past_key_values, use_cache, output_hidden_states)``).
        prompts: Token ids of each prompt.
        num_samples: Rollouts per prompt (rows ``r = prompt * num_samples + j``).
        max_new_tokens: Most tokens a rollout generates.
        eos_token_id: Ends a rollout (kept as its last token).
        pad_token_id: Fills prompts on the left and completions after their end.
        temperature: Sampling temperature (``0``: greedy).
        generator: Random generator of the sampling.
        detect_step: Tokens after which ``detect`` is called (``1 <= detect_step <
            max_new_tokens``); required with ``detect``.
        detect: Returns the indices (into all ``R`` rollouts) of those that go on; every other
            rollout stops generating at once.

    Returns:
        The `RolloutBatch`.

    Raises:
        ValueError / TypeError: A bad argument (named), or ``detect`` returning an index out of
            range.
    """
    check_int(num_samples, "num_samples", 1)
    check_int(max_new_tokens, "max_new_tokens", 1)
    check_int(eos_token_id, "eos_token_id", 0)
    check_int(pad_token_id, "pad_token_id", 0)
    check_number(temperature, "temperature", 0.0, finite=True)
    if (detect is None) != (detect_step is None):
        raise ValueError("detect and detect_step must be given together")
    if detect_step is not None:
        check_int(detect_step, "detect_step", 1)
        if detect_step >= max_new_tokens:
            raise ValueError(
                f"detect_step must be < max_new_tokens ({max_new_tokens}), got {detect_step}"
            )
    start = time.perf_counter()
    ids, mask = left_pad(prompts, pad_token_id)
    ids = ids.repeat_interleave(num_samples, 0)
    mask = mask.repeat_interleave(num_samples, 0)
    device = next(model.parameters()).device
    groups = torch.arange(len(prompts)).repeat_interleave(num_samples)
    attn = mask.to(device)
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    try:
        from transformers import DynamicCache

        cache: object = DynamicCache()
    except ImportError:  # pragma: no cover - transformers is what calls this
        cache = None
    was_training = model.training
    model.eval()
    cache_kw = _cache_kwarg(model)
    captured: list[torch.Tensor] = []
    handle = None
    if detect is not None:
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if head is None:
            raise ValueError("model must have an output embedding (LM head) to use detect")
        handle = head.register_forward_pre_hook(
            lambda _m, args: captured.append(args[0][:, -1].detach().float().cpu())
        )
    try:
        return _generate(
            model, ids, mask, attn, positions, groups, cache, cache_kw, captured, handle,
            max_new_tokens, eos_token_id, pad_token_id, temperature, generator, detect_step,
            detect, start,
        )  # fmt: skip
    finally:
        if handle is not None:
            handle.remove()
        model.train(was_training)


def _generate(
    model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, attn: torch.Tensor,
    positions: torch.Tensor, groups: torch.Tensor, cache: object, cache_kw: str,
    captured: list[torch.Tensor], handle: object, max_new_tokens: int, eos_token_id: int,
    pad_token_id: int, temperature: float, generator: torch.Generator | None,
    detect_step: int | None, detect: DetectFn | None, start: float,
) -> RolloutBatch:  # fmt: skip
    """The decoding loop of `generate_rollouts` (arguments checked and prepared there)."""
    device = attn.device
    rows = ids.shape[0]
    completions = torch.full((rows, max_new_tokens), pad_token_id, dtype=torch.long)
    lengths = torch.zeros(rows, dtype=torch.long)
    logprob_sum = torch.zeros(rows)
    finished = torch.zeros(rows, dtype=torch.bool)
    survivors = torch.ones(rows, dtype=torch.bool)
    hidden_all: torch.Tensor | None = None
    detect_logp: torch.Tensor | None = None
    active = torch.arange(rows)  # global index of each row of the running batch
    want_hidden = detect is not None
    out = model(
        input_ids=ids.to(device), attention_mask=attn, position_ids=positions,
        use_cache=True, **{cache_kw: cache},
    )  # fmt: skip
    cache = _out_cache(out)
    next_pos = positions[:, -1] + 1
    row_forwards = 0
    detected = detect is None
    fresh = True
    step = 0
    while True:
        logits = out.logits[:, -1]
        if want_hidden and fresh:
            h = captured.pop()
            if hidden_all is None:
                hidden_all = torch.zeros(rows, h.shape[-1])
            hidden_all[active] = h
        fresh = False
        if not detected and (step == detect_step or active.numel() == 0):
            detected = True
            want_hidden = False
            handle.remove()  # type: ignore[union-attr]
            assert detect is not None and hidden_all is not None
            info = DetectInfo(step, hidden_all.clone(), completions[:, :step].clone(),
                              lengths.clone(), logprob_sum.clone(), finished.clone(),
                              groups.clone())  # fmt: skip
            detect_logp = info.logprobs
            keep_global = torch.as_tensor(detect(info), dtype=torch.long).flatten()
            if keep_global.numel() and (keep_global.min() < 0 or keep_global.max() >= rows):
                raise ValueError(f"detect returned an index outside [0, {rows})")
            survivors[:] = False
            survivors[keep_global] = True
            local = survivors[active].nonzero().flatten()
            if local.numel() < active.numel():
                active = active[local]
                if active.numel():
                    dev_local = local.to(device)
                    cache = _select_cache(cache, dev_local)
                    attn, next_pos, logits = attn[dev_local], next_pos[dev_local], logits[dev_local]
        if active.numel() == 0 or step == max_new_tokens:
            break
        token, token_logp = _sample(logits, temperature, generator)
        token = token.cpu()
        completions[active, step] = token
        logprob_sum[active] += token_logp.cpu()
        lengths[active] += 1
        ended = token == eos_token_id
        finished[active[ended]] = True
        step += 1
        going = (~ended).nonzero().flatten()
        if going.numel() < active.numel():
            active, token = active[going], token[going]
            if active.numel():
                dev_going = going.to(device)
                cache = _select_cache(cache, dev_going)
                attn, next_pos = attn[dev_going], next_pos[dev_going]
        if active.numel() == 0 or step == max_new_tokens:
            if detected:
                break
            continue  # let detect see the ended batch
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)
        out = model(
            input_ids=token[:, None].to(device), attention_mask=attn,
            position_ids=next_pos[:, None], use_cache=True, **{cache_kw: cache},
        )  # fmt: skip
        cache = _out_cache(out)
        fresh = True
        next_pos = next_pos + 1
        row_forwards += int(active.numel())
    width = int(lengths.max()) if rows else 0
    return RolloutBatch(
        prompts=ids, prompt_mask=mask, completions=completions[:, : max(width, 1)],
        lengths=lengths, finished=finished, survivors=survivors, groups=groups,
        detect_hidden=hidden_all if detect is not None else None, detect_logprobs=detect_logp,
        tokens_generated=int(lengths.sum()), row_forwards=row_forwards,
        seconds=time.perf_counter() - start,
    )  # fmt: skip
