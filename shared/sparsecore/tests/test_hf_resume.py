"""Trainer checkpoint and resume: an interrupted run ends with the uninterrupted run's masks."""

from __future__ import annotations

import dataclasses

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate")

import sparsecore as sc  # noqa: E402
from sparsecore.integrations.hf import (  # noqa: E402
    METHOD_STATE_FILE,
    SparseTrainerCallback,
    fit_schedule_lengths,
)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_bert(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
        num_labels=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return transformers.BertForSequenceClassification(config)


def dataset() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        {"input_ids": torch.randint(0, 100, (12,), generator=g), "labels": torch.tensor(i % 2)}
        for i in range(64)
    ]


class StopAt(transformers.TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def trainer(model, method, out, extra=()) -> transformers.Trainer:
    args = transformers.TrainingArguments(
        output_dir=str(out),
        report_to="none",
        use_cpu=True,
        max_steps=8,
        per_device_train_batch_size=8,
        learning_rate=1e-2,
        save_strategy="steps",
        save_steps=2,
        logging_strategy="no",
        disable_tqdm=True,
        seed=5,
    )
    callbacks = [SparseTrainerCallback(method), *extra]
    return transformers.Trainer(
        model=model, args=args, train_dataset=dataset(), callbacks=callbacks
    )


def sparse_method() -> sc.SET:
    # SET grows at random: equal masks after resume need the method's generator restored too.
    # end_step is not given: the callback fits it to 75% of state.max_steps (6 of 8).
    return sc.SET(sparsity=0.7, update_every=2, drop_fraction=0.5, seed=3)


def test_interrupted_and_resumed_run_matches_uninterrupted(tmp_path) -> None:
    model_a, method_a = tiny_bert(0), sparse_method()
    trainer(model_a, method_a, tmp_path / "a").train()
    assert method_a.step == 8 and method_a.config.end_step == 6

    model_b, method_b = tiny_bert(0), sparse_method()
    trainer(model_b, method_b, tmp_path / "b", [StopAt(2)]).train()
    assert method_b.step == 2
    checkpoint = tmp_path / "b" / "checkpoint-2"
    assert (checkpoint / METHOD_STATE_FILE).is_file()

    model_c, method_c = tiny_bert(1), sparse_method()  # other init: weights must come from disk
    trainer(model_c, method_c, tmp_path / "b").train(resume_from_checkpoint=str(checkpoint))
    assert method_c.step == 8
    masks_a, masks_c = method_a.masks.masks(), method_c.masks.masks()
    assert masks_a.keys() == masks_c.keys()
    changed = 0
    for name in masks_a:
        assert torch.equal(masks_a[name], masks_c[name]), name
        changed += int((masks_a[name] != method_b.masks.mask(name)).sum())
    assert changed > 0  # the masks moved after step 2, so the comparison means something
    state_a, state_c = model_a.state_dict(), model_c.state_dict()
    for key in state_a:
        assert torch.allclose(state_a[key].float(), state_c[key].float(), atol=1e-6), key


def test_schedule_lengths_from_max_steps() -> None:
    gmp = sc.GMP(sparsity=0.8)  # end_step at its default of 1000: not given
    assert fit_schedule_lengths(gmp, 40) == {"end_step": 30}
    assert gmp.config.end_step == 30
    explicit = sc.GMP(sparsity=0.8, end_step=12)
    assert fit_schedule_lengths(explicit, 40) == {} and explicit.config.end_step == 12
    assert fit_schedule_lengths(sc.GMP(sparsity=0.8), 0) == {}
    assert dataclasses.asdict(gmp.config)["end_step"] == 30
