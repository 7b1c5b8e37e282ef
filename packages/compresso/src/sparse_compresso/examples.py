"""A tiny randomly initialised Llama with peft LoRA adapters (tests, README quickstart)."""

from __future__ import annotations

import torch
from torch import nn

from sparsecore.adapters import add_lora

__all__ = ["tiny_lora_llama", "token_batch"]


def tiny_lora_llama(seed: int = 0, vocab_size: int = 64) -> nn.Module:
    """2 layers, hidden 32, 4 query heads in 2 key/value groups, FFN 48; LoRA r=4 on q / v.

    The LoRA ``A`` init draws from the global generator, which is seeded with ``seed + 1``.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=48, max_position_embeddings=64,
        attn_implementation="eager",
    )  # fmt: skip
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    torch.manual_seed(seed + 1)
    return add_lora(model, r=4, alpha=4, target_modules=["q_proj", "v_proj"])


def token_batch(step: int, batch: int = 4, length: int = 12, vocab_size: int = 64) -> torch.Tensor:
    """Deterministic random token ids for ``step``."""
    gen = torch.Generator().manual_seed(1000 + step)
    return torch.randint(0, vocab_size, (batch, length), generator=gen)
