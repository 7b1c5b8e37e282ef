"""LoRA via peft on masked bases: group masks on W0 + BA, merges that keep pruned zeros."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from sparsecore.adapters import add_lora, lora_modules, mask_lora_delta, merge_lora
from sparsecore.bench.models import tiny_gpt2, tiny_llama
from sparsecore.patterns import NM
from sparsecore.select import select
from sparsecore.structures import describe, mask_groups, shrink


def _ids() -> torch.Tensor:
    return torch.randint(0, 1000, (2, 10), generator=torch.Generator().manual_seed(3))


def _logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def _lora(model):
    # random B (not peft's zero init) so that the adapters change the function
    return add_lora(model, r=4, alpha=8.0, init_lora_weights=False)


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
def test_group_masks_act_on_the_merged_path_then_shrink(build):
    base = build()
    layout = describe(base)
    ids = _ids()
    heads = torch.ones(2, layout.layers[0].kv_heads, dtype=torch.bool)
    heads[0, 1] = False
    ffn = torch.ones(2, layout.layers[0].intermediate, dtype=torch.bool)
    ffn[:, ::3] = False
    masks = {"heads": heads, "ffn": ffn}
    dense_base = _logits(base, ids)
    model = _lora(base)
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    with mask_groups(model, masks):
        masked = _logits(model, ids)
    merged = merge_lora(model)
    assert (_logits(merged, ids) - dense_base).abs().max() > 1e-3  # the adapters matter
    small = shrink(merged, masks)
    assert (_logits(small, ids) - masked).abs().max() <= 1e-5


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
def test_merged_weights_keep_exact_zeros_and_the_trained_function(build):
    base = build()
    gen = torch.Generator().manual_seed(7)
    params = dict(base.named_parameters())
    model = _lora(base)
    wrapped = lora_modules(model)
    masks = {}
    for i, key in enumerate(sorted(wrapped)[:4]):
        weight = params[key]
        if i % 2:  # 2:4 along the inputs (stored dim 1 of a Linear, dim 0 of a GPT-2 Conv1D)
            pattern = NM(2, 4, dim=1 if build is tiny_llama else 0)
            masks[key] = select(torch.rand(weight.shape, generator=gen), 0.5, pattern)
            assert int(masks[key].sum()) == weight.numel() // 2
        else:
            masks[key] = torch.rand(weight.shape, generator=gen) > 0.6
        with torch.no_grad():
            weight.mul_(masks[key])  # the pruned base
    ids = _ids()
    with mask_lora_delta(model, masks):
        trained = _logits(model, ids)
        # one training step: gradients reach the adapters only
        model.train()
        model(input_ids=ids, labels=ids).loss.backward()
        grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
        assert all(p.grad is None for n, p in model.named_parameters() if "lora_" not in n)
        trained = _logits(model, ids)
    unmasked_merge = {k: (w.base_layer.weight + 0) for k, w in wrapped.items()}
    merged = merge_lora(model, masks)
    merged_params = dict(merged.named_parameters())
    for key, keep in masks.items():
        assert torch.all(merged_params[key][~keep] == 0)
        assert bool((merged_params[key][keep] != unmasked_merge[key][keep]).any())
    assert (_logits(merged, ids) - trained).abs().max() <= 1e-5


def test_peft_merge_alone_would_refill_pruned_weights():
    """Why merge_lora re-masks: peft's merge adds the dense BA everywhere."""
    base = tiny_llama()
    key = "model.layers.0.mlp.up_proj.weight"
    keep = torch.rand(dict(base.named_parameters())[key].shape) > 0.5
    with torch.no_grad():
        dict(base.named_parameters())[key].mul_(keep)
    merged = _lora(base).merge_and_unload()
    assert bool((dict(merged.named_parameters())[key][~keep] != 0).any())


def test_bad_masks_are_refused_before_anything_changes():
    model = _lora(tiny_llama())
    with pytest.raises(ValueError, match="does not name a LoRA-wrapped layer"):
        mask_lora_delta(model, {"model.embed_tokens.weight": torch.ones(1000, 64)})
    key = "model.layers.0.self_attn.q_proj.weight"
    with pytest.raises(ValueError, match=r"q_proj\.weight': expected shape \(64, 64\)"):
        merge_lora(model, {key: torch.ones(3, 3, dtype=torch.bool)})
    assert hasattr(model, "peft_config")  # not merged
    with pytest.raises(ValueError, match="r must be"):
        add_lora(tiny_llama(), r=0)
    with pytest.raises(ValueError, match="merge the LoRA adapters first"):
        shrink(model, {"ffn": torch.ones(2, 128)})
