"""Compresso end to end on a tiny LoRA Llama: physical removal, prompt, ablation, errors."""

import copy

import pytest
import torch

from sparse_compresso import COLLABORATIVE_PROMPT, Compresso, format_example, tokenize_example
from sparse_compresso.examples import tiny_lora_llama, token_batch
from sparse_compresso.prompt import IGNORE_INDEX, Example, instruction_examples
from sparsecore.bench import tiny_bert
from sparsecore.bench.lm import load_lm_task
from sparsecore.structures import load_pretrained
from sparsecore.testing import model_fingerprint


def _train(steps: int, regularize: bool = True, **options):
    model = tiny_lora_llama()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    config = {"sparsity": 0.5, "prune_steps": 10, "warmup_steps": 4, "reg_lr": 1.0, **options}
    method = Compresso(**config).setup(model, opt)
    model.train()
    for step in range(steps):
        ids = token_batch(step)
        loss = model(input_ids=ids, labels=ids).loss
        if regularize:
            loss = loss + method.regularization()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, method


def test_masked_model_equals_physically_pruned_model(tmp_path) -> None:
    model, method = _train(14)
    assert method.fixed and method.pruned_sparsity() > 0.2
    ids = token_batch(99)
    small = method.compress({"input_ids": ids})
    model.eval()
    with torch.no_grad():
        want, got = model(input_ids=ids).logits, small(input_ids=ids).logits
    assert torch.allclose(want, got, atol=1e-5)
    gates = method.group_masks()
    assert small.config.hidden_size == int((gates["hidden"] != 0).sum())
    assert small.num_parameters() < model.get_base_model().num_parameters()
    small.save_pretrained(tmp_path)
    again = load_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.allclose(again(input_ids=ids).logits, got, atol=1e-6)


def test_training_forwards_sample_and_evaluation_is_deterministic() -> None:
    model, _ = _train(2)
    ids = token_batch(5)
    model.train()
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, model(input_ids=ids).logits
    assert not torch.equal(a, b)  # fresh gate samples per training forward
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)


def test_without_the_lagrangian_nothing_is_pruned() -> None:
    """Ablation: the size constraint is what prunes (the LM loss alone keeps almost every gate)."""
    _, with_reg = _train(10)
    _, without = _train(10, regularize=False)
    assert with_reg.pruned_sparsity() > 0.2
    assert without.pruned_sparsity() < 0.05
    assert with_reg.pruned_sparsity() > without.pruned_sparsity() + 0.2
    assert with_reg.expected_sparsity() > without.expected_sparsity() + 0.2


def test_prune_kinds_ablation_keeps_hidden() -> None:
    _, method = _train(10, prune=("heads", "ffn"))
    gates = method.group_masks()
    assert "hidden" not in gates and method.pruned_sparsity() > 0.0


def test_finalize_keeps_the_evaluation_function() -> None:
    model, method = _train(12)
    ids = token_batch(7)
    model.eval()
    with torch.no_grad():
        want = model(input_ids=ids).logits
    final = method.finalize()
    assert not hasattr(final, "compresso_l0")
    with torch.no_grad():
        assert torch.allclose(final(input_ids=ids).logits, want, atol=1e-6)
    small = method.compress({"input_ids": ids})
    with torch.no_grad():
        assert torch.allclose(small(input_ids=ids).logits, want, atol=1e-5)
    # why the GroupMasker stays (see Compresso.finalize): the kept gates are soft, so the baked
    # 0/1 weight masks alone do not compute the evaluation function
    gates = method.group_masks()
    kept = torch.cat(
        [t.flatten() for v in gates.values() for t in (v if isinstance(v, list) else [v])]
    )
    assert bool(((kept > 0) & (kept < 1)).any())
    method.masker.remove()
    with torch.no_grad():
        assert not torch.allclose(final(input_ids=ids).logits, want, atol=1e-3)


def test_tokenised_inputs_start_with_the_collaborative_prompt() -> None:
    task = load_lm_task(max_train_bytes=20_000, max_eval_bytes=2_000)
    texts = [task.decode(b.tolist()) for b in task.train_blocks[:40]]
    examples = instruction_examples(texts, 8, seed=0)
    prompt_ids = task.encode(COLLABORATIVE_PROMPT)
    for ex in examples:
        ids, labels = tokenize_example(ex, task.encode, "long")
        assert torch.equal(ids[: prompt_ids.numel()], prompt_ids)
        source = task.encode(format_example(ex, "long"))
        assert bool((labels[: source.numel()] == IGNORE_INDEX).all())
        assert torch.equal(labels[source.numel() :], task.encode(ex.output))
        plain, _ = tokenize_example(ex, task.encode, "none")
        assert not torch.equal(plain[: prompt_ids.numel()], prompt_ids)
    no_input = Example("Name it.", "", "x")
    assert format_example(no_input).endswith("###User Instruction:\nName it.\n\n### Response:")


def test_bad_inputs_raise_before_the_model_is_touched() -> None:
    with pytest.raises(ValueError, match="prune"):
        Compresso(prune=("heads", "layers"))
    with pytest.raises(ValueError, match="pattern"):
        Compresso(pattern="2:4")
    bert = tiny_bert(num_labels=2)
    before = copy.deepcopy(bert.state_dict())
    with pytest.raises(ValueError, match="Llama"):
        Compresso().setup(bert)
    assert all(torch.equal(v, before[k]) for k, v in bert.state_dict().items())
    model = tiny_lora_llama()
    fingerprint = model_fingerprint(model)
    with pytest.raises(ValueError, match="targets"):
        Compresso(targets=("lm_head.weight",)).setup(model)
    assert model_fingerprint(model).keys() == fingerprint.keys()


def test_optimizer_holding_the_gates_is_refused() -> None:
    model = tiny_lora_llama()
    method = Compresso(prune_steps=4).setup(model)
    with pytest.raises(ValueError, match="compresso_l0"):
        method.attach(torch.optim.AdamW(model.parameters(), lr=1e-3))
