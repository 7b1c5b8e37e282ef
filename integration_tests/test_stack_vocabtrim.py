"""A drafter compressed twice: Wanda (sparsecore) on its body, VocabTrim on its head.

sparsecore's `Wanda` prunes 50% of every Linear of the drafter's decoder layers (its LM head
excluded), from calibration activations; `VocabTrim` then cuts the head to the ``k`` tokens the
target generates most. Speculative decoding with the doubly compressed drafter stays lossless
(greedy output equal to the target's own), Wanda's zeros survive the trim, and the head's
bytes shrink to ``k / V``.
"""

from __future__ import annotations

import copy

import torch

from sparse_vocabtrim import (
    VocabTrim,
    autoregressive_generate,
    decode_bytes,
    speculative_generate,
)
from sparse_vocabtrim.calibration import calibration_tokens
from sparsecore import Wanda
from sparsecore.bench.models import tiny_llama

torch.set_num_threads(1)


def test_wanda_body_plus_vocabtrim_head_stays_lossless() -> None:
    target = tiny_llama(seed=0, vocab_size=96, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, num_key_value_heads=2).eval()  # fmt: skip
    drafter = tiny_llama(seed=1, vocab_size=96, hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2).eval()  # fmt: skip
    prompts = torch.randint(0, 96, (4, 6), generator=torch.Generator().manual_seed(0))
    calib = calibration_tokens("target", prompts, target=target, max_new_tokens=16, seed=1)

    wanda = Wanda(sparsity=0.5, exclude=("lm_head.weight",)).setup(drafter)
    wanda.calibrate([torch.cat([prompts, calib], 1)])
    body_pruned = wanda.finalize()
    linear = body_pruned.model.layers[0].mlp.up_proj.weight
    assert abs(float((linear == 0).double().mean()) - 0.5) < 0.05

    trim = VocabTrim(keep=24).setup(copy.deepcopy(body_pruned))
    trim.calibrate([calib])
    both = trim.trimmed()
    assert both.lm_head.k == 24
    assert torch.equal(both.model.layers[0].mlp.up_proj.weight, linear)  # Wanda's zeros kept
    assert decode_bytes(both) < decode_bytes(body_pruned)

    reference, _ = autoregressive_generate(target, prompts, 12, temperature=0.0)
    out = speculative_generate(target, both, prompts, 12, gamma=3, temperature=0.0)
    assert torch.equal(out.tokens, reference)
