"""Run a package README's quickstart with a given Python, the way a new user would.

The quickstart is the first ```` ```python ```` block in the section of the first heading whose
title contains "quickstart" (any level; the section ends at the next heading of the same or a
higher level). It is written to a fresh temporary directory and run there with
``python -I quickstart.py`` (isolated: no ``PYTHONPATH``, no user site, not the repository on
``sys.path``), with ``OMP_NUM_THREADS=1``, ``MKL_NUM_THREADS=1`` and ``HF_HUB_OFFLINE=1``.
A non-zero exit, a timeout or a README without a quickstart fails loudly (exit status 1, the
script's output and the code shown).

Stdlib only: nox runs it from a bare session environment.

```bash
python tools/run_readme_quickstart.py packages/granet/README.md --python /tmp/venv/bin/python
python tools/run_readme_quickstart.py packages/lapp/README.md --extras dist/sparse_lapp-*.whl
```

``--extras WHEEL`` prints (comma-separated, possibly empty) the ``sparsecore`` extras the package
needs for its quickstart: those its wheel's own dependencies declare (``Requires-Dist:
sparse-core[structured]``) plus those its README documents in the Install or quickstart section
(e.g. ``pip install "sparse-core[bench]"``). Nothing is guessed from the code: a quickstart that
imports an optional dependency its README does not document fails, as it would for a user.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

#: A quickstart slower than this is reported (it still passes): CI runs every one of them.
SLOW_S = 30.0

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
_EXTRA = re.compile(r"sparse[-_.]?core\s*\[([A-Za-z0-9_,\s-]+)\]")


class QuickstartError(Exception):
    """The README has no runnable quickstart."""


def _sections(text: str) -> list[tuple[int, str, list[str]]]:
    """``(level, title, lines)`` per heading, skipping ``#`` lines inside code fences.

    A section's lines run to the next heading of the same or a higher level (so they include
    its subsections).
    """
    lines = text.splitlines()
    headings: list[tuple[int, int, str]] = []  # (line index, level, title)
    fence: str | None = None
    for i, line in enumerate(lines):
        match = _FENCE.match(line)
        if match:
            marker = match.group(1)
            if fence is None:
                fence = marker[0] * 3
            elif marker.startswith(fence):
                fence = None
            continue
        if fence is None:
            heading = _HEADING.match(line)
            if heading:
                headings.append((i, len(heading.group(1)), heading.group(2)))
    sections = []
    for n, (start, level, title) in enumerate(headings):
        end = len(lines)
        for later, later_level, _ in headings[n + 1 :]:
            if later_level <= level:
                end = later
                break
        sections.append((level, title, lines[start + 1 : end]))
    return sections


def _first_python_block(lines: list[str]) -> str | None:
    block: list[str] | None = None
    fence = ""
    for line in lines:
        match = _FENCE.match(line)
        if block is None:
            if match and match.group(2).lower() in ("python", "py", "python3"):
                block, fence = [], match.group(1)
            continue
        if match and match.group(1).startswith(fence[0] * 3) and not match.group(2):
            return "\n".join(block) + "\n"
        block.append(line)
    return None


def quickstart_section(text: str) -> tuple[str, list[str]]:
    """Title and lines of the first section whose heading mentions "quickstart"."""
    for _level, title, lines in _sections(text):
        if "quickstart" in title.lower() or "quick start" in title.lower():
            return title, lines
    raise QuickstartError("no heading containing 'Quickstart'")


def extract_quickstart(text: str) -> str:
    """The first ```` ```python ```` block of the quickstart section.

    Raises:
        QuickstartError: No quickstart heading, or no python block in its section.
    """
    title, lines = quickstart_section(text)
    code = _first_python_block(lines)
    if code is None or not code.strip():
        raise QuickstartError(f"the section {title!r} holds no ```python block")
    return code


def documented_extras(text: str) -> set[str]:
    """``sparse-core[...]`` extras named in the README's Install and quickstart sections."""
    found: set[str] = set()
    for _level, title, lines in _sections(text):
        lowered = title.lower()
        if "install" in lowered or "quickstart" in lowered or "quick start" in lowered:
            for match in _EXTRA.finditer("\n".join(lines)):
                found.update(e.strip() for e in match.group(1).split(",") if e.strip())
    return found


def declared_extras(wheel: Path) -> set[str]:
    """``sparse-core`` extras in the wheel's ``Requires-Dist`` (unconditional requirements)."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(name).decode()
    found: set[str] = set()
    for line in metadata.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        requirement = line.split(":", 1)[1].strip()
        if ";" in requirement and "extra ==" in requirement.split(";", 1)[1]:
            continue  # needed only for one of the package's own extras
        match = re.match(r"sparse[-_.]?core\s*\[([^\]]+)\]", requirement)
        if match:
            found.update(e.strip() for e in match.group(1).split(",") if e.strip())
    return found


def _child_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(readme: Path, python: str, timeout: float) -> tuple[float, float]:
    """Run the quickstart of ``readme`` with ``python``.

    Returns:
        ``(wall, cpu)`` seconds: wall-clock, and the CPU time (user + system) of the run, which
        says more than the wall time on a shared, loaded machine.

    Raises:
        QuickstartError: No quickstart.
        subprocess.CalledProcessError: The quickstart failed.
        subprocess.TimeoutExpired: It ran longer than ``timeout``.
    """
    code = extract_quickstart(readme.read_text(encoding="utf-8"))
    if os.sep in python:  # a path: make it absolute (the script runs elsewhere); no resolve(),
        python = os.path.abspath(python)  # which would leave the venv for its base interpreter
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "MPLBACKEND": "Agg",
    }
    env.pop("PYTHONPATH", None)
    with tempfile.TemporaryDirectory(prefix="quickstart-") as tmp:
        script = Path(tmp) / "quickstart.py"
        script.write_text(code, encoding="utf-8")
        start, cpu = time.perf_counter(), _child_cpu_s()
        try:
            subprocess.run(
                [python, "-I", str(script)], cwd=tmp, env=env, check=True, timeout=timeout
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            numbered = "\n".join(f"{i:4d}  {line}" for i, line in enumerate(code.splitlines(), 1))
            print(f"\n--- the quickstart of {readme} that failed ---\n{numbered}", file=sys.stderr)
            raise
        return time.perf_counter() - start, _child_cpu_s() - cpu


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("readme", type=Path, help="the package's README.md")
    parser.add_argument("--python", default=sys.executable, help="interpreter to run it with")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before failing")
    parser.add_argument(
        "--extras",
        type=Path,
        metavar="WHEEL",
        help="print the sparsecore extras the package's quickstart needs, then exit",
    )
    parser.add_argument("--print", action="store_true", help="print the quickstart, then exit")
    args = parser.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    if args.extras is not None:
        print(",".join(sorted(documented_extras(text) | declared_extras(args.extras))))
        return 0
    try:
        if args.print:
            print(extract_quickstart(text), end="")
            return 0
        wall, cpu = run(args.readme, args.python, args.timeout)
    except QuickstartError as err:
        print(f"FAIL {args.readme}: {err}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as err:
        print(f"FAIL {args.readme}: quickstart exited with {err.returncode}", file=sys.stderr)
        return 1
    except subprocess.TimeoutExpired:
        print(f"FAIL {args.readme}: quickstart ran past {args.timeout:.0f} s", file=sys.stderr)
        return 1
    note = f" (SLOW: over the {SLOW_S:.0f} s CI budget)" if wall > SLOW_S else ""
    print(f"ok {args.readme}: quickstart ran in {wall:.1f} s wall, {cpu:.1f} s CPU{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
