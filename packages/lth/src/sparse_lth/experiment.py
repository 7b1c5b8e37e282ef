"""A resumable lottery-ticket experiment on disk: levels, control branches, instability.

The layout follows OpenLTH's ``replicate/level_L/<branch>`` directories (``lottery/desc.py``),
flattened to one experiment per root:

```text
root/
  experiment.json            what the experiment is (checked on resume)
  progress.json              what is done, with the metrics of every finished run
  init.safetensors           θ_0
  pretrain/final.safetensors θ_k (k > 0: the first k steps, as OpenLTH's --rewinding_steps)
  level_L/mask.safetensors   the level's mask (level 0: ones)
  level_L/main/              the ticket θ_k ⊙ m_L trained from k to T
  level_L/random_reinit/     same mask, fresh initialisation, trained from k
  level_L/random_prune/      random mask with the same per-layer counts, θ_k, from k
  level_L/instability/a, b/  two copies of the ticket trained with different SGD noise
  <run>/final.safetensors    trained weights (and masks)
  <run>/checkpoint.pt        periodic checkpoint of a run in progress (torch.save; loaded
                             with weights_only=True)
```

A stopped experiment continues where it was: `LotteryExperiment.run` skips runs listed in
``progress.json``, resumes a run from its ``checkpoint.pt`` (the loop is step-indexed and
deterministic, so the result equals an uninterrupted run bit for bit), and never recomputes a mask
that exists. ``levels`` and the branch/instability levels may grow between calls; anything that
defines the runs (seed, fraction, k, training spec, targets) must not change.

Seeds (all derived from ``seed``): θ_0 = ``model_fn(seed)``; the main line's data order and noise
use ``seed``; the re-init branch of level L uses ``model_fn(1000 * seed + 500 + L)``; the random
mask of level L uses a generator seeded with ``1000 * seed + 700 + L``; the instability copies use
noise seeds ``1000 * seed + 801`` and ``+ 802``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sparse_lth.config import LotteryTicketConfig, TrainSpec
from sparse_lth.instability import linear_interpolation
from sparse_lth.method import RANDOM_PRUNE_STRATEGIES, LotteryTicket, shuffled_masks
from sparse_lth.training import Data, StepCallback, evaluate, train_subnetwork

__all__ = ["BRANCHES", "LotteryExperiment"]

#: Control branches the experiment can run at each pruned level.
BRANCHES = ("random_reinit", "random_prune")
_FORMAT = 1


def _save_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _levels(value: Iterable[int] | None, name: str) -> tuple[int, ...]:
    items = tuple(value or ())
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or item < 0:
            raise ValueError(f"{name} must hold non-negative integers, got {item!r}")
    return tuple(sorted(set(items)))


class LotteryExperiment:
    """Iterative magnitude pruning with rewinding, control branches and instability, on disk.

    Args:
        root: Directory of the experiment (created; reused to resume).
        model_fn: Builds a freshly initialised model from an integer seed.
        data: ``x_train``, ``y_train``, ``x_test``, ``y_test`` tensors (e.g. a bench ``Task``).
        spec: The training run of every level (``T = spec.steps``).
        levels: Pruning levels after the dense level 0 (sparsity ``1 - (1-fraction)^levels``).
        fraction: Fraction of the remaining weights pruned per level.
        rewind_step: ``k``: the rewind point and schedule position (0: original LTH).
        seed: Replicate seed (see the module docstring for what it derives).
        layers_to_ignore: Targets never pruned but counted (OpenLTH semantics).
        targets: Target names/globs (``None``: every Linear/Conv weight).
        exclude: Names/globs left without a mask.
        branches: Control branches to run, from `BRANCHES`.
        branch_levels: Levels (>= 1) at which to run them; ``None``: every pruned level.
        instability_levels: Levels at which to run instability analysis.
        random_prune_strategy: ``"layerwise"`` or ``"global"``.
        points: Interpolation points of the instability analysis.
        checkpoint_every: Steps between checkpoints of a run in progress (0: none).
        callbacks: Called after every training step of every run.
        progress: Show tqdm bars.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        model_fn: Callable[[int], nn.Module],
        data: Data,
        spec: TrainSpec,
        *,
        levels: int,
        fraction: float = 0.2,
        rewind_step: int = 0,
        seed: int = 0,
        layers_to_ignore: Sequence[str] = (),
        targets: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        branches: Sequence[str] = (),
        branch_levels: Iterable[int] | None = None,
        instability_levels: Iterable[int] = (),
        random_prune_strategy: str = "layerwise",
        points: int = 30,
        checkpoint_every: int = 0,
        callbacks: Sequence[StepCallback] = (),
        progress: bool = False,
    ) -> None:
        if not callable(model_fn):
            raise TypeError(f"model_fn must be callable, got {model_fn!r}")
        if not isinstance(spec, TrainSpec):
            raise TypeError(f"spec must be a TrainSpec, got {type(spec).__name__}")
        for attr in ("x_train", "y_train", "x_test", "y_test"):
            if not isinstance(getattr(data, attr, None), torch.Tensor):
                raise TypeError(f"data must have a tensor attribute {attr!r}")
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 0:
            raise ValueError(f"levels must be a non-negative integer, got {levels!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an integer, got {seed!r}")
        unknown = [b for b in branches if b not in BRANCHES]
        if unknown:
            raise ValueError(f"branches: unknown {unknown}; available: {BRANCHES}")
        if random_prune_strategy not in RANDOM_PRUNE_STRATEGIES:
            raise ValueError(
                f"random_prune_strategy must be one of {RANDOM_PRUNE_STRATEGIES}, "
                f"got {random_prune_strategy!r}"
            )
        if isinstance(points, bool) or not isinstance(points, int) or points < 2:
            raise ValueError(f"points must be an integer >= 2, got {points!r}")
        if isinstance(checkpoint_every, bool) or checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {checkpoint_every!r}")
        self.config = LotteryTicketConfig(
            fraction=fraction,
            rewind_step=rewind_step,
            layers_to_ignore=tuple(layers_to_ignore),
            targets=None if targets is None else tuple(targets),
            exclude=tuple(exclude),
            seed=seed,
        )
        if rewind_step >= spec.steps:
            raise ValueError(f"rewind_step must be < spec.steps ({spec.steps}), got {rewind_step}")
        self.root = Path(root)
        self.model_fn = model_fn
        self.data = data
        self.spec = spec
        self.levels = levels
        self.seed = seed
        self.branches = tuple(branches)
        self.branch_levels = (
            tuple(range(1, levels + 1))
            if branch_levels is None
            else _levels(branch_levels, "branch_levels")
        )
        self.instability_levels = _levels(instability_levels, "instability_levels")
        self.random_prune_strategy = random_prune_strategy
        self.points = points
        self.checkpoint_every = checkpoint_every
        self.callbacks = tuple(callbacks)
        self.progress = progress
        self._done: dict[str, Any] = {}

    # ------------------------------------------------------------------ identity and progress
    @property
    def method_options(self) -> dict[str, Any]:
        """`LotteryTicketConfig` fields shared by every run."""
        return {
            "fraction": self.config.fraction,
            "layers_to_ignore": self.config.layers_to_ignore,
            "targets": self.config.targets,
            "exclude": self.config.exclude,
        }

    def identity(self) -> dict[str, Any]:
        """Everything that defines the runs (must match on resume)."""
        return {
            "format": _FORMAT,
            "fraction": self.config.fraction,
            "rewind_step": self.config.rewind_step,
            "seed": self.seed,
            "layers_to_ignore": list(self.config.layers_to_ignore),
            "targets": None if self.config.targets is None else list(self.config.targets),
            "exclude": list(self.config.exclude),
            "random_prune_strategy": self.random_prune_strategy,
            "points": self.points,
            "spec": self.spec.to_dict(),
        }

    def _open(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "experiment.json"
        ident = json.loads(json.dumps(self.identity()))
        if path.exists():
            stored = json.loads(path.read_text())
            if stored != ident:
                diff = sorted(k for k in ident if stored.get(k) != ident[k])
                raise ValueError(f"root {self.root} holds a different experiment (differs: {diff})")
        else:
            _write_json(path, ident)
        progress = self.root / "progress.json"
        self._done = json.loads(progress.read_text())["done"] if progress.exists() else {}

    def _finish(self, run: str, metrics: dict[str, Any]) -> dict[str, Any]:
        self._done[run] = metrics
        _write_json(self.root / "progress.json", {"done": self._done})
        return metrics

    def done(self) -> dict[str, Any]:
        """Metrics of every finished run, by run name (``"level_3/main"``...)."""
        progress = self.root / "progress.json"
        return json.loads(progress.read_text())["done"] if progress.exists() else {}

    # ------------------------------------------------------------------ states
    def _init_state(self) -> dict[str, torch.Tensor]:
        path = self.root / "init.safetensors"
        if not path.exists():
            model = self.model_fn(self.seed)
            _save_tensors(path, model.state_dict())
        return load_file(str(path))

    def _rewind_state(self) -> dict[str, torch.Tensor]:
        k = self.config.rewind_step
        if k == 0:
            return self._init_state()
        if "pretrain" not in self._done:
            self._train("pretrain", self._init_state(), None, 0, self.seed, end_step=k)
        return load_file(str(self.root / "pretrain" / "final.safetensors"))

    def mask(self, level: int) -> dict[str, torch.Tensor]:
        """The mask of ``level`` (computed from the previous level if needed)."""
        path = self.root / f"level_{level}" / "mask.safetensors"
        if path.exists():
            return load_file(str(path))
        model = self.model_fn(self.seed)
        method = LotteryTicket(**self.method_options).setup(model)
        if level > 0:
            self._level(level - 1, main_only=True)
            final = load_file(str(self.root / f"level_{level - 1}" / "main" / "final.safetensors"))
            model.load_state_dict(final)
            method.prune_round()
        masks = {n: m.clone() for n, m in method.masks.masks().items()}
        _save_tensors(path, masks)
        return masks

    # ------------------------------------------------------------------ runs
    def _train(
        self,
        run: str,
        state: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor] | None,
        start_step: int,
        noise_seed: int,
        end_step: int | None = None,
    ) -> dict[str, Any]:
        directory = self.root / run
        directory.mkdir(parents=True, exist_ok=True)
        ckpt = directory / "checkpoint.pt"
        resume = torch.load(ckpt, weights_only=True) if ckpt.exists() else None

        def checkpoint(payload: dict[str, Any]) -> None:
            tmp = ckpt.with_suffix(".tmp")
            torch.save(payload, tmp)
            os.replace(tmp, ckpt)

        bar = None
        if self.progress:
            try:  # tqdm is optional (it comes with sparse-core[bench])
                from tqdm.auto import tqdm
            except ImportError:  # pragma: no cover - depends on the environment
                tqdm = None
            if tqdm is not None:
                end = self.spec.steps if end_step is None else end_step
                bar = tqdm(total=end - start_step, desc=run, leave=False)
        begin = time.perf_counter()
        try:
            model, method, stats = train_subnetwork(
                self.model_fn,
                self.data,
                self.spec,
                state=state,
                masks=masks,
                start_step=start_step,
                end_step=end_step,
                model_seed=self.seed,
                data_seed=noise_seed,
                noise_seed=noise_seed,
                method_options=self.method_options,
                resume=resume,
                checkpoint=checkpoint,
                checkpoint_every=self.checkpoint_every,
                callbacks=self.callbacks,
                progress=bar,
            )
        finally:
            if bar is not None:
                bar.close()
        wall = time.perf_counter() - begin
        _save_tensors(directory / "final.safetensors", model.state_dict())
        metrics = {
            **evaluate(model, self.data.x_test, self.data.y_test),
            "sparsity": method.masks.sparsity(),
            "nnz": sum(method.masks.nnz().values()),
            "start_step": start_step,
            "end_step": self.spec.steps if end_step is None else end_step,
            "lr_first": stats["lr_first"],
            "wall_s": wall,
            "resumed_from": int(resume["step"]) if resume is not None else None,
        }
        method.masks.detach()
        self._finish(run, metrics)
        if ckpt.exists():
            ckpt.unlink()
        return metrics

    def _level(self, level: int, main_only: bool = False) -> None:
        k = self.config.rewind_step
        prefix = f"level_{level}"
        if f"{prefix}/main" not in self._done:
            self._train(f"{prefix}/main", self._rewind_state(), self.mask(level), k, self.seed)
        if main_only:
            return
        masks = self.mask(level)
        if level in self.branch_levels and level > 0:
            base = 1000 * self.seed
            if "random_reinit" in self.branches and f"{prefix}/random_reinit" not in self._done:
                fresh = self.model_fn(base + 500 + level).state_dict()
                self._train(f"{prefix}/random_reinit", fresh, masks, k, self.seed)
            if "random_prune" in self.branches and f"{prefix}/random_prune" not in self._done:
                self._train(
                    f"{prefix}/random_prune",
                    self._rewind_state(),
                    self._random_mask(level, masks),
                    k,
                    self.seed,
                )
        if level in self.instability_levels and f"{prefix}/instability" not in self._done:
            self._instability(level, masks)

    def _random_mask(
        self, level: int, masks: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        path = self.root / f"level_{level}" / "random_prune" / "mask.safetensors"
        if path.exists():
            return load_file(str(path))
        probe = LotteryTicket(**self.method_options).setup(self.model_fn(self.seed))
        ignored = set(probe.ignored)
        gen = torch.Generator().manual_seed(1000 * self.seed + 700 + level)
        prunable = {n: m for n, m in masks.items() if n not in ignored}
        out = {**masks, **shuffled_masks(prunable, self.random_prune_strategy, gen)}
        _save_tensors(path, out)
        return out

    def _instability(self, level: int, masks: Mapping[str, torch.Tensor]) -> None:
        prefix = f"level_{level}/instability"
        states = []
        for copy, offset in (("a", 801), ("b", 802)):
            run = f"{prefix}/{copy}"
            if run not in self._done:
                seed = 1000 * self.seed + offset
                self._train(run, self._rewind_state(), masks, self.config.rewind_step, seed)
            states.append(load_file(str(self.root / run / "final.safetensors")))
        model = self.model_fn(self.seed)
        LotteryTicket(**self.method_options).setup(model)  # adds the mask buffers
        result = linear_interpolation(
            model, states[0], states[1], self.data.x_test, self.data.y_test, self.points
        )
        self._finish(prefix, result.to_dict())

    # ------------------------------------------------------------------ driver
    def run(self) -> dict[str, Any]:
        """Run (or continue) every level, branch and instability analysis.

        Returns:
            `done`: the metrics of every finished run.
        """
        self._open()
        for level in range(self.levels + 1):
            self._level(level)
        return dict(self._done)
