"""sparsecore's procedure conformance suite on ReBalance."""

from __future__ import annotations

from typing import Any

from sparse_rebalance import ReBalance
from sparsecore.testing import ProcedureConformance

from ._helpers import make_calibration, make_lm
from .test_steering import decode


class TestReBalanceConformance(ProcedureConformance):
    """A scripted decode with three boundaries inside ``<think>``."""

    procedure_cls = ReBalance

    def make_procedure(self, **overrides: Any) -> ReBalance:
        return ReBalance(make_calibration(), **overrides)

    def make_model(self, seed: int = 0):
        return make_lm(seed)

    def run(self, procedure, model):
        return decode(model), list(procedure.alphas)

    def wrong_models(self) -> list[Any]:
        return ["not a model", 3]
