"""Bench scenarios, method options (--set / --config), pattern and config round-trips,
quick-run output paths and ``sparse reproduce``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

from sparsecore import GMP, IMP, RigL, registry
from sparsecore.bench.scenarios import (
    _SCENARIOS,
    DEFAULT_SCENARIO,
    Scenario,
    plan_bench,
    register_scenario,
    scenario_of,
)
from sparsecore.bench.train import build_method
from sparsecore.cli import main
from sparsecore.evaluation.paths import default_results_path
from sparsecore.options import config_dict, method_options
from sparsecore.patterns import NM, Block, Channel, Head, Unstructured, parse_pattern

torch.set_num_threads(1)

PATTERNS = [Unstructured(), NM(2, 4), NM(1, 4, dim=0), Channel(), Channel(dim=1), Block(2, 4)]


def bench_args(**kw) -> argparse.Namespace:
    base = dict(
        task="mnist1d", model="mlp", epochs=None, seeds=None, quick=True, sparsity_list=None
    )
    base.update(kw)
    return argparse.Namespace(**base)


def test_every_pattern_string_and_asdict_parse_back() -> None:
    for pattern in [*PATTERNS, Head(3)]:
        assert parse_pattern(str(pattern)) == pattern, pattern
        assert parse_pattern(dataclasses.asdict(pattern)) == pattern, pattern
    with pytest.raises(ValueError, match="unknown pattern"):
        parse_pattern("diagonal")


def test_every_installed_config_round_trips() -> None:
    for name, cls in registry.available_methods().items():  # procedures have no sparsity config
        config = build_method(cls, None, 0, 100, input_shape=(1, 8, 8)).config
        assert cls.config_class(**dataclasses.asdict(config)) == config, name
        as_json = json.loads(json.dumps(config_dict(config)))
        assert cls.config_class(**as_json) == config, name


def test_set_options_are_typed_and_validated(tmp_path: Path) -> None:
    options = method_options(RigL.config_class, ["drop_fraction=0.5", "update_every=7"])
    assert options == {"drop_fraction": 0.5, "update_every": 7}
    assert build_method(RigL, 0.9, 0, 100, None, options).config.drop_fraction == 0.5
    file = tmp_path / "gmp.json"
    file.write_text(json.dumps({"pattern": "channel", "end_step": 50}))
    options = method_options(GMP.config_class, ["end_step=60"], file)  # --set wins
    assert options == {"pattern": "channel", "end_step": 60}
    assert build_method(GMP, 0.5, 0, 100, None, options).config.pattern == Channel()
    with pytest.raises(ValueError, match=r"unknown option 'drop_fractio'.*drop_fraction"):
        method_options(RigL.config_class, ["drop_fractio=0.5"])
    with pytest.raises(ValueError, match="update_every must be an integer"):
        method_options(RigL.config_class, ["update_every=often"])
    with pytest.raises(ValueError, match="drop_fraction"):
        build_method(
            RigL, 0.9, 0, 100, None, method_options(RigL.config_class, ["drop_fraction=2"])
        )


def test_cli_options_apply_where_the_field_exists() -> None:
    from sparsecore.cli.common import method_options_for

    methods = {"rigl": RigL, "gmp": GMP}
    args = argparse.Namespace(set=["drop_fraction=0.5"], config=None)
    assert method_options_for(args, ["rigl", "gmp"], methods) == {"rigl": {"drop_fraction": 0.5}}
    with pytest.raises(ValueError, match="rigl: unknown option 'nope'"):
        method_options_for(argparse.Namespace(set=["nope=1"], config=None), ["rigl"], methods)
    with pytest.raises(ValueError, match="drop_fraction"):
        method_options_for(
            argparse.Namespace(set=["drop_fraction=7"], config=None), ["rigl"], methods
        )


def test_methods_are_grouped_by_their_scenario() -> None:
    methods = registry.available_methods()
    chosen = [m for m in ("magnitude", "gmp", "imp", "lapp", "trp", "sms", "ast") if m in methods]
    groups = {g.scenario.name: g for g in plan_bench(bench_args(), methods, chosen, ("magnitude",))}
    assert next(iter(groups)) == DEFAULT_SCENARIO
    default = [name for name, _, _ in groups[DEFAULT_SCENARIO].plan]
    assert default[0] == "dense" and "imp" in default  # IMP runs its procedure at bench scale
    imp_rows = [(s, skip) for n, s, skip in groups[DEFAULT_SCENARIO].plan if n == "imp"]
    assert imp_rows and all(skip is None for _, skip in imp_rows)
    if "lapp" in methods:
        assert scenario_of(methods["lapp"]) == "cnn"
        cnn = [n for n, _, _ in groups["cnn"].plan]
        assert cnn[0] == "dense" and "magnitude" in cnn and "lapp" in cnn
        assert groups["cnn"].args.model == "resnet"
    if "sms" in methods:  # its own bench_procedure runs the soups at bench scale
        sms_rows = [(s, skip) for n, s, skip in groups[DEFAULT_SCENARIO].plan if n == "sms"]
        assert sms_rows == [(0.9, None)]
    if "ast" in methods and "lm" not in _SCENARIOS:
        assert any("ast declares scenario 'lm'" in n for n in groups[DEFAULT_SCENARIO].notes)


def test_a_plugged_in_scenario_runs_its_methods(tmp_path: Path, capsys) -> None:
    seen = []

    def runner(scenario, variants, args):
        from sparsecore.evaluation import Row

        seen.extend(variants)
        return [Row(n, s or 0.0, 1.0, "score", 0.0, 0.0, [1.0], 0.0) for n, s in variants]

    register_scenario(Scenario("toy-test", "toy", baselines=(), runner=runner, sparsities=(0.5,)))

    class Toy(IMP):
        name = "toy-scenario-test"
        bench_scenario = "toy-test"

    registry.register_method(Toy)
    try:
        code = main(
            ["bench", "--methods", "toy-scenario-test", "--out", str(tmp_path), "--no-progress"]
        )
    finally:
        registry._REGISTRY.pop("toy-scenario-test", None)
        _SCENARIOS.pop("toy-test", None)
    assert code == 0
    assert seen == [("dense", None), ("toy-scenario-test", 0.5)]
    results = json.loads((tmp_path / "results.json").read_text())
    assert [s["scenario"] for s in results["scenarios"]] == ["toy-test"]
    assert (tmp_path / "toy-test.png").read_bytes()[:4] == b"\x89PNG"
    assert "== toy-test" in capsys.readouterr().out


def test_a_procedure_runs_through_its_class_bench_procedure() -> None:
    from sparsecore.bench.scenarios import procedure_runner, run_planned

    calls = []

    class Soupish(IMP):
        name = "soupish-test"
        procedure = "a procedure the core does not know"

        @classmethod
        def bench_procedure(cls, sparsity, seed, args):
            calls.append((sparsity, seed, args.method_options))
            return 0.5, {"sparsity": sparsity, "flops_ratio": 1.0, "wall_s": 0.0}

    class Unknown(IMP):
        name = "unknown-procedure-test"
        procedure = "nobody runs this"

    assert procedure_runner(Unknown) is None
    methods = {"soupish-test": Soupish, "unknown-procedure-test": Unknown}
    (group,) = plan_bench(bench_args(), methods, list(methods), ())
    plan = {n: skip for n, _, skip in group.plan}
    assert plan["soupish-test"] is None and "no bench runner" in plan["unknown-procedure-test"]
    args = argparse.Namespace(**{**vars(group.args), "method_options": {"soupish-test": {"a": 1}}})
    group.args = args
    assert run_planned(group, "soupish-test", 0.9, 2, methods)[0] == 0.5
    assert calls == [(0.9, 2, {"a": 1})]


def test_quick_runs_never_write_the_committed_results(tmp_path: Path) -> None:
    script = tmp_path / "pkg" / "benchmarks" / "reproduce.py"
    assert default_results_path(script, []) == str(script.with_name("results.json"))
    quick = Path(default_results_path(script, ["--quick"]))
    assert quick.parent.name == "sparse-quick" and quick.name == "pkg-results.json"
    assert quick != script.with_name("results.json")


def test_results_path_of_a_shipped_reproduction_in_a_checkout_and_in_a_wheel(
    tmp_path: Path,
) -> None:
    checkout = tmp_path / "packages" / "pkg"
    module = checkout / "src" / "sparse_pkg" / "reproduce.py"
    (checkout / "benchmarks").mkdir(parents=True)
    assert default_results_path(module, []) == str(checkout / "benchmarks" / "results.json")
    quick = Path(default_results_path(module, ["--quick"]))
    assert quick.parent.name == "sparse-quick" and quick.name == "pkg-results.json"
    wheel = tmp_path / "site-packages" / "sparse_pkg" / "reproduce.py"
    full = Path(default_results_path(wheel, []))
    assert full.parent.name == "sparse-reproduce" and full.name == "pkg-results.json"
    assert tmp_path not in full.parents  # never inside site-packages


def test_reproduce_runs_a_checkout_script_and_exits_on_the_claim(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    package = tmp_path / "packages" / "toyrepro" / "src" / "sparse_toyrepro"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    bench = tmp_path / "packages" / "toyrepro" / "benchmarks"
    bench.mkdir()
    (bench / "reproduce.py").write_text(
        "import argparse, json\n"
        "def main(argv=None):\n"
        "    p = argparse.ArgumentParser(); p.add_argument('--quick', action='store_true')\n"
        "    p.add_argument('--out'); p.add_argument('--holds', default='yes')\n"
        "    a = p.parse_args(argv)\n"
        "    json.dump({'holds': a.holds == 'yes', 'quick': a.quick}, open(a.out, 'w'))\n"
        "    return 0\n"
    )
    monkeypatch.syspath_prepend(str(package.parent))
    out = tmp_path / "r.json"
    assert main(["reproduce", "toyrepro", "--quick", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == {"holds": True, "quick": True}
    assert main(["reproduce", "toyrepro", "--out", str(out), "--args", "--holds no"]) == 1
    assert "does NOT hold" in capsys.readouterr().out
    assert main(["reproduce", "nosuchpackage"]) == 1
    sys.modules.pop("sparse_toyrepro", None)


def test_reproduce_prefers_the_module_shipped_in_the_package(tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "site" / "sparse_toyship"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "reproduce.py").write_text(
        "import json, sys\n"
        "def main(argv=None):\n"
        "    out = argv[argv.index('--out') + 1]\n"
        "    json.dump({'holds': None, 'argv': argv, 'file': __file__}, open(out, 'w'))\n"
    )
    monkeypatch.syspath_prepend(str(package.parent))
    out = tmp_path / "r.json"
    try:
        assert main(["reproduce", "sparse-toyship", "--quick", "--out", str(out)]) == 0
    finally:
        sys.modules.pop("sparse_toyship", None)
        sys.modules.pop("sparse_toyship.reproduce", None)
    data = json.loads(out.read_text())
    assert data["argv"] == ["--quick", "--out", str(out)]
    assert Path(data["file"]) == package / "reproduce.py"


def test_report_exits_non_zero_when_the_pattern_does_not_hold(tmp_path: Path, capsys) -> None:
    from safetensors.torch import save_file

    dense = {"fc.weight": torch.ones(4, 8)}
    two_four = {"fc.weight": torch.tensor([[1.0, 1.0, 0.0, 0.0] * 2] * 4)}
    save_file(dense, str(tmp_path / "dense.safetensors"))
    save_file(two_four, str(tmp_path / "nm.safetensors"))
    assert main(["report", str(tmp_path / "dense.safetensors"), "--pattern", "2:4"]) == 1
    assert "do not respect 2:4: fc.weight" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nm.safetensors"), "--pattern", "2:4"]) == 0


def test_a_missing_extra_is_one_clear_line(monkeypatch, capsys) -> None:
    import sparsecore.cli as cli

    def needs_tqdm(args):
        raise ModuleNotFoundError("No module named 'tqdm'", name="tqdm")

    monkeypatch.setattr(cli, "cmd_list", needs_tqdm)
    monkeypatch.delenv("SPARSE_DEBUG", raising=False)
    assert cli.main(["list"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'sparse-core[bench]'" in err


def test_help_shows_defaults(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "(default: 60.0)" in capsys.readouterr().out
