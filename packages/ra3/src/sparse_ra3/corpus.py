"""A small generated code-like corpus, its byte tokenizer with latent tokens, and its verifier.

Paper: Zhang et al. (Apple), "Learning to Reason as Action Abstractions with Scalable Mid-Training
RL" (RA3), arXiv 2509.25810. The paper mid-trains on Python code and runs RLVR on HumanEval+,
MBPP+, LiveCodeBench and Codeforces; at CPU scale this module substitutes (a choice, labelled) a
straight-line accumulator language with an executable check:

```
want 14        <- the prompt: the value the program must return (two digits)
x=4            <- init
x+=3           <- add (digit 1-9)
x*=2           <- scale (2 or 3)
x-=0           <- shrink (digit)
ret            <- return x
```

Expert programs are generated from a latent *plan* of phases (init, then 1-3 of grow = 1-2 add
lines / scale / shrink, then return), so the corpus has a temporal structure for RA3's latents to
discover, but the plan itself is never shown to the model. Tokens: bytes 0-255, ``<eos>`` = 256,
then ``n_latents`` latent tokens ``<z0>, <z1>, ...`` (ids 257...). The verifier strips latent
tokens, parses the lines and pays 1 exactly when the program is well formed and returns the
wanted value (`reward`).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from sparsecore.validation import check_int

__all__ = [
    "EOS",
    "FIRST_LATENT",
    "Program",
    "decode",
    "encode",
    "make_programs",
    "program_value",
    "prompt_ids",
    "reward",
]

EOS = 256
FIRST_LATENT = 257
_LINE = re.compile(r"^x(=|\+=|\*=|-=)(\d)$")


@dataclass(frozen=True)
class Program:
    """An expert program: the wanted value and its lines (without the ``ret`` line)."""

    want: int
    lines: tuple[str, ...]

    @property
    def prompt(self) -> str:
        """The prompt line ``want NN``."""
        return f"want {self.want:02d}\n"

    @property
    def body(self) -> tuple[str, ...]:
        """Every program line including ``ret``, each ending in a newline."""
        return (*(f"{line}\n" for line in self.lines), "ret\n")

    @property
    def text(self) -> str:
        """Prompt and body."""
        return self.prompt + "".join(self.body)


def program_value(lines: list[str] | tuple[str, ...]) -> int | None:
    """The value a list of lines (without ``ret``) returns, or ``None`` if malformed."""
    x = None
    for i, line in enumerate(lines):
        m = _LINE.match(line)
        if m is None or (i == 0) != (m.group(1) == "="):
            return None
        d = int(m.group(2))
        op = m.group(1)
        x = d if op == "=" else x + d if op == "+=" else x * d if op == "*=" else x - d
    return x


def _phase(kind: str, rng: random.Random) -> list[str]:
    if kind == "grow":
        return [f"x+={rng.randint(1, 9)}" for _ in range(rng.randint(1, 2))]
    if kind == "scale":
        return [f"x*={rng.choice((2, 3))}"]
    return [f"x-={rng.randint(0, 9)}"]


def make_programs(n: int, seed: int = 0) -> list[Program]:
    """``n`` expert programs from random plans; every value stays in ``[0, 99]``."""
    check_int(n, "n", 0)
    rng = random.Random(seed)
    out: list[Program] = []
    while len(out) < n:
        lines = [f"x={rng.randint(1, 9)}"]
        for _ in range(rng.randint(1, 3)):
            lines += _phase(rng.choice(("grow", "grow", "scale", "shrink")), rng)
        value = program_value(lines)
        if value is not None and 0 <= value <= 99:
            out.append(Program(value, tuple(lines)))
    return out


def encode(text: str) -> list[int]:
    """Byte ids of ``text``."""
    return list(text.encode("utf-8"))


def prompt_ids(want: int) -> list[int]:
    r"""The RLVR prompt ``want NN\\n``."""
    return encode(f"want {want:02d}\n")


def decode(ids: list[int]) -> str:
    """Text of ``ids`` up to the first ``<eos>``, latent tokens dropped."""
    out = bytearray()
    for i in ids:
        if i == EOS:
            break
        if 0 <= i < 256:
            out.append(i)
    return out.decode("utf-8", errors="replace")


def reward(want: int, completion: list[int], shaped: bool = True) -> float:
    """The verifier: execute the completion (latents stripped) up to its ``ret`` line.

    Malformed programs (no ``ret``, a bad line, no ``x=`` first) score 0. Well formed ones score
    1 when they return ``want``; with ``shaped`` (default) a wrong value scores
    ``max(0, 1 − |value − want| / 20)`` (a dense but still verifiable reward; choice, labelled:
    the exact-match reward of the paper's unit tests is too sparse for a 37k-parameter policy).
    """
    lines = decode(completion).split("\n")
    if "ret" not in lines:
        return 0.0
    body = lines[: lines.index("ret")]
    value = program_value(body) if body else None
    if value is None:
        return 0.0
    if value == want:
        return 1.0
    return max(0.0, 1.0 - abs(value - want) / 20.0) if shaped else 0.0
