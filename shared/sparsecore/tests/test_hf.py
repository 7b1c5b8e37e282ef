"""The Hugging Face TrainerCallback adapter, on a tiny random BERT."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

import sparsecore as sc  # noqa: E402
from sparsecore.integrations.hf import SparseTrainerCallback, unwrap_optimizer  # noqa: E402

EXCLUDE = ("classifier.weight",)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_bert() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
        num_labels=2,
    )
    return transformers.BertForSequenceClassification(config)


def batches(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "input_ids": torch.randint(0, 100, (8, 12), generator=g),
            "labels": torch.randint(0, 2, (8,), generator=g),
        }
        for _ in range(n)
    ]


class Wrapped:
    """Stands in for accelerate's AcceleratedOptimizer: hooks on it would never fire."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def step(self) -> None:
        self.optimizer.step()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad()


def weight_sparsity(model: torch.nn.Module, names: list[str]) -> dict[str, float]:
    return {
        n: 1 - int(model.get_parameter(n).ne(0).sum()) / model.get_parameter(n).numel()
        for n in names
    }


def test_callback_drives_gmp_through_the_trainer_events():
    from transformers.trainer_callback import CallbackHandler, TrainerControl, TrainerState

    model = tiny_bert()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    method = sc.GMP(sparsity=0.8, end_step=6, update_every=2, exclude=EXCLUDE)
    callback = SparseTrainerCallback(method, finalize=True)
    handler = CallbackHandler([callback], model, None, Wrapped(optimizer), None)
    state, control = TrainerState(), TrainerControl()
    handler.on_train_begin(None, state, control)  # the Trainer's order: optimizer exists here
    names = method.masks.names
    assert method.model is model and method.masks.optimizer is optimizer
    assert "bert.encoder.layer.0.attention.self.query.weight" in names
    for batch in batches(8):
        handler.on_step_begin(None, state, control)
        loss = model(**batch).loss
        loss.backward()
        handler.optimizer.step()
        handler.optimizer.zero_grad()
        state.global_step += 1
        handler.on_step_end(None, state, control)
        masks = method.masks.masks()
        for name in names:  # pruned weights are exactly zero after every step
            assert bool((model.get_parameter(name)[~masks[name]] == 0).all()), name
    assert method.step == 8
    assert abs(method.masks.sparsity() - 0.8) < 0.005
    handler.on_train_end(None, state, control)
    assert callback.finalized and not any(n.endswith("_mask") for n, _ in model.named_buffers())
    for name, sparsity in weight_sparsity(model, names).items():
        assert sparsity >= 0.8 - 0.005, (name, sparsity)
    assert weight_sparsity(model, ["classifier.weight"])["classifier.weight"] == 0.0


def test_callback_attaches_a_pre_calibrated_method_and_reattaches():
    model = tiny_bert()
    method = sc.OneShotMagnitude(sparsity=0.5, exclude=EXCLUDE).setup(model)  # before train()
    callback = SparseTrainerCallback(method)
    first = torch.optim.SGD(model.parameters(), lr=0.1)
    callback.on_train_begin(None, None, None, model=model, optimizer=first)
    assert method.masks.optimizer is first
    second = torch.optim.SGD(model.parameters(), lr=0.1)
    callback.on_train_begin(None, None, None, model=model, optimizer=Wrapped(second))
    assert method.masks.optimizer is second
    loss = model(**batches(1)[0]).loss
    loss.backward()
    second.step()
    assert abs(method.masks.sparsity() - 0.5) < 0.005
    name = method.masks.names[0]
    assert bool((model.get_parameter(name)[~method.masks.mask(name)] == 0).all())
    callback.on_train_end(None, None, None)
    assert not callback.finalized and method.masks is not None
    with pytest.raises(RuntimeError, match="another model"):
        callback.on_train_begin(None, None, None, model=tiny_bert(), optimizer=second)
    with pytest.raises(TypeError, match="PruningMethod"):
        SparseTrainerCallback("gmp")
    with pytest.raises(TypeError, match=r"torch\.optim\.Optimizer"):
        unwrap_optimizer(object())


def test_real_trainer(tmp_path):
    pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate")
    model = tiny_bert()
    data = [
        dict(input_ids=b["input_ids"][i], labels=b["labels"][i])
        for b in batches(4)
        for i in range(8)
    ]
    method = sc.GMP(sparsity=0.8, end_step=6, update_every=2, exclude=EXCLUDE)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        report_to="none",
        use_cpu=True,
        max_steps=8,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
    )
    trainer = transformers.Trainer(
        model=model,
        args=args,
        train_dataset=data,
        callbacks=[SparseTrainerCallback(method, finalize=True)],
    )
    trainer.train()
    assert trainer.state.global_step == 8 and method.step == 8
    names = [n for n, _ in model.named_parameters() if n.endswith("dense.weight")]
    assert len(names) == 7
    # HF default targets leave the pooler dense (sparsecore.targets.hf_excluded_modules).
    assert weight_sparsity(model, ["bert.pooler.dense.weight"])["bert.pooler.dense.weight"] == 0
    names.remove("bert.pooler.dense.weight")
    for name, sparsity in weight_sparsity(model, names).items():
        assert sparsity >= 0.8 - 0.005, (name, sparsity)
