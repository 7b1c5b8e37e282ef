"""The ``stdlib-lm`` corpus with a trained byte-level BPE tokenizer instead of raw bytes.

`load_bpe_lm_task` reads the same files and the same held-out split as
`sparsecore.bench.lm.load_lm_task`, trains a byte-level BPE (Hugging Face ``tokenizers``) on the
*training* text only, and cuts the tokenised training and evaluation streams into blocks. The
result is an `LMTask` (a `BPELMTask`, whose ``encode``/``decode`` use the tokenizer), so
`sparsecore.bench.pretrained.pretrained_tiny_lm` pretrains and caches models on it unchanged.

Why: with 256 byte tokens the LM head of a tiny Llama is a small share of its weights; methods
about the vocabulary or the LM head (e.g. VocabTrim's drafter-head pruning) need a vocabulary
large enough for the head to matter, as it does for real LLMs (Llama-3: 128K tokens).

Choices, labelled:

* **Tokenizer**: byte-level BPE (GPT-2 style pre-tokenisation without a prefix space, the 256
  byte symbols as the initial alphabet, so every text is encodable), ``min_frequency=2``, no
  special tokens; trained on the training text in 100 kB chunks. The serialised tokenizer is
  hashed into ``corpus_hash``, so models cached on one tokenizer never load against another.
* **Text**: the training and evaluation bytes are decoded as UTF-8 with replacement (the stdlib
  is UTF-8; a replaced byte would change the hash).
* **Blocks**: non-overlapping blocks of ``seq_len`` tokens, tail dropped (as the byte task).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from sparsecore.bench.lm import LMTask, _corpus
from sparsecore.validation import check_int

__all__ = ["BPELMTask", "load_bpe_lm_task", "train_bpe_tokenizer"]

_CHUNK = 100_000


@dataclass(frozen=True, eq=False)
class BPELMTask(LMTask):
    """An `LMTask` whose tokens are BPE ids (``tokenizer`` is a ``tokenizers.Tokenizer``)."""

    tokenizer: Any = field(repr=False, default=None)

    def encode(self, text: str) -> torch.Tensor:
        """BPE token ids (``int64``) of ``text``."""
        return torch.tensor(self.tokenizer.encode(text).ids, dtype=torch.long)

    def decode(self, ids: Any) -> str:
        """Text of BPE token ids."""
        return self.tokenizer.decode([int(i) for i in ids])


def train_bpe_tokenizer(text: str, vocab_size: int) -> Any:
    """Train a byte-level BPE ``tokenizers.Tokenizer`` of ``vocab_size`` entries on ``text``.

    Raises:
        ValueError: ``vocab_size`` is below 257 (the byte alphabet plus one merge).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    check_int(vocab_size, "vocab_size", 257)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    chunks = [text[i : i + _CHUNK] for i in range(0, len(text), _CHUNK)]
    tokenizer.train_from_iterator(chunks, trainer=trainer)
    return tokenizer


def _token_blocks(tokenizer: Any, text: str, seq_len: int, what: str) -> torch.Tensor:
    ids: list[int] = []
    for start in range(0, len(text), _CHUNK):
        ids.extend(tokenizer.encode(text[start : start + _CHUNK]).ids)
    count = len(ids) // seq_len
    if count < 1:
        raise ValueError(f"{what}: {len(ids)} tokens do not fill one block of seq_len={seq_len}")
    return torch.tensor(ids[: count * seq_len], dtype=torch.long).reshape(count, seq_len)


@lru_cache(maxsize=4)
def _bpe_task(
    vocab_size: int, seq_len: int, max_train_bytes: int, max_eval_bytes: int, root: str | None
) -> BPELMTask:
    train, held, byte_hash, train_names, eval_names = _corpus(
        root, max_train_bytes, max_eval_bytes, seq_len
    )
    train_text = train.decode("utf-8", errors="replace")
    eval_text = held.decode("utf-8", errors="replace")
    tokenizer = train_bpe_tokenizer(train_text, vocab_size)
    digest = hashlib.sha256(f"{byte_hash}|bpe|{vocab_size}|".encode())
    digest.update(tokenizer.to_str().encode())
    return BPELMTask(
        name="stdlib-lm-bpe",
        train_blocks=_token_blocks(tokenizer, train_text, seq_len, "max_train_bytes"),
        eval_blocks=_token_blocks(tokenizer, eval_text, seq_len, "max_eval_bytes"),
        seq_len=seq_len,
        vocab_size=int(tokenizer.get_vocab_size()),
        corpus_hash=digest.hexdigest(),
        files=(train_names, eval_names),
        tokenizer=tokenizer,
    )


def load_bpe_lm_task(
    vocab_size: int = 4096,
    seq_len: int = 128,
    max_train_bytes: int = 1_500_000,
    max_eval_bytes: int = 131_072,
    root: str | Path | None = None,
) -> BPELMTask:
    """The stdlib language-modelling task tokenised by a BPE trained on its training text.

    Args:
        vocab_size: BPE vocabulary (>= 257; the result has exactly this many entries when the
            corpus has enough distinct merges, see ``task.vocab_size``).
        seq_len: Tokens per block.
        max_train_bytes: At most this many training bytes are read.
        max_eval_bytes: At most this many evaluation bytes are read.
        root: Directory to read instead of the interpreter's stdlib (tests; the hash changes).

    Returns:
        A `BPELMTask` (cached in-process; its tensors are shared, clone before writing).

    Raises:
        ValueError: A size below its minimum, or too little text for one block.
        TypeError: A non-integer size.
    """
    check_int(vocab_size, "vocab_size", 257)
    check_int(seq_len, "seq_len", 2)
    check_int(max_train_bytes, "max_train_bytes", 1)
    check_int(max_eval_bytes, "max_eval_bytes", 1)
    return _bpe_task(
        vocab_size, seq_len, max_train_bytes, max_eval_bytes, None if root is None else str(root)
    )
