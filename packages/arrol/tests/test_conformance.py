"""sparsecore's procedure conformance suite on ARRoL."""

from __future__ import annotations

from typing import Any

import torch

from sparse_arrol import ARRoL
from sparsecore.rl import ReversalTask, generate_rollouts
from sparsecore.testing import ProcedureConformance

from ._helpers import make_lm

TASK = ReversalTask(5, 4)


class TestARRoLConformance(ProcedureConformance):
    """One pruned generation and one online head/calibration update (the policy is not trained:
    the conformance episode must leave the model bit-identical)."""

    procedure_cls = ARRoL

    def make_procedure(self, **overrides: Any) -> ARRoL:
        return ARRoL(**{"detect_step": 2, **overrides})

    def make_model(self, seed: int = 0):
        return make_lm(seed)

    def run(self, procedure, model):
        problems = TASK.sample(3, procedure.generator)
        batch = generate_rollouts(
            model, [p.prompt for p in problems], 4, 6, TASK.vocab.eos, TASK.vocab.pad,
            generator=procedure.generator, detect_step=2, detect=procedure.detect,
        )  # fmt: skip
        rewards = torch.tensor(
            [
                TASK.reward(problems[int(g)], c)
                for g, c in zip(batch.groups, batch.completions, strict=True)
            ]
        )
        procedure.observe(batch, rewards)
        return batch.completions, batch.survivors, procedure.score(batch.detect_hidden)

    def wrong_models(self) -> list[Any]:
        return ["not a model", 3]
