"""LD-Pruner as a `sparsecore.PruningMethod`: the latent score applied to masks of any model.

Castells, Song, Kim & Choi, "LD-Pruner: Efficient Pruning of Latent Diffusion Models using
Task-Agnostic Insights", CVPRW 2024, arXiv 2404.11936 (no official code; score as in
bytedance/Hybrid-SD ``compression/prune_sd/prune_utils.py::calculate_score``).

Two entry points share the score (`sparse_ldpruner.score`):

* `LDPruner.prune_ldm` (and `sparse_ldpruner.ld_prune`): the paper's setting, operators of a
  diffusers UNet removed or halved physically, to a MAC budget (see `sparse_ldpruner.pruning`).
* `LDPruner.calibrate` on any model (what ``sparse bench`` and the conformance suite run): the
  operators are the output rows of every target weight (a Linear's output features, a Conv's
  filters); the modifications are "remove" (all rows) and "halve" (the lower-L2-norm half of the
  rows); the "latents" are the model's outputs on the calibration inputs, whose per-output mean
  and std over the samples give the same score. Candidates are taken in ascending score until the
  masked fraction of target weights reaches ``sparsity`` (a later "remove" of a halved target
  masks its remaining rows: with few targets the budget would otherwise be out of reach; the
  UNet path keeps one modification per operator); the last one taken masks only as many of its
  rows (lowest norm first) as the budget needs. Choices (labelled): rows as operators, outputs
  as latents, a parameter budget; the budget is exact to one row.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from sparse_ldpruner.operators import ACTIONS
from sparse_ldpruner.score import latent_score

if TYPE_CHECKING:
    from sparse_ldpruner.pruning import PruneResult
from sparsecore.method import Batch, LossFn, MethodConfig, PruningMethod
from sparsecore.patterns import Pattern, Unstructured
from sparsecore.taxonomy import Taxonomy
from sparsecore.validation import check_int, check_number

__all__ = ["LDPruner", "LDPrunerConfig"]


@dataclass(frozen=True)
class LDPrunerConfig(MethodConfig):
    """LD-Pruner's options.

    Attributes:
        sparsity: Mask view: fraction of target weights to mask.
        n_samples: Fixed samples of the score (calibration inputs / noise seeds), ``>= 2``.
        steps: Sampler steps of `LDPruner.prune_ldm`.
        keep_ratio: Fraction kept by ``"halve"``, in ``(0, 1)``.
        actions: Modifications considered, a subset of ``("remove", "halve")``.
    """

    sparsity: float = 0.5
    n_samples: int = 64
    steps: int = 10
    keep_ratio: float = 0.5
    actions: tuple[str, ...] = ACTIONS

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self.n_samples, "n_samples", 2)
        check_int(self.steps, "steps", 1)
        check_number(self.keep_ratio, "keep_ratio", 0.0, 1.0, open_low=True, open_high=True)
        if not isinstance(self.actions, tuple | list) or not self.actions:
            raise TypeError(f"actions must be a non-empty tuple of {ACTIONS}, got {self.actions!r}")
        if any(a not in ACTIONS for a in self.actions):
            raise ValueError(f"actions must be a subset of {ACTIONS}, got {self.actions!r}")
        object.__setattr__(self, "actions", tuple(self.actions))


class LDPruner(PruningMethod):
    """LD-Pruner: modify the operators whose change moves the output statistics least."""

    name: ClassVar[str] = "ldpruner"
    config_class: ClassVar[type[MethodConfig]] = LDPrunerConfig
    supported_patterns: ClassVar[tuple[type[Pattern], ...]] = (Unstructured,)
    needs_calibration: ClassVar[bool] = True
    bench_scenario: ClassVar[str] = "latent-diffusion"
    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        granularity=("layer", "channel", "head"),
        timing="after",
        path="dense-to-sparse",
        dynamics="static",
        note="operators (ResNet blocks, attentions, FFNs) removed or halved by the change of "
        "the output statistics, then fine-tuned; the mask view masks rows of weights",
    )
    config: LDPrunerConfig

    def __init__(self, config: LDPrunerConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.chosen: list[str] = []

    # ------------------------------------------------------------ the paper's LDM path
    def prune_ldm(self, ldm: nn.Module, mac_ratio: float, progress: bool = False) -> PruneResult:
        """Prune a `sparse_ldpruner.TinyLDM` to ``mac_ratio`` of its UNet MACs (a copy).

        Args:
            ldm: A `sparse_ldpruner.TinyLDM` (not modified).
            mac_ratio: Target UNet MACs as a fraction of the original.
            progress: Show a progress bar while scoring.

        Returns:
            A `sparse_ldpruner.PruneResult`; the score's noise seed is drawn from the method's
            own generator (seeded from ``config.seed`` through `sparsecore.method.method_seed`).
        """
        from sparse_ldpruner.pruning import ld_prune

        c = self.config
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator))
        return ld_prune(
            ldm, mac_ratio, c.n_samples, c.steps, c.keep_ratio, c.actions, seed, progress=progress
        )

    # ------------------------------------------------------------ the mask view
    def _rows(self, name: str) -> torch.Tensor:
        """Row indices of target ``name``, lowest L2 norm first."""
        w = self.masks.param(name).detach()
        return torch.sort(w.flatten(1).norm(dim=1), stable=True).indices

    def _row_keep(self, name: str, n_rows: int) -> torch.Tensor:
        w = self.masks.param(name)
        keep = torch.ones(w.shape, dtype=torch.bool, device=w.device)
        keep[self._rows(name)[:n_rows]] = False
        return keep

    def _rows_of(self, name: str, action: str) -> int:
        rows = self.masks.param(name).shape[0]
        return rows if action == "remove" else rows - max(1, round(rows * self.config.keep_ratio))

    @torch.no_grad()
    def _outputs(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        out = getattr(out, "logits", out)
        return out.detach().float().reshape(out.shape[0], -1)

    @torch.no_grad()
    def calibrate(self, batches: Iterable[Batch], loss_fn: LossFn | None = None) -> None:
        """Score every (target, action) by the output statistics and mask to ``sparsity``.

        Args:
            batches: Calibration batches ``(x, y)``; the first ``n_samples`` inputs are used.
            loss_fn: Unused (the score is task-agnostic).

        Raises:
            ValueError: Fewer than two calibration inputs.
        """
        xs = torch.cat([b[0] for b in batches])[: self.config.n_samples]
        if xs.shape[0] < 2:
            raise ValueError("batches: LD-Pruner's score needs at least two calibration inputs")
        was_training = self.model.training
        self.model.eval()
        reference = self._outputs(xs)
        params = self.masks.params()
        scores: list[tuple[float, str, str]] = []
        for name, param in params.items():
            for action in self.config.actions:
                saved = param.detach().clone()
                param.mul_(self._row_keep(name, self._rows_of(name, action)))
                scores.append((latent_score(reference, self._outputs(xs)), name, action))
                param.copy_(saved)
        self.model.train(was_training)
        total = sum(p.numel() for p in params.values())
        need = math.ceil(self.config.sparsity * total - 1e-9)
        masked, done, self.chosen = 0, dict.fromkeys(params, 0), []
        for score, name, action in sorted(scores):
            if masked >= need:
                break
            if self._rows_of(name, action) <= done[name]:
                continue  # already modified at least this much ("remove" supersedes "halve")
            row = params[name][0].numel()
            more = min(self._rows_of(name, action) - done[name], math.ceil((need - masked) / row))
            done[name] += more
            masked += more * row
            self.masks.update(name, self._row_keep(name, done[name]))
            self.chosen.append(f"{action}:{name}:{done[name]}rows:{score:.4g}")
        self.masks.apply()

    def extra_state(self) -> dict[str, Any]:  # noqa: D102
        return {"chosen": list(self.chosen)}

    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: D102
        self.chosen = list(state.get("chosen", []))
