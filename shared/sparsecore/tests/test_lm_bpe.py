"""The BPE-tokenised stdlib-lm task: exact vocabulary, lossless round trip, stable hash."""

from __future__ import annotations

import pytest
import torch

from sparsecore.bench.lm import load_lm_task
from sparsecore.bench.lm_bpe import load_bpe_lm_task, train_bpe_tokenizer


def test_bpe_task_shapes_vocab_and_round_trip() -> None:
    task = load_bpe_lm_task(512, 32, max_train_bytes=120_000, max_eval_bytes=20_000)
    assert task.vocab_size == 512
    assert task.train_blocks.shape[1] == task.eval_blocks.shape[1] == 32
    assert int(task.train_blocks.max()) < 512 and int(task.train_blocks.min()) >= 0
    text = "def f(x):\n    return x + 1  # ünïcode\n"
    assert task.decode(task.encode(text)) == text
    byte_task = load_lm_task(seq_len=32, max_train_bytes=120_000, max_eval_bytes=20_000)
    # BPE merges shorten the stream: fewer tokens than bytes for the same text
    assert task.num_train_tokens < byte_task.num_train_tokens
    # the tokenizer is part of the hash: another vocabulary is another task
    other = load_bpe_lm_task(640, 32, max_train_bytes=120_000, max_eval_bytes=20_000)
    assert other.corpus_hash != task.corpus_hash


def test_bpe_training_is_deterministic() -> None:
    text = "import os\nimport sys\n" * 200 + "class A:\n    pass\n" * 100
    assert train_bpe_tokenizer(text, 300).to_str() == train_bpe_tokenizer(text, 300).to_str()
    with pytest.raises(ValueError, match="vocab_size"):
        load_bpe_lm_task(100)
    with pytest.raises(TypeError, match="seq_len"):
        load_bpe_lm_task(512, seq_len=2.5)  # type: ignore[arg-type]
    assert torch.is_tensor(load_bpe_lm_task(512, 32, 120_000, 20_000).eval_blocks)
