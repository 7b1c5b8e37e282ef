"""Structure groups of HF transformers: masked forward == shrunk model, reload, bad input."""

from __future__ import annotations

import copy
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from sparsecore.bench.models import tiny_bert, tiny_gpt2, tiny_llama  # noqa: E402
from sparsecore.structures import (  # noqa: E402
    describe,
    full_group_masks,
    group_members,
    group_scores,
    load_pretrained,
    mask_groups,
    masks_from_scores,
    shrink,
)


def _qwen2() -> torch.nn.Module:
    config = transformers.Qwen2Config(
        vocab_size=1000,
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=96,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        attn_implementation="eager",
    )
    with torch.random.fork_rng():
        torch.manual_seed(3)
        return transformers.Qwen2ForCausalLM(config)


MODELS = {
    "llama": lambda: tiny_llama(num_hidden_layers=3, num_attention_heads=8, num_key_value_heads=4),
    "qwen2": _qwen2,
    "bert": lambda: tiny_bert(num_hidden_layers=3),
    "gpt2": lambda: tiny_gpt2(n_layer=3),
}


def _ids(seed: int = 5, batch: int = 2, length: int = 10) -> torch.Tensor:
    return torch.randint(0, 1000, (batch, length), generator=torch.Generator().manual_seed(seed))


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def _random_masks(model: torch.nn.Module, seed: int = 0) -> dict:
    layout = describe(model)
    gen = torch.Generator().manual_seed(seed)
    heads, ffn = [], []
    for lay in layout.layers:
        h = torch.ones(lay.kv_heads, dtype=torch.bool)
        h[torch.randperm(lay.kv_heads, generator=gen)[: lay.kv_heads // 2]] = False
        heads.append(h)
        ffn.append(torch.rand(lay.intermediate, generator=gen) > 0.4)
    hidden = torch.ones(layout.hidden, dtype=torch.bool)
    hidden[torch.randperm(layout.hidden, generator=gen)[:16]] = False  # 48 kept: 8 | 48
    layers = torch.ones(len(layout.layers), dtype=torch.bool)
    layers[1] = False
    return {"heads": heads, "ffn": ffn, "hidden": hidden, "layers": layers}


def _expected_params(name: str, model: torch.nn.Module, masks: dict, vocab: int = 1000) -> int:
    """Parameter count of the shrunk model, from the group counts alone."""
    layout = describe(model)
    hidden = int(masks["hidden"].sum())
    kept = [i for i in range(len(layout.layers)) if masks["layers"][i]]
    total = 0
    for i in kept:
        lay = layout.layers[i]
        kv = int(masks["heads"][i].sum())
        q = kv * lay.group_size * lay.head_dim
        k = kv * lay.head_dim
        inter = int(masks["ffn"][i].sum())
        if name in ("llama", "qwen2"):
            total += hidden * q + 2 * hidden * k + q * hidden + 3 * hidden * inter + 2 * hidden
            total += (q + 2 * k) if name == "qwen2" else 0  # q/k/v biases
        else:  # bert, gpt2: q/k/v/o, fc1, fc2 with biases, two LayerNorms
            total += 3 * (hidden * q + q) + q * hidden + hidden
            total += hidden * inter + inter + inter * hidden + hidden + 4 * hidden
    if name in ("llama", "qwen2"):
        total += vocab * hidden + hidden + vocab * hidden  # embed, final norm, untied lm_head
    elif name == "gpt2":
        total += vocab * hidden + 128 * hidden + 2 * hidden  # wte (tied with lm_head), wpe, ln_f
    else:
        total += (1000 + 128 + 2) * hidden + 2 * hidden  # word/position/type, embedding LN
        total += hidden * 64 + 64 + 64 * 2 + 2  # pooler (keeps its width), classifier
    return total


@pytest.mark.parametrize("name", list(MODELS))
def test_shrunk_model_equals_masked_model_and_counts_match(name):
    model = MODELS[name]()
    masks = _random_masks(model)
    ids = _ids()
    dense = _logits(model, ids)
    with mask_groups(model, masks):
        masked = _logits(model, ids)
    assert (masked - dense).abs().max() > 1e-3  # the masks matter
    small = shrink(model, masks)
    assert type(small) is type(model)
    assert (_logits(small, ids) - masked).abs().max() <= 1e-5
    assert sum(p.numel() for p in small.parameters()) == _expected_params(name, model, masks)
    assert len(describe(small).layers) == 2
    # the user's model is untouched
    assert (_logits(model, ids) - dense).abs().max() == 0


@pytest.mark.parametrize("name", ["llama", "bert", "gpt2"])
def test_zero_gate_equals_zeroed_group_weights(name):
    """Brute-force reference: a 0 gate acts like zeroing every slice of the group."""
    model = MODELS[name]()
    params = dict(model.named_parameters())
    reference = copy.deepcopy(model)
    ref_params = dict(reference.named_parameters())
    layout = describe(model)
    masks = {"heads": [torch.ones(lay.kv_heads) for lay in layout.layers]}
    masks["ffn"] = [torch.ones(lay.intermediate) for lay in layout.layers]
    dropped = {("heads", 0, 1), ("heads", 2, 0), ("ffn", 1, 5), ("ffn", 0, 0), ("ffn", 0, 7)}
    with torch.no_grad():
        for kind in ("heads", "ffn"):
            for group in group_members(model, kind):
                if (kind, group.layer, group.index) in dropped:
                    masks[kind][group.layer][group.index] = 0.0
                    for pname, dim, idx in group.slices:
                        assert pname in params
                        ref_params[pname].index_fill_(dim, torch.tensor(idx), 0.0)
    ids = _ids(seed=9)
    with mask_groups(model, masks):
        masked = _logits(model, ids)
    assert (masked - _logits(reference, ids)).abs().max() <= 1e-5


def test_soft_gates_are_folded_exactly():
    model = MODELS["llama"]()
    layout = describe(model)
    gen = torch.Generator().manual_seed(1)
    masks = {
        "heads": torch.rand(3, layout.layers[0].heads, generator=gen) + 0.5,  # per query head
        "ffn": torch.rand(3, layout.layers[0].intermediate, generator=gen),
        "hidden": torch.rand(layout.hidden, generator=gen),
    }
    masks["ffn"][:, :10] = 0
    masks["hidden"][:8] = 0
    ids = _ids()
    with mask_groups(model, masks):
        masked = _logits(model, ids)
    small = shrink(model, masks)
    assert small.config.intermediate_size == layout.layers[0].intermediate - 10
    assert small.config.hidden_size == layout.hidden - 8
    assert (_logits(small, ids) - masked).abs().max() <= 1e-5


@pytest.mark.parametrize("name", ["llama", "bert", "gpt2"])
def test_save_and_reload_give_identical_logits(name, tmp_path):
    model = MODELS[name]()
    ids = _ids(seed=2)
    # uniform counts (same removal in every layer): the stock from_pretrained reloads llama;
    # bert/gpt2 derive the head width from hidden / heads, so they need load_pretrained
    scores = {k: group_scores(model, k) for k in ("heads", "ffn")}
    uniform = shrink(model, masks_from_scores(scores, {"heads": 0.5, "ffn": 0.3}))
    uniform.save_pretrained(tmp_path / "uniform")
    if name == "llama":
        assert uniform.config.sparsecore_structure["stock"]
        cls = type(model)
        stock = cls.from_pretrained(tmp_path / "uniform", attn_implementation="eager")
        assert stock.config.num_attention_heads == 4 and stock.config.num_key_value_heads == 2
        assert torch.equal(_logits(stock, ids), _logits(uniform, ids))
    reloaded = load_pretrained(tmp_path / "uniform", attn_implementation="eager")
    assert torch.equal(_logits(reloaded, ids), _logits(uniform, ids))
    # different counts per layer: load_pretrained resizes each layer
    ragged = shrink(model, _random_masks(model, seed=4))
    ragged.save_pretrained(tmp_path / "ragged")
    assert not ragged.config.sparsecore_structure["stock"]
    back = load_pretrained(tmp_path / "ragged", attn_implementation="eager")
    assert type(back) is type(model)
    assert torch.equal(_logits(back, ids), _logits(ragged, ids))


def test_llama_head_count_not_dividing_hidden_size_saves_with_placeholders(tmp_path):
    model = tiny_llama(hidden_size=160, num_attention_heads=10, num_key_value_heads=10)
    heads = torch.ones(2, 10, dtype=torch.bool)
    heads[:, :3] = False  # 7 heads of 16 in a hidden size of 160: LlamaConfig refuses 7
    small = shrink(model, {"heads": heads})
    small.save_pretrained(tmp_path)
    structure = small.config.sparsecore_structure
    assert structure["heads"] == [7, 7] and not structure["stock"]
    back = load_pretrained(tmp_path, attn_implementation="eager")
    assert [describe(back).layers[i].heads for i in range(2)] == [7, 7]
    ids = _ids()
    assert torch.equal(_logits(back, ids), _logits(small, ids))


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model, before):
    after = model.state_dict()
    hooks = [m for m in model.modules() if m._forward_hooks or m._forward_pre_hooks]
    return not hooks and all(torch.equal(before[k], after[k]) for k in before)


def test_bad_input_raises_naming_the_module_and_leaves_the_model_alone():
    model = MODELS["llama"]()
    before = _state(model)
    with pytest.raises(ValueError, match=r"model\.layers\.0\.self_attn has 4 key/value groups"):
        shrink(model, {"heads": torch.ones(3, 3)})
    with pytest.raises(ValueError, match=r"mlp\.down_proj has 128 intermediate"):
        mask_groups(model, {"ffn": torch.ones(3, 100)})
    with pytest.raises(ValueError, match=r"one row per layer \(3\)"):
        shrink(model, {"heads": torch.ones(2, 4)})
    no_heads = torch.ones(3, 4)
    no_heads[1] = 0
    with pytest.raises(ValueError, match=r"layers\.1\.self_attn: every head.*layers'\]\[1\] = 0"):
        shrink(model, {"heads": no_heads})
    # allowed as layer removal
    small = shrink(model, {"heads": no_heads, "layers": torch.tensor([1.0, 0.0, 1.0])})
    assert small.config.num_hidden_layers == 2
    misaligned = torch.ones(3, 8)
    misaligned[0, 1] = 0  # one query head of key/value group 0
    with pytest.raises(ValueError, match=r"layers\.0\.self_attn: GQA-misaligned.*\[0\]"):
        shrink(model, {"heads": misaligned})
    with pytest.raises(ValueError, match="layer gates must be 0 or 1"):
        shrink(model, {"layers": torch.tensor([1.0, 0.5, 1.0])})
    with pytest.raises(ValueError, match="unknown kind"):
        shrink(model, {"neurons": torch.ones(3)})
    with pytest.raises(ValueError, match="NaN"):
        mask_groups(model, {"hidden": torch.full((64,), float("nan"))})
    with pytest.raises(ValueError, match="Sequential: unknown architecture"):
        describe(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    assert _unchanged(model, before)
    gpt2 = MODELS["gpt2"]()
    with pytest.raises(ValueError, match="tied input/output embeddings"):
        shrink(gpt2, {"hidden": torch.linspace(0.5, 1.0, 64)})


def test_masked_lm_hidden_removal_is_refused():
    model = transformers.BertForMaskedLM(
        transformers.BertConfig(
            vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=32,
        )
    )  # fmt: skip
    hidden = torch.ones(32, dtype=torch.bool)
    hidden[0] = False
    with pytest.raises(ValueError, match=r"does not know how to slice 'cls\.predictions"):
        shrink(model, {"hidden": hidden})


def test_soft_gates_carry_gradients_and_in_place_updates_act():
    model = MODELS["llama"]()
    gates = full_group_masks(model)
    for value in (*gates["heads"], *gates["ffn"], gates["hidden"], gates["layers"]):
        value.requires_grad_(True)
    ids = _ids()
    masker = mask_groups(model, gates)
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    grads = [*gates["heads"], *gates["ffn"], gates["hidden"], gates["layers"]]
    assert all(g.grad is not None and bool(g.grad.abs().sum() > 0) for g in grads)
    before = _logits(model, ids)
    with torch.no_grad():
        gates["ffn"][0][:5] = 0  # in place: the next forward sees it
    assert (_logits(model, ids) - before).abs().max() > 1e-4
    with pytest.raises(ValueError, match="mask kinds must stay the same"):
        masker.update({"ffn": gates["ffn"]})
    masker.remove()
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_ffn_and_layer_removal_reload_with_the_stock_class(name, tmp_path):
    model = MODELS[name]()
    inter = describe(model).layers[0].intermediate
    ffn = torch.ones(3, inter, dtype=torch.bool)
    ffn[:, : inter // 4] = False  # the same count in every layer
    small = shrink(model, {"ffn": ffn, "layers": torch.tensor([True, False, True])})
    assert small.config.sparsecore_structure["stock"]
    small.save_pretrained(tmp_path)
    stock = type(model).from_pretrained(tmp_path, attn_implementation="eager")
    ids = _ids()
    assert len(describe(stock).layers) == 2
    assert torch.equal(_logits(stock, ids), _logits(small, ids))
