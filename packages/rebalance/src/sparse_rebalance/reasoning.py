r"""A reasoning toy where thinking length matters: summing a list of digits step by step.

Problem ``Q:3+5+7=?``; a clean trace thinks one partial sum per step, steps separated by the
step token (the toy's ``"\n\n"``), then answers::

    <think>3+5=8⏎⏎8+7=15⏎⏎</think>A:15<eos>

The fine-tuning data deliberately mixes in the two failure modes ReBalance targets:

* **over-thinking**: redundant reflection steps (``wait, check 3+5=8``) re-verify a step
  already done; the answer stays right but tokens are wasted;
* **under-thinking**: the trace stops early and answers the partial sum reached so far (a wrong
  answer), so stopping too soon costs accuracy.

Choice, labelled: single digits (1–9), 3–5 terms, so that the tiny byte-level model can learn
the arithmetic itself in CPU minutes and accuracy measures the reasoning length, not the
model's inability to add.

Tokens (`ReasoningTokenizer`): bytes 0–255 (the core's byte-level LM vocabulary), plus
``<think>`` 256, ``</think>`` 257, the step separator 258 (one token, as ``"\n\n"`` is one token
in Qwen's BPE, which is what the official code splits on) and ``<eos>`` 259.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import torch

from sparsecore.validation import check_int, check_number

__all__ = [
    "END_THINK",
    "EOS",
    "STEP",
    "THINK",
    "Problem",
    "ReasoningTokenizer",
    "make_problems",
    "parse_answer",
    "training_trace",
]

THINK, END_THINK, STEP, EOS = 256, 257, 258, 259
_SPECIAL = {"<think>": THINK, "</think>": END_THINK, "\n\n": STEP, "<eos>": EOS}
_SPLIT = re.compile("(" + "|".join(re.escape(k) for k in _SPECIAL) + ")")


class ReasoningTokenizer:
    """Bytes plus four special tokens (module docstring); ``vocab_size`` 260."""

    vocab_size = 260

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (special strings become their single token)."""
        ids: list[int] = []
        for piece in _SPLIT.split(text):
            if piece in _SPECIAL:
                ids.append(_SPECIAL[piece])
            elif piece:
                ids.extend(piece.encode("utf-8"))
        return ids

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        """Text of ``ids`` (special tokens spelled out; invalid bytes replaced)."""
        names = {v: k for k, v in _SPECIAL.items()}
        out, buffer = [], bytearray()
        for i in [int(t) for t in ids]:
            if i < 256:
                buffer.append(i)
                continue
            out.append(buffer.decode("utf-8", errors="replace"))
            buffer = bytearray()
            out.append(names.get(i, f"<{i}>"))
        out.append(buffer.decode("utf-8", errors="replace"))
        return "".join(out)


@dataclass(frozen=True)
class Problem:
    """One summing problem."""

    numbers: tuple[int, ...]

    @property
    def answer(self) -> int:
        """The exact sum."""
        return sum(self.numbers)

    @property
    def prompt(self) -> str:
        """``Q:a+b+c=?`` followed by ``<think>``."""
        return "Q:" + "+".join(str(n) for n in self.numbers) + "=?<think>"

    def steps(self) -> list[str]:
        """The clean partial-sum steps."""
        total, out = self.numbers[0], []
        for n in self.numbers[1:]:
            out.append(f"{total}+{n}={total + n}")
            total += n
        return out


def make_problems(
    count: int, seed: int, terms: tuple[int, int] = (3, 5), high: int = 9
) -> list[Problem]:
    """``count`` problems of ``terms`` numbers drawn from ``1..high``, from ``seed``."""
    check_int(count, "count", 1)
    check_int(high, "high", 1)
    rng = random.Random(seed)
    return [
        Problem(tuple(rng.randint(1, high) for _ in range(rng.randint(*terms))))
        for _ in range(count)
    ]


def training_trace(
    problem: Problem, rng: random.Random, over: float = 0.4, under: float = 0.2
) -> str:
    """A fine-tuning trace: clean, over-thinking (reflections) or under-thinking (truncated).

    Args:
        problem: The problem.
        rng: Random source.
        over: Probability of an over-thinking trace (1–3 redundant ``wait, check`` steps).
        under: Probability of an under-thinking trace (stops early, answers the partial sum).
    """
    check_number(over, "over", 0.0, 1.0)
    check_number(under, "under", 0.0, 1.0 - over)
    steps = problem.steps()
    draw = rng.random()
    answer = problem.answer
    if draw < over:
        clean, steps = steps, []
        after = [rng.randrange(len(clean)) for _ in range(rng.randint(1, 3))]
        for i, step in enumerate(clean):
            steps.append(step)
            for _ in range(after.count(i)):  # re-check a step already done
                steps.append(f"wait, check {clean[rng.randint(0, i)]}")
    elif draw < over + under and len(steps) > 1:
        kept = rng.randint(1, len(steps) - 1)
        answer = sum(problem.numbers[: kept + 1])  # a hasty answer: the partial sum so far
        steps = steps[:kept]
    think = "".join(s + "\n\n" for s in steps)
    return f"{problem.prompt}{think}</think>A:{answer}<eos>"


_ANSWER = re.compile(r"</think>A:(-?\d+)")


def parse_answer(text: str) -> int | None:
    """The integer after ``</think>A:``, or ``None``."""
    match = _ANSWER.search(text)
    return int(match.group(1)) if match else None
