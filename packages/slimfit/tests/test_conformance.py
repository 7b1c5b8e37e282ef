"""sparsecore's conformance suite for SlimFit on a tiny random BERT.

SlimFit removes no weight: its mask buffers (on the Linear weights) stay all-ones, so the
suite's target sparsity is 0 and it checks the lifecycle, resume, validation and rollback.
"""

from typing import Any

import torch
from torch import nn

from sparse_slimfit import SlimFit
from sparsecore import PruningMethod
from sparsecore.bench import tiny_bert
from sparsecore.testing import MethodConformance

torch.set_num_threads(1)


class TestSlimFitConformance(MethodConformance):
    method_cls = SlimFit
    sparsity = 0.0
    train_steps = 12

    def make_method(self, **overrides: Any) -> PruningMethod:
        return SlimFit(**{"sparsity": self.sparsity, "freeze_ratio": 0.8, **overrides})

    def make_model(self, seed: int = 0) -> nn.Module:
        return tiny_bert(
            num_labels=4, seed=seed, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
        )

    def make_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(1000 + step)
        return torch.randint(1, 1000, (8, 12), generator=gen), torch.randint(
            0, 4, (8,), generator=gen
        )

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(model(input_ids=x).logits, y)
