"""Compresso stacked with unstructured magnitude pruning: compress, then ``magnitude``.

Compresso removes heads, FFN channels and hidden dimensions (a physically smaller Llama after
the LoRA merge); the core's one-shot magnitude method (reached through the registry) then removes
single weights of the smaller model. The composition must keep Compresso's shapes, reach the
magnitude method's exact sparsity on its targets, and Compresso's compressed model must compute
what the gated model computed.
"""

from __future__ import annotations

import torch

from sparse_compresso import Compresso
from sparse_compresso.examples import tiny_lora_llama, token_batch
from sparsecore import available_methods

torch.set_num_threads(1)


def test_compresso_then_magnitude_on_the_compressed_model():
    model = tiny_lora_llama()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    options = {"sparsity": 0.5, "prune_steps": 8, "warmup_steps": 4, "reg_lr": 1.0}
    method = available_methods()["compresso"](**options).setup(model, opt)
    assert isinstance(method, Compresso)
    model.train()
    for step in range(10):
        ids = token_batch(step)
        loss = model(input_ids=ids, labels=ids).loss + method.regularization()
        opt.zero_grad()
        loss.backward()
        opt.step()
    ids = token_batch(50)
    model.eval()
    with torch.no_grad():
        gated = model(input_ids=ids).logits
    small = method.compress({"input_ids": ids}).eval()
    with torch.no_grad():
        assert torch.allclose(small(input_ids=ids).logits, gated, atol=1e-5)
    hidden = small.config.hidden_size
    assert hidden < 32 or small.config.intermediate_size < 48
    targets = tuple(n for n, p in small.named_parameters() if ".layers." in n and p.dim() == 2)
    magnitude = available_methods()["magnitude"](sparsity=0.5, targets=targets).setup(small)
    final = magnitude.finalize()
    params = dict(final.named_parameters())
    zeros = sum(int((params[n] == 0).sum()) for n in targets)
    total = sum(params[n].numel() for n in targets)
    assert abs(zeros / total - 0.5) <= 1 / total
    assert params["model.layers.0.mlp.gate_proj.weight"].shape[1] == hidden
    with torch.no_grad():
        assert torch.isfinite(final(input_ids=ids).logits).all()
