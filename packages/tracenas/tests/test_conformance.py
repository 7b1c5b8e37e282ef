"""sparsecore's conformance suite for TraceNAS on a tiny GQA Llama.

The search runs at the suite's calibration call (step 0) on the first batch; the masks are the
best candidate's projection masks, so the achieved sparsity is within ``window`` of the target
(``sparsity_tolerance``). Batches are token ids, the loss is next-token cross-entropy.
"""

from typing import Any

import torch
from torch import nn

from sparse_tracenas import TraceNAS, causal_lm_loss
from sparsecore import PruningMethod
from sparsecore.bench import tiny_llama
from sparsecore.testing import MethodConformance

torch.set_num_threads(1)


class TestTraceNASConformance(MethodConformance):
    method_cls = TraceNAS
    sparsity = 0.3
    sparsity_tolerance = 0.1
    train_steps = 6
    wrong_type_exempt = ("min_layers",)  # int | None: None is a valid value

    def make_method(self, **overrides: Any) -> PruningMethod:
        options = {"sparsity": self.sparsity, "window": 0.1, "population": 3, "iterations": 1,
                   "elites": 2, "mlp_block": 16, "min_layers": 2}  # fmt: skip
        return TraceNAS(**{**options, **overrides})

    def make_model(self, seed: int = 0) -> nn.Module:
        return tiny_llama(
            seed=seed, vocab_size=64, hidden_size=32, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
            max_position_embeddings=32,
        )  # fmt: skip

    def make_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(1000 + step)
        ids = torch.randint(0, 64, (4, 16), generator=gen)
        return ids, ids

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        ids, _ = batch
        return causal_lm_loss(model(input_ids=ids).logits, ids)
