"""sparsecore's conformance suite for Light-PEFT on a tiny BERT with peft LoRA adapters.

Light-PEFT's hard masks are the projection rows / columns of the removed heads and FFN neurons,
so the suite applies unchanged: with equal head and FFN ratios the target sparsity is exact
(2 layers x 4 heads, 3 of 4 removed per layer; 192 of 256 FFN neurons). The estimation stage is
10 steps, so the resume point (step 12) lies after the pruning.
"""

from typing import Any

import torch
from torch import nn

from sparse_lightpeft import LightPEFT
from sparsecore import PruningMethod
from sparsecore.adapters import add_lora
from sparsecore.bench import tiny_bert
from sparsecore.testing import MethodConformance

torch.set_num_threads(1)


class TestLightPEFTConformance(MethodConformance):
    method_cls = LightPEFT
    sparsity = 0.75
    train_steps = 24

    def make_method(self, **overrides: Any) -> PruningMethod:
        options = {"sparsity": self.sparsity, "estimate_steps": 10, "l1": 1e-2}
        return LightPEFT(**{**options, **overrides})

    def make_model(self, seed: int = 0) -> nn.Module:
        model = tiny_bert(
            num_labels=4, seed=seed, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
        )
        torch.manual_seed(seed + 1)  # the LoRA A init draws from the global generator
        return add_lora(model, r=4, alpha=8, modules_to_save=["classifier"])

    def make_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(1000 + step)
        return torch.randint(1, 1000, (8, 12), generator=gen), torch.randint(
            0, 4, (8,), generator=gen
        )

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(model(input_ids=x).logits, y)

    def test_lighten_after_training_matches(self) -> None:
        """The physically smaller model + adapter computes what the masked model computes."""
        model, method, _ = self.trained()
        x, _ = self.make_batch(99)
        light = method.lighten({"input_ids": x})
        model.eval()
        light.model.eval()
        with torch.no_grad():
            want, got = model(input_ids=x).logits, light.model(input_ids=x).logits
        assert torch.allclose(want, got, atol=1e-5)
        counts = method.plan.counts()
        assert counts["heads_removed"] == 6 and counts["ffn_removed"] == 192
