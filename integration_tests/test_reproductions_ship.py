"""Every package's reproduction ships inside its wheel (`sparse reproduce NAME` when installed).

The reproduction is `sparse_<name>/reproduce.py`; the checkout's `benchmarks/reproduce.py` is a
thin wrapper around it (`tools/ship_reproduction.py` makes the move), and a full run from the
checkout still writes the committed `benchmarks/results.json`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from sparsecore.evaluation.paths import default_results_path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = sorted(p.parent.parent.name for p in ROOT.glob("packages/*/benchmarks/reproduce.py"))


@pytest.mark.parametrize("name", PACKAGES)
def test_the_reproduction_is_a_module_of_the_package(name: str) -> None:
    module = f"sparse_{name}.reproduce"
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, (
        f"{module} missing: run python tools/ship_reproduction.py {name}"
    )
    origin = Path(spec.origin)
    assert origin == ROOT / "packages" / name / "src" / f"sparse_{name}" / "reproduce.py"
    wrapper = (ROOT / "packages" / name / "benchmarks" / "reproduce.py").read_text()
    assert f"from {module} import main" in wrapper
    full = default_results_path(origin, [])
    assert full == str(ROOT / "packages" / name / "benchmarks" / "results.json")
    assert Path(default_results_path(origin, ["--quick"])).parent.name == "sparse-quick"
