"""Verifiable toy tasks for RL on a tiny causal LM, with a tokenizer-free character vocabulary.

RL with verifiable rewards (RLVR) needs problems whose answers a program can check. Two such
problems, small enough for a two-layer Llama on a CPU:

* `AdditionTask`: ``"BOS 047+385="`` → ``"432 EOS"`` (operands zero-padded to ``digits``, so every
  prompt has the same length; the answer is written without leading zeros);
* `ReversalTask`: ``"BOS abcde>"`` → ``"edcba EOS"`` over a small alphabet.

The reward is exact match of the decoded completion (up to the first EOS) against the answer:
1.0 or 0.0. A completion that never samples EOS gets 0. `CHAR_VOCAB` is one fixed character
vocabulary for both tasks (``PAD = 0``, ``BOS = 1``, ``EOS = 2``, then digits, ``+ = >`` and
``a``–``z``), so one model config serves both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sparsecore.validation import check_int

__all__ = ["CHAR_VOCAB", "AdditionTask", "CharVocab", "Problem", "ReversalTask", "ToyTask"]


@dataclass(frozen=True)
class CharVocab:
    """A character vocabulary with three special tokens (``PAD``, ``BOS``, ``EOS``)."""

    chars: str

    pad: int = 0
    bos: int = 1
    eos: int = 2

    @property
    def size(self) -> int:
        """Number of token ids (specials included)."""
        return 3 + len(self.chars)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no specials added)."""
        try:
            return [3 + self.chars.index(c) for c in text]
        except ValueError:
            bad = next(c for c in text if c not in self.chars)
            raise ValueError(f"text has a character outside the vocabulary: {bad!r}") from None

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` up to the first ``EOS`` (other specials dropped)."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos:
                break
            if i >= 3:
                out.append(self.chars[i - 3])
        return "".join(out)


#: The shared vocabulary of the toy tasks.
CHAR_VOCAB = CharVocab("0123456789+=>abcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True)
class Problem:
    """One problem: the prompt's token ids (``BOS`` first) and the expected answer text."""

    prompt: tuple[int, ...]
    answer: str


class ToyTask:
    """Base of the toy tasks: sample problems, score completions, build SFT sequences."""

    name = "toy"
    vocab: CharVocab = CHAR_VOCAB

    def _make(self, generator: torch.Generator) -> tuple[str, str]:
        raise NotImplementedError

    @property
    def max_answer_tokens(self) -> int:
        """Longest answer in tokens, EOS included."""
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator) -> list[Problem]:
        """``n`` random problems drawn with ``generator``."""
        check_int(n, "n", 1)
        problems = []
        for _ in range(n):
            question, answer = self._make(generator)
            prompt = (self.vocab.bos, *self.vocab.encode(question))
            problems.append(Problem(prompt, answer))
        return problems

    def reward(self, problem: Problem, completion: Sequence[int]) -> float:
        """1.0 if ``completion`` ends with EOS and decodes to the answer exactly, else 0.0."""
        ids = [int(i) for i in completion]
        if self.vocab.eos not in ids:
            return 0.0
        return float(self.vocab.decode(ids) == problem.answer)

    def answer_text(self, completion: Sequence[int]) -> str | None:
        """The decoded answer (``None`` without EOS), for voting."""
        ids = [int(i) for i in completion]
        if self.vocab.eos not in ids:
            return None
        return self.vocab.decode(ids)

    def sft_sequence(self, problem: Problem) -> tuple[list[int], int]:
        """``(prompt + answer + EOS, prompt length)`` for supervised warm-up."""
        target = [*self.vocab.encode(problem.answer), self.vocab.eos]
        return [*problem.prompt, *target], len(problem.prompt)


class AdditionTask(ToyTask):
    """``a + b`` with ``digits``-digit operands (zero-padded in the prompt).

    Args:
        digits: Digits per operand (1–6).
    """

    name = "addition"

    def __init__(self, digits: int = 2) -> None:
        check_int(digits, "digits", 1)
        if digits > 6:
            raise ValueError(f"digits must be <= 6, got {digits}")
        self.digits = digits

    @property
    def max_answer_tokens(self) -> int:
        """``digits + 1`` answer digits and EOS."""
        return self.digits + 2

    def _make(self, generator: torch.Generator) -> tuple[str, str]:
        a, b = torch.randint(0, 10**self.digits, (2,), generator=generator).tolist()
        return f"{a:0{self.digits}d}+{b:0{self.digits}d}=", str(a + b)


class ReversalTask(ToyTask):
    """Reverse a string of ``length`` letters drawn from the first ``alphabet`` letters.

    Args:
        length: Letters per string (1–20).
        alphabet: Letters used (1–26).
    """

    name = "reversal"

    def __init__(self, length: int = 5, alphabet: int = 6) -> None:
        check_int(length, "length", 1)
        check_int(alphabet, "alphabet", 1)
        if length > 20:
            raise ValueError(f"length must be <= 20, got {length}")
        if alphabet > 26:
            raise ValueError(f"alphabet must be <= 26, got {alphabet}")
        self.length, self.alphabet = length, alphabet

    @property
    def max_answer_tokens(self) -> int:
        """``length`` letters and EOS."""
        return self.length + 1

    def _make(self, generator: torch.Generator) -> tuple[str, str]:
        idx = torch.randint(0, self.alphabet, (self.length,), generator=generator).tolist()
        text = "".join("abcdefghijklmnopqrstuvwxyz"[i] for i in idx)
        return f"{text}>", text[::-1]
