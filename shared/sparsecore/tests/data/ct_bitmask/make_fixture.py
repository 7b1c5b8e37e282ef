"""Write the compressed-tensors reference checkpoint that ``test_compressed_tensors.py`` compares
with, using compressed-tensors' own ``ModelCompressor`` (the last release with a bitmask
compressor that installs next to transformers 5)::

    pip download --no-deps compressed-tensors==0.13.0 loguru -d /tmp/ctw
    # unzip both wheels into /tmp/ct013, then, from the repository root:
    PYTHONPATH=/tmp/ct013 uv run python shared/sparsecore/tests/data/ct_bitmask/make_fixture.py

Writes ``dense.safetensors`` (the pruned model's weights), ``config.json`` (the model config with
compressed-tensors' ``quantization_config``) and ``reference.safetensors`` (its compressed state).
"""

import json
from pathlib import Path

import torch
from compressed_tensors.compressors import ModelCompressor
from compressed_tensors.config import BitmaskConfig
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

HERE = Path(__file__).parent
gen = torch.Generator().manual_seed(1234)
config = LlamaConfig(
    vocab_size=40,
    hidden_size=16,
    intermediate_size=20,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=32,
)
model = LlamaForCausalLM(config)
with torch.no_grad():
    for p in model.parameters():
        p.copy_(torch.randn(p.shape, generator=gen))
    for name, p in model.named_parameters():
        if "proj" in name:  # ~60% zeros, some rows and one whole column all zero
            p.masked_fill_(torch.rand(p.shape, generator=gen) < 0.6, 0)
            p[0].zero_()
            p[:, -1].zero_()
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, HERE / "dense.safetensors")
sparsity = BitmaskConfig(global_sparsity=0.0, targets=["Linear"], ignore=["lm_head"])
compressor = ModelCompressor(sparsity_config=sparsity)
state = compressor.compress(model)
save_file({k: v.contiguous() for k, v in state.items()}, HERE / "reference.safetensors")
model.config.save_pretrained(HERE)
compressor.update_config(HERE)
cfg = json.loads((HERE / "config.json").read_text())
(HERE / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
