"""The Sparse Model Soups procedure: P prune–retrain phases, m ingredients each, merged.

```python
import sparse_sms as sms
result = sms.run(pretrained, train_fn, eval_fn, sms.SMSConfig(sparsity=0.9, n_phases=3),
                 bn_batches=train_batches, lr_history=pretrain_lrs)
result.model          # the final soup, a plain model with exact zeros
```

Per phase ``p`` (official ``runners/pretrainedRunner.py`` + ``ensembleRunner.py``):

1. prune the previous soup (the pretrained model for ``p = 1``) by `SparseModelSoup`:
   ``round(q * active)`` more weights by global magnitude;
2. retrain ``m`` copies on that one mask, differing only in ``vary`` (``train_fn``);
3. recalibrate each ingredient's BN and score it with ``eval_fn`` (validation);
4. merge: uniform or greedy soup (`sparse_sms.soup`), recalibrate BN, score;
5. the soup starts the next phase.

**Parallel ingredients.** When ``torch.distributed`` is initialised (e.g. under ``torchrun``),
rank ``r`` trains the ingredients ``i`` with ``i % world_size == r`` (one each when
``world_size == m``). The trained state dicts are then exchanged with ``broadcast`` (bool masks
as ``uint8``), so every rank holds all ``m`` ingredients and forms the soup locally, in
ingredient order, with the same float64 averaging as a single process
(`sparsecore.distributed.average_state_dicts`). Ingredient ``i`` always
uses seed ``seed + values[i]`` whatever rank trains it, so the soup is bit-for-bit the one of a
sequential run for the same seeds (deterministic CPU kernels assumed). Exchanging states rather
than all-reducing a sum (`sparsecore.distributed.average_state_dicts_across_ranks`) is a
deliberate choice: the greedy soup needs every ingredient anyway, the all-reduce's summation
order depends on the backend and would break bitwise equality for ``m > 2``, and it needs
``world_size == m``; the extra memory is ``m`` copies of the model, as in the official code.
Every collective call here is made by all ranks in the same order, so ``train_fn`` may itself
use collectives only within a process group of its own.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from sparse_sms.config import SMSConfig
from sparse_sms.ingredient import EvalFn, Ingredient, TrainFn
from sparse_sms.lr import allr_start
from sparse_sms.method import SparseModelSoup
from sparse_sms.soup import greedy_soup, merge, recalibrate_bn

__all__ = [
    "PhaseResult",
    "SMSResult",
    "ingredients_for",
    "nominal_sparsities",
    "plain_state",
    "run",
]


@dataclass
class PhaseResult:
    """What happened in one phase.

    Attributes:
        phase: Phase number (from 1; 0 is the dense segment of the gradual variant).
        sparsity: Global sparsity of the shared mask over the targets.
        ingredient_scores: Validation score of each ingredient (after BN recalibration).
        selected: Ingredients in the soup (all for the uniform soup).
        soup_score: Validation score of the soup (after BN recalibration).
        relative_norm_drop: ``||w - prune(w)|| / ||w||`` caused by this phase's pruning.
    """

    phase: int
    sparsity: float
    ingredient_scores: list[float]
    selected: list[int]
    soup_score: float
    relative_norm_drop: float = 0.0


@dataclass
class SMSResult:
    """What `run` returns.

    Attributes:
        model: The final soup: a plain model (no mask buffers) with exact zeros.
        masks: The final keep-mask per target name.
        phases: One `PhaseResult` per phase.
        ingredients: The last phase's ingredients as plain models (BN recalibrated).
        wall_s: Wall-clock seconds.
    """

    model: nn.Module
    masks: dict[str, torch.Tensor]
    phases: list[PhaseResult] = field(default_factory=list)
    ingredients: list[nn.Module] = field(default_factory=list)
    wall_s: float = 0.0


def plain_state(state: dict) -> dict:
    """``state`` without mask buffers (bool ``*_mask`` entries), to load into a plain model."""
    return {k: v for k, v in state.items() if not (k.endswith("_mask") and v.dtype == torch.bool)}


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _exchange(local: dict[int, dict], count: int, template: dict) -> list[dict]:
    """Every rank gets all ``count`` ingredient states (owner of ``i``: rank ``i % world``)."""
    rank, world = _world()
    if world == 1:
        return [local[i] for i in range(count)]
    states = []
    for i in range(count):
        owner = i % world
        state = {}
        for key, ref in template.items():
            own = local[i][key] if owner == rank else torch.empty_like(ref)
            buf = own.detach().clone().contiguous()
            if buf.dtype == torch.bool:
                buf = buf.to(torch.uint8)
            dist.broadcast(buf, src=owner)
            state[key] = buf.to(torch.bool) if ref.dtype == torch.bool else buf
        states.append(state)
    return states


def ingredients_for(
    config: SMSConfig, phase: int, max_lr: float, sparsity: float, norm_drop: float = 0.0
) -> list[Ingredient]:
    """The `Ingredient` recipes of one phase, from the config's ``vary``/``values``."""
    values = config.values if config.values is not None else tuple(range(config.n_ingredients))
    recipes = []
    for index, value in enumerate(values):
        seed, epochs, wd = config.seed, config.retrain_epochs, config.weight_decay
        start_lr = None
        if config.vary == "seed":
            seed = config.seed + int(value)
        elif config.vary == "weight_decay":
            wd = float(value)
        elif config.vary == "retrain_length":
            epochs = int(value)
        else:
            start_lr = float(value)
        if config.retrain_schedule == "allr" and start_lr is None:
            if config.pretrain_epochs is None:
                raise ValueError("pretrain_epochs: retrain_schedule='allr' needs it")
            start_lr = allr_start(
                max_lr, norm_drop, config.prune_fraction, epochs, config.pretrain_epochs
            )
        recipes.append(Ingredient(
            phase=phase, index=index, seed=seed, epochs=epochs, weight_decay=wd,
            momentum=config.momentum, max_lr=max_lr, start_lr=start_lr,
            schedule=config.retrain_schedule, warmup_fraction=config.warmup_fraction,
            sparsity=sparsity,
        ))  # fmt: skip
    return recipes


