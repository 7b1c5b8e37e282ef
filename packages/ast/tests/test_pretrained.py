"""SLoRB survives save_pretrained -> from_pretrained (a peft-style LoRA adapter)."""

from __future__ import annotations

import json

import pytest
import torch

from sparse_ast import AdaptiveSparseTrainer
from sparse_ast.pretrained import from_pretrained, save_pretrained

from ._helpers import tiny_gpt2, tiny_llama, tokens

torch.set_num_threads(1)


def _boosted(build):
    model = build(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    method = AdaptiveSparseTrainer(slorb=True, slorb_k=8, mask_update_every=2).setup(model, opt)
    for step in range(3):
        x = tokens(step)
        loss = method.loss(model(x, labels=x).loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return method.finalize().eval()


@pytest.mark.parametrize("build", [tiny_gpt2, tiny_llama])
def test_slorb_round_trips_through_the_hf_path(build, tmp_path) -> None:
    model = _boosted(build)
    x = tokens(99)
    with torch.no_grad():
        before = model(x).logits
    adapter = save_pretrained(model, tmp_path)
    assert adapter is not None
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["lora_dropout"] == 0.0
    assert all(config["alpha_pattern"][k] == r for k, r in config["rank_pattern"].items())
    loaded = from_pretrained(tmp_path)
    with torch.no_grad():
        after = loaded(x).logits
    assert torch.allclose(after, before, atol=1e-5)
    # The base alone is a plain HF checkpoint: no SLoRB keys, and without the boost it differs.
    plain = type(model).from_pretrained(tmp_path).eval()
    assert not any("slorb" in k for k in plain.state_dict())
    with torch.no_grad():
        assert not torch.allclose(plain(x).logits, before, atol=1e-4)


def test_peft_reads_the_adapter(tmp_path) -> None:
    peft = pytest.importorskip("peft")
    model = _boosted(tiny_llama)
    x = tokens(7)
    with torch.no_grad():
        before = model(x).logits
    save_pretrained(model, tmp_path)
    base = type(model).from_pretrained(tmp_path)
    wrapped = peft.PeftModel.from_pretrained(base, str(tmp_path / "slorb")).eval()
    with torch.no_grad():
        assert torch.allclose(wrapped(x).logits, before, atol=1e-5)
