"""ReBalance on a Wanda-pruned LM: steering composes with weight sparsity and leaves it intact.

The core's one-shot Wanda (50%, through the registry) prunes a tiny Llama on the reasoning toy's
vocabulary; ReBalance (a procedure, through its registry) then steers the sparse model's
decoding. The composition must keep Wanda's exact zeros (steering adds to activations, never to
weights), act only while attached, and with a zero coefficient leave the sparse model's logits
bit-identical.
"""

from __future__ import annotations

import torch

from sparse_rebalance import STEP, THINK, ReBalance, SteeringCalibration
from sparsecore import available_methods, available_procedures
from sparsecore.bench import tiny_llama

torch.set_num_threads(1)


def _decode(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_wanda_then_rebalance():
    model = tiny_llama(
        seed=0, vocab_size=260, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, intermediate_size=64,
    ).eval()  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    calib = [torch.randint(0, 256, (2, 16), generator=gen) for _ in range(2)]
    wanda = available_methods()["wanda"](sparsity=0.5).setup(model)
    wanda.calibrate(calib)
    model = wanda.finalize()
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if "proj" in n}
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    assert zeros == sum(w.numel() for w in weights.values()) // 2

    cal = SteeringCalibration(1, torch.randn(32, generator=gen), 0.3, 0.6, 1e-3, 1e-2, [0, 1, 0],
                              2, 2)  # fmt: skip
    cls = available_procedures()["rebalance"]
    assert cls is ReBalance
    ids = torch.tensor([[81, 58, THINK, 49, 50, STEP]])
    sparse_logits = _decode(model, ids)
    with cls(cal, dynamic=False, initial_coef=0.0).attach(model):
        assert torch.equal(_decode(model, ids), sparse_logits)
    with cls(cal, dynamic=False, initial_coef=1.0).attach(model) as steer:
        steered = _decode(model, ids)
    assert steer.alphas == [1.0] and not torch.equal(steered, sparse_logits)
    assert torch.equal(_decode(model, ids), sparse_logits)  # detached: the plain sparse model
    for n, p in model.named_parameters():
        if n in weights:
            assert torch.equal(p, weights[n])  # Wanda's zeros (and every weight) untouched