def _max_lr(config: SMSConfig, lr_history: Sequence[float] | None) -> float:
    if config.max_lr is not None:
        return config.max_lr
    if lr_history:
        return float(max(lr_history))
    raise ValueError("max_lr: give SMSConfig.max_lr or the pretraining lr_history")


class _Phases:
    """Shared machinery of `run` and `sparse_sms.gradual.run_gradual`."""

    def __init__(
        self,
        model: nn.Module | Callable[[], nn.Module],
        train_fn: TrainFn,
        eval_fn: EvalFn,
        config: SMSConfig,
        bn_batches: Sequence | None,
    ) -> None:
        if not isinstance(config, SMSConfig):
            raise TypeError(f"config must be an SMSConfig, got {type(config).__name__}")
        if not callable(train_fn) or not callable(eval_fn):
            raise TypeError("train_fn and eval_fn must be callables")
        if isinstance(model, nn.Module):
            model = copy.deepcopy(model)
        elif callable(model):
            model = model()
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"model must be an nn.Module or a callable returning one, got {model!r}"
            )
        if any(k.endswith("_mask") for k, _ in model.named_buffers()):
            raise ValueError("model: pass a plain model (finalize any method attached to it)")
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        if has_bn and config.bn_recalibration_fraction > 0 and bn_batches is None:
            raise ValueError(
                "bn_batches: the model has BatchNorm; give training batches for "
                "recalibration or set bn_recalibration_fraction=0"
            )
        self.soup, self.train_fn, self.eval_fn = model, train_fn, eval_fn
        self.config = dataclasses.replace(config, phase=0)
        self.bn_batches = list(bn_batches) if bn_batches is not None else []
        self.masks: dict[str, torch.Tensor] | None = None
        self.phases_done = 0

    def _holder(self, plain: nn.Module) -> nn.Module:
        holder = copy.deepcopy(plain)
        SparseModelSoup(self.config).setup(holder, masks=self.masks, phases_done=self.phases_done)
        return holder

    def _recal_eval(self, holder: nn.Module, state: dict) -> float:
        holder.load_state_dict(state)
        if self.bn_batches:
            recalibrate_bn(
                holder,
                self.bn_batches,
                self.config.bn_recalibration_fraction,
                self.config.bn_cumulative,
            )
        return float(self.eval_fn(holder))

    def prune(self, action: Callable[[SparseModelSoup], object]) -> float:
        """Prune the soup with ``action(pruner)``; returns the relative norm drop."""
        model = self.soup
        before = torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])
        pruner = SparseModelSoup(self.config).setup(
            model, masks=self.masks, phases_done=self.phases_done
        )
        action(pruner)
        self.phases_done = pruner.phases_done
        self.masks = {n: m.detach().clone() for n, m in pruner.masks.masks().items()}
        self.soup = pruner.finalize()
        after = torch.cat([p.detach().reshape(-1).double() for p in self.soup.parameters()])
        norm = float(before.norm())
        return float((before - after).norm()) / norm if norm > 0 else 0.0

    def sparsity(self) -> float:
        """Global sparsity of the current shared mask."""
        assert self.masks is not None
        total = sum(m.numel() for m in self.masks.values())
        return 1.0 - sum(int(m.sum()) for m in self.masks.values()) / total

    def retrain_and_merge(
        self, recipes: list[Ingredient], norm_drop: float, keep_ingredients: bool
    ) -> tuple[PhaseResult, list[nn.Module]]:
        """Train the recipes (this rank's share), exchange, score, merge, recalibrate."""
        rank, world = _world()
        holder = self._holder(self.soup)
        template = {k: v.detach().clone() for k, v in holder.state_dict().items()}
        trained: dict[int, dict] = {}
        for recipe in recipes:
            if recipe.index % world != rank:
                continue
            model = copy.deepcopy(self.soup)
            method = SparseModelSoup(self.config).setup(
                model, masks=self.masks, phases_done=self.phases_done
            )
            self.train_fn(model, method, recipe)
            method.masks.detach()
            method.masks.apply()
            trained[recipe.index] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        states = _exchange(trained, len(recipes), template)
        scores, ingredients = [], []
        for state in states:
            scores.append(self._recal_eval(holder, state))
            if keep_ingredients:
                plain = copy.deepcopy(self.soup)
                plain.load_state_dict(plain_state(holder.state_dict()))
                ingredients.append(plain)
        if self.config.soup == "greedy" and len(states) > 1:
            greedy = greedy_soup(states, scores, lambda s: self._recal_eval(holder, s))
            soup_state, selected = greedy.state, greedy.selected
        else:
            soup_state, selected = merge(states), list(range(len(states)))
        soup_score = self._recal_eval(holder, soup_state)
        self.soup.load_state_dict(plain_state(holder.state_dict()))
        result = PhaseResult(
            recipes[0].phase, self.sparsity(), scores, selected, soup_score, norm_drop
        )
        return result, ingredients


