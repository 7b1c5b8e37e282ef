"""``tools/run_readme_quickstart.py``: what the nox ``build`` session runs from each README."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location(
    "run_readme_quickstart", ROOT / "tools" / "run_readme_quickstart.py"
)
assert _spec is not None and _spec.loader is not None
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)

README = """# sparse-demo

Intro with an unrelated block:

```python
raise SystemExit("not the quickstart")
```

## Install

```bash
# this comment is not a heading
pip install sparse-demo "sparse-core[bench]"
```

## Quickstart (plain PyTorch loop)

Some words.

```bash
echo not python
```

```python
# a comment, not a heading
x = 1 + 1
print("quickstart", x)
```

```python
raise SystemExit("second block: never run")
```

### A subsection still belongs to the quickstart

## Options

`sparse-core[hf]` is mentioned here, outside the install and quickstart sections.
"""


def test_extracts_the_first_python_block_of_the_quickstart_section():
    code = tool.extract_quickstart(README)
    assert code == '# a comment, not a heading\nx = 1 + 1\nprint("quickstart", x)\n'


@pytest.mark.parametrize(
    "text",
    [
        "# pkg\n\n```python\nprint(1)\n```\n",  # no quickstart heading
        "# pkg\n\n## Quickstart\n\n```bash\nls\n```\n\n## Next\n\n```python\nprint(1)\n```\n",
        "# pkg\n\n```bash\n# Quickstart inside a fence is no heading\n```\n\n```python\nx=1\n```\n",
    ],
    ids=["no-heading", "no-python-in-section", "heading-in-fence"],
)
def test_no_quickstart_is_an_error(text):
    with pytest.raises(tool.QuickstartError):
        tool.extract_quickstart(text)


def test_documented_extras_come_from_install_and_quickstart_sections_only():
    assert tool.documented_extras(README) == {"bench"}


def test_declared_extras_read_the_wheels_unconditional_requirements(tmp_path):
    wheel = tmp_path / "sparse_demo-0.1.0-py3-none-any.whl"
    metadata = "\n".join(
        [
            "Metadata-Version: 2.3",
            "Name: sparse-demo",
            "Requires-Dist: sparsecore>=0.1,<0.2",
            "Requires-Dist: sparse-core[structured]",
            "Requires-Dist: sparse-core[hf] ; extra == 'llm'",
            "Requires-Dist: torch>=2.4",
        ]
    )
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("sparse_demo-0.1.0.dist-info/METADATA", metadata)
    assert tool.declared_extras(wheel) == {"structured"}


def test_runs_isolated_in_a_temp_dir_with_one_thread_and_offline_hub(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(
        "# pkg\n\n## Quickstart\n\n```python\n"
        "import os, sys\n"
        "assert os.environ['OMP_NUM_THREADS'] == '1', os.environ['OMP_NUM_THREADS']\n"
        "assert os.environ['HF_HUB_OFFLINE'] == '1'\n"
        f"assert os.getcwd() != {str(tmp_path)!r}\n"
        "assert sys.flags.isolated\n"
        "open('artefact.txt', 'w').write('written in the temp dir')\n"
        "```\n"
    )
    wall, cpu = tool.run(readme, sys.executable, timeout=120)
    assert wall > 0 and cpu >= 0
    assert not (tmp_path / "artefact.txt").exists()


def test_a_failing_quickstart_fails_loudly(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# pkg\n\n## Quickstart\n\n```python\nraise ValueError('boom')\n```\n")
    with pytest.raises(subprocess.CalledProcessError):
        tool.run(readme, sys.executable, timeout=120)
    assert tool.main([str(readme), "--python", sys.executable]) == 1
    assert "raise ValueError('boom')" in capsys.readouterr().err


@pytest.mark.parametrize(
    "readme", sorted(ROOT.glob("packages/*/README.md")), ids=lambda p: p.parent.name
)
def test_package_quickstarts_are_valid_python(readme):
    """A cheap syntax check here; the build session runs each one from its wheel."""
    try:
        code = tool.extract_quickstart(readme.read_text(encoding="utf-8"))
    except tool.QuickstartError as err:
        pytest.skip(f"{readme.parent.name}: {err} (README not written yet; `nox -s build` fails)")
    compile(code, str(readme), "exec")
