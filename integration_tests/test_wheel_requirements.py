import importlib.util
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "check_wheel_requirements", ROOT / "tools" / "check_wheel_requirements.py"
)
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)


def _wheel(tmp_path: Path, name: str, requires: list[str]) -> Path:
    wheel = tmp_path / f"{name}-0.1.0-py3-none-any.whl"
    lines = ["Metadata-Version: 2.3", f"Name: {name}"]
    lines += [f"Requires-Dist: {r}" for r in requires]
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"{name}-0.1.0.dist-info/METADATA", "\n".join(lines))
    return wheel


def test_the_squatted_sparsecore_name_is_refused(tmp_path):
    _wheel(tmp_path, "sparse_demo", ["sparsecore>=0.1,<0.2", "torch>=2.4"])
    problems = tool.check(tmp_path, ["sparse-core", "sparse-demo"])
    assert len(problems) == 1 and "sparsecore" in problems[0]


def test_workspace_and_known_third_party_names_pass(tmp_path):
    _wheel(tmp_path, "sparse_demo", ["sparse-core[structured]>=0.1", "torch>=2.4", "Torch_Pruning"])
    _wheel(tmp_path, "sparse_core", ["numpy>=1.26", "tqdm ; extra == 'bench'"])
    assert tool.check(tmp_path, ["sparse-core", "sparse-demo"]) == []


def test_no_wheels_is_a_problem(tmp_path):
    assert tool.check(tmp_path, ["sparse-core"]) == [f"no wheels under {tmp_path}"]


def test_every_member_pyproject_names_sparse_core_not_sparsecore():
    for pyproject in [*ROOT.glob("packages/*/pyproject.toml"), ROOT / "pyproject.toml"]:
        text = pyproject.read_text().replace('"sparsecore.methods"', "")
        assert '"sparsecore' not in text, pyproject
