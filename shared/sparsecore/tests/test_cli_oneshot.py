"""``sparse oneshot`` end to end on a seconds-scale model, and its bad-input errors."""

from __future__ import annotations

import json

import pytest
import torch

from sparsecore.bench import tiny_llama
from sparsecore.cli import main
from sparsecore.export import load_compact


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A byte-vocabulary tiny Llama saved with ``save_pretrained`` (untrained is enough)."""
    path = tmp_path_factory.mktemp("model")
    model = tiny_llama(vocab_size=256, hidden_size=32, intermediate_size=64,
                       max_position_embeddings=64)  # fmt: skip
    model.save_pretrained(path)
    return path


def _run(*argv):
    return main(["oneshot", "--no-progress", "--eval-blocks", "4", "--calib-blocks", "4", *argv])


def test_oneshot_prunes_saves_and_reloads(model_dir, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    assert _run("--model", str(model_dir), "--method", "sparsegpt", "--pattern", "2:4",
                "--seq-len", "32", "--out", str(out)) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "perplexity before" in text and "model.layers.1.mlp.down_proj.weight" in text
    report = json.loads((out / "oneshot.json").read_text())
    assert set(report["layer_sparsity"].values()) == {0.5}
    pruned = AutoModelForCausalLM.from_pretrained(out / "model")
    state = load_compact(out / "model.compact.safetensors")
    for name, value in pruned.state_dict().items():
        assert torch.equal(state[name], value), name
    assert not (pruned.lm_head.weight == 0).any()  # the LM head stays dense


def test_oneshot_exports_compressed_tensors(model_dir, tmp_path, capsys):
    from sparsecore.export.compressed_tensors import decompress_state

    out = tmp_path / "ct"
    assert _run("--model", str(model_dir), "--method", "wanda", "--seq-len", "32",
                "--format", "compressed-tensors", "--out", str(out)) == 0  # fmt: skip
    assert "identical logits" in capsys.readouterr().out
    report = json.loads((out / "oneshot.json").read_text())
    assert report["compressed_tensors_reload_equal"] is True
    state = decompress_state(out / "model-compressed-tensors")
    compact = load_compact(out / "model.compact.safetensors")
    assert sorted(state) == sorted(compact)
    assert all(torch.equal(state[k], compact[k]) for k in compact)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "/no/such/dir"], "--model"),
        (["--sparsity", "1.0"], "--sparsity"),
        (["--sparsity", "-0.1"], "--sparsity"),
        (["--pattern", "3:2"], "--pattern"),
        (["--method", "obs"], "--method"),
        (["--calib-blocks", "0"], "--calib-blocks"),
        (["--format", "gguf"], "--format"),
        (["--seq-len", "128"], "--seq-len"),  # the model's context is 64
        (["--pattern", "4:8", "--seq-len", "32"], "divisible"),  # hidden 36 is not a multiple of 8
    ],
)
def test_bad_input_names_the_argument_before_touching_weights(argv, message, tmp_path, capsys):
    path = tmp_path / "m"
    model = tiny_llama(
        vocab_size=256,
        hidden_size=36,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    model.save_pretrained(path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = ["--model", str(path), *argv] if "--model" not in argv else argv
    assert _run(*args) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "sparse-results").exists()
    from transformers import AutoModelForCausalLM

    after = AutoModelForCausalLM.from_pretrained(path).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_vocab_mismatch_and_no_linear_layers(tmp_path, capsys):
    small = tmp_path / "small-vocab"
    tiny_llama(vocab_size=100, hidden_size=32, intermediate_size=64).save_pretrained(small)
    assert _run("--model", str(small)) == 1
    assert "--model: vocabulary of 100" in capsys.readouterr().err
    bad = tmp_path / "not-a-model"
    bad.mkdir()
    assert _run("--model", str(bad)) == 1
    assert "config.json" in capsys.readouterr().err


def test_model_without_linear_layers_is_refused():
    from sparsecore.bench.lm_bench import build_oneshot

    model = torch.nn.Module()
    model.model = torch.nn.Module()
    model.model.layers = torch.nn.ModuleList([torch.nn.ReLU()])
    with pytest.raises(ValueError, match="model: no Linear layers"):
        build_oneshot("wanda", model, 0.5)
