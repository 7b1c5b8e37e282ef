"""Default targets of Hugging Face models: no embeddings, pooler, task heads or LM head."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsecore import OneShotMagnitude, default_targets
from sparsecore.targets import hf_excluded_modules

torch.set_num_threads(1)
pytest.importorskip("transformers")

from sparsecore.bench.models import tiny_bert, tiny_gpt2, tiny_llama  # noqa: E402

BLOCK = {
    "bert": [
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    ],
    "gpt2": ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"],
    "llama": [
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    ],
}
PREFIX = {"bert": "bert.encoder.layer", "gpt2": "transformer.h", "llama": "model.layers"}


def expected(kind: str) -> list[str]:
    return [f"{PREFIX[kind]}.{i}.{layer}.weight" for i in range(2) for layer in BLOCK[kind]]


def test_bert_defaults_are_the_encoder_blocks_only() -> None:
    model = tiny_bert()
    assert default_targets(model) == expected("bert")  # no pooler, no classifier
    assert {"bert.pooler.dense", "classifier", "bert.embeddings"} <= hf_excluded_modules(model)
    with_heads = default_targets(model, hf_heads=True)
    assert with_heads == [*expected("bert"), "bert.pooler.dense.weight", "classifier.weight"]


def test_gpt2_and_untied_llama_leave_out_the_lm_head() -> None:
    assert default_targets(tiny_gpt2()) == expected("gpt2")
    llama = tiny_llama(tie_word_embeddings=False)
    assert default_targets(llama) == expected("llama")
    assert default_targets(llama, hf_heads=True) == [*expected("llama"), "lm_head.weight"]


def test_hf_model_inside_a_plain_module_and_plain_models_unchanged() -> None:
    wrapper = nn.ModuleDict({"encoder": tiny_bert(), "head": nn.Linear(64, 3)})
    targets = default_targets(wrapper)
    assert targets == [f"encoder.{n}" for n in expected("bert")] + ["head.weight"]
    mlp = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    assert default_targets(mlp) == ["0.weight", "2.weight"]


def test_overridable_and_pooler_not_pruned_by_default() -> None:
    model = tiny_bert()
    method = OneShotMagnitude(sparsity=0.9).setup(model)
    assert "bert.pooler.dense.weight" not in method.masks.names
    assert torch.count_nonzero(model.bert.pooler.dense.weight) == 64 * 64
    explicit = OneShotMagnitude(sparsity=0.5, targets=("classifier.weight",)).setup(tiny_bert())
    assert explicit.masks.names == ["classifier.weight"]
