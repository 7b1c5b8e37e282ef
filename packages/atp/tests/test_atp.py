"""ATP's mechanisms: hard decisions with STE gradients, the budget, the lasso, the alternation."""

import copy

import pytest
import torch

from sparse_atp import (
    ATP,
    GroupCosts,
    budget_penalty,
    group_lasso,
    gumbel_sigmoid_ste,
    project_to_budget,
    remaining_fraction,
)
from sparsecore.adapters import add_lora, merge_lora
from sparsecore.bench import tiny_bert, tiny_llama
from sparsecore.structures import mask_groups

torch.set_num_threads(1)
CONFIG = dict(
    vocab_size=64, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
    intermediate_size=64, max_position_embeddings=32,
)  # fmt: skip


def lora_llama(seed: int = 0, r: int = 4) -> torch.nn.Module:
    model = tiny_llama(seed=seed, **CONFIG)
    torch.manual_seed(seed + 1)
    return add_lora(model, r=r, alpha=2 * r)


def batch(step: int) -> torch.Tensor:
    return torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(step))


def train(model, method, opt, steps, start=0):
    model.train()
    for step in range(start, start + steps):
        ids = batch(step)
        loss = model(input_ids=ids, labels=ids).loss + method.regularization()
        opt.zero_grad()
        loss.backward()
        opt.step()


def setup(seed=0, r=4, lr=1e-2, **options):
    model = lora_llama(seed, r)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    method = ATP(**{"sparsity": 0.4, "search_steps": 8, "generator_lr": 0.05, **options})
    return model, opt, method.setup(model, opt)


def test_group_costs_count_every_projection_weight_once():
    model = lora_llama()
    costs = GroupCosts(model)
    base = tiny_llama(seed=0, **CONFIG)
    names = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    want = sum(p.numel() for n, p in base.named_parameters() if any(k in n for k in names))
    assert costs.total == want
    # a head group: 2 query heads of 8 rows, one key and one value head, 16 output columns
    assert costs.heads.shape == (2, 2) and float(costs.heads[0, 0]) == (16 + 8 + 8 + 16) * 32
    assert costs.ffn.shape == (2, 64) and float(costs.ffn[0, 0]) == 3 * 32
    masks = costs.weight_masks(
        torch.tensor([[True, False], [True, True]]), torch.ones(2, 64, dtype=torch.bool),
        dict(model.named_parameters()),
    )  # fmt: skip
    removed = sum(int((~m).sum()) for m in masks.values())
    assert removed == float(costs.heads[0, 1])


