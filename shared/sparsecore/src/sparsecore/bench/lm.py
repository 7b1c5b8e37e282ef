"""The embedded language-modelling task: the Python standard library's own source, byte-level.

``load_lm_task("stdlib-lm")`` (also reachable as ``load_task("stdlib-lm")``) reads the top-level
``*.py`` files of the running interpreter's standard library (``sysconfig.get_paths()["stdlib"]``),
so the corpus exists on every machine with no download. Choices, labelled:

* **File list**: the top-level ``*.py`` files sorted by name (sub-packages are left out so the
  corpus does not depend on which optional modules a distribution ships).
* **Held-out split**: every 10th file of the sorted list (indices 0, 10, 20, ...) is evaluation
  text, the rest is training text; whole files, so no evaluation line was seen in training.
* **Tokenizer**: byte-level (vocabulary 256, token = byte value). Lossless, needs no training and
  no extra package, and is what AST's reproduction used; a BPE would shorten sequences but makes
  the task depend on a trained artefact.
* **Blocks**: the training and evaluation byte streams are cut into non-overlapping blocks of
  ``seq_len`` tokens (the tail that does not fill a block is dropped); at most ``max_train_bytes``
  / ``max_eval_bytes`` bytes of each are used (defaults 1.5 MB / 128 kB).
* **Corpus hash**: SHA-256 of every used file's name and bytes plus the split and block
  settings. A different CPython (different stdlib) gives a different hash, recorded in every
  result, so it shows up as a different task.

`perplexity` is ``exp`` of the mean next-token cross-entropy over all evaluation blocks (each
block scored on its own, positions 1..L-1 predicted from their prefix).
"""

from __future__ import annotations

import hashlib
import math
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from sparsecore.validation import check_int

__all__ = [
    "LM_TASKS",
    "LMTask",
    "calibration_blocks",
    "load_lm_task",
    "perplexity",
    "unigram_perplexity",
]

#: Language-modelling tasks accepted by `load_lm_task`, with a one-line description.
LM_TASKS: dict[str, str] = {
    "stdlib-lm": "Python stdlib source, byte-level next-token prediction, every 10th file held out",
}

BYTE_VOCAB = 256
_HOLDOUT_EVERY = 10


