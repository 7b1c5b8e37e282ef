"""compressed-tensors ``sparse-bitmask`` export: bit-for-bit against the library, exact reload."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sparsecore.export.compressed_tensors import (
    bitmask_compress,
    bitmask_decompress,
    decompress_state,
    load_compressed_tensors,
    pack_bits,
    save_compressed_tensors,
    unpack_bits,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
FIXTURE = Path(__file__).parent / "data" / "ct_bitmask"


def _fixture_model() -> torch.nn.Module:
    cfg = json.loads((FIXTURE / "config.json").read_text())
    cfg.pop("quantization_config")
    config = transformers.LlamaConfig(**{k: v for k, v in cfg.items() if k != "architectures"})
    model = transformers.LlamaForCausalLM(config)
    model.load_state_dict(load_file(FIXTURE / "dense.safetensors"))
    return model.eval()


def test_pack_bits_is_numpy_little_bit_order():
    np = pytest.importorskip("numpy")
    keep = torch.rand(7, 21, generator=torch.Generator().manual_seed(0)) < 0.4
    reference = np.packbits(keep.numpy(), axis=-1, bitorder="little")
    assert torch.equal(pack_bits(keep), torch.from_numpy(reference))
    assert torch.equal(unpack_bits(pack_bits(keep), 21), keep)


def test_compress_layout_and_bad_parts():
    w = torch.tensor([[0.0, 2.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 4.0]])
    parts = bitmask_compress(w)
    assert parts["shape"].tolist() == [3, 4]
    assert parts["compressed"].tolist() == [2.0, 3.0, 1.0, 4.0]
    assert parts["bitmask"].tolist() == [[0b1010], [0], [0b1001]]
    assert parts["row_offsets"].tolist() == [0, 2, 2]
    assert torch.equal(bitmask_decompress(parts), w)
    with pytest.raises(ValueError, match="does not fit"):
        bitmask_decompress({**parts, "compressed": parts["compressed"][:3]})
    with pytest.raises(ValueError, match="row_offsets"):
        bitmask_decompress({**parts, "row_offsets": torch.tensor([0, 1, 2])})
    with pytest.raises(ValueError, match="weight"):
        bitmask_compress(torch.ones(2, 2, 2))


def test_bit_for_bit_with_compressed_tensors_reference(tmp_path):
    """Our folder holds exactly the tensors compressed-tensors 0.13's ModelCompressor wrote."""
    model = _fixture_model()
    written = save_compressed_tensors(model, tmp_path / "out")
    ours = load_file(tmp_path / "out" / "model.safetensors")
    reference = load_file(FIXTURE / "reference.safetensors")
    assert sorted(ours) == sorted(reference)
    for key, value in reference.items():
        assert ours[key].dtype == value.dtype, key
        assert torch.equal(ours[key], value), key
    ref_cfg = json.loads((FIXTURE / "config.json").read_text())["quantization_config"]
    our_cfg = json.loads((tmp_path / "out" / "config.json").read_text())["quantization_config"]
    assert set(our_cfg) == set(ref_cfg)
    assert our_cfg["quant_method"] == ref_cfg["quant_method"]
    ref_sparsity = {k: v for k, v in ref_cfg["sparsity_config"].items() if k != "global_sparsity"}
    assert {k: v for k, v in written.items() if k != "global_sparsity"} == ref_sparsity
    params = list(model.parameters())
    zeros = sum(int((p == 0).sum()) for p in params)
    assert written["global_sparsity"] == zeros / sum(p.numel() for p in params)


def test_live_library_matches_when_installed():
    """Same check against an installed compressed-tensors with a bitmask compressor (if any)."""
    try:
        from compressed_tensors.compressors import (
            BitmaskCompressor,  # noqa: F401
            ModelCompressor,
        )
        from compressed_tensors.config import BitmaskConfig
    except ImportError:
        pytest.skip("no compressed-tensors with BitmaskCompressor (<= 0.14) installed")
    model = _fixture_model()
    theirs = ModelCompressor(sparsity_config=BitmaskConfig(targets=["Linear"], ignore=["lm_head"]))
    state = theirs.compress(model)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name != "lm_head":
            for key, value in bitmask_compress(module.weight).items():
                assert torch.equal(state[f"{name}.{key}"], value)


def test_reload_gives_identical_logits_and_reads_the_reference(tmp_path):
    model = _fixture_model()
    save_compressed_tensors(model, tmp_path / "out")
    back = load_compressed_tensors(tmp_path / "out")
    ids = torch.randint(0, 40, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(back(ids).logits, model(ids).logits)
    dense = load_file(FIXTURE / "dense.safetensors")
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    (ref_dir / "config.json").write_text((FIXTURE / "config.json").read_text())
    (ref_dir / "model.safetensors").write_bytes((FIXTURE / "reference.safetensors").read_bytes())
    state = decompress_state(ref_dir)
    assert sorted(state) == sorted(dense)
    assert all(torch.equal(state[k], dense[k]) for k in dense)


def test_tied_embeddings_and_two_four_structure(tmp_path):
    config = transformers.LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "proj" in name:
                groups = p.view(-1, 4)
                drop = groups.abs().argsort(dim=1)[:, :2]
                groups.scatter_(1, drop, 0.0)
    written = save_compressed_tensors(model, tmp_path / "out")
    assert written["sparsity_structure"] == "2:4"
    back = load_compressed_tensors(tmp_path / "out")
    assert back.lm_head.weight.data_ptr() == back.model.embed_tokens.weight.data_ptr()
    ids = torch.randint(0, 32, (1, 7), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(back(ids).logits, model(ids).logits)


def test_bad_input(tmp_path):
    model = _fixture_model()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ValueError, match="directory"):
        save_compressed_tensors(model, tmp_path / "full")
    with pytest.raises(ValueError, match="targets"):
        save_compressed_tensors(model, tmp_path / "none", targets=("Conv2d",))
    with pytest.raises(TypeError, match="model"):
        save_compressed_tensors(torch.nn.Linear(2, 2), tmp_path / "lin")
    model.model.layers[0].mlp.up_proj.register_buffer("weight_mask", torch.ones(1))
    with pytest.raises(ValueError, match="squash"):
        save_compressed_tensors(model, tmp_path / "masked")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="sparse-bitmask"):
        load_compressed_tensors(tmp_path / "plain")