def test_gumbel_sigmoid_ste_is_hard_forward_soft_backward():
    logits = torch.randn(5, 7, requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    hard, soft = gumbel_sigmoid_ste(logits, 0.4, 3.0, gen)
    assert set(hard.detach().unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(hard.detach(), (soft.detach() >= 0.5).float())
    weights = torch.randn(5, 7)
    (hard * weights).sum().backward()
    grad_hard = logits.grad.clone()
    logits.grad = None
    _, soft2 = gumbel_sigmoid_ste(logits, 0.4, 3.0, torch.Generator().manual_seed(0))
    (soft2 * weights).sum().backward()
    assert torch.allclose(grad_hard, logits.grad)


def test_budget_penalty_is_zero_at_target_and_positive_around_it():
    assert float(budget_penalty(torch.tensor(0.6), 0.6)) == pytest.approx(0.0, abs=1e-6)
    assert float(budget_penalty(torch.tensor(0.5), 0.6)) > 0
    assert float(budget_penalty(torch.tensor(0.7), 0.6)) > 0
    costs = GroupCosts(lora_llama())
    ones_h, ones_f = torch.ones(2, 2), torch.ones(2, 64)
    assert float(remaining_fraction(ones_h, ones_f, costs)) == pytest.approx(1.0)


def test_project_to_budget_fits_and_is_maximal():
    costs = GroupCosts(lora_llama())
    gen = torch.Generator().manual_seed(3)
    hs, fs = torch.randn(2, 2, generator=gen), torch.randn(2, 64, generator=gen)
    heads, ffn = project_to_budget(hs, fs, costs, 0.6)
    kept = float((costs.heads * heads).sum() + (costs.ffn * ffn).sum())
    assert kept <= 0.6 * costs.total
    assert heads.any(1).all() and ffn.any(1).all()
    free = 0.6 * costs.total - kept
    assert float(costs.ffn[~ffn].min()) > free or bool(ffn.all())  # no unkept group still fits
    assert float(costs.heads[~heads].min()) > free if (~heads).any() else True


def test_forward_uses_hard_decisions_and_the_generator_gets_gradients():
    model, _, method = setup()
    ids = batch(0)
    model.train()
    loss = model(input_ids=ids, labels=ids).loss
    d = method.decisions
    assert d is not None
    for key in ("heads", "ffn"):
        assert set(d[key].detach().unique().tolist()) <= {0.0, 1.0}
    masked = method.masker.masks["ffn"][0]
    assert torch.equal(masked.detach(), d["ffn"][0].detach())
    loss.backward()
    grads = [p.grad for p in method.generator_net.parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_decisions_change_early_and_the_final_model_is_within_budget():
    model, opt, method = setup(search_steps=12)
    train(model, method, opt, 16)
    changes = [
        int((a[0] ^ b[0]).sum() + (a[1] ^ b[1]).sum())
        for a, b in zip(method.history, method.history[1:], strict=False)
    ]
    assert sum(changes[:12]) > 0  # the decisions move while the generator trains
    assert method.fixed is not None
    ids = batch(99)
    small = method.compress({"input_ids": ids})
    costs = GroupCosts(tiny_llama(seed=0, **CONFIG))
    names = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    left = sum(p.numel() for n, p in small.named_parameters() if any(k in n for k in names))
    assert left <= 0.6 * costs.total
    assert left > 0.6 * costs.total - float(costs.ffn.max())


def test_alternation_updates_one_side_per_step():
    model, opt, method = setup()
    gen = copy.deepcopy(method.generator_net.state_dict())
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    train(model, method, opt, 1)  # step 0: the generator's turn
    assert any(not torch.equal(gen[k], v) for k, v in method.generator_net.state_dict().items())
    assert all(torch.equal(lora[n], p) for n, p in model.named_parameters() if "lora_" in n)
    gen = copy.deepcopy(method.generator_net.state_dict())
    train(model, method, opt, 1, start=1)  # step 1: LoRA's turn
    assert all(torch.equal(gen[k], v) for k, v in method.generator_net.state_dict().items())
    assert any(not torch.equal(lora[n], p) for n, p in model.named_parameters() if "lora_" in n)
    # without alternation both sides move on the same step
    model, opt, method = setup(alternate=False)
    gen = copy.deepcopy(method.generator_net.state_dict())
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    train(model, method, opt, 1)
    assert any(not torch.equal(gen[k], v) for k, v in method.generator_net.state_dict().items())
    assert any(not torch.equal(lora[n], p) for n, p in model.named_parameters() if "lora_" in n)


def _removal_error(lasso_weight: float) -> tuple[float, float]:
    """Train only the LoRA factors (rank = hidden size) of the pretrained micro Llama on stdlib
    text with fixed pruned groups masked; return the max logit change between the merged model
    *without* the mask and the pruned model, and the logits' max magnitude.
    """
    from sparsecore.bench.lm import load_lm_task
    from sparsecore.bench.pretrained import pretrained_tiny_lm

    task = load_lm_task(seq_len=64, max_train_bytes=40_000, max_eval_bytes=4_096)
    base = pretrained_tiny_lm("micro", progress=False)
    torch.manual_seed(1)
    model = add_lora(base, r=32, alpha=64)
    heads = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ffn = torch.ones(2, 64)
    ffn[:, 40:] = 0
    masks = {"heads": list(heads.unbind(0)), "ffn": list(ffn.unbind(0))}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    with mask_groups(model, masks):
        for step in range(40):
            ids = task.train_blocks[4 * step : 4 * step + 4]
            loss = model(input_ids=ids, labels=ids).loss
            loss = loss + lasso_weight * group_lasso(model, heads, ffn)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    ids = task.eval_blocks[:4]
    with torch.no_grad(), mask_groups(model, masks):
        pruned = model(input_ids=ids).logits
    merged = merge_lora(model)
    with torch.no_grad():
        unmasked = merged(input_ids=ids).logits
    return float((unmasked - pruned).abs().max()), float(pruned.abs().max())


def test_group_lasso_makes_removal_lossless():
    """With the lasso the pruned groups of W0 + BA vanish; without it they stay (W0 is frozen)."""
    (with_lasso, scale), (without, _) = _removal_error(50.0), _removal_error(0.0)
    assert scale > 1.0  # a trained model's logits, not a collapsed one
    assert with_lasso < 0.01
    assert without > 0.3


def test_group_lasso_is_zero_without_pruned_groups_and_reaches_only_lora():
    model = lora_llama()
    zero = group_lasso(model, torch.ones(2, 2), torch.ones(2, 64))
    assert float(zero) == 0.0
    value = group_lasso(model, torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.ones(2, 64))
    value.backward()
    assert float(value) > 0
    frozen = [p for n, p in model.named_parameters() if "base_layer" in n]
    assert all(p.grad is None for p in frozen)
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0
        for n, p in model.named_parameters()
        if "lora_B" in n
    )


def test_eval_decisions_are_deterministic():
    model, _, _ = setup()
    model.eval()
    ids = batch(5)
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, model(input_ids=ids).logits
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("field", "value"),
    [("search_steps", 0), ("budget_weight", -1.0), ("lasso_target", "rows"), ("temperature", 0.0),
     ("alternate", "yes"), ("generator_lr", 0.0), ("pattern", "2:4")],
)  # fmt: skip
def test_bad_options_name_the_field(field, value):
    with pytest.raises((TypeError, ValueError), match=field):
        ATP(**{field: value})


def test_non_llama_model_is_refused_before_touching_it():
    model = tiny_bert(num_labels=2)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="model"):
        ATP().setup(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not hasattr(model, "atp_generator")
