"""Developer and CI sessions for the sparse monorepo (nox with the uv backend).

``uv run nox`` runs the default sessions: lint, member_tests (every ``tests(MEMBER)`` session, one
isolated environment per workspace member, two at a time), integration, docs, build, reproduce.
``uv run nox -s "tests(sparse-granet)"`` runs one member's tests; ``uv run nox -s tests`` runs all
of them one after another.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "uv"
nox.options.sessions = ["lint", "member_tests", "integration", "docs", "build", "reproduce"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _members() -> dict[str, Path]:
    """Workspace members: distribution name -> directory."""
    found = {}
    for parent in ("shared", "packages"):
        for directory in sorted((ROOT / parent).iterdir()):
            pyproject = directory / "pyproject.toml"
            if pyproject.is_file():
                name = tomllib.loads(pyproject.read_text())["project"]["name"]
                found[name] = directory
    return found


MEMBERS = _members()
METHOD_PACKAGES = {n: d for n, d in MEMBERS.items() if d.parent.name == "packages"}


def uv_sync(session: nox.Session, *args: str) -> None:
    """``uv sync --locked`` into the session's own virtualenv (exact: nothing else stays)."""
    venv = session.virtualenv.location
    session.run_install(
        "uv",
        "sync",
        "--locked",
        "--no-default-groups",
        f"--python={venv}",
        *args,
        env={"UV_PROJECT_ENVIRONMENT": venv},
    )


def _import_name(distribution: str) -> str:
    """The import name of a member (``sparse-core`` imports as ``sparsecore``)."""
    return "sparsecore" if distribution == "sparse-core" else distribution.replace("-", "_")


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff format and lint, and the import contract between packages."""
    uv_sync(session, "--all-packages", "--group", "dev")
    session.run("ruff", "format", "--check", ".")
    session.run("ruff", "check", ".")
    session.run("python", "tools/check_imports.py", *MEMBERS)
    if len(METHOD_PACKAGES) > 1:
        modules = sorted(_import_name(n) for n in METHOD_PACKAGES)
        config = session.create_tmp() + "/importlinter.ini"
        Path(config).write_text(
            "[importlinter]\nroot_packages =\n    sparsecore\n"
            + "".join(f"    {m}\n" for m in modules)
            + "\n[importlinter:contract:methods-independent]\n"
            "name = Method packages never import each other\ntype = independence\nmodules =\n"
            + "".join(f"    {m}\n" for m in modules)
            + "\n[importlinter:contract:core-below-methods]\n"
            "name = The core never imports a method package\ntype = forbidden\n"
            "source_modules =\n    sparsecore\nforbidden_modules =\n"
            + "".join(f"    {m}\n" for m in modules)
        )
        session.run("lint-imports", "--config", config)


@nox.session
@nox.parametrize("member", list(MEMBERS), ids=list(MEMBERS))
def tests(session: nox.Session, member: str) -> None:
    """One member's tests in an environment holding only its declared dependency closure."""
    uv_sync(session, "--package", member, "--group", "test")
    directory = MEMBERS[member]
    session.run("pytest", "-q", str(directory / "tests"), *session.posargs, env=THREAD_ENV)


@nox.session(venv_backend="none")
def member_tests(session: nox.Session) -> None:
    """Every member's ``tests(MEMBER)`` session, two at a time (``TEST_JOBS``), each its own nox.

    Each member keeps its isolated environment (the `tests` session, run by a child ``nox``
    process); running two at once uses both cores. Every member's pytest summary line is printed;
    the failures are listed at the end with their logs. ``uv run nox -s member_tests --
    sparse-granet sparse-lth`` runs only the members named.
    """
    selected = list(session.posargs) or list(MEMBERS)
    unknown = [n for n in selected if n not in MEMBERS]
    if unknown:
        session.error(f"unknown members {unknown}; choose from {list(MEMBERS)}")

    def run(name: str) -> tuple[str, int, str, float]:
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "nox", "--noxfile", str(ROOT / "noxfile.py"),
             "-s", f"tests({name})"],
            capture_output=True, text=True, cwd=ROOT, check=False,
        )  # fmt: skip
        return name, result.returncode, result.stdout + result.stderr, time.perf_counter() - start

    jobs = int(os.environ.get("TEST_JOBS", "2"))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        outcomes = list(pool.map(run, selected))
    failed = []
    for name, code, log, seconds in outcomes:
        summary = [ln for ln in log.splitlines() if " passed" in ln or " failed" in ln]
        line = summary[-1].strip() if summary else "no pytest summary"
        session.log(
            f"{name}: {'ok' if code == 0 else f'FAILED (exit {code})'} in {seconds:.0f} s, {line}"
        )
        if code != 0:
            session.log(log[-8000:])
            failed.append(name)
    if failed:
        session.error(f"failed tests: {', '.join(failed)}")


