"""RA3's EM loop at toy scale: an RL E-step over latent abstractions, an SFT M-step.

Paper: Zhang et al. (Apple), "Learning to Reason as Action Abstractions with Scalable Mid-Training
RL" (RA3), arXiv 2509.25810 ("iteratively discovering temporally-consistent latent structures
via RL, followed by fine-tuning on the bootstrapped data"). The E/M details are reconstructed
[recon]; `sparse_ra3.latents` defines the bound, the proposal and the reward.

One RA3 step on a batch of expert programs (`ra3_step`):

1. **E-step (RL)**: draw ``samples`` latent patterns per program from ``q(z | x)`` (the LM's own
   proposal), score each with ``R = Σ log p(x tokens | aug) − switch_cost · switches``, and take
   one policy-gradient step on ``−mean(A · log q(z | x))`` with group-normalised advantages
   ``A = (R − mean_g R) / (std_g R + 1e-6)`` (GRPO-style; a group whose rewards are all equal
   contributes nothing). The E-step has its own optimizer; a step whose loss carries no gradient
   (e.g. a single abstraction) is skipped, so that RA3 with one abstraction and no switching cost
   *is* next-token SFT (the test of the reduction compares parameters after several steps).
2. **M-step (SFT)**: the best-scoring pattern of each program ("bootstrapped data", a
   rejection-sampling choice [recon]) is inserted into the program and the LM takes one
   next-token step on every token of the augmented sequence (latent tokens included, so the LM
   learns to propose abstractions itself).

The NTP baseline (`ntp_step`) takes the same M-step optimizer step on the same programs without
latents: "equal data" means the same program batches and the same number of SFT steps (RA3
additionally spends the E-step's sampling compute; reported).

`latent_lm` builds the model: the core's pretrained byte-level tiny Llama
(`sparsecore.bench.pretrained_tiny_lm`, micro/nano) with ``<eos>`` and ``n_latents`` latent rows
added (initialised at the mean byte row plus a small seeded perturbation that breaks the
symmetry between latents; choice, labelled).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sparse_ra3.corpus import EOS, FIRST_LATENT, Program
from sparse_ra3.latents import augment, boundaries, expert_ids, sample_latents, score
from sparsecore.method import method_seed
from sparsecore.validation import check_int, check_number

__all__ = ["RA3Config", "latent_lm", "ntp_step", "ra3_step", "sft_loss"]


@dataclass(frozen=True)
class RA3Config:
    """Options of the RA3 loop.

    Attributes:
        n_latents: Number of latent abstractions ``K`` (latent tokens), ``>= 1``.
        switch_cost: Reward cost per abstraction switch, ``>= 0``.
        samples: Latent patterns drawn per program in the E-step, ``>= 1``.
        temperature: Temperature of the proposal ``q``, ``> 0``.
    """

    n_latents: int = 4
    switch_cost: float = 1.0
    samples: int = 4
    temperature: float = 1.0

    def __post_init__(self) -> None:
        check_int(self.n_latents, "n_latents", 1)
        check_number(self.switch_cost, "switch_cost", 0.0)
        check_int(self.samples, "samples", 1)
        check_number(self.temperature, "temperature", 0.0, open_low=True)


def latent_lm(size: str = "micro", n_latents: int = 4, seed: int = 0) -> nn.Module:
    """The core's pretrained tiny LM with ``<eos>`` and ``n_latents`` latent tokens added."""
    from sparsecore.bench.pretrained import pretrained_tiny_lm

    check_int(n_latents, "n_latents", 0)
    model = pretrained_tiny_lm(size, progress=False)
    old = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(FIRST_LATENT + n_latents, mean_resizing=False)
    g = torch.Generator().manual_seed(method_seed(seed, "latent_lm"))
    with torch.no_grad():
        for module in (model.get_input_embeddings(), model.get_output_embeddings()):
            w = module.weight
            mean = w[:old].mean(0, keepdim=True)
            noise = torch.randn(w.shape[0] - old, w.shape[1], generator=g) * w[:old].std() * 0.1
            w[old:] = mean + noise
    model.config.max_position_embeddings = max(model.config.max_position_embeddings, 128)
    return model


def sft_loss(model: nn.Module, seqs: list[list[int]]) -> torch.Tensor:
    """Mean next-token loss over every token after the first (right padding masked)."""
    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [EOS] * (width - len(s)) for s in seqs])
    labels = torch.tensor([s + [-100] * (width - len(s)) for s in seqs])
    logits = model(input_ids=ids).logits.float()
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)


def ntp_step(model: nn.Module, optimizer: torch.optim.Optimizer, programs: list[Program]) -> float:
    """One next-token SFT step on the expert programs (the NTP mid-training baseline)."""
    optimizer.zero_grad(set_to_none=True)
    loss = sft_loss(model, [expert_ids(p) for p in programs])
    loss.backward()
    optimizer.step()
    return loss.item()


def ra3_step(
    model: nn.Module,
    e_optimizer: torch.optim.Optimizer,
    m_optimizer: torch.optim.Optimizer,
    programs: list[Program],
    config: RA3Config,
    generator: torch.Generator,
) -> dict[str, Any]:
    """One E-step and one M-step on ``programs`` (see the module docstring)."""
    G = config.samples
    xs = [expert_ids(p) for p in programs for _ in range(G)]
    bounds = [boundaries(p) for p in programs for _ in range(G)]
    was_training = model.training
    decisions = sample_latents(model, xs, bounds, config.n_latents, generator, config.temperature)
    s = score(model, xs, bounds, decisions, config.n_latents, config.temperature)
    rewards = (s.expert.detach().double() - config.switch_cost * s.switches.double()).view(-1, G)
    spread = rewards.std(1, keepdim=True, unbiased=False)
    adv = torch.where(spread > 0, (rewards - rewards.mean(1, keepdim=True)) / (spread + 1e-6), 0.0)
    e_loss = -(adv.flatten().float() * s.log_q).mean()
    e_optimizer.zero_grad(set_to_none=True)
    stepped = bool(e_loss.requires_grad) and bool((adv != 0).any())
    if stepped:
        e_loss.backward()
        e_optimizer.step()
    e_optimizer.zero_grad(set_to_none=True)
    best = rewards.argmax(1)
    augs = [augment(xs[i * G + int(j)], bounds[i * G + int(j)], decisions[i * G + int(j)])[0]
            for i, j in enumerate(best)]  # fmt: skip
    m_optimizer.zero_grad(set_to_none=True)
    m_loss = sft_loss(model, augs)
    m_loss.backward()
    m_optimizer.step()
    model.train(was_training)
    chosen = [decisions[i * G + int(j)] for i, j in enumerate(best)]
    return {
        "m_loss": m_loss.item(),
        "e_loss": float(e_loss.detach()),
        "e_stepped": stepped,
        "reward": float(rewards.mean()),
        "switches": float(s.switches.view(-1, G).gather(1, best[:, None]).mean()),
        "latents_per_line": sum(sum(d != -1 for d in c) for c in chosen)
        / sum(len(c) for c in chosen),
    }
