"""The collaborative prompt and an offline instruction-tuning data set.

Prompt texts: verbatim from github.com/microsoft/Moonlit ``Compresso/tasks/alpaca.py``
(``PROMPT_DICT``). The official training uses the ``"long"`` variant (``prompt_mark = "long"``
in ``SupervisedDataset``): ``prompt_long_pruning_input`` for examples with an input,
``prompt_long_pruning_no_input`` otherwise; the target is ``output + eos``; the loss is taken on
the target tokens only (the source tokens' labels are ``IGNORE_INDEX = -100``, ``preprocess``).
The paper also puts the prompt in front of every input at inference.

Data set (offline; the official one is Alpaca-GPT4): `instruction_examples` builds templated
instruction → response pairs over Python standard-library source (the text the core's tiny
Llama was pretrained on, `sparsecore.bench.lm`): continue a code fragment, repeat a line, give
the indentation-stripped line, name the first identifier. [choice] The tasks are chosen so that a
byte-level model pretrained on that text can learn them; every 10th file (the core's held-out
split) is reserved for evaluation.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from sparsecore.validation import check_choice, check_int

__all__ = [
    "COLLABORATIVE_PROMPT",
    "IGNORE_INDEX",
    "PROMPTS",
    "Example",
    "format_example",
    "instruction_examples",
    "tokenize_example",
]

#: Label of tokens without loss (the prompt and the instruction).
IGNORE_INDEX = -100

_LONG_SYSTEM = (
    "###System Instruction:\nAttention, LLM! You are undergoing optimization with a pruning "
    "algorithm to boost efficiency by removing redundant parameters. Here's what you need to "
    "know:\n"
    "Improved Efficiency: The pruning algorithm streamlines your operations, enhancing overall "
    "performance.\n"
    "Resource Utilization: Reducing unnecessary parameters optimizes computational resources and "
    "memory requirements.\n"
    "Maintaining Quality: The algorithm selectively prunes to preserve language generation "
    "capabilities while minimizing impact on performance.\n"
    "Iterative Refinement: Pruning occurs gradually, with fine-tuning after each step to ensure a "
    "smooth transition.\n"
    "Collaboration: Embrace changes, continue generating high-quality language outputs to "
    "contribute to the optimization process.\n"
    "Continuous Learning: Pruning helps you evolve, focusing on essential aspects of language "
    "generation.\n"
    "Together, we'll create a leaner and more efficient version of you. Let's unlock your full "
    "potential through pruning.\n\n"
)
_MIDDLE_SYSTEM = (
    "###System Instruction:\nYou're being pruned by an efficient algorithm to remove unimportant "
    "parameters, such as attention heads, hidden dimensions, and MLP intermediate dimensions. "
    "Collaborate to optimize your performance while minimizing parameters. Your cooperation in "
    "this endeavor is vital. As the algorithm progresses, please adapt and fine-tune your model "
    "parameters accordingly. Embrace the changes and work in harmony with the pruning algorithm "
    "to maximize the number of pruned parameters while safeguarding your performance.\n\n"
)
_SHORT_SYSTEM = (
    "###System Instruction:\nAttention, LLM! You are undergoing optimization with a pruning "
    "algorithm to boost efficiency by removing redundant parameters. Please embrace changes, "
    "continue generating high-quality language outputs to contribute to the optimization "
    "process. Let's unlock your full potential through pruning! Please make any necessary "
    "adjustments to ensure your performance.\n\n"
)
_USER_INPUT = (
    "Below is an User Instruction that describes a task, paired with an input that provides "
    "further context, please take full consideration of the System Instruction mentioned above, "
    "and then write a response that appropriately completes the request.\n\n"
    "###User Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
_USER_NO_INPUT = (
    "Below is an User Instruction that describes a task, please take full consideration of the "
    "System Instruction mentioned above, and then write a response that appropriately completes "
    "the request.\n\n###User Instruction:\n{instruction}\n\n### Response:"
)

#: ``{variant: (template with input, template without input)}``; ``"none"`` is the plain
#: Alpaca template (``prompt_input`` / ``prompt_no_input``), the no-prompt ablation.
PROMPTS: dict[str, tuple[str, str]] = {
    "long": (_LONG_SYSTEM + _USER_INPUT, _LONG_SYSTEM + _USER_NO_INPUT),
    "middle": (_MIDDLE_SYSTEM + _USER_INPUT, _MIDDLE_SYSTEM + _USER_NO_INPUT),
    "short": (
        _SHORT_SYSTEM
        + "Below is an instruction that describes a task, paired with an input that provides "
        "further context. please take full consideration of the System Instruction mentioned "
        "above, and then write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:",
        _SHORT_SYSTEM
        + "Below is an instruction that describes a task. please take full consideration of the "
        "System Instruction mentioned above, and then write a response that appropriately "
        "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:",
    ),
    "none": (
        "Below is an instruction that describes a task, paired with an input that provides "
        "further context. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:",
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:",
    ),
}
#: The system part every training example of the official run starts with.
COLLABORATIVE_PROMPT = _LONG_SYSTEM


@dataclass(frozen=True)
class Example:
    """One instruction-tuning example (Alpaca fields)."""

    instruction: str
    input: str
    output: str
    task: str = ""


def format_example(example: Example, variant: str = "long") -> str:
    """The source text of ``example``: the prompt variant's template filled in.

    Raises:
        ValueError: Unknown variant.
    """
    variant = check_choice(variant, "variant", tuple(PROMPTS))
    with_input, without = PROMPTS[variant]
    if example.input != "":
        return with_input.format_map({"instruction": example.instruction, "input": example.input})
    return without.format_map({"instruction": example.instruction})


def tokenize_example(
    example: Example,
    encode: Callable[[str], torch.Tensor],
    variant: str = "long",
    eos: Sequence[int] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, labels)`` of source + target, labels ``IGNORE_INDEX`` on the source.

    Args:
        example: The example.
        encode: Text → token ids (e.g. `sparsecore.bench.lm.LMTask.encode`).
        variant: Prompt variant (`PROMPTS`).
        eos: Token ids appended to the target (the official ``tokenizer.eos_token``).
    """
    source = encode(format_example(example, variant))
    target = torch.cat([encode(example.output), torch.tensor(list(eos), dtype=torch.long)])
    ids = torch.cat([source, target])
    labels = ids.clone()
    labels[: source.numel()] = IGNORE_INDEX
    return ids, labels


