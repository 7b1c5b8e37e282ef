"""The sparsecore lifecycle: conformance suite, calibration, trimmed export, validation."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sparse_vocabtrim import VocabTrim, speculative_generate, trim_drafter
from sparse_vocabtrim.calibration import calibration_tokens
from sparsecore.testing import MethodConformance

VOCAB = 48


def tiny_lm(seed: int = 0) -> nn.Module:
    from sparsecore.bench.models import tiny_llama

    return tiny_llama(
        seed=seed, vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, intermediate_size=32,
    )  # fmt: skip


class TestVocabTrimConformance(MethodConformance):
    method_cls = VocabTrim
    train_steps = 8

    def make_model(self, seed: int = 0) -> nn.Module:
        return tiny_lm(seed)

    def make_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(1000 + step)
        # skewed ids, so that the counts rank the vocabulary
        ids = (torch.rand(4, 12, generator=gen) ** 3 * VOCAB).long()
        return ids, ids

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        ids, labels = batch
        return model(input_ids=ids, labels=labels).loss


def test_calibration_keeps_the_most_frequent_rows_exactly() -> None:
    model = tiny_lm()
    method = VocabTrim(keep=3).setup(model)
    assert method.masks.sparsity() == 0.0  # dense until calibrated
    method.calibrate([torch.tensor([[5, 5, 5, 7, 7, 2, 9]]), (torch.tensor([[7, 9, 9]]), None)])
    assert method.kept_ids.tolist() == [5, 7, 9]
    mask = method.masks.mask("lm_head.weight")
    assert mask[[5, 7, 9]].all() and mask.sum() == 3 * 16
    weight = model.lm_head.weight
    assert not weight[0].any() and weight[5].any()


def test_trimmed_drafter_is_the_head_cut_to_the_kept_rows() -> None:
    model = tiny_lm()
    original = copy.deepcopy(model)
    method = VocabTrim(sparsity=0.5).setup(model)
    method.calibrate([torch.arange(VOCAB).repeat_interleave(torch.arange(VOCAB) % 5 + 1)])
    small = method.trimmed()
    assert small.lm_head.k == VOCAB // 2
    x = torch.randint(0, VOCAB, (2, 5))
    torch.testing.assert_close(
        small(input_ids=x).logits, original(input_ids=x).logits[..., method.kept_ids], atol=1e-6,
        rtol=0,
    )  # fmt: skip
    final = method.finalize()
    again = method.trimmed(final)
    assert torch.equal(again.lm_head.weight, small.lm_head.weight)


def test_bad_options_raise_before_the_model_is_touched() -> None:
    with pytest.raises(ValueError, match="keep"):
        VocabTrim(keep=0)
    with pytest.raises(TypeError, match="keep"):
        VocabTrim(keep=2.5)
    model = tiny_lm()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="keep"):
        VocabTrim(keep=VOCAB + 1).setup(model)
    with pytest.raises(ValueError, match="targets"):
        VocabTrim(targets=("lm_head.weight", "model.layers.0.mlp.up_proj.weight")).setup(model)
    with pytest.raises(ValueError, match="pattern"):
        VocabTrim(pattern="unstructured").setup(model)
    with pytest.raises(ValueError, match="pattern"):
        VocabTrim(pattern="channel(dim=1)").setup(model)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with pytest.raises(RuntimeError, match="calibrate"):
        VocabTrim(keep=4).setup(model).trimmed()


def test_calibration_sources(pair) -> None:
    target, drafter = pair
    prompts = torch.randint(0, 64, (5, 4), generator=torch.Generator().manual_seed(0))
    text = calibration_tokens("text", prompts)
    assert torch.equal(text, prompts)
    gen_t = calibration_tokens("target", prompts, target=target, max_new_tokens=12,
                               temperature=0.0)  # fmt: skip
    gen_d = calibration_tokens("drafter", prompts, drafter=drafter, max_new_tokens=12,
                               temperature=0.0)  # fmt: skip
    assert gen_t.shape == gen_d.shape == (5, 12)
    assert not torch.equal(gen_t, gen_d)
    with pytest.raises(ValueError, match="source"):
        calibration_tokens("web", prompts)
    with pytest.raises(ValueError, match="target"):
        calibration_tokens("target", prompts)
    # the target as its own drafter, trimmed to exactly the tokens of its greedy generations:
    # every draft is accepted (tau = gamma + 1); dropping the most frequent one breaks that
    needed = gen_t.unique().numel()
    method = VocabTrim(keep=needed).setup(copy.deepcopy(target))
    method.calibrate([gen_t])
    assert method.kept_ids.tolist() == gen_t.unique().tolist()
    out = speculative_generate(target, method.trimmed(), prompts, 6, 3, 0.0)
    assert out.block_efficiency == pytest.approx(4.0)
    missing = method.kept_ids[method.kept_ids != gen_t[0, 0]]  # row 0's first token dropped
    out = speculative_generate(target, trim_drafter(target, missing), prompts, 6, 3, 0.0)
    assert out.block_efficiency < 4.0
