"""ATP stacked with unstructured magnitude pruning: compress, then ``magnitude`` on the result.

ATP removes whole key/value head groups and FFN channels while LoRA tunes (a physically smaller
Llama after `ATP.compress`); the core's one-shot magnitude method (reached through the registry)
then removes single weights of the smaller model's projections. The composition must keep
ATP's structure (its smaller shapes), keep the compressed model's function before magnitude
pruning, and reach the magnitude method's exact sparsity on its targets.
"""

from __future__ import annotations

import torch

from sparse_atp import ATP
from sparsecore import available_methods
from sparsecore.adapters import add_lora
from sparsecore.bench import tiny_llama

torch.set_num_threads(1)


def test_atp_then_magnitude_on_the_compressed_model():
    model = tiny_llama(
        seed=0, vocab_size=64, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=32,
    )  # fmt: skip
    torch.manual_seed(1)
    model = add_lora(model, r=4, alpha=8)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    atp = available_methods()["atp"](sparsity=0.4, search_steps=6, generator_lr=0.05)
    atp.setup(model, opt)
    assert isinstance(atp, ATP)
    gen = torch.Generator().manual_seed(0)
    for _ in range(8):
        ids = torch.randint(0, 64, (4, 16), generator=gen)
        loss = model(input_ids=ids, labels=ids).loss + atp.regularization()
        opt.zero_grad()
        loss.backward()
        opt.step()
    ids = torch.randint(0, 64, (2, 16), generator=gen)
    model.eval()
    with torch.no_grad():
        before = model(input_ids=ids).logits
    small = atp.compress({"input_ids": ids}).eval()
    with torch.no_grad():
        assert torch.allclose(small(input_ids=ids).logits, before, atol=1e-5)
    widths = [layer.mlp.up_proj.out_features for layer in small.model.layers]
    assert sum(widths) < 2 * 64  # ATP removed FFN channels (the budget needs them)
    targets = tuple(
        n for n, p in small.named_parameters()
        if ".layers." in n and n.endswith("proj.weight") and p.dim() == 2
    )  # fmt: skip
    magnitude = available_methods()["magnitude"](sparsity=0.5, targets=targets).setup(small)
    final = magnitude.finalize()
    params = dict(final.named_parameters())
    zeros = sum(int((params[n] == 0).sum()) for n in targets)
    total = sum(params[n].numel() for n in targets)
    assert abs(zeros / total - 0.5) <= len(targets) / total
    assert [layer.mlp.up_proj.out_features for layer in final.model.layers] == widths
