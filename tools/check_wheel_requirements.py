"""Check that built wheels depend only on workspace distributions or known third-party ones.

The core's distribution is ``sparse-core`` (the name ``sparsecore`` on PyPI belongs to another
project), so a method wheel that names ``sparsecore`` would install someone else's package from
a real index. This check reads every wheel's ``Requires-Dist`` lines and fails on any name that
is neither a workspace member nor in `THIRD_PARTY`.

Usage: ``python tools/check_wheel_requirements.py DIST_DIR MEMBER [MEMBER ...]``.
"""

from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path

#: Third-party distributions a workspace wheel may depend on (normalised names).
THIRD_PARTY = frozenset(
    {
        "torch",
        "numpy",
        "safetensors",
        "mnist1d",
        "scikit-learn",
        "matplotlib",
        "tqdm",
        "rich",
        "transformers",
        "accelerate",
        "tokenizers",
        "peft",
        "torch-pruning",
        "pytest",
        "hypothesis",
        "compressed-tensors",
        "diffusers",
        "torchmetrics",
        "trl",
        "torchao",
        "scipy",
        "pycocotools",  # torchmetrics' mAP backend (sparse-cwd)
        "torchvision",  # needed by torchmetrics' detection metrics (sparse-cwd)
        "constriction",  # range coder (sparse-core[coding], sparse-nirvana)
    }
)

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalise(name: str) -> str:
    """PEP 503 normalisation: lower case, runs of ``-_.`` become one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(wheel: Path) -> list[str]:
    """The distribution names in a wheel's ``Requires-Dist`` lines."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(metadata).decode()
    names = []
    for line in text.splitlines():
        if line.startswith("Requires-Dist:"):
            match = _NAME.match(line.split(":", 1)[1])
            if match:
                names.append(normalise(match.group(1)))
    return names


def check(dist: Path, members: list[str]) -> list[str]:
    """Problems found in the wheels under ``dist`` (empty when all is well)."""
    allowed = {normalise(m) for m in members} | THIRD_PARTY
    wheels = sorted(dist.glob("*.whl"))
    problems = [] if wheels else [f"no wheels under {dist}"]
    for wheel in wheels:
        unknown = sorted(set(requirements(wheel)) - allowed)
        if unknown:
            problems.append(f"{wheel.name}: requires unknown distributions {unknown}")
    return problems


def main(argv: list[str]) -> int:
    """Entry point; exit 1 when any wheel names an unexpected distribution."""
    if len(argv) < 2:
        print(__doc__)
        return 2
    problems = check(Path(argv[0]), argv[1:])
    for problem in problems:
        print(problem)
    if not problems:
        print(f"wheel requirements: all {len(list(Path(argv[0]).glob('*.whl')))} wheels ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
