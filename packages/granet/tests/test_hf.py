"""GraNet driven by sparsecore's Hugging Face TrainerCallback, on a tiny random BERT.

Skipped when transformers (an optional extra of sparsecore) is not installed. The Trainer's
events are fired through transformers' own CallbackHandler, so no accelerate is needed.
"""

import pytest
import torch

transformers = pytest.importorskip("transformers")
hf = pytest.importorskip("sparsecore.integrations.hf")

from sparse_granet import GraNet  # noqa: E402
from sparsecore.bench.models import tiny_bert  # noqa: E402

torch.set_num_threads(1)


class Wrapped:
    """Stands in for accelerate's AcceleratedOptimizer (the callback must unwrap it)."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def step(self) -> None:
        self.optimizer.step()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad()


def test_granet_through_trainer_callback(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers.trainer_callback import CallbackHandler, TrainerControl, TrainerState

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = tiny_bert(vocab_size=100, hidden_size=32, intermediate_size=64, num_attention_heads=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    method = GraNet(sparsity=0.8, init_density=0.5, update_every=3, end_step=9, total_steps=15)
    callback = hf.SparseTrainerCallback(method, finalize=True)
    handler = CallbackHandler([callback], model, None, Wrapped(optimizer), None)
    state, control = TrainerState(), TrainerControl()
    handler.on_train_begin(None, state, control)
    assert method.model is model and method.masks.optimizer is optimizer
    assert "bert.encoder.layer.0.attention.self.query.weight" in method.masks.names
    gen = torch.Generator().manual_seed(0)
    for _ in range(15):
        batch = {
            "input_ids": torch.randint(0, 100, (8, 12), generator=gen),
            "labels": torch.randint(0, 2, (8,), generator=gen),
        }
        handler.on_step_begin(None, state, control)
        model(**batch).loss.backward()
        handler.optimizer.step()
        handler.optimizer.zero_grad()
        state.global_step += 1
        handler.on_step_end(None, state, control)
        for name, mask in method.masks.masks().items():
            assert not model.get_parameter(name)[~mask].any(), name
    assert [h["step"] for h in method.history] == [3, 6, 9, 12, 15]
    assert all(sum(h["regrown"].values()) > 0 for h in method.history)
    total = sum(m.numel() for m in method.masks.masks().values())
    assert sum(method.masks.nnz().values()) == int(total * 0.2 + 1e-6)
    masks = {n: m.clone() for n, m in method.masks.masks().items()}
    handler.on_train_end(None, state, control)
    assert callback.finalized and not any(n.endswith("_mask") for n, _ in model.named_buffers())
    for name, mask in masks.items():
        assert not model.get_parameter(name)[~mask].any(), name
