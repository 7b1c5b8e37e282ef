"""Static import check: every workspace member imports only what its pyproject declares.

For each member, every top-level module imported anywhere under ``src/`` must be the member
itself, the standard library, or provided by a declared dependency (extras included). A method
package that imports a sibling it does not declare fails here, before the isolated test
environments even run. Usage: ``python tools/check_imports.py sparsecore sparse-granet ...``.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(pyproject: dict) -> set[str]:
    project = pyproject["project"]
    specs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        specs.extend(extra)
    return {_normalise(re.split(r"[\s\[<>=!~;]", s, maxsplit=1)[0]) for s in specs}


def _imports(src: Path) -> set[str]:
    found: set[str] = set()
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def main(members: list[str]) -> int:
    """Check the named members; print problems and return the exit status."""
    dists = packages_distributions()
    directories = {
        _normalise(tomllib.loads(p.read_text())["project"]["name"]): p.parent
        for p in [*ROOT.glob("shared/*/pyproject.toml"), *ROOT.glob("packages/*/pyproject.toml")]
    }
    for dist_name, directory in directories.items():  # editable installs hide their modules
        for module_dir in (directory / "src").iterdir():
            if module_dir.is_dir():
                dists.setdefault(module_dir.name, []).append(dist_name)
    problems = []
    for member in members:
        directory = directories[_normalise(member)]
        pyproject = tomllib.loads((directory / "pyproject.toml").read_text())
        declared = _declared(pyproject) | {_normalise(member)}
        own = {p.name for p in (directory / "src").iterdir() if p.is_dir()}
        for module in sorted(_imports(directory / "src") - own - set(sys.stdlib_module_names)):
            providers = {_normalise(d) for d in dists.get(module, [])}
            if not providers:
                problems.append(
                    f"{member}: imports {module!r}, which no installed package provides"
                )
            elif not providers & declared:
                problems.append(
                    f"{member}: imports {module!r} (from {sorted(providers)}) undeclared"
                )
    for problem in problems:
        print(problem)
    if not problems:
        print(f"imports ok for {len(members)} members")
    return 1 if problems else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except PackageNotFoundError as err:
        print(f"check_imports: {err}")
        sys.exit(1)
