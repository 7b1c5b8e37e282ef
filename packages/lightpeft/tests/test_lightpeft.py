"""Light-PEFT tests that would catch a fake: exact counts, removal equivalence, hand-computed
importances, and the L1 gates shrinking faster on heads that only see noise."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparse_lightpeft import (
    ImportanceRecorder,
    LightPEFT,
    PrunePlan,
    lighten,
    load_lightened,
    lora_layers,
    p2_ratio,
    rank_importance,
    select_global,
    select_layerwise,
    select_modules,
    select_ranks,
)
from sparsecore.adapters import add_lora
from sparsecore.bench import tiny_bert

torch.set_num_threads(1)


def _lora_bert(seed: int = 0, r: int = 4) -> nn.Module:
    model = tiny_bert(
        num_labels=3, seed=seed, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    torch.manual_seed(seed + 1)
    return add_lora(model, r=r, alpha=8, modules_to_save=["classifier"])


def _batch(step: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(500 + step)
    ids = torch.randint(1, 1000, (6, 10), generator=gen)
    mask = torch.ones_like(ids)
    mask[:3, 7:] = 0
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": torch.randint(0, 3, (6,), generator=gen),
    }


def _train(model: nn.Module, method: LightPEFT, opt: torch.optim.Optimizer, steps: int) -> None:
    for step in range(steps):
        loss = model(**_batch(step)).loss + method.regularization()
        opt.zero_grad()
        loss.backward()
        opt.step()


# ---------------------------------------------------------------------- selection counts
def test_layerwise_and_global_counts_equal_ratio_times_total() -> None:
    gen = torch.Generator().manual_seed(0)
    scores = [torch.rand(12, generator=gen) for _ in range(6)]
    keeps = select_layerwise(scores, 1 / 3)
    assert [int((~k).sum()) for k in keeps] == [4] * 6
    for s, k in zip(scores, keeps, strict=True):  # the removed ones are the lowest of the layer
        assert s[~k].max() < s[k].min()
    ffn = [torch.rand(1536, generator=gen) for _ in range(6)]
    keeps = select_global(ffn, 1 / 3)
    assert sum(int((~k).sum()) for k in keeps) == round(6 * 1536 / 3)
    flat, kept = torch.cat(ffn), torch.cat(keeps)
    assert flat[~kept].max() < flat[kept].min()


def test_global_selection_keeps_one_unit_per_layer() -> None:
    scores = [torch.zeros(4), torch.ones(4)]  # a global threshold would empty layer 0
    keeps = select_global(scores, 0.5)
    assert int(keeps[0].sum()) == 1 and int(keeps[1].sum()) == 3


def test_module_and_rank_selection_counts() -> None:
    p2 = {f"m{i}": float(v) for i, v in enumerate([0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4])}
    keep = select_modules(p2, 0.75)
    assert sorted(n for n, k in keep.items() if k) == ["m2", "m6"]
    imp = {"a": torch.tensor([0.0, 0.0, 0.0, 0.0]), "b": torch.tensor([1.0, 2.0, 3.0, 4.0])}
    ranks = select_ranks(imp, 0.5)
    assert not ranks["a"].any()  # the whole module loses its ranks: deleted
    assert ranks["b"].all()
    layer = select_ranks(imp, 0.5, scope="layer")
    assert [int(k.sum()) for k in layer.values()] == [2, 2]


# ---------------------------------------------------------------------- importances
def test_rank_importance_matches_hand_computation() -> None:
    gen = torch.Generator().manual_seed(1)
    a, ga = torch.randn(3, 5, generator=gen), torch.randn(3, 5, generator=gen)
    b, gb = torch.randn(7, 3, generator=gen), torch.randn(7, 3, generator=gen)
    want = []
    for k in range(3):
        sa = sum(float(a[k, j] * ga[k, j]) for j in range(5)) / 5
        sb = sum(float(b[i, k] * gb[i, k]) for i in range(7)) / 7
        want.append(abs(sa) + abs(sb))
    assert torch.allclose(rank_importance(a, ga, b, gb), torch.tensor(want), atol=1e-6)
    ga[0, 0] = float("nan")
    assert rank_importance(a, ga, b, gb)[0] == 0  # NaN -> 0


def test_p2_and_rank_importance_on_a_built_lora() -> None:
    model = _lora_bert()
    layers = lora_layers(model)
    name = next(n for n in layers if n.endswith("layer.0.attention.self.query"))
    layer = layers[name]
    with torch.no_grad():  # a nonzero B so the LoRA branch contributes
        layer.lora_B["default"].weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(3))
    recorder = ImportanceRecorder(model, layers)
    recorder.active = True
    seen = {}
    handle = layer.register_forward_pre_hook(lambda m, args: seen.update(x=args[0].detach()))
    batch = _batch(0)
    model.train()
    model(**batch).loss.backward()
    handle.remove()
    recorder.record_ranks()
    x = seen["x"]
    base = layer.base_layer
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    scale = layer.scaling["default"]
    ratios = []
    for i in range(x.shape[0]):
        for t in range(x.shape[1]):
            if batch["attention_mask"][i, t] != 1:
                continue
            wx = base.weight @ x[i, t] + base.bias
            dx = scale * (b @ (a @ x[i, t]))
            ratios.append(float(dx.norm() / wx.norm()))
    assert recorder.p2_count[name] == 1
    assert recorder.p2_scores()[name] == pytest.approx(sum(ratios) / len(ratios), rel=1e-5)
    want = (a * a.grad).mean(1).abs() + (b * b.grad).mean(0).abs()
    assert torch.allclose(recorder.rank_scores()[name], want.detach(), atol=1e-8)
    assert recorder.rank_count == 1
    recorder.remove()


def test_importances_average_over_the_second_half_only() -> None:
    model = _lora_bert()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    method = LightPEFT(estimate_steps=6).setup(model, opt)
    _train(model, method, opt, 6)
    recorder = method.recorder
    assert recorder.rank_count == 3
    assert set(recorder.p2_count.values()) == {3}
    assert p2_ratio(torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)) == 0  # 0/0 -> 0


# ---------------------------------------------------------------------- stage 2 end to end
def test_prune_counts_and_lightened_model_is_equivalent_and_reloads(tmp_path) -> None:
    model = _lora_bert()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    method = LightPEFT(sparsity=0.5, estimate_steps=8, module_ratio=0.25, rank_ratio=0.5)
    method.setup(model, opt)
    assert any(g.get("lightpeft_gates") for g in opt.param_groups)
    _train(model, method, opt, 10)  # 8 estimation steps, 2 fine-tuning steps in place
    counts = method.plan.counts()
    assert counts["heads_removed"] == 4 and counts["ffn_removed"] == 128  # 0.5 x 8, 0.5 x 256
    alive = [n for n, k in method.plan.ranks.items() if k.any()]
    dropped_by_p2 = [n for n, k in select_modules(method.plan.p2, 0.25).items() if not k]
    assert len(dropped_by_p2) == 3 and not set(dropped_by_p2) & set(alive)
    kept_ranks = sum(int(method.plan.ranks[n].sum()) for n in alive)
    assert kept_ranks == 9 * 4 - round(0.5 * 9 * 4)
    light = method.lighten()
    base_params = sum(p.numel() for p in model.get_base_model().parameters() if not p.requires_grad)
    small = light.model.get_base_model()
    small_params = sum(p.numel() for p in small.parameters() if not p.requires_grad)
    assert small_params < base_params
    trainable = sum(p.numel() for n, p in light.model.named_parameters() if "lora_" in n)
    assert trainable == sum(
        int(k.sum())
        * (light.model.get_submodule(n).in_features + light.model.get_submodule(n).out_features)
        for n, k in method.plan.ranks.items()
        if k.any()
    )
    batch = _batch(77)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    model.eval()
    light.model.eval()
    with torch.no_grad():
        want = model(**inputs).logits
        assert torch.allclose(light.model(**inputs).logits, want, atol=1e-5)
    light.save(tmp_path)
    reloaded = load_lightened(tmp_path).eval()
    assert type(reloaded).__name__ == "PeftModel"
    with torch.no_grad():
        assert torch.allclose(reloaded(**inputs).logits, want, atol=1e-5)


def test_finalize_gives_plain_masked_model_without_gates() -> None:
    model = _lora_bert()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    method = LightPEFT(sparsity=0.5, estimate_steps=4).setup(model, opt)
    _train(model, method, opt, 4)
    final = method.finalize()
    assert not any("lightpeft_gates" in k or k.endswith("_mask") for k in final.state_dict())
    assert not any(m._forward_pre_hooks for m in final.modules())


def test_plain_model_without_lora_is_supported() -> None:
    model = tiny_bert(num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    method = LightPEFT(sparsity=0.5, estimate_steps=3).setup(model, opt)
    _train(model, method, opt, 3)
    light = method.lighten()
    assert light.peft_model is None
    assert light.base.config.sparsecore_structure["heads"] == [2, 2]


def test_hand_built_plan_removal_leaves_output_unchanged() -> None:
    """Heads / neurons / ranks chosen by hand: the lightened model equals the masked one."""
    model = _lora_bert(seed=2)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    method = LightPEFT(sparsity=0.25, estimate_steps=100).setup(model, opt)
    for layer in lora_layers(model).values():
        with torch.no_grad():
            layer.lora_B["default"].weight.normal_(
                0, 0.2, generator=torch.Generator().manual_seed(9)
            )
    ranks = {n: torch.tensor([True, False, True, True]) for n in lora_layers(model)}
    first = next(iter(ranks))
    ranks[first] = torch.zeros(4, dtype=torch.bool)  # one module deleted
    plan = PrunePlan(
        [torch.tensor([True, False, True, True]), torch.tensor([False, True, True, False])],
        [torch.arange(128) % 3 != 0, torch.arange(128) % 2 == 0],
        ranks,
        {},
        {},
    )
    method.plan = plan
    method._apply_plan()
    batch = _batch(5)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    light = lighten(model, plan, inputs, exclude=("lightpeft_gates",))
    model.eval()
    light.model.eval()
    with torch.no_grad():
        assert torch.allclose(model(**inputs).logits, light.model(**inputs).logits, atol=1e-5)
    assert light.base.config.sparsecore_structure["heads"] == [3, 2]
    assert first not in lora_layers(light.model)


# ---------------------------------------------------------------------- L1 on noise heads
def _noise_head_task(seed: int, l1: float) -> tuple[float, float]:
    """Head 0 reads the signal dimensions; head 1 reads only fresh noise, and its output never
    reaches the classifier (zero output-projection columns), so only L1 acts on its gate."""
    torch.manual_seed(seed)
    model = tiny_bert(
        num_labels=2,
        seed=seed,
        num_hidden_layers=1,
        num_attention_heads=2,
        hidden_size=16,
        intermediate_size=16,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.2,
    )
    attn = model.bert.encoder.layer[0].attention.self
    with torch.no_grad():
        attn.value.weight[8:, :8] = 0  # head 1 (features 8..15) reads only the noise dims 8..15
        attn.value.weight[:8, 8:] = 0  # head 0 reads only the signal dims 0..7
        model.bert.encoder.layer[0].attention.output.dense.weight[:, 8:] = 0  # head 1 is mute
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.classifier.parameters():
        p.requires_grad_(True)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    method = LightPEFT(sparsity=0.5, estimate_steps=100, l1=l1, mask_lr_coef=10.0).setup(model, opt)
    gen = torch.Generator().manual_seed(seed + 100)
    for _ in range(60):
        y = torch.randint(0, 2, (16,), generator=gen)
        x = torch.zeros(16, 8, 16)
        x[:, :, 8:] = torch.randn(16, 8, 8, generator=gen)  # fresh noise in dims 8..15
        pos = torch.randint(1, 8, (16,), generator=gen)  # position 0 (read by the pooler) holds
        x[torch.arange(16), pos, :8] = (2.0 * y - 1.0)[:, None] * 2.0  # no signal: fetch it
        logits = model(inputs_embeds=x).logits
        loss = nn.functional.cross_entropy(logits, y) + method.regularization()
        opt.zero_grad()
        loss.backward()
        opt.step()
    gates = method.gates.heads[0].detach()
    return float(gates[0]), float(gates[1])


def test_l1_shrinks_noise_head_masks_faster() -> None:
    for seed in range(3):
        informative, noise = _noise_head_task(seed, l1=1e-2)
        # no task gradient: exactly 60 SGD steps of lr x coef x l1 = 0.1 x 10 x 0.01 on |m|
        assert noise == pytest.approx(1.0 - 60 * 0.1 * 10 * 1e-2, abs=1e-5)
        assert informative > noise + 0.2, (seed, informative, noise)
        free_informative, free_noise = _noise_head_task(seed, l1=0.0)
        assert free_noise == 1.0  # without the penalty the noise head's mask does not move
        assert free_informative > informative  # the penalty also pulls the informative mask
