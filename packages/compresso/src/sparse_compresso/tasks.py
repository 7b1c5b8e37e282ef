"""The reproduction's data and metrics: instruction batches, perplexity, two offline tasks.

* Instruction data: `sparse_compresso.prompt.instruction_examples` over the training files of the
  core's ``stdlib-lm`` split (held-out files give the evaluation examples).
* ``instr-acc``: teacher-forced next-token accuracy on the response tokens of held-out
  instruction examples, each wrapped in the same prompt variant as in training (the paper
  puts the collaborative prompt in front of the inputs at inference too).
* ``mc-acc``: a zero-shot multiple-choice task in the HellaSwag style, built from held-out files:
  given three lines of code, pick the true next line among four (three distractors drawn from
  other held-out lines), scored by the summed log-likelihood of each option; chance is 25%.
  Measured: the dense tiny model scores below chance (the options' lengths dominate the summed
  score), so the reproduction reports it but bases no verdict on it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from sparse_compresso.prompt import IGNORE_INDEX, Example, tokenize_example
from sparsecore.bench.lm import LMTask, stdlib_files

__all__ = [
    "choice_accuracy",
    "collate",
    "instruction_accuracy",
    "next_line_questions",
    "split_texts",
]


def split_texts(task: LMTask, limit: int = 40) -> tuple[list[str], list[str]]:
    """Texts of the first ``limit`` training and held-out files of the task's split."""
    train_names, eval_names = task.files
    by_name = {p.name: p for p in stdlib_files()}

    def read(names: Sequence[str]) -> list[str]:
        return [by_name[n].read_text(errors="replace") for n in names[:limit] if n in by_name]

    return read(train_names), read(eval_names)


def collate(examples: Sequence[Example], task: LMTask, variant: str) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids`` / ``attention_mask`` / ``labels`` (pad id 0, label -100)."""
    pairs = [tokenize_example(ex, task.encode, variant) for ex in examples]
    length = max(ids.numel() for ids, _ in pairs)
    ids = torch.zeros(len(pairs), length, dtype=torch.long)
    labels = torch.full((len(pairs), length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros(len(pairs), length, dtype=torch.long)
    for i, (x, y) in enumerate(pairs):
        ids[i, : x.numel()], labels[i, : y.numel()], mask[i, : x.numel()] = x, y, 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@torch.no_grad()
def instruction_accuracy(
    model: nn.Module, examples: Sequence[Example], task: LMTask, variant: str, batch: int = 8
) -> float:
    """Teacher-forced next-token accuracy on the response tokens (eval mode)."""
    model.eval()
    right = total = 0
    for start in range(0, len(examples), batch):
        data = collate(examples[start : start + batch], task, variant)
        logits = model(input_ids=data["input_ids"], attention_mask=data["attention_mask"]).logits
        pred = logits[:, :-1].argmax(-1)
        gold = data["labels"][:, 1:]
        scored = gold != IGNORE_INDEX
        right += int((pred[scored] == gold[scored]).sum())
        total += int(scored.sum())
    return right / max(total, 1)


def next_line_questions(
    texts: Sequence[str], count: int, seed: int = 0
) -> list[tuple[str, list[str], int]]:
    """``count`` questions ``(context, four options, index of the true next line)``."""
    lines = [
        [s for s in (ln.rstrip() for ln in t.splitlines()) if len(s.strip()) >= 8 and s.isascii()]
        for t in texts
    ]
    lines = [ls for ls in lines if len(ls) > 8]
    pool = [s[:48] for ls in lines for s in ls]
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        ls = rng.choice(lines)
        i = rng.randrange(3, len(ls))
        answer = ls[i][:48]
        options = [answer, *[d for d in rng.sample(pool, 6) if d != answer][:3]]
        rng.shuffle(options)
        out.append(
            ("\n".join(x[:48] for x in ls[i - 3 : i]) + "\n", options, options.index(answer))
        )
    return out


@torch.no_grad()
def choice_accuracy(
    model: nn.Module, questions: Sequence[tuple[str, list[str], int]], task: LMTask
) -> float:
    """Fraction of questions whose true option has the highest summed log-likelihood."""
    model.eval()
    right = 0
    for context, options, answer in questions:
        ctx = task.encode(context)
        seqs = [torch.cat([ctx, task.encode(o)]) for o in options]
        length = max(s.numel() for s in seqs)
        ids = torch.zeros(len(seqs), length, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, s in enumerate(seqs):
            ids[i, : s.numel()], mask[i, : s.numel()] = s, 1
        logp = F.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), -1)
        tok = logp.gather(-1, ids[:, 1:, None])[..., 0]
        scores = [float(tok[i, ctx.numel() - 1 : s.numel() - 1].sum()) for i, s in enumerate(seqs)]
        right += int(max(range(len(scores)), key=scores.__getitem__) == answer)
    return right / len(questions)
