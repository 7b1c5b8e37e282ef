"""What VocabTrim sells: drafter bytes and the memory-bound speed-up (MBSU).

Paper: Goel et al., "VocabTrim: Vocabulary Pruning for Efficient Speculative Decoding in
LLMs", arXiv 2506.22694. The paper reports the *memory-bound speed-up* (MBSU), the metric its
authors introduced in Goel et al. 2024 (arXiv 2403.00858): in a memory-bound decoder the time of
a forward pass is proportional to the bytes of weights it reads, so one speculative block costs
``γ`` drafter passes and one target pass, and yields ``τ`` tokens on average, against one token
per target pass without speculation::

    MBSU = τ / (1 + γ · c),    c = drafter bytes read per pass / target bytes read per pass

(``τ`` the block efficiency, ``γ`` the draft length). VocabTrim lowers ``c`` by ``(V − k)·d``
head entries of the drafter at the price of a (small) drop in ``τ``. Labelled: the search tools
available when this was written returned the paper's text only in excerpts that do not include
the equation; the form above is the memory-bound cost model the paper describes in words
(latency ∝ bytes loaded, one target pass verifies the whole draft), written in our notation.

Choices, labelled:

* **Bytes read per pass** (`decode_bytes`): every parameter and buffer of the model once, except
  an input embedding that is not tied to the head: an embedding lookup reads one row per token,
  not the whole table (a tied table is read whole by the head and is counted once).
  The KV cache and activations are not counted (tiny at these context lengths).
"""

from __future__ import annotations

from torch import nn

from sparsecore.validation import check_int, check_number

__all__ = ["decode_bytes", "memory_bound_speedup"]


def decode_bytes(model: nn.Module) -> int:
    """Bytes of weights one decoding forward pass reads (see the module docstring).

    Args:
        model: A Hugging Face causal LM (full or with a `TrimmedLMHead`).

    Returns:
        Parameter and buffer bytes, the untied input-embedding table left out.
    """
    getter = getattr(model, "get_input_embeddings", None)
    embedding = getter() if callable(getter) else None
    head_getter = getattr(model, "get_output_embeddings", None)
    head = head_getter() if callable(head_getter) else None
    skip = set()
    if embedding is not None and getattr(embedding, "weight", None) is not None:
        head_weight = getattr(head, "weight", None)
        if head_weight is None or head_weight.data_ptr() != embedding.weight.data_ptr():
            skip.add(embedding.weight.data_ptr())
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        ptr = tensor.data_ptr()
        if ptr in seen or ptr in skip:
            continue
        seen.add(ptr)
        total += tensor.numel() * tensor.element_size()
    return total


def memory_bound_speedup(
    block_efficiency: float, gamma: int, drafter_bytes: int, target_bytes: int
) -> float:
    """``MBSU = τ / (1 + γ · drafter_bytes / target_bytes)``.

    Args:
        block_efficiency: τ, tokens per target pass (>= 1).
        gamma: Draft length γ (>= 1).
        drafter_bytes: Bytes one drafter pass reads (`decode_bytes`).
        target_bytes: Bytes one target pass reads.

    Raises:
        ValueError: Out-of-range arguments.
    """
    check_number(block_efficiency, "block_efficiency", 1.0, finite=True)
    check_int(gamma, "gamma", 1)
    check_int(drafter_bytes, "drafter_bytes", 0)
    check_int(target_bytes, "target_bytes", 1)
    return block_efficiency / (1.0 + gamma * drafter_bytes / target_bytes)
