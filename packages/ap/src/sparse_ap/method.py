"""Activate-while-Pruning (AP) as a wrapper around any sparsecore method with pruning rounds.

Paper: Shiyu Liu, Rohan Ghosh, Dylan Tan & Mehul Motani, "AP: Selective Activation for
De-sparsifying Pruned Neural Networks", TMLR 2023, arXiv 2212.06145. Official code:
https://github.com/Martin1937/Activate-While-Pruning (``resnet_20.py``:
``prune_by_percentile_lt`` is the base global magnitude step, ``prune_by_percentile_ap`` the AP
step; read at commit ``a05a22b``).

The paper finds that pruning lowers the *dynamic dead neuron rate* (the fraction of ReLU units
that output zero for an input, averaged over inputs; measured by
`sparsecore.evaluation.dead_neuron_rate`) and that lowering it further helps. AP does so by
removing, in every pruning cycle, the remaining **negative** weights that moved least during the
cycle's training: stagnant negative weights keep pre-activations below zero. Per cycle:

1. ``w_prev`` = the weights at the start of the cycle (after setup, after a rewind, or after the
   previous pruning when the base does not rewind); the cycle trains;
2. the base method prunes ``p - p_AP`` of the remaining weights (its own criterion and count);
3. the AP step removes ``num_ap`` of the remaining negative weights with the smallest
   ``|w - w_prev|``, one ranking over all targets (the official code ranks all ``weight``
   tensors together);
4. the base rewinds (or not) exactly as it would alone.

Composition: the wrapped base is a normal sparsecore method instance (`base`) that owns the
masks and the optimizer hooks; the wrapper calls only its public ``setup``, ``prune_round``,
``rewind``, ``attach``, ``finalize`` and ``state_dict``. The AP removals are plain mask updates
(``MaskSet.update``), so the base's later rounds and rewinds keep them. The core needed no new
hook for this.

Implementation choices (labelled; the official code is the reference):

* **Count.** The official code computes ``num_ap = int(p_AP · nnz)`` from the weights alive at
  the start of the pruning step and the base removes its own ``(p - p_AP)`` percentile. Here
  the per-cycle total is fixed first, ``ceil(p · nnz)`` (sparsecore IMP's count at ``p``, so a
  cycle of ``base + AP`` ends at exactly the sparsity of the base alone at ``p``), and AP removes
  ``num_ap = ceil(p · nnz) - (removed by the base)``, which is ``p_AP · nnz`` up to one weight.
* **Exactly ``num_ap``.** The official threshold ``sort(Δ)[num_ap]`` with ``Δ <= threshold``
  removes ``num_ap + 1`` weights (and every tie). We remove exactly ``num_ap``, ties broken by
  position in the concatenation of the targets (sparsecore's rule).
* **Negative.** Strictly ``w < 0`` among the weights still unmasked after the base step (the
  official ``tensor < 0`` on the already-pruned tensor). If fewer negative weights remain than
  ``num_ap``, all of them are removed and the shortfall is recorded in `history`.
* **Which tensors.** The base's targets (sparsecore's default: every Linear/Conv weight; the
  official code: every parameter named ``weight``, BatchNorm scales included). A base's
  ``ignored`` targets (sparse-lth's ``layers_to_ignore``) are not touched by AP either.
* **Rewind / re-initialisation.** Whatever the base does. The official default
  ``--prune_type reinit`` re-initialises survivors each cycle; ``lt`` rewinds to the
  initialisation (sparsecore IMP with ``rewind_step=0``); sparse-lth adds late rewinding.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any, ClassVar

import torch
from torch import nn

from sparse_ap.config import APConfig
from sparsecore.masks import MaskSet
from sparsecore.method import MethodConfig, PruningMethod
from sparsecore.patterns import Pattern, Unstructured
from sparsecore.registry import get_method
from sparsecore.select import topk_mask
from sparsecore.taxonomy import Taxonomy

__all__ = ["ActivateWhilePruning", "stagnant_negative_weights"]


@torch.no_grad()
def stagnant_negative_weights(
    masks: Mapping[str, torch.Tensor],
    weights: Mapping[str, torch.Tensor],
    start: Mapping[str, torch.Tensor],
    count: int,
    negative_only: bool = True,
) -> dict[str, torch.Tensor]:
    """The AP selection: the ``count`` active negative weights that moved least (global ranking).

    Args:
        masks: Boolean keep-masks by name (``True`` = still active).
        weights: Current weights by name (same shapes).
        start: Weights at the start of the cycle, ``w_prev``, by name.
        count: How many to select; clamped to the number of eligible weights.
        negative_only: Only ``w < 0`` is eligible (the paper's rule); ``False`` for the ablation
            that ranks every active weight.

    Returns:
        ``{name: bool tensor}`` of the selected entries (to be removed), exactly
        ``min(count, eligible)`` ``True`` in total; ties in ``|w - w_prev|`` go to the lower
        position in the concatenation of the tensors, in mapping order.

    Raises:
        ValueError: A negative ``count``, or mismatched names or shapes.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be a non-negative integer, got {count!r}")
    if set(masks) != set(weights) or set(masks) != set(start):
        raise ValueError("masks, weights and start must have the same names")
    names = list(masks)
    scores = []
    for name in names:
        mask, w, w0 = masks[name].to(torch.bool), weights[name].detach(), start[name].detach()
        if not (mask.shape == w.shape == w0.shape):
            raise ValueError(f"{name}: shapes of mask, weight and start differ")
        eligible = mask & (w < 0) if negative_only else mask
        delta = (w.to(torch.float64) - w0.to(torch.float64).to(w.device)).abs()
        scores.append(torch.where(eligible, -delta, -math.inf).reshape(-1))
    flat = torch.cat(scores) if scores else torch.zeros(0, dtype=torch.float64)
    count = min(count, int(torch.isfinite(flat).sum()))
    chosen = topk_mask(flat, count)
    out, offset = {}, 0
    for name in names:
        numel = masks[name].numel()
        out[name] = chosen[offset : offset + numel].reshape(masks[name].shape)
        offset += numel
    return out


def _method_class(name: str) -> type[PruningMethod]:
    """The class registered as ``name``, loading only that entry point when it is one.

    (``get_method`` imports every installed method package; the base is usually the core's.)
    """
    for ep in entry_points(group="sparsecore.methods", name=name):
        cls = ep.load()
        if isinstance(cls, type) and issubclass(cls, PruningMethod):
            return cls
    try:
        return get_method(name)
    except ValueError as err:
        raise ValueError(f"base: {err}") from None


class ActivateWhilePruning(PruningMethod):
    """AP on top of a base method with pruning rounds (Liu et al., TMLR 2023).

    Use it where the base method would be used; a cycle is train → `prune_round` →
    `rewind` (or no rewind, for prune-and-fine-tune):

    ```python
    ap = ActivateWhilePruning(base="imp", fraction=0.2, ap_fraction=0.02).setup(model, opt)
    for cycle in range(cycles):
        train(model, opt)             # w_prev was recorded at the cycle start
        ap.prune_round()              # base: 18% by its criterion; AP: 2% stagnant negatives
        ap.rewind()                   # the base's own rewind; starts the next cycle
        opt = make_optimizer(model)
        ap.attach(opt)
    ```

    Attributes:
        base: The wrapped base method instance (owns the masks and the optimizer hooks).
        start_weights: ``w_prev``, the target weights at the start of the current cycle.
        history: One dict per `prune_round`: ``round``, ``nnz_before``, ``removed_base``,
            ``num_ap`` (asked), ``removed_ap`` (done), ``nnz_after``.
    """

    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("unstructured",),
        "iterative",
        "dense-to-sparse",
        "static",
        note="adds sign-aware removals to the rounds of the base method it wraps",
    )

    name = "ap"
    config_class: ClassVar[type[MethodConfig]] = APConfig
    procedure: ClassVar[str | None] = (
        "pruning cycles: train, prune_round (base + AP step), the base's rewind; "
        "sparse_ap.run_cycles"
    )
    supported_patterns: ClassVar[tuple[type[Pattern], ...]] = (Unstructured,)
    config: APConfig

    def __init__(self, config: MethodConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.base = self._build_base()
        self.start_weights: dict[str, torch.Tensor] | None = None
        self.history: list[dict[str, int]] = []

    @classmethod
    def bench_config(cls, total_steps: int, sparsity: float | None) -> dict[str, Any]:
        """Config overrides for a ``sparse bench`` scenario (see `sparsecore.bench.build_method`).

        AP is a procedure of cycles (`procedure` is set): `sparse bench` runs it through
        `bench_procedure`, not as a single run; a single run starts dense (``sparsity=0``).
        """
        return {"sparsity": 0.0}

    @classmethod
    def bench_procedure(cls, sparsity: float, seed: int, args: Any) -> tuple[float, dict]:
        """`sparse bench`: the whole cycle procedure at bench scale (`sparse_ap.bench`)."""
        from sparse_ap.bench import bench_procedure

        return bench_procedure(sparsity, seed, args)

    def _build_base(self) -> PruningMethod:
        """The base method, configured (validated) before any model is seen."""
        config = self.config
        cls = _method_class(config.base)
        if not callable(getattr(cls, "prune_round", None)):
            raise ValueError(
                f"base: {config.base!r} has no pruning rounds (prune_round); AP wraps an "
                "iterative method such as 'imp' or 'lth'"
            )
        fields = {f.name for f in dataclasses.fields(cls.config_class)}
        if "fraction" not in fields:
            raise ValueError(f"base: {config.base!r} has no 'fraction' option to split with AP")
        unknown = sorted(set(config.base_options) - fields)
        if unknown:
            raise ValueError(f"base_options: {unknown} are not options of {config.base!r}")
        options = {
            **config.base_options,
            "fraction": config.base_fraction,
            "sparsity": config.sparsity,
            "pattern": config.pattern,
            "targets": config.targets,
            "exclude": config.exclude,
            "seed": config.seed,
        }
        try:
            return cls(**options)
        except (TypeError, ValueError) as err:
            raise type(err)(f"base_options ({config.base!r}): {err}") from None

    # ------------------------------------------------------------------ the step counter
    @property  # type: ignore[override]
    def step(self) -> int:
        """Optimizer steps seen by the base (its hooks count them)."""
        base = self.__dict__.get("base")
        return base.step if base is not None else self.__dict__.get("_step", 0)

    @step.setter
    def step(self, value: int) -> None:
        base = self.__dict__.get("base")
        if base is None:
            self.__dict__["_step"] = value
        else:
            base.step = value

    # ------------------------------------------------------------------ lifecycle
    def setup(
        self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
    ) -> ActivateWhilePruning:
        """Set the base up on ``model`` (all-or-nothing) and record the first cycle's start.

        Returns:
            ``self``.

        Raises:
            RuntimeError: Already set up.
            ValueError: A pattern other than unstructured, or whatever the base's setup raises
                (before the model is touched).
        """
        if self._masks is not None:
            raise RuntimeError(f"{type(self).__name__} is already set up on a model")
        if not isinstance(self.config.pattern, self.supported_patterns):
            raise ValueError(f"pattern: AP is unstructured only, got {self.config.pattern}")
        self.base.setup(model, optimizer)
        self.model = self.base.model
        self._masks = self.base.masks
        self.start_cycle()
        return self

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Hook the base into a (new) optimizer."""
        self.base.attach(optimizer)

    def finalize(self) -> nn.Module:
        """The base's finalize: the plain model with the masks baked in."""
        model = self.base.finalize()
        self._masks = None
        return model

    def regularization(self) -> torch.Tensor:
        """The base's loss term (zero for IMP)."""
        return self.base.regularization()

    # ------------------------------------------------------------------ cycles
    @torch.no_grad()
    def start_cycle(self) -> None:
        """Record ``w_prev``: the current target weights are the start of a training cycle.

        Called by `setup`, at the end of `prune_round` and by `rewind`; call
        it yourself only if you change the weights otherwise (e.g. re-initialise them).
        """
        self.start_weights = {n: p.detach().clone() for n, p in self.masks.params().items()}

    def _ap_targets(self) -> list[str]:
        ignored = set(getattr(self.base, "ignored", ()) or ())
        return [n for n in self.masks.names if n not in ignored]

    @torch.no_grad()
    def prune_round(self) -> dict[str, int]:
        """One cycle's pruning: the base's round at ``p - p_AP``, then the AP step.

        Returns:
            The new nnz per tensor.

        Raises:
            RuntimeError: Not set up.
        """
        masks: MaskSet = self.masks
        if self.start_weights is None:
            raise RuntimeError("no cycle start recorded; call setup() first")
        nnz_before = sum(masks.nnz().values())
        budget = math.ceil(self.config.fraction * nnz_before)
        self.base.prune_round()
        removed_base = nnz_before - sum(masks.nnz().values())
        num_ap = max(0, budget - removed_base) if self.config.ap_fraction > 0 else 0
        names = self._ap_targets()
        chosen = stagnant_negative_weights(
            {n: masks.mask(n) for n in names},
            {n: masks.param(n) for n in names},
            {n: self.start_weights[n] for n in names},
            num_ap,
            self.config.negative_only,
        )
        for name, remove in chosen.items():
            if remove.any():
                masks.update(name, masks.mask(name) & ~remove)
        removed_ap = sum(int(r.sum()) for r in chosen.values())
        self.history.append(
            {
                "round": len(self.history) + 1,
                "nnz_before": nnz_before,
                "removed_base": removed_base,
                "num_ap": num_ap,
                "removed_ap": removed_ap,
                "nnz_after": sum(masks.nnz().values()),
            }
        )
        self.start_cycle()
        return masks.nnz()

    def rewind(self, *args: Any, **kwargs: Any) -> None:
        """The base's rewind (same arguments, e.g. sparse-lth's ``optimizer, scheduler``).

        Then the start of the next cycle is recorded.
        """
        self.base.rewind(*args, **kwargs)  # type: ignore[attr-defined]
        self.start_cycle()

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """The base's state dict, the cycle start and the history (masks live in the model)."""
        return {
            "name": self.name,
            "base": self.base.state_dict(),
            "start_weights": dict(self.start_weights or {}),
            "history": [dict(h) for h in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict` (load the model's state_dict too: it holds the masks)."""
        if state.get("name") != self.name:
            raise ValueError(f"state_dict is for method {state.get('name')!r}, not {self.name!r}")
        self.base.load_state_dict(state["base"])
        start = state["start_weights"]
        self.start_weights = {k: v.clone() for k, v in start.items()} if start else None
        self.history = [dict(h) for h in state["history"]]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config}, base={self.base!r})"
