"""Bench scenarios: the task, reference model and settings each method is shown in.

`sparse bench` groups the installed methods by the scenario they declare and runs each group
beside that scenario's dense model and core baselines, one table section and one figure per
scenario. A method declares its scenario with a class attribute:

```python
class LAPP(PruningMethod):
    bench_scenario: ClassVar[str] = "cnn"
```

(no attribute: `DEFAULT_SCENARIO`). A scenario is a `Scenario`. Classification
scenarios on the core's tasks (`mnist1d-mlp`, `cnn`, `digits-resnet`) are built in and run
every variant through `sparsecore.cli.common.run_variant`; any other scenario brings its own
`runner` and is registered in-process with `register_scenario` or, from an installed
package, through the `sparsecore.scenarios` entry-point group (`name = "module:SCENARIO"`,
loaded only when a method asks for that scenario). A method whose scenario is not installed is
shown in the default scenario with a note, so that it still runs.

Methods that are more than one training run (`sparsecore.method.PruningMethod.procedure`)
run their procedure at bench scale when a runner for it is known (`PROCEDURES`): IMP and
the lottery ticket (iterative rounds with rewinding) prune in `rounds` rounds whose fraction is
fitted so that the last round reaches the target sparsity, training `epochs / (rounds + 1)`
epochs per round, so that the whole procedure costs the same epochs as one run of the others.
A package whose procedure the core does not know runs it through its method class's
`bench_procedure(sparsity, seed, args) -> (accuracy, extras)` classmethod (e.g. Sparse Model
Soups: pretraining, phases of retrained ingredients and their soup, at bench scale), with the
same return value as `sparsecore.cli.common.run_variant`.
"""

from __future__ import annotations

import argparse
import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from sparsecore.method import PruningMethod

__all__ = [
    "DEFAULT_SCENARIO",
    "PROCEDURES",
    "Scenario",
    "get_scenario",
    "register_scenario",
    "scenario_names",
    "scenario_of",
]

#: Scenario of a method that declares none.
DEFAULT_SCENARIO = "mnist1d-mlp"

#: `runner(scenario, variants, settings, progress) -> rows` for a custom scenario: `variants`
#: are `(name, sparsity)` pairs (`"dense"` first), `settings` the bench's options.
Runner = Callable[["Scenario", Sequence[tuple[str, float | None]], argparse.Namespace], list]


@dataclass(frozen=True)
class Scenario:
    """One bench scenario.

    Attributes:
        name: Short name (`sparse bench --scenarios NAME`).
        title: One line for the table header and the figure.
        task: Core task of a classification scenario (`None` for a custom runner).
        model: Core model name of a classification scenario.
        baselines: Core methods run beside the scenario's methods (those installed).
        sparsities: Sparsities of the default run; `--quick` uses the last one only.
        epochs: Epochs of the default run.
        quick_epochs: Epochs with `--quick`.
        seeds: Seeds of the default run (`--quick`: 1).
        pattern: Pattern given to the baselines (`None`: their default), e.g. `"channel"` in
            the CNN scenario so that they compete with LAPP at the same structure.
        runner: A custom runner (see `Runner`); `None` for classification scenarios.
        in_quick: Whether `sparse bench --quick` runs it (the package-reproduction scenarios
            do not: each costs 15-60 s of CPU; `sparse reproduce NAME --quick` runs one).
        in_default: Whether a plain `sparse bench` runs it; `False` for a scenario too costly
            for the default's three minutes (SHRP's encoder: > 100 s of CPU), which then runs
            only when named in `--scenarios`.
    """

    name: str
    title: str
    task: str | None = None
    model: str | None = None
    baselines: tuple[str, ...] = ("magnitude", "random", "snip", "gmp", "set", "rigl")
    sparsities: tuple[float, ...] = (0.5, 0.9, 0.95)
    epochs: int = 10
    quick_epochs: int = 3
    seeds: int = 3
    pattern: str | None = None
    runner: Runner | None = None
    in_quick: bool = True
    in_default: bool = True
    options: dict[str, Any] = field(default_factory=dict)


