"""Workspace metadata: license, version, extras, bench scenarios; the generated tables are fresh."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

from sparsecore import available_methods
from sparsecore.bench.scenarios import PROCEDURES, scenario_of

ROOT = Path(__file__).resolve().parent.parent
MEMBERS = sorted(ROOT.glob("shared/*/pyproject.toml")) + sorted(
    ROOT.glob("packages/*/pyproject.toml")
)


@pytest.mark.parametrize("pyproject", MEMBERS, ids=lambda p: p.parent.name)
def test_member_metadata_license_and_version(pyproject: Path) -> None:
    project = tomllib.loads(pyproject.read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    assert (pyproject.parent / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()
    assert project["authors"] and project["classifiers"]
    assert {"Homepage", "Documentation", "Source"} <= set(project["urls"])
    module = "sparsecore" if project["name"] == "sparse-core" else f"sparse_{pyproject.parent.name}"
    assert importlib.import_module(module).__version__ == version(project["name"])


def test_every_method_has_a_scenario_and_imp_style_procedures_a_runner() -> None:
    methods = available_methods()
    for name, cls in methods.items():
        assert isinstance(scenario_of(cls), str) and scenario_of(cls), name
    for name in ("imp", "lth"):
        if name in methods:
            assert methods[name].procedure in PROCEDURES, name


@pytest.mark.parametrize("tool", ["package_table.py", "results_page.py"])
def test_generated_pages_are_fresh(tool: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / tool), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
