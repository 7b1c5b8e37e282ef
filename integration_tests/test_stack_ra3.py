"""RA3's action pruning on a Wanda-pruned LM: action sparsity stacked on weight sparsity.

The core's one-shot Wanda (50%, through the registry) prunes a tiny Llama on the RA3 toy's
vocabulary (bytes, ``<eos>``, latent tokens); `ActionPruning` (a procedure, through its registry)
then restricts the sparse model's action space to the tokens of expert programs. The
composition must keep Wanda's exact zeros (the hook only masks logits), give ``-inf`` exactly on
the pruned tokens and the sparse model's logits bit-identical on the kept ones, and detach to the
plain sparse model.
"""

from __future__ import annotations

import torch

from sparse_ra3 import EOS, FIRST_LATENT, ActionPruning, make_programs
from sparse_ra3.latents import expert_ids
from sparsecore import available_methods, available_procedures
from sparsecore.bench import tiny_llama

torch.set_num_threads(1)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_wanda_then_action_pruning():
    vocab = FIRST_LATENT + 4
    model = tiny_llama(
        seed=0, vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, intermediate_size=64,
    ).eval()  # fmt: skip
    programs = make_programs(40, seed=0)
    seqs = [torch.tensor([expert_ids(p)]) for p in programs[:4]]
    wanda = available_methods()["wanda"](sparsity=0.5).setup(model)
    wanda.calibrate(seqs)
    model = wanda.finalize()
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if "proj" in n}
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    assert zeros == sum(w.numel() for w in weights.values()) // 2

    cls = available_procedures()["ra3"]
    assert cls is ActionPruning
    pruning = cls.from_demonstrations([expert_ids(p) for p in programs], vocab, always_keep=(EOS,))
    ids = torch.tensor([expert_ids(programs[-1])])
    sparse_logits = _logits(model, ids)
    with pruning.attach(model):
        pruned = _logits(model, ids)
    keep = pruning.keep
    assert 10 < int(keep.sum()) < 40  # the programs' bytes and <eos>
    assert torch.isneginf(pruned[..., ~keep]).all()
    assert torch.equal(pruned[..., keep], sparse_logits[..., keep])
    assert torch.equal(_logits(model, ids), sparse_logits)  # detached: the plain sparse model
    for n, p in model.named_parameters():
        if n in weights:
            assert torch.equal(p, weights[n])  # Wanda's zeros (and every weight) untouched