_SCENARIOS: dict[str, Scenario] = {}


def register_scenario(scenario: Scenario) -> Scenario:
    """Register (or replace) a scenario in-process."""
    if not isinstance(scenario, Scenario):
        raise TypeError(f"register_scenario needs a Scenario, got {type(scenario).__name__}")
    _SCENARIOS[scenario.name] = scenario
    return scenario


register_scenario(
    Scenario(
        DEFAULT_SCENARIO,
        "MNIST-1D, MLP 2x256: unstructured sparse training",
        task="mnist1d",
        model="mlp",
        sparsities=(0.5, 0.9),
        epochs=10,
    )
)
register_scenario(
    Scenario(
        "cnn",
        "sklearn digits, ResNet (a CNN): channel pruning",
        task="digits",
        model="resnet",
        baselines=("magnitude", "random", "gmp"),
        sparsities=(0.5,),
        epochs=4,
        quick_epochs=2,
        seeds=1,
        pattern="channel",
    )
)
register_scenario(
    Scenario(
        "digits-resnet",
        "sklearn digits, ResNet: unstructured pruning of a residual network",
        task="digits",
        model="resnet",
        baselines=("magnitude", "gmp", "rigl"),
        sparsities=(0.9,),
        epochs=4,
        quick_epochs=2,
        seeds=1,
    )
)


def _row(data: dict[str, Any]) -> Any:
    from sparsecore.evaluation import Row

    def num(key: str) -> float:
        value = data.get(key)
        return math.nan if value is None else float(value)

    return Row(
        str(data.get("variant", "?")),
        num("sparsity"),
        num("flops_ratio"),
        str(data.get("metric", "")),
        num("mean"),
        num("std"),
        [math.nan if v is None else float(v) for v in data.get("seeds", [])],
        num("wall_s"),
        str(data.get("note", "")),
    )


def reproduction_runner(package: str) -> Runner:
    """A runner that shows a package in its own scenario: its reproduction at `--quick` scale.

    The reproduction brings the scenario's task, its dense model and its baselines; its rows are
    the group's rows (its own output is not printed). Used for methods whose task is not one of
    the core's (a NeRF scene, a sensor field, an encoder) until a dedicated scenario exists.

    Args:
        package: The package name (`hollownerf` for `sparse-hollownerf`).
    """

    def run(
        scenario: Scenario, variants: Sequence[tuple[str, float | None]], args: argparse.Namespace
    ) -> list[Any]:
        import contextlib
        import io
        import json
        import tempfile
        from pathlib import Path

        from sparsecore.cli.reproduce import call_main, find_reproduction

        module, origin = find_reproduction(package)
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "results.json"
            with contextlib.redirect_stdout(io.StringIO()):
                status = call_main(module.main, ["--quick", "--out", str(out)], origin)
            if isinstance(status, int) and status != 0:
                raise RuntimeError(f"{origin} --quick exited with status {status}")
            data = json.loads(out.read_text())
        holds = {True: "holds", False: "does not hold", None: "not tested"}[data.get("holds")]
        scenario.options.setdefault("notes", []).append(
            f"rows of {package}'s reproduction --quick; its claim at that scale: {holds}"
        )
        return [_row(r) for r in data.get("rows", [])]

    return run


