"""Sampling, scoring and the offline pass on the reasoning toy.

`generate` samples one response per problem (batched, left-padded, KV cache; official
sampling settings: temperature 0.7, top-p 0.95) with an optional procedure attached; `score`
reports what ReBalance sells and what it must not lose: accuracy (exact answer after
``</think>``), generated tokens (up to and including ``<eos>``), thinking tokens and reflection
steps per trace. `offline_pass` runs the offline pass of `sparse_rebalance.offline` on sampled
traces of *seen* problems (a split disjoint from the evaluation problems).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from sparse_rebalance.offline import SteeringCalibration, calibrate, has_reflection, trace_steps
from sparse_rebalance.reasoning import (
    END_THINK,
    EOS,
    STEP,
    THINK,
    Problem,
    ReasoningTokenizer,
    parse_answer,
)
from sparsecore.procedure import Procedure

__all__ = ["generate", "offline_pass", "score"]


@torch.no_grad()
def generate(
    model: nn.Module,
    problems: Sequence[Problem],
    *,
    seed: int,
    procedure: Procedure | None = None,
    max_new_tokens: int = 160,
    batch: int = 64,
    temperature: float = 0.7,
    top_p: float = 0.95,
) -> tuple[list[list[int]], float]:
    """Sampled responses (token ids, cut after ``<eos>``) and the wall time in seconds."""
    tokenizer = ReasoningTokenizer()
    out: list[list[int]] = []
    start = time.perf_counter()
    torch.manual_seed(seed)
    for lo in range(0, len(problems), batch):
        chunk = problems[lo : lo + batch]
        prompts = [tokenizer.encode(p.prompt) for p in chunk]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(chunk), width), EOS, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, p in enumerate(prompts):
            ids[row, width - len(p) :] = torch.tensor(p)
            mask[row, width - len(p) :] = 1
        if procedure is not None:
            procedure.attach(model)
        try:
            result = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=True,
                temperature=temperature,
                top_p=top_p,
                eos_token_id=EOS,
                pad_token_id=EOS,
            )
        finally:
            if procedure is not None:
                procedure.detach()
        for row in result[:, width:].tolist():
            out.append(row[: row.index(EOS) + 1] if EOS in row else row)
    return out, time.perf_counter() - start


def score(problems: Sequence[Problem], responses: Sequence[list[int]]) -> dict[str, Any]:
    """Accuracy, generated / thinking tokens and reflection steps (means over problems)."""
    tokenizer = ReasoningTokenizer()
    correct, tokens, thinking, reflections, steps = 0, 0, 0, 0, 0
    for problem, response in zip(problems, responses, strict=True):
        text = tokenizer.decode(response)
        correct += parse_answer(text) == problem.answer
        tokens += len(response)
        end = response.index(END_THINK) if END_THINK in response else len(response)
        thinking += end
        parts = tokenizer.decode(response[:end]).split("\n\n")
        reflections += sum(has_reflection(p) for p in parts)
        steps += sum(1 for t in response[:end] if t == STEP)
    n = len(problems)
    return {
        "accuracy": correct / n,
        "tokens": tokens / n,
        "thinking_tokens": thinking / n,
        "reflection_steps": reflections / n,
        "steps": steps / n,
    }


def offline_pass(
    model: nn.Module,
    problems: Sequence[Problem],
    *,
    seed: int,
    max_new_tokens: int = 160,
    quartiles: str = "all",
) -> SteeringCalibration:
    """Sample traces of seen problems and calibrate (`sparse_rebalance.offline.calibrate`)."""
    tokenizer = ReasoningTokenizer()
    responses, _ = generate(model, problems, seed=seed, max_new_tokens=max_new_tokens)
    traces = []
    for problem, response in zip(problems, responses, strict=True):
        steps = trace_steps(
            model,
            tokenizer.encode(problem.prompt),
            response,
            split_ids=(STEP,),
            think_end_id=END_THINK,
            decode=tokenizer.decode,
        )
        if steps is not None:
            traces.append(steps)
    return calibrate(traces, quartiles=quartiles)


#: Token ids of the toy, for building procedures.
TOY_IDS = {"think_start_id": THINK, "think_end_id": END_THINK, "split_ids": (STEP,)}
