"""TraceNAS stacked with Wanda: search and remove structures, then 50% unstructured Wanda.

TraceNAS (through the registry) removes whole key/value groups, FFN channels and layers and
`deploy` gives a physically smaller Llama; the core's one-shot Wanda then prunes single weights
of that smaller model from calibration activations. The composition must keep TraceNAS's
structure (fewer layers / narrower projections), reach Wanda's exact per-row sparsity on the
shrunk projections, and the shrunk model must compute what the masked one did.
"""

from __future__ import annotations

import torch

from sparse_tracenas import TraceNAS
from sparsecore import available_methods
from sparsecore.bench import tiny_llama
from sparsecore.bench.lm_bench import layer_targets

torch.set_num_threads(1)


def test_tracenas_then_wanda_on_the_shrunk_model():
    model = tiny_llama(seed=0, vocab_size=64, hidden_size=32, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                       max_position_embeddings=32)  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    calib = torch.randint(0, 64, (8, 16), generator=gen)
    method = available_methods()["tracenas"](
        sparsity=0.3, window=0.1, population=3, iterations=1, elites=2, mlp_block=16,
        min_layers=2,
    ).setup(model)  # fmt: skip
    assert isinstance(method, TraceNAS)
    method.calibrate([calib])
    with torch.no_grad():
        masked = model(input_ids=calib).logits
    small = method.deploy()
    with torch.no_grad():
        assert torch.allclose(small(input_ids=calib).logits, masked, atol=1e-5)
    c = method.candidate
    assert small.config.num_hidden_layers == c.depth
    kept = [i for i, on in enumerate(c.layers) if on]
    for j, i in enumerate(kept):
        layer = small.model.layers[j]
        assert layer.mlp.gate_proj.out_features == c.mlp[i] * 16
        assert layer.self_attn.o_proj.in_features == c.attn[i] * 2 * 8
    wanda = available_methods()["wanda"](sparsity=0.5, targets=layer_targets(small)).setup(small)
    wanda.calibrate([calib])
    final = wanda.finalize()
    for name in layer_targets(final):
        weight = dict(final.named_parameters())[name]
        zeros_per_row = (weight == 0).sum(1)
        assert bool((zeros_per_row == weight.shape[1] // 2).all()), name
    with torch.no_grad():
        assert torch.isfinite(final(input_ids=calib).logits).all()