@nox.session
def integration(session: nox.Session) -> None:
    """Methods stacked, the CLI end to end, against the whole workspace."""
    uv_sync(session, "--all-packages", "--group", "dev")
    session.run("pytest", "-q", "integration_tests", *session.posargs, env=THREAD_ENV)


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, strict."""
    uv_sync(session, "--only-group", "docs")
    session.run("python", "tools/results_page.py", "--check")
    session.run("python", "tools/package_table.py", "--check")
    session.run("mkdocs", "build", "--strict", "--site-dir", session.create_tmp() + "/site")


@nox.session
def build(session: nox.Session) -> None:
    """Build every member with ``--no-sources``, install each wheel alone, import it, and run
    each method package's README quickstart in that clean environment.

    Each member gets its own venv holding its wheel and sparsecore's wheel only, with the
    ``sparsecore`` extras its wheel declares or its README documents
    (``tools/run_readme_quickstart.py --extras``). Members are checked two at a time
    (``BUILD_JOBS``), each in its own processes; the failures are listed at the end with logs.
    ``uv run nox -s build -- sparse-granet`` checks only the members named.
    """
    import shutil

    selected = list(session.posargs) or list(MEMBERS)
    unknown = [n for n in selected if n not in MEMBERS]
    if unknown:
        session.error(f"unknown members {unknown}; choose from {list(MEMBERS)}")
    dist = Path(session.create_tmp()) / "dist"
    shutil.rmtree(dist, ignore_errors=True)  # no stale wheel of an older build is picked up
    session.run("uv", "build", "--all-packages", "--no-sources", "--out-dir", str(dist))
    session.run("python", str(ROOT / "tools" / "check_wheel_requirements.py"), str(dist), *MEMBERS)
    core_wheel = next(dist.glob("sparse_core-*.whl"))
    tmp = Path(session.create_tmp()).absolute()
    jobs = int(os.environ.get("BUILD_JOBS", "2"))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        outcomes = list(pool.map(lambda n: _check_wheel(n, dist, core_wheel, tmp), selected))
    failed = []
    for name, step, log, seconds in outcomes:
        session.log(f"{name}: {'ok' if step is None else 'FAILED at ' + step} in {seconds:.0f} s")
        if step is not None:
            session.log(log[-6000:])
            failed.append(f"{name} ({step})")
    if failed:
        session.error(f"failed from the built wheels: {', '.join(failed)}")


def _check_wheel(
    name: str, dist: Path, core_wheel: Path, tmp: Path
) -> tuple[str, str | None, str, float]:
    """Install one member's wheel alone in a fresh venv, import it, run its README quickstart.

    Runs in a worker thread (plain subprocesses, output captured). Returns ``(name, failed step
    or None, log, seconds)``.
    """
    start = time.perf_counter()
    tool = str(ROOT / "tools" / "run_readme_quickstart.py")
    wheel = next(dist.glob(f"{name.replace('-', '_')}-*.whl"))
    venv = tmp / f"venv-{name}"
    python = str(venv / "bin" / "python")
    readme = MEMBERS[name] / "README.md"
    quickstart = name in METHOD_PACKAGES
    log: list[str] = []

    def run(*cmd: str, env: dict | None = None) -> str:
        result = subprocess.run(
            list(cmd), capture_output=True, text=True, env={**os.environ, **(env or {})}
        )
        log.append(f"$ {' '.join(cmd)}\n{result.stdout}{result.stderr}")
        if result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, cmd)
        return result.stdout

    step = "install"
    try:
        extras = ""
        if quickstart:
            extras = run(sys.executable, tool, str(readme), "--extras", str(wheel)).strip()
        core = f"{core_wheel}[{extras}]" if extras else str(core_wheel)
        wheels = [core] if wheel == core_wheel else [core, str(wheel)]
        run("uv", "venv", "--quiet", "--clear", str(venv))
        run("uv", "pip", "install", "--quiet", "--python", python, *wheels)
        step = "import"
        run(python, "-I", "-c", f"import {_import_name(name)}")
        if quickstart:
            step = "README quickstart"
            log.append(f"{name}: README quickstart (sparsecore extras: {extras or 'none'})")
            run(sys.executable, tool, str(readme), "--python", python, env=THREAD_ENV)
            step = "reproduction in the wheel"
            _check_shipped_reproduction(wheel, name)
        if name == REPRODUCE_FROM_WHEEL:
            step = "sparse reproduce from the wheel"
            _reproduce_from_wheel(run, python, core_wheel, wheel, name, tmp)
    except (subprocess.CalledProcessError, RuntimeError) as error:
        log.append(f"{name}: {error}")
        return name, step, "\n".join(log), time.perf_counter() - start
    return name, None, "\n".join(log), time.perf_counter() - start


#: The package whose ``sparse reproduce NAME --quick`` the build session runs from its wheel.
REPRODUCE_FROM_WHEEL = "sparse-bdwp"


def _check_shipped_reproduction(wheel: Path, name: str) -> None:
    """Fail unless a method wheel ships ``sparse_<name>/reproduce.py`` (`sparse reproduce`)."""
    import zipfile

    if not (MEMBERS[name] / "benchmarks" / "reproduce.py").is_file():
        return
    module = f"{_import_name(name)}/reproduce.py"
    if module not in zipfile.ZipFile(wheel).namelist():
        raise RuntimeError(f"{wheel.name} does not ship {module}")


def _reproduce_from_wheel(
    run: Callable[..., str], python: str, core_wheel: Path, wheel: Path, name: str, tmp: Path
) -> None:
    """``sparse reproduce NAME --quick`` in the wheel's clean venv (its ``reproduce`` extra),
    outside the checkout; exit 0 or 1 (claim verdict) with a results file is a pass.
    """
    short = name.removeprefix("sparse-")
    run(
        "uv", "pip", "install", "--quiet", "--python", python,
        f"{core_wheel}[bench]", f"{wheel}[reproduce]",
    )  # fmt: skip
    out = tmp / f"reproduce-{short}.json"
    out.unlink(missing_ok=True)
    sparse = str(Path(python).parent / "sparse")
    code = subprocess.run(
        [sparse, "reproduce", short, "--quick", "--out", str(out)],
        cwd=tmp,
        env={**os.environ, **THREAD_ENV},
        check=False,
    ).returncode
    if code not in (0, 1) or not out.is_file():
        raise RuntimeError(f"sparse reproduce {short} from its wheel: exit {code}")


def _sparseland_gaps(out_dir: Path, name: str) -> tuple[str, list[str]]:
    """The Sparseland rules (R1-R7) a package's quick results miss: `(summary, undeclared)`.

    A quick run has fewer seeds (R6 is checked at 1 seed). A gap the entry declares itself
    (its ``gaps``, e.g. a baseline the reproduction does not run) is listed; a problem it does
    not declare (a broken entry) is returned in ``undeclared`` and fails the session.
    A package without an entry yet is listed, not failed.
    """
    import json

    path = out_dir / f"{name}.json"
    if not path.is_file():
        return "no results file", []
    from sparsecore.evaluation.sparseland import check_sparseland

    data = json.loads(path.read_text())
    if "sparseland" not in data and "sparseland_note" in data:
        return f"not applicable: {data['sparseland_note']}", []  # a procedure, not weights
    if "sparseland" not in data:
        return "no sparseland entry yet (R1, R3, R4, R5, R7)", []
    declared = [str(g) for g in data["sparseland"].get("gaps") or []]
    problems = check_sparseland(data, min_seeds=1)
    if any(g.startswith("R5") for g in declared):  # the count check follows from the gap
        problems = [p for p in problems if "are not all named" not in p]
    undeclared = [p for p in problems if p not in declared]
    summary = "; ".join(declared) if declared else "none"
    return f"declared gaps: {summary}", undeclared


@nox.session
def reproduce(session: nox.Session) -> None:
    """Every package's ``benchmarks/reproduce.py --quick`` (the same code path, tiny settings).

    The scripts run single-threaded, two at a time (one per core), each in its own process.
    Each results file's ``sparseland`` entry is checked (`_sparseland_gaps`): undeclared
    problems fail, declared gaps and packages without an entry yet are listed.
    """
    uv_sync(session, "--all-packages", "--group", "dev", "--group", "bench")
    python = str(Path(session.virtualenv.location) / "bin" / "python")
    out_dir = Path(session.create_tmp())
    scripts = {
        name: directory / "benchmarks" / "reproduce.py"
        for name, directory in METHOD_PACKAGES.items()
        if (directory / "benchmarks" / "reproduce.py").is_file()
    }

    def run(item: tuple[str, Path]) -> tuple[str, int, str, float]:
        name, script = item
        start = time.perf_counter()
        result = subprocess.run(
            [python, str(script), "--quick", "--out", str(out_dir / f"{name}.json")],
            capture_output=True,
            text=True,
            env={**os.environ, **THREAD_ENV},
            check=False,
        )
        return name, result.returncode, result.stdout + result.stderr, time.perf_counter() - start

    with ThreadPoolExecutor(max_workers=int(os.environ.get("REPRODUCE_JOBS", "2"))) as pool:
        outcomes = list(pool.map(run, scripts.items()))
    failed = []
    for name, code, output, seconds in outcomes:
        tail = "\n".join(output.strip().splitlines()[-3:])
        session.log(f"{name}: exit {code} in {seconds:.0f} s\n{tail}")
        summary, undeclared = _sparseland_gaps(out_dir, name)
        session.log(f"{name}: Sparseland: {summary}")
        if undeclared:
            failed.append(f"{name} (sparseland: {'; '.join(undeclared)})")
        if code != 0:
            failed.append(name)
            session.log(output[-4000:])
    if failed:
        session.error(f"reproduce --quick failed for {', '.join(failed)}")


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """The core's overhead and inference benchmarks (not timed tests)."""
    uv_sync(session, "--all-packages", "--group", "dev")
    for script in sorted((ROOT / "shared" / "sparsecore" / "benchmarks").glob("*.py")):
        session.run("python", str(script), env={"OMP_NUM_THREADS": os.environ.get("T", "2")})
