"""The pruning-decision generator of ATP: layer embeddings → Bi-GRU → linear heads → decisions.

Lu et al., "All-in-One Tuning and Structural Pruning for Domain-Specific LLMs", arXiv 2412.14426
(official code: github.com/GGGGxxxxxxxxr/One-click-Tuning-and-Pruning-for-Customized-LLMs,
``hypernet_llm.py``). One embedding per decoder layer is read, as a sequence over the layers, by
a bidirectional GRU; a LayerNorm + ReLU follows and one linear head per group kind maps each
layer's state to one logit per key/value head group and per FFN channel of that layer. The
logits become decisions by a Gumbel-sigmoid with a hard threshold and a straight-through
estimator: ``y = sigmoid((logit + g + base) / T)``, ``d = 1[y >= 0.5]`` in the forward, the
gradient of ``y`` in the backward.

Choices, labelled:

* [official] ``base = 3.0`` (the logit offset, so every group starts kept) and ``T = 0.4``; a
  single Gumbel sample ``g = -log(-log u)`` is added (the official ``gumbel_softmax_sample``),
  not the difference of two Gumbels of a binary concrete.
* [official v1] Bi-GRU (64 → 128 per direction), LayerNorm over the 256 concatenated states,
  ReLU, bias-free linear heads shared by the layers (``LLM_HyperStructure_old``; the official
  v2 swaps the GRU for a transformer encoder, the paper describes the GRU).
* [choice] The layer embeddings are trainable parameters (the issue's "learnable per-layer
  embeddings"); the official code keeps them fixed (orthogonal init, ``requires_grad=False``).
  Orthogonal initialisation as in the official code.
* [choice] The sequence runs over the decoder layers (the paper's per-layer generator); the
  official v1 fed the structure types as the sequence and the layers as the batch.
* [choice] In eval mode the decisions are noise-free (``d = 1[logit + base >= 0]``); the
  official code still adds Gumbel noise in eval mode.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DecisionGenerator", "gumbel_sigmoid_ste"]


def gumbel_sigmoid_ste(
    logits: torch.Tensor,
    temperature: float,
    base: float,
    generator: torch.Generator | None = None,
    noise: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard 0/1 decisions with straight-through gradients, and the soft values behind them.

    Args:
        logits: Any shape.
        temperature: ``T`` of ``sigmoid((logit + g + base) / T)``.
        base: The offset added to every logit.
        generator: CPU generator for the Gumbel noise (the method's own, for exact resume).
        noise: Add Gumbel noise (training) or not (deterministic decisions).

    Returns:
        ``(hard, soft)``: ``hard`` equals ``1[soft >= 0.5]`` in value and carries ``soft``'s
        gradient.
    """
    z = logits + base
    if noise:
        u = torch.rand(logits.shape, generator=generator).to(logits.device, logits.dtype)
        z = z - torch.log(-torch.log(u + 1e-10) + 1e-10)
    soft = torch.sigmoid(z / temperature)
    hard = (soft >= 0.5).to(soft.dtype)
    return hard - soft.detach() + soft, soft


class DecisionGenerator(nn.Module):
    """ATP's trainable pruning-decision generator (see the module docstring).

    Args:
        heads: Key/value head groups per layer.
        channels: FFN channels per layer.
        embed_dim: Width of the layer embeddings (official 64).
        hidden_dim: GRU state width per direction (official 128).
        temperature: Gumbel-sigmoid temperature (official 0.4).
        base: Logit offset (official 3.0).
        seed: Seed of the initialisation (the method derives it from its own seed).
    """

    def __init__(
        self,
        heads: list[int],
        channels: list[int],
        embed_dim: int = 64,
        hidden_dim: int = 128,
        temperature: float = 0.4,
        base: float = 3.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if len(heads) != len(channels) or not heads:
            raise ValueError("heads and channels: one count per layer, at least one layer")
        if len(set(heads)) != 1 or len(set(channels)) != 1:
            raise ValueError("DecisionGenerator needs the same head and FFN counts in every layer")
        self.heads, self.channels = list(heads), list(channels)
        self.temperature, self.base = float(temperature), float(base)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            embeddings = torch.empty(len(heads), embed_dim)
            nn.init.orthogonal_(embeddings)
            self.embeddings = nn.Parameter(embeddings)
            self.gru = nn.GRU(embed_dim, hidden_dim, bidirectional=True, batch_first=True)
            self.norm = nn.LayerNorm(2 * hidden_dim)
            self.head_logits = nn.Linear(2 * hidden_dim, heads[0], bias=False)
            self.ffn_logits = nn.Linear(2 * hidden_dim, channels[0], bias=False)

    def logits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-layer logits ``(L, heads)`` and ``(L, channels)`` (before the offset)."""
        states, _ = self.gru(self.embeddings.unsqueeze(0))
        features = torch.relu(self.norm(states.squeeze(0)))
        return self.head_logits(features), self.ffn_logits(features)

    def forward(
        self, generator: torch.Generator | None = None, noise: bool = True
    ) -> dict[str, torch.Tensor]:
        """Decisions ``{"heads": (L, H), "ffn": (L, C)}`` (hard, STE) and their soft values.

        Returns:
            ``{"heads", "ffn", "heads_soft", "ffn_soft"}``.
        """
        head_logits, ffn_logits = self.logits()
        flat = torch.cat([head_logits, ffn_logits], dim=1)
        hard, soft = gumbel_sigmoid_ste(flat, self.temperature, self.base, generator, noise)
        h = head_logits.shape[1]
        return {
            "heads": hard[:, :h],
            "ffn": hard[:, h:],
            "heads_soft": soft[:, :h],
            "ffn_soft": soft[:, h:],
        }
