"""sparsecore's conformance suite for ATP on a tiny random Llama with peft LoRA adapters.

The masks are the projection rows / columns of the removed head groups and FFN channels, fixed
after ``search_steps = 10`` (so the resume point, step 12, lies after the fixing). The budget
projection removes the target fraction up to one FFN channel (96 of 20,480 prunable weights),
hence the tolerance.
"""

from typing import Any

import torch
from torch import nn

from sparse_atp import ATP
from sparsecore import PruningMethod
from sparsecore.adapters import add_lora
from sparsecore.bench import tiny_llama
from sparsecore.testing import MethodConformance

torch.set_num_threads(1)


class TestATPConformance(MethodConformance):
    method_cls = ATP
    sparsity = 0.4
    train_steps = 24
    sparsity_tolerance = 96 / 20480

    def make_method(self, **overrides: Any) -> PruningMethod:
        options = {"sparsity": self.sparsity, "search_steps": 10, "generator_lr": 0.05}
        return ATP(**{**options, **overrides})

    def make_model(self, seed: int = 0) -> nn.Module:
        model = tiny_llama(
            seed=seed, vocab_size=64, hidden_size=32, num_attention_heads=2,
            num_key_value_heads=2, intermediate_size=64, max_position_embeddings=32,
        )  # fmt: skip
        torch.manual_seed(seed + 1)  # the LoRA A init draws from the global generator
        return add_lora(model, r=4, alpha=8)

    def make_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(1000 + step))
        return ids, ids

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        ids, _ = batch
        return model(input_ids=ids, labels=ids).loss

    def test_compress_matches_masked_model(self) -> None:
        """The merged, physically smaller model computes what the masked LoRA model computes."""
        model, method, _ = self.trained()
        ids, _ = self.make_batch(99)
        model.eval()
        with torch.no_grad():
            want = model(input_ids=ids).logits
        small = method.compress({"input_ids": ids})
        with torch.no_grad():
            got = small(input_ids=ids).logits
        assert not hasattr(small, "peft_config")
        assert torch.allclose(want, got, atol=1e-5)
