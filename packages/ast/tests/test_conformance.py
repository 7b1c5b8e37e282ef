from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sparse_ast import AdaptiveSparseTrainer
from sparsecore.testing import MethodConformance

from ._helpers import tiny_gpt2, tokens

torch.set_num_threads(1)


class TestASTConformance(MethodConformance):
    """Default options (2:4, magnitude, k=10, SR-STE decay, distillation, SLoRB) on the MLP."""

    method_cls = AdaptiveSparseTrainer

    def make_method(self, **overrides: Any) -> AdaptiveSparseTrainer:
        options = {"sparsity": self.sparsity, "mask_update_every": 5, "increase_steps": 8}
        options["srste_decay"] = 1e-2
        return AdaptiveSparseTrainer(**{**options, **overrides})


class TestASTConformanceGPT2(MethodConformance):
    """The same suite on a tiny random GPT-2 (HF Conv1D layers, tied LM head)."""

    method_cls = AdaptiveSparseTrainer
    train_steps = 12

    def make_method(self, **overrides: Any) -> AdaptiveSparseTrainer:
        options = {"sparsity": self.sparsity, "mask_update_every": 3, "increase_steps": 4}
        options["srste_decay"] = 1e-2
        return AdaptiveSparseTrainer(**{**options, **overrides})

    def make_model(self, seed: int = 0) -> nn.Module:
        return tiny_gpt2(seed)

    def make_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = tokens(1000 + step)
        return x, x

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return model(x, labels=y).loss