for _name, _package, _title, _default in (
    ("nerf-scene", "hollownerf", "HollowNeRF's synthetic scene (its reproduction, quick)", True),
    ("sensor-field", "dynst", "DynST's sensor fields (its reproduction, quick)", True),
    ("encoder", "shrp", "SHRP's MiniLM encoder, topic classification (reproduction)", False),
    ("peft-encoder", "lightpeft", "Light-PEFT's MiniLM + LoRA, topic classification", False),
    ("domain-lm", "atp", "ATP's tiny Llama + LoRA, stdlib -> asyncio domain", False),
    ("memory-finetune", "slimfit", "SlimFit's MiniLM + tiny ViT fine-tuning memory", False),
    ("lm-ast", "ast", "AST's tiny LM on Python stdlib text (its reproduction, quick)", True),
    ("consensus-gates", "consensus", "Consensus gates, digits ResNet (reproduction, quick)", False),
    ("spec-decoding", "vocabtrim", "VocabTrim's trimmed drafter, speculative decoding", False),
    ("supernet", "supertickets", "SuperTickets' digits supernet (its reproduction, quick)", False),
    ("lm-compresso", "compresso", "Compresso's L0 gates + LoRA, pretrained Llama (quick)", False),
    ("reasoning-toy", "rebalance", "ReBalance's reasoning toy, tiny Llama (reproduction)", False),
    ("action-pruning", "ra3", "RA3's action pruning + mid-training RL, tiny Llama (repro.)", False),
    ("latent-diffusion", "ldpruner", "LD-Pruner, digits LDM operator pruning (repro.)", False),
    ("lm-nas", "tracenas", "TraceNAS's tiny-LM depth/width search (its reproduction)", False),
    ("video-inr", "nirvana", "NIRVANA's video INR codec vs NeRV, synthetic videos (repro.)", False),
    ("rlvr-toy", "arrol", "ARRoL's rollout pruning in GRPO, string reversal (repro.)", False),
):
    register_scenario(
        Scenario(
            _name,
            _title,
            baselines=(),
            runner=reproduction_runner(_package),
            in_quick=False,
            in_default=_default,
        )
    )


def _lm_runner(
    scenario: Scenario, variants: Sequence[tuple[str, float | None]], args: argparse.Namespace
) -> list[Any]:
    """One-shot LM rows (`sparsecore.bench.lm_bench.run_lm_bench`) on the pretrained micro Llama.

    The micro model trains in seconds on a fresh machine (then comes from the cache), so the
    default bench can afford it; `sparse bench --task stdlib-lm` runs the larger `tiny` model.
    The rows are dense and, at 50%, 60% and 2:4, magnitude plus the scenario's methods.
    """
    from sparsecore.bench.lm_bench import run_lm_bench

    wanted = {name for name, _ in variants}
    methods = tuple(m for m in ("magnitude", "wanda", "sparsegpt") if m in wanted)
    scenario.options.setdefault("notes", []).append(
        "perplexity (lower is better); 3 calibration seeds; `sparse bench --task stdlib-lm` "
        "for the tiny model"
    )
    return run_lm_bench(
        size="micro", seeds=(0, 1, 2), methods=methods or ("magnitude",), progress=False
    )


register_scenario(
    Scenario(
        "lm",
        "One-shot pruning of the pretrained micro Llama, Python stdlib text (perplexity)",
        baselines=("magnitude",),
        runner=_lm_runner,
        in_quick=False,
    )
)


def _plugin_scenario(name: str) -> Scenario | None:
    for ep in entry_points(group="sparsecore.scenarios"):
        if ep.name == name:
            found = ep.load()
            if not isinstance(found, Scenario):
                raise TypeError(f"scenario entry point {name!r} ({ep.value}) is not a Scenario")
            return register_scenario(found)
    return None


def get_scenario(name: str) -> Scenario | None:
    """The scenario `name` (registered or from an entry point), or `None` if not installed."""
    if name in _SCENARIOS:
        return _SCENARIOS[name]
    return _plugin_scenario(name)


def scenario_names() -> list[str]:
    """Registered and installed scenario names (entry points are not imported)."""
    names = set(_SCENARIOS) | {ep.name for ep in entry_points(group="sparsecore.scenarios")}
    return sorted(names)


def scenario_of(cls: type[PruningMethod]) -> str:
    """The scenario `cls` declares (`bench_scenario`), else `DEFAULT_SCENARIO`."""
    name = getattr(cls, "bench_scenario", None)
    return name if isinstance(name, str) and name else DEFAULT_SCENARIO


