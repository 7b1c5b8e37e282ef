"""sparsecore's procedure conformance suite on NirvanaQuantization."""

from __future__ import annotations

from typing import Any

import torch

from sparse_nirvana import NirvanaQuantization
from sparsecore.testing import ProcedureConformance

from ._helpers import tiny_coords, tiny_inr


class TestNirvanaQuantizationConformance(ProcedureConformance):
    """A forward pass of the tiny patch INR through its decoded (quantized) weights."""

    procedure_cls = NirvanaQuantization

    def make_procedure(self, **overrides: Any) -> NirvanaQuantization:
        return NirvanaQuantization(**{"init_bits": 4, **overrides})

    def make_model(self, seed: int = 0):
        return tiny_inr(seed)

    def run(self, procedure, model):
        with torch.no_grad():
            return model(tiny_coords()), procedure.rate_bits().detach()

    def wrong_models(self) -> list[Any]:
        return ["not a model", torch.zeros(2)]
