"""Move a package's reproduction into the package, so that it ships inside the wheel.

``python tools/ship_reproduction.py NAME [NAME ...]`` does, for each package
``packages/NAME``: ``git mv benchmarks/reproduce.py src/sparse_NAME/reproduce.py`` (content
unchanged, so git follows the rename) and writes ``benchmarks/reproduce.py`` as a thin wrapper
that calls the moved module, so that the documented
``python packages/NAME/benchmarks/reproduce.py [--quick]`` keeps working and a full run from the
checkout still writes ``benchmarks/results.json`` (``sparsecore.evaluation.paths``). Installed
from a wheel, the same reproduction runs as ``sparse reproduce NAME`` or
``python -m sparse_NAME.reproduce``. A package already moved is left as it is.
``--check`` only lists the packages whose reproduction is not shipped yet (exit 1 if any).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WRAPPER = '''"""Run the reproduction of sparse-{name} from a checkout (it ships in the wheel).

The reproduction is the module `sparse_{module}.reproduce` (see its docstring for the setting,
the claim and the options); from an installed package run `sparse reproduce {name} [--quick]`
or `python -m sparse_{module}.reproduce`. From a checkout::

    python packages/{name}/benchmarks/reproduce.py           # full: writes results.json here
    python packages/{name}/benchmarks/reproduce.py --quick   # tiny settings, temporary output
"""

from sparse_{module}.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
'''


def shipped(name: str) -> bool:
    """Whether `packages/name` ships its reproduction as `sparse_<name>/reproduce.py`."""
    module = name.replace("-", "_")
    return (ROOT / "packages" / name / "src" / f"sparse_{module}" / "reproduce.py").is_file()


def ship(name: str) -> str:
    """Move one package's reproduction into the package and leave the wrapper behind."""
    package = ROOT / "packages" / name
    script = package / "benchmarks" / "reproduce.py"
    module = name.replace("-", "_")
    target = package / "src" / f"sparse_{module}" / "reproduce.py"
    if target.is_file():
        return f"{name}: already shipped"
    if not script.is_file():
        raise SystemExit(f"{name}: no {script.relative_to(ROOT)}")
    subprocess.run(["git", "mv", str(script), str(target)], check=True, cwd=ROOT)
    script.write_text(WRAPPER.format(name=name, module=module))
    subprocess.run(["git", "add", str(script)], check=True, cwd=ROOT)
    return f"{name}: moved to {target.relative_to(ROOT)}, wrapper left in benchmarks/"


def main() -> int:
    """Ship the named packages' reproductions (or, with --check, list those not shipped)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="package folder names (default: all)")
    parser.add_argument("--check", action="store_true", help="list packages not shipped yet")
    args = parser.parse_args()
    names = args.names or sorted(
        p.parent.parent.name for p in (ROOT / "packages").glob("*/benchmarks/reproduce.py")
    )
    if args.check:
        missing = [n for n in names if not shipped(n)]
        for name in missing:
            print(
                f"{name}: reproduction not in the wheel (python tools/ship_reproduction.py {name})"
            )
        return 1 if missing else 0
    for name in names:
        print(ship(name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
