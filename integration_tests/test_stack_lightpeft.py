"""Light-PEFT stacked with unstructured magnitude pruning: lighten, merge, then ``magnitude``.

Light-PEFT removes whole heads, FFN neurons and LoRA ranks (a physically smaller model); the
core's one-shot magnitude method (reached through the registry) then removes single weights of
the merged, smaller model. The composition must keep Light-PEFT's structure (the smaller shapes
and per-layer head counts) and reach the magnitude method's exact sparsity on its targets, with
the merged adapter's function intact before magnitude pruning.
"""

from __future__ import annotations

import torch

from sparse_lightpeft import LightPEFT
from sparsecore import available_methods
from sparsecore.adapters import add_lora, merge_lora
from sparsecore.bench import tiny_bert

torch.set_num_threads(1)


def test_lightpeft_then_magnitude_on_the_lightened_merged_model():
    model = tiny_bert(num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(1)
    model = add_lora(model, r=4, alpha=8, modules_to_save=["classifier"])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    lightpeft = available_methods()["lightpeft"](sparsity=0.5, estimate_steps=6).setup(model, opt)
    assert isinstance(lightpeft, LightPEFT)
    gen = torch.Generator().manual_seed(0)
    for _ in range(6):
        x, y = (
            torch.randint(1, 1000, (8, 10), generator=gen),
            torch.randint(0, 3, (8,), generator=gen),
        )
        loss = model(input_ids=x, labels=y).loss + lightpeft.regularization()
        opt.zero_grad()
        loss.backward()
        opt.step()
    light = lightpeft.lighten()
    x = torch.randint(1, 1000, (2, 10), generator=gen)
    light.model.eval()
    with torch.no_grad():
        before = light.model(input_ids=x).logits
    merged = merge_lora(light.model).eval()
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=x).logits, before, atol=1e-5)
    assert merged.config.sparsecore_structure["heads"] == [2, 2]
    targets = tuple(
        n
        for n, p in merged.named_parameters()
        if ".encoder.layer." in n and n.endswith(".weight") and p.dim() == 2
    )
    magnitude = available_methods()["magnitude"](sparsity=0.5, targets=targets).setup(merged)
    final = magnitude.finalize()
    params = dict(final.named_parameters())
    zeros = sum(int((params[n] == 0).sum()) for n in targets)
    total = sum(params[n].numel() for n in targets)
    assert abs(zeros / total - 0.5) <= 1 / total
    q = params["bert.encoder.layer.0.attention.self.query.weight"]
    assert q.shape == (32, 64)  # the Light-PEFT removal survives the stacking
    with torch.no_grad():
        assert torch.isfinite(final(input_ids=x).logits).all()