# ---------------------------------------------------------------------- procedures at bench scale
def iterative_rewinding(
    method_cls: type[PruningMethod],
    sparsity: float,
    seed: int,
    args: argparse.Namespace,
    rounds: int = 3,
) -> tuple[float, dict[str, Any]]:
    """IMP / lottery ticket at bench scale: `rounds` prune-rewind-retrain rounds.

    The per-round fraction `1 - (1 - sparsity) ** (1 / rounds)` makes the last round land on
    `sparsity`; `args.epochs` are split over the `rounds + 1` trainings.

    Returns:
        `(accuracy, extras)` as `sparsecore.cli.common.run_variant`.
    """
    import time

    from sparsecore.bench import load_task, make_model, train
    from sparsecore.bench.train import build_method
    from sparsecore.evaluation import count_flops

    task = load_task(args.task)
    model = make_model(args.model, task, seed=seed)
    example = task.x_test[:1]
    dense_macs = count_flops(model, example).dense
    fraction = 1.0 - (1.0 - sparsity) ** (1.0 / rounds)
    epochs = max(1, args.epochs // (rounds + 1))
    steps = epochs * math.ceil(task.num_train / args.batch_size)
    options = {**getattr(args, "method_options", {}), "fraction": fraction, "sparsity": 0.0}
    method = build_method(method_cls, None, seed, steps, task.input_shape, options)
    start = time.perf_counter()
    result = None
    for round_index in range(rounds + 1):
        if round_index:
            method.prune_round()  # type: ignore[attr-defined]
            method.rewind()  # type: ignore[attr-defined]
        result = train(
            model,
            task,
            method,
            epochs=epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            seed=seed,
            progress=args.progress,
        )
    assert result is not None
    final = method.finalize()
    macs = count_flops(final, example)
    return result.accuracy, {
        "sparsity": result.sparsity,
        "flops_ratio": macs.effective / dense_macs,
        "wall_s": time.perf_counter() - start,
        "macs": (macs.dense, macs.effective),
        "model": final,
    }


#: Bench-scale runners of multi-run procedures, by the method's `procedure` text.
PROCEDURES: dict[str, Callable[..., tuple[float, dict[str, Any]]]] = {
    "iterative rounds with rewinding": iterative_rewinding,
}


def procedure_runner(cls: type[PruningMethod]) -> Callable[..., tuple[float, dict]] | None:
    """The bench-scale runner of `cls`'s procedure: the core's (`PROCEDURES`), else the class's
    own `bench_procedure`, else `None` (the bench then skips the method).
    """
    if cls.procedure in PROCEDURES:
        return PROCEDURES[cls.procedure]
    own = getattr(cls, "bench_procedure", None)
    if callable(own):
        return lambda _cls, sparsity, seed, args: own(sparsity, seed, args)
    return None


def scenario_args(scenario: Scenario, args: argparse.Namespace) -> argparse.Namespace:
    """`args` with the scenario's task, model, epochs and seeds filled in (a copy)."""
    out = copy.copy(args)
    quick = bool(getattr(args, "quick", False))
    if scenario.task is not None:
        out.task = scenario.task
        out.model = scenario.model
    if getattr(args, "epochs", None) is None:
        out.epochs = scenario.quick_epochs if quick else scenario.epochs
    if getattr(args, "seeds", None) is None:
        out.seeds = 1 if quick else scenario.seeds
    return out


# ---------------------------------------------------------------------- planning sparse bench
@dataclass
class BenchGroup:
    """What `sparse bench` runs in one scenario.

    Attributes:
        scenario: The scenario.
        args: The options with the scenario's task, model, epochs and seeds filled in.
        plan: `(variant, sparsity, skip_reason)`, dense first, then baselines, then methods.
        notes: Lines printed under the group's table (fallbacks, skipped reasons).
    """

    scenario: Scenario
    args: argparse.Namespace
    plan: list[tuple[str, float | None, str | None]]
    notes: list[str] = field(default_factory=list)


def _sparsities(scenario: Scenario, args: argparse.Namespace) -> list[float]:
    chosen = getattr(args, "sparsity_list", None)
    if chosen:
        return list(chosen)
    return [scenario.sparsities[-1]] if getattr(args, "quick", False) else list(scenario.sparsities)


def plan_bench(
    args: argparse.Namespace,
    methods: dict[str, type[PruningMethod]],
    chosen: Sequence[str],
    baselines: Sequence[str],
) -> list[BenchGroup]:
    """Group the chosen methods by scenario and plan each group's variants.

    Args:
        args: `sparse bench` options (`task`/`model` customise the default scenario).
        methods: Installed methods by name.
        chosen: Methods asked for (`--methods`), or every installed one.
        baselines: Core baselines, in table order.

    Returns:
        One `BenchGroup` per scenario that has a chosen method, default scenario first.
    """
    from sparsecore.bench import make_model, task_spec
    from sparsecore.bench.train import applicability, fixed_sparsity

    wanted = getattr(args, "scenario_filter", None)
    by_scenario: dict[str, list[str]] = {}
    notes: dict[str, list[str]] = {}
    for name in chosen:
        if name == "dense":
            continue
        declared = scenario_of(methods[name])
        home = declared if get_scenario(declared) is not None else DEFAULT_SCENARIO
        if home != declared:
            notes.setdefault(home, []).append(
                f"{name} declares scenario {declared!r}, which is not installed: shown here"
            )
        by_scenario.setdefault(home, []).append(name)
    order = sorted(by_scenario, key=lambda s: (s != DEFAULT_SCENARIO, s))
    groups = []
    for scenario_name in order:
        if wanted and scenario_name not in wanted:
            continue
        scenario = get_scenario(scenario_name)
        assert scenario is not None
        sargs = scenario_args(scenario, args)
        if scenario.name == DEFAULT_SCENARIO:
            sargs.task, sargs.model = args.task, args.model
        members = by_scenario[scenario_name]
        in_group = [b for b in baselines if b in scenario.baselines and b in methods]
        if scenario_name == DEFAULT_SCENARIO:
            in_group = [b for b in baselines if b in methods and b in members]
        variants = [*in_group, *(m for m in members if m not in in_group)]
        sparsities = _sparsities(scenario, sargs)
        plan: list[tuple[str, float | None, str | None]] = [("dense", None, None)]
        quick_skip = getattr(args, "quick", False) and not scenario.in_quick
        default_skip = not scenario.in_default and not wanted
        if quick_skip or default_skip:
            why = "not run with --quick" if quick_skip else f"costly: --scenarios {scenario.name}"
            reason = f"skipped: {why} (or: sparse reproduce {{}} --quick)"
            plan = [(name, None, reason.format(name)) for name in variants]
            groups.append(BenchGroup(scenario, sargs, plan, notes.get(scenario_name, [])))
            continue
        model = make_model(sargs.model, task_spec(sargs.task)) if scenario.task else None
        for name in variants:
            cls = methods[name]
            procedure = cls.procedure
            if procedure is not None and procedure_runner(cls) is None:
                plan.append((name, None, f"skipped: own procedure ({procedure}), no bench runner"))
                continue
            if procedure is None and model is not None:
                reason = applicability(cls, sargs.task, model)
                if reason:
                    plan.append((name, None, f"skipped: {reason}"))
                    continue
            if procedure is None and fixed_sparsity(cls):
                plan.append((name, None, None))
            else:
                plan.extend((name, s, None) for s in sparsities)
        groups.append(BenchGroup(scenario, sargs, plan, notes.get(scenario_name, [])))
    return groups


def run_planned(
    group: BenchGroup,
    name: str,
    sparsity: float | None,
    seed: int,
    methods: dict[str, type[PruningMethod]],
    time_limit: float = 0.0,
) -> tuple[float, dict[str, Any]]:
    """One variant of a classification group for one seed (`over_seeds` callback result)."""
    from sparsecore.cli.common import run_variant

    args = copy.copy(group.args)
    options = dict(getattr(args, "method_options", {}).get(name, {}))
    if group.scenario.pattern and name in group.scenario.baselines and "pattern" not in options:
        options["pattern"] = group.scenario.pattern
    args.method_options = {name: options}
    cls = methods.get(name)
    if cls is not None and cls.procedure is not None:
        args.method_options = options  # the procedure runner takes this method's options
        runner = procedure_runner(cls)
        assert runner is not None  # plan_bench skipped it otherwise
        return runner(cls, sparsity, seed, args)
    return run_variant(name, sparsity, seed, args, time_limit)
