"""SlimFit stacked with pruning: one-shot magnitude pruning, then SlimFit fine-tuning, then masks.

A pruned model is fine-tuned memory-efficiently: the core's magnitude method (through the
registry) prunes the encoder's Linear weights to 50 %, its hard masks stay on while SlimFit
(also through the registry) freezes 80 % of the weight tensors per step and installs its
activation caches. The composition must keep the exact sparsity (the magnitude masks are
applied after every step, frozen or not), leave frozen tensors untouched, and still save fewer
activation bytes than fine-tuning the pruned model with everything trainable.
"""

from __future__ import annotations

import torch
from torch import nn

from sparse_slimfit import SlimFit
from sparsecore import available_methods
from sparsecore.bench import tiny_bert
from sparsecore.evaluation import SavedTensorMeter

torch.set_num_threads(1)


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(step)
    return torch.randint(1, 1000, (8, 10), generator=gen), torch.randint(0, 3, (8,), generator=gen)


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int) -> list[int]:
    saved = []
    for step in range(steps):
        x, y = _batch(step)
        meter = SavedTensorMeter(exclude=model.parameters())
        with meter:
            loss = nn.functional.cross_entropy(model(input_ids=x).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        saved.append(meter.bytes)
    return saved


def test_magnitude_pruned_model_fine_tuned_with_slimfit_keeps_sparsity():
    methods = available_methods()
    targets = tuple(
        n
        for n, p in tiny_bert(num_labels=3).named_parameters()
        if ".encoder.layer." in n and n.endswith(".weight") and p.dim() == 2
    )
    runs = {}
    for label in ("plain", "slimfit"):
        model = tiny_bert(num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        magnitude = methods["magnitude"](sparsity=0.5, targets=targets).setup(model, opt)
        masks = {n: m.clone() for n, m in magnitude.masks.masks().items()}
        slimfit = None
        if label == "slimfit":
            # SlimFit's own (all-ones) mask buffers must not sit on the magnitude method's
            # targets: give it the pooler (its masks are bookkeeping, it removes nothing)
            slimfit = methods["slimfit"](
                freeze_ratio=0.8, targets=("bert.pooler.dense.weight",)
            ).setup(model, opt)
            assert isinstance(slimfit, SlimFit)
            frozen_before = {
                n: p.detach().clone()
                for n, p in model.named_parameters()
                if n in slimfit.frozen_names()
            }
        saved = _train(model, opt, 1 if slimfit is not None else 6)
        if slimfit is not None:
            params = dict(model.named_parameters())
            assert all(torch.equal(params[n], w) for n, w in frozen_before.items())
            saved += _train(model, opt, 5)
            slimfit.finalize()
        final = magnitude.finalize()
        params = dict(final.named_parameters())
        for name, mask in masks.items():
            assert not params[name][~mask].any(), name
        zeros = sum(int((params[n] == 0).sum()) for n in targets)
        total = sum(params[n].numel() for n in targets)
        assert abs(zeros / total - 0.5) <= 1 / total
        runs[label] = max(saved)
    assert runs["slimfit"] < runs["plain"]
