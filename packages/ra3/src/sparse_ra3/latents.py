"""RA3's sequential variational lower bound over latent abstractions interleaved with expert code.

Paper: Zhang et al. (Apple), "Learning to Reason as Action Abstractions with Scalable Mid-Training
RL" (RA3), arXiv 2509.25810. The abstract states that RA3 "derive[s] a sequential variational
lower bound and optimize[s] it by iteratively discovering temporally-consistent latent
structures via RL, followed by fine-tuning on the bootstrapped data". The exact form of the
paper's bound was not available offline; the formulation below is a reconstruction [recon]:

* The expert sequence ``x`` (prompt, program lines, ``<eos>``) has decision points ``b_1..b_T``
  (the start of every program line). At each point a latent ``z_t`` either *continues* the
  current abstraction (``CONT``: nothing is inserted) or *switches* to abstraction ``k``
  (latent token ``<zk>`` inserted before the line). ``z_1`` always emits a latent (the first
  abstraction); a switch must change the abstraction. So the latent process is temporally
  extended: one abstraction covers several lines until the next switch (an option).
* The generative model is the LM itself on the augmented sequence: ``p(x, z) = p_θ(aug(x, z))``
  (every next-token probability after the first token), and ``p(x) = Σ_z p(x, z)`` sums over
  the ``K·K^(T-1)`` latent patterns (`exact_log_marginal`, used on enumerable toys).
* The variational posterior ``q(z | x) = Π_t q(z_t | x, z_<t)`` is the same LM, read at each
  decision point and renormalised over the allowed choices: the logit of ``<zk>`` for a switch,
  the logit of the expert's next token ``x_{b_t}`` for ``CONT`` (q sees ``x``), divided by a
  temperature. Jensen gives ``log p(x) ≥ E_q[log p(x, z) − log q(z | x)]`` (`elbo`), with
  equality at the exact posterior (`posterior`).
* The E-step reward (`score`) is the expert-continuation log-likelihood ``Σ_{x tokens} log
  p_θ(x_i | aug_<i)`` minus ``switch_cost`` per switch after the first latent [recon: the digest
  says "rewarded by expert-continuation log-likelihood, with a cost for switching"].
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sparse_ra3.corpus import EOS, FIRST_LATENT, Program, encode
from sparsecore.validation import check_int, check_number

__all__ = [
    "CONT",
    "Scored",
    "augment",
    "boundaries",
    "elbo",
    "exact_log_marginal",
    "expert_ids",
    "patterns",
    "posterior",
    "sample_latents",
    "score",
]

CONT = -1


def expert_ids(program: Program) -> list[int]:
    """Token ids of an expert program: its text then ``<eos>``."""
    return [*encode(program.text), EOS]


def boundaries(program: Program) -> list[int]:
    """Positions in `expert_ids` where the program lines start (the decision points)."""
    out, pos = [], len(encode(program.prompt))
    for line in program.body:
        out.append(pos)
        pos += len(encode(line))
    return out


def augment(x: list[int], bounds: list[int], decisions: list[int]) -> tuple[list[int], list[bool]]:
    """Insert latent tokens into ``x``: ``(ids, is_latent)``; ``decisions[t]`` is ``CONT`` or k."""
    ids: list[int] = []
    latent: list[bool] = []
    cuts = dict(zip(bounds, decisions, strict=False))
    for pos, tok in enumerate(x):
        d = cuts.get(pos, CONT)
        if d != CONT:
            ids.append(FIRST_LATENT + d)
            latent.append(True)
        ids.append(tok)
        latent.append(False)
    return ids, latent


def _allowed(t: int, current: int, n_latents: int) -> list[int]:
    if t == 0:
        return list(range(n_latents))
    return [CONT] + [k for k in range(n_latents) if k != current]


def patterns(n_bounds: int, n_latents: int) -> list[list[int]]:
    """Every valid latent pattern (``n_latents · n_latents^(n_bounds-1)`` of them)."""
    out: list[list[int]] = []
    for first in range(n_latents):
        for rest in itertools.product([CONT, *range(n_latents)], repeat=n_bounds - 1):
            current, ok = first, True
            for d in rest:
                if d == current:
                    ok = False
                    break
                current = d if d != CONT else current
            if ok:
                out.append([first, *rest])
    return out


@dataclass
class Scored:
    """Per-sequence terms of augmented sequences (tensors of shape ``(batch,)``)."""

    joint: torch.Tensor  # log p(x, z)
    expert: torch.Tensor  # Σ log p(x tokens | aug prefix)
    log_q: torch.Tensor  # log q(z | x)
    switches: torch.Tensor  # switches after the first latent


def _pad(seqs: list[list[int]]) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    return torch.tensor([s + [EOS] * (width - len(s)) for s in seqs])


def score(
    model: nn.Module,
    xs: list[list[int]],
    bounds: list[list[int]],
    decisions: list[list[int]],
    n_latents: int,
    temperature: float = 1.0,
) -> Scored:
    """One teacher-forced forward over the augmented sequences: the terms of `Scored`.

    ``log_q`` keeps its graph (the E-step's policy gradient flows through it).
    """
    check_int(n_latents, "n_latents", 1)
    check_number(temperature, "temperature", 0.0, open_low=True)
    augs = [augment(x, b, d) for x, b, d in zip(xs, bounds, decisions, strict=True)]
    ids = _pad([a[0] for a in augs])
    logits = model(input_ids=ids).logits.float()
    logp = F.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    joint, expert, log_q, switches = [], [], [], []
    for row, ((aug, is_lat), x, b, d) in enumerate(zip(augs, xs, bounds, decisions, strict=True)):
        n = len(aug)
        lat = torch.tensor(is_lat[1:n])
        joint.append(logp[row, : n - 1].sum())
        expert.append(logp[row, : n - 1][~lat].sum())
        # decision t is read at the augmented position of boundary t (latent or expert token)
        aug_pos = _boundary_positions(b, d)
        lq, current = logits.new_zeros(()), None
        for t, (p, dt) in enumerate(zip(aug_pos, d, strict=True)):
            allowed = _allowed(t, current, n_latents)
            ids_allowed = [x[b[t]] if a == CONT else FIRST_LATENT + a for a in allowed]
            scores = logits[row, p - 1, ids_allowed] / temperature
            lq = lq + F.log_softmax(scores, -1)[allowed.index(dt)]
            current = dt if dt != CONT else current
        log_q.append(lq)
        switches.append(float(sum(1 for dt in d[1:] if dt != CONT)))
    return Scored(torch.stack(joint), torch.stack(expert), torch.stack(log_q),
                  torch.tensor(switches))  # fmt: skip


def _boundary_positions(bounds: list[int], decisions: list[int]) -> list[int]:
    """Augmented index of the token read at each decision point."""
    out, shift = [], 0
    for b, d in zip(bounds, decisions, strict=True):
        out.append(b + shift)
        shift += d != CONT
    return out


@torch.no_grad()
def sample_latents(
    model: nn.Module,
    xs: list[list[int]],
    bounds: list[list[int]],
    n_latents: int,
    generator: torch.Generator,
    temperature: float = 1.0,
) -> list[list[int]]:
    """Sample ``z ∼ q(z | x)`` decision by decision (one batched forward per decision point)."""
    decisions: list[list[int]] = [[] for _ in xs]
    current: list[int | None] = [None] * len(xs)
    for t in range(max(len(b) for b in bounds)):
        rows = [i for i, b in enumerate(bounds) if t < len(b)]
        prefixes = [augment(xs[i][: bounds[i][t]], bounds[i][:t], decisions[i])[0] for i in rows]
        logits = model(input_ids=_pad(prefixes)).logits.float()
        for j, i in enumerate(rows):
            allowed = _allowed(t, current[i], n_latents)
            ids = [xs[i][bounds[i][t]] if a == CONT else FIRST_LATENT + a for a in allowed]
            probs = F.softmax(logits[j, len(prefixes[j]) - 1, ids] / temperature, -1)
            choice = allowed[int(torch.multinomial(probs, 1, generator=generator))]
            decisions[i].append(choice)
            current[i] = choice if choice != CONT else current[i]
    return decisions


@torch.no_grad()
def exact_log_marginal(model: nn.Module, x: list[int], bounds: list[int], n_latents: int) -> float:
    """``log p(x) = log Σ_z p(x, z)`` by enumerating every latent pattern."""
    pats = patterns(len(bounds), n_latents)
    joint = score(model, [x] * len(pats), [bounds] * len(pats), pats, n_latents).joint
    return float(torch.logsumexp(joint.double(), 0))


@torch.no_grad()
def posterior(model: nn.Module, x: list[int], bounds: list[int], n_latents: int):
    """The exact posterior ``p(z | x)`` over `patterns` (enumerated): ``(patterns, probs)``."""
    pats = patterns(len(bounds), n_latents)
    joint = score(model, [x] * len(pats), [bounds] * len(pats), pats, n_latents).joint
    return pats, torch.softmax(joint.double(), 0)


@torch.no_grad()
def elbo(
    model: nn.Module,
    x: list[int],
    bounds: list[int],
    n_latents: int,
    temperature: float = 1.0,
    q: torch.Tensor | None = None,
) -> float:
    """``E_q[log p(x, z) − log q(z | x)]`` computed exactly over every pattern.

    ``q=None`` uses the LM's proposal at ``temperature``; otherwise ``q`` is a distribution over
    `patterns` (e.g. `posterior`'s).
    """
    pats = patterns(len(bounds), n_latents)
    s = score(model, [x] * len(pats), [bounds] * len(pats), pats, n_latents, temperature)
    log_q = s.log_q.double() if q is None else torch.log(q.double())
    weights = log_q.exp()
    terms = torch.where(weights > 0, s.joint.double() - log_q, torch.zeros_like(log_q))
    return float((weights * terms).sum())
