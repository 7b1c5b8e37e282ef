"""sparsecore's procedure conformance suite on ActionPruning."""

from __future__ import annotations

from typing import Any

import torch

from sparse_ra3 import ActionPruning
from sparsecore.testing import ProcedureConformance

from ._helpers import make_counts, make_lm


class TestActionPruningConformance(ProcedureConformance):
    """A teacher-forced forward and a short sampled decode on a tiny Llama."""

    procedure_cls = ActionPruning

    def make_procedure(self, **overrides: Any) -> ActionPruning:
        return ActionPruning(make_counts(), **overrides)

    def make_model(self, seed: int = 0):
        return make_lm(seed)

    def run(self, procedure, model):
        ids = torch.randint(0, 256, (2, 6), generator=procedure.generator)
        with torch.no_grad():
            logits = model(input_ids=ids).logits
            probs = torch.softmax(logits[:, -1], -1)
            sample = torch.multinomial(probs, 4, replacement=True, generator=procedure.generator)
        return logits, sample, procedure.calls

    def wrong_models(self) -> list[Any]:
        return ["not a model", 3]
