"""sparsecore's conformance suite for SHRP on a tiny BERT whose heads are routed experts.

SHRP's masks are Head-patterned masks on the routers' weights (one row per head), so the suite
applies unchanged: target sparsity = fraction of heads removed (exact), pattern validity, zeros,
finalize, exact resume, bad input. The suite's default MLP has no attention: ``make_model`` gives a
tiny ``BertForSequenceClassification`` converted to Expert Attention, and ``make_batch`` / ``loss``
feed it token ids.
"""

from typing import Any

import torch
from torch import nn

from sparse_shrp import SHRP, to_expert_attention
from sparsecore import PruningMethod
from sparsecore.bench import tiny_bert
from sparsecore.testing import MethodConformance

torch.set_num_threads(1)


class TestSHRPConformance(MethodConformance):
    method_cls = SHRP
    sparsity = 0.75  # 2 layers x 4 heads: 6 removed, 2 kept, exactly 0.75
    train_steps = 24

    def make_method(self, **overrides: Any) -> PruningMethod:
        # balance 0-6, specialise and count 6-18, prune at 18; resume point 12 is mid-count.
        options = {"sparsity": self.sparsity, "balance_steps": 6, "prune_step": 18}
        return SHRP(**{**options, **overrides})

    def make_model(self, seed: int = 0) -> nn.Module:
        model = tiny_bert(
            num_labels=4, seed=seed, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
        )
        return to_expert_attention(model, seed=seed)

    def make_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(1000 + step)
        return torch.randint(1, 1000, (8, 12), generator=gen), torch.randint(
            0, 4, (8,), generator=gen
        )

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(model(input_ids=x).logits, y)

    def test_heads_removed_match_masks(self) -> None:
        """After pruning, every layer's head_alive equals its mask's rows."""
        _, method, _ = self.trained()
        removed = 0
        for name, layer in method.layers.items():
            rows = method.masks.mask(name).any(dim=1)
            assert torch.equal(layer.head_alive, rows)
            assert torch.equal(method.masks.mask(name).all(dim=1), rows)
            removed += int((~rows).sum())
        assert removed == 6