def run(
    model: nn.Module | Callable[[], nn.Module],
    train_fn: TrainFn,
    eval_fn: EvalFn,
    config: SMSConfig | None = None,
    *,
    bn_batches: Sequence | None = None,
    lr_history: Sequence[float] | None = None,
    **overrides: object,
) -> SMSResult:
    """Run Sparse Model Soups: ``n_phases`` prune–retrain–merge phases.

    Args:
        model: The pretrained dense model (copied, not modified) or a callable returning it.
        train_fn: ``train_fn(model, method, ingredient)`` retrains one ingredient in place (see
            `sparse_sms.ingredient.TrainFn` and `sparse_sms.make_train_fn`).
        eval_fn: ``eval_fn(model) -> validation score`` (greedy soup and reporting).
        config: An `SMSConfig` (or build one from ``overrides``).
        bn_batches: Training batches in a fixed order for BN recalibration (required when the
            model has BatchNorm and ``bn_recalibration_fraction > 0``).
        lr_history: LR of every pretraining step (gives ``max_lr`` when the config has none).
        **overrides: `SMSConfig` fields.

    Returns:
        An `SMSResult`. Under ``torch.distributed`` every rank returns the same result.
    """
    if config is None:
        config = SMSConfig(**overrides)  # type: ignore[arg-type]
    elif not isinstance(config, SMSConfig):
        raise TypeError(f"config must be an SMSConfig, got {type(config).__name__}")
    elif overrides:
        config = dataclasses.replace(config, **overrides)  # type: ignore[arg-type]
    max_lr = _max_lr(config, lr_history)
    start = time.perf_counter()
    state = _Phases(model, train_fn, eval_fn, config, bn_batches)
    phases: list[PhaseResult] = []
    ingredients: list[nn.Module] = []
    for phase in range(1, config.n_phases + 1):
        drop = state.prune(lambda pruner: pruner.next_phase())
        recipes = ingredients_for(config, phase, max_lr, state.sparsity(), drop)
        last = phase == config.n_phases
        result, models = state.retrain_and_merge(recipes, drop, keep_ingredients=last)
        phases.append(result)
        ingredients = models if last else ingredients
    assert state.masks is not None
    return SMSResult(state.soup, state.masks, phases, ingredients, time.perf_counter() - start)


def nominal_sparsities(config: SMSConfig) -> list[float]:
    """``1 - (1 - q)^p`` for ``p = 1..P``."""
    return [config.phase_sparsity(p) for p in range(1, config.n_phases + 1)]
