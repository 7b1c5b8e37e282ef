"""sparsecore's conformance suite for Compresso on a tiny GQA Llama with peft LoRA adapters.

The L0 phase is 10 steps, so the resume point (step 12) lies after the gates were fixed. The
achieved sparsity is decided by the gates (``round(Σ cdf(0))`` zeros per gate vector), not set
to the target exactly, so the suite's exact-sparsity check is replaced by
``test_hard_masks_match_the_gates`` (every masked weight, counted against a brute-force
reference built from the gates).
"""

from typing import Any

import torch
from torch import nn

from sparse_compresso import Compresso
from sparse_compresso.examples import tiny_lora_llama as lora_llama
from sparse_compresso.examples import token_batch as lm_batch
from sparsecore import PruningMethod
from sparsecore.structures import group_members
from sparsecore.testing import MethodConformance


class TestCompressoConformance(MethodConformance):
    method_cls = Compresso
    sparsity = 0.5
    train_steps = 24
    check_sparsity_after_training = False

    def make_method(self, **overrides: Any) -> PruningMethod:
        options = {"sparsity": self.sparsity, "prune_steps": 10, "warmup_steps": 4, "reg_lr": 1.0}
        return Compresso(**{**options, **overrides})

    def make_model(self, seed: int = 0) -> nn.Module:
        return lora_llama(seed)

    def make_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = lm_batch(step)
        return ids, ids

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return model(input_ids=x, labels=y).loss

    def test_hard_masks_match_the_gates(self) -> None:
        """Masked weights = the slices of the gated-off groups (brute force over group members)."""
        model, method, _ = self.trained()
        gates = method.group_masks()
        assert method.pruned_sparsity() > 0.0  # the Lagrangian pruned something in 10 steps
        base = model.get_base_model()
        want: dict[str, torch.Tensor] = {}
        for name, p in base.named_parameters():
            want[name] = torch.ones(p.shape, dtype=torch.bool)
        for kind in ("heads", "ffn", "hidden"):
            for group in group_members(base, kind):
                z = gates[kind] if kind == "hidden" else gates[kind][group.layer]
                if float(z[group.index]) != 0.0:
                    continue
                for pname, dim, idx in group.slices:
                    want[pname].index_fill_(dim, torch.tensor(idx), False)
        prefix = "base_model.model."
        for name, mask in method.masks.masks().items():
            assert torch.equal(mask.cpu(), want[name.removeprefix(prefix)]), name