@dataclass(frozen=True, eq=False)
class LMTask:
    """A byte-level causal language-modelling task held in memory.

    Attributes:
        name: Task name (a key of `LM_TASKS`).
        train_blocks: ``int64`` token blocks ``(num_train_blocks, seq_len)``.
        eval_blocks: ``int64`` token blocks ``(num_eval_blocks, seq_len)``.
        seq_len: Tokens per block.
        vocab_size: Tokenizer vocabulary (256 for bytes).
        corpus_hash: SHA-256 (hex) of the files used and the split/block settings.
        files: Names of the training and evaluation files, in corpus order.
    """

    name: str
    train_blocks: torch.Tensor = field(repr=False)
    eval_blocks: torch.Tensor = field(repr=False)
    seq_len: int
    vocab_size: int
    corpus_hash: str
    files: tuple[tuple[str, ...], tuple[str, ...]] = field(repr=False, default=((), ()))

    @property
    def num_train_tokens(self) -> int:
        """Tokens in the training blocks."""
        return int(self.train_blocks.numel())

    @property
    def num_eval_tokens(self) -> int:
        """Tokens in the evaluation blocks."""
        return int(self.eval_blocks.numel())

    def encode(self, text: str) -> torch.Tensor:
        """Token ids (``int64``) of ``text``: its UTF-8 bytes."""
        return torch.tensor(list(text.encode("utf-8")), dtype=torch.long)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids (invalid UTF-8 is replaced)."""
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


def stdlib_files(root: str | Path | None = None) -> list[Path]:
    """The corpus files: top-level ``*.py`` files of the stdlib directory, sorted by name."""
    base = Path(root) if root is not None else Path(sysconfig.get_paths()["stdlib"])
    files = sorted(base.glob("*.py"), key=lambda p: p.name)
    if not files:
        raise FileNotFoundError(f"no *.py files under {base}: cannot build the stdlib-lm task")
    return files


@lru_cache(maxsize=4)
def _corpus(
    root: str | None, max_train_bytes: int, max_eval_bytes: int, seq_len: int
) -> tuple[bytes, bytes, str, tuple[str, ...], tuple[str, ...]]:
    digest = hashlib.sha256(
        f"stdlib-lm|bytes|every{_HOLDOUT_EVERY}|{max_train_bytes}|{max_eval_bytes}|{seq_len}".encode()
    )
    train, held = bytearray(), bytearray()
    train_names: list[str] = []
    eval_names: list[str] = []
    for index, path in enumerate(stdlib_files(root)):
        is_eval = index % _HOLDOUT_EVERY == 0
        part, limit = (held, max_eval_bytes) if is_eval else (train, max_train_bytes)
        if len(part) >= limit:
            continue
        data = path.read_bytes()[: limit - len(part)]
        part.extend(data)
        (eval_names if is_eval else train_names).append(path.name)
        digest.update(path.name.encode() + b"\0" + data + b"\0")
    return bytes(train), bytes(held), digest.hexdigest(), tuple(train_names), tuple(eval_names)


def _blocks(data: bytes, seq_len: int, what: str) -> torch.Tensor:
    count = len(data) // seq_len
    if count < 1:
        raise ValueError(f"{what}: {len(data)} bytes do not fill one block of seq_len={seq_len}")
    flat = torch.frombuffer(bytearray(data[: count * seq_len]), dtype=torch.uint8)
    return flat.to(torch.long).reshape(count, seq_len)


def load_lm_task(
    name: str = "stdlib-lm",
    seq_len: int = 128,
    max_train_bytes: int = 1_500_000,
    max_eval_bytes: int = 131_072,
    root: str | Path | None = None,
) -> LMTask:
    """Build the byte-level stdlib language-modelling task (no network, cached in-process).

    Args:
        name: ``"stdlib-lm"``.
        seq_len: Tokens per training/evaluation block.
        max_train_bytes: At most this many training bytes are used.
        max_eval_bytes: At most this many evaluation bytes are used.
        root: Directory to read instead of the interpreter's stdlib (tests; the hash changes).

    Returns:
        An `LMTask` with fresh tensors.

    Raises:
        ValueError: Unknown name, or sizes below one block.
        TypeError: A non-integer size.
    """
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in LM_TASKS:
        raise ValueError(f"unknown LM task {name!r}; available: {', '.join(LM_TASKS)}")
    check_int(seq_len, "seq_len", 2)
    check_int(max_train_bytes, "max_train_bytes", 1)
    check_int(max_eval_bytes, "max_eval_bytes", 1)
    train, held, digest, train_names, eval_names = _corpus(
        None if root is None else str(root), max_train_bytes, max_eval_bytes, seq_len
    )
    return LMTask(
        name=key,
        train_blocks=_blocks(train, seq_len, "max_train_bytes"),
        eval_blocks=_blocks(held, seq_len, "max_eval_bytes"),
        seq_len=seq_len,
        vocab_size=BYTE_VOCAB,
        corpus_hash=digest,
        files=(train_names, eval_names),
    )


def calibration_blocks(task: LMTask, count: int, seed: int = 0) -> torch.Tensor:
    """``count`` training blocks drawn without replacement by a generator seeded with ``seed``.

    As in the SparseGPT/Wanda code, calibration comes from the training text (theirs: random C4
    windows), never from the evaluation text.

    Raises:
        ValueError: ``count`` is below 1 or above the number of training blocks.
    """
    check_int(count, "count", 1)
    if count > task.train_blocks.shape[0]:
        raise ValueError(
            f"count must be <= {task.train_blocks.shape[0]} (training blocks), got {count}"
        )
    check_int(seed, "seed")
    order = torch.randperm(
        task.train_blocks.shape[0], generator=torch.Generator().manual_seed(seed)
    )
    return task.train_blocks[order[:count]].clone()


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def perplexity(
    model: nn.Module,
    task: LMTask | torch.Tensor,
    batch_size: int = 8,
    max_blocks: int | None = None,
) -> float:
    """Perplexity of a causal LM on the task's evaluation blocks (eval mode; mode restored).

    Args:
        model: Maps ``input_ids`` ``(batch, L)`` to logits ``(batch, L, vocab)`` (a tensor or an
            output with ``.logits``, e.g. any Hugging Face causal LM).
        task: An `LMTask` (its ``eval_blocks``) or a tensor of blocks.
        batch_size: Blocks per forward pass.
        max_blocks: Score only the first ``max_blocks`` blocks (``None``: all).

    Returns:
        ``exp(mean next-token cross-entropy)``.

    Raises:
        ValueError: No blocks, or token ids outside the model's vocabulary.
    """
    blocks = task.eval_blocks if isinstance(task, LMTask) else task
    check_int(batch_size, "batch_size", 1)
    if max_blocks is not None:
        blocks = blocks[: check_int(max_blocks, "max_blocks", 1)]
    if blocks.ndim != 2 or blocks.shape[0] == 0 or blocks.shape[1] < 2:
        raise ValueError(f"perplexity needs blocks (N>=1, L>=2), got shape {tuple(blocks.shape)}")
    device = _device_of(model)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for start in range(0, blocks.shape[0], batch_size):
            ids = blocks[start : start + batch_size].to(device)
            out = model(input_ids=ids) if _is_hf(model) else model(ids)
            logits = out.logits if hasattr(out, "logits") else out
            if logits.shape[-1] <= int(ids.max()):
                raise ValueError(
                    f"task token ids reach {int(ids.max())} but the model's vocabulary has "
                    f"{logits.shape[-1]} entries"
                )
            loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="sum"
            )
            total += float(loss)
            count += ids[:, 1:].numel()
    finally:
        model.train(was_training)
    return math.exp(total / count)


def _is_hf(model: nn.Module) -> bool:
    return hasattr(model, "config") and hasattr(model, "get_input_embeddings")


def unigram_perplexity(task: LMTask) -> float:
    """Perplexity of the add-one-smoothed unigram model of the training tokens on the evaluation
    blocks (the same predicted positions as `perplexity`): the bar any LM must clear.
    """
    counts = torch.bincount(task.train_blocks.flatten(), minlength=task.vocab_size).double() + 1
    logp = (counts / counts.sum()).log()
    targets = task.eval_blocks[:, 1:].flatten()
    return math.exp(-float(logp[targets].mean()))