def _lines(texts: Sequence[str]) -> list[str]:
    out = []
    for text in texts:
        for line in text.splitlines():
            s = line.rstrip()
            if 12 <= len(s.strip()) <= 60 and s.isascii():
                out.append(s)
    return out


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def instruction_examples(texts: Sequence[str], count: int, seed: int = 0) -> list[Example]:
    """``count`` templated instruction → response examples drawn from ``texts`` (source files).

    Tasks (drawn uniformly): ``continue`` (input: 48 characters of code, output: the next 24),
    ``repeat`` (output: the input line), ``strip`` (output: the line without its indentation),
    ``identifier`` (output: the first identifier of the line, no input field for the line is
    given in the instruction instead).

    Raises:
        ValueError: ``count`` below 1 or no usable line in ``texts``.
    """
    check_int(count, "count", 1)
    lines = _lines(texts)
    joined = "\n".join(t for t in texts if t.isascii())
    if not lines or len(joined) < 200:
        raise ValueError("texts: no usable ASCII source lines to build examples from")
    rng = random.Random(seed)
    out: list[Example] = []
    while len(out) < count:
        task = rng.choice(("continue", "repeat", "strip", "identifier"))
        if task == "continue":
            start = rng.randrange(0, len(joined) - 80)
            out.append(
                Example(
                    "Continue the following Python code.",
                    joined[start : start + 48],
                    joined[start + 48 : start + 72],
                    task,
                )
            )
            continue
        line = rng.choice(lines)
        if task == "repeat":
            out.append(Example("Repeat the following line of code.", line, line, task))
        elif task == "strip":
            out.append(Example("Remove the indentation of this line.", line, line.strip(), task))
        else:
            match = _IDENT.search(line)
            if match is None:
                continue
            out.append(
                Example(f"Name the first identifier in: {line.strip()}", "", match.group(0), task)
            )
    return out
