"""Generate the package table of ``README.md`` and ``docs/index.md`` from the workspace.

Every workspace member (``shared/*``, ``packages/*``) with a ``pyproject.toml`` is one row: its
PyPI name, the first arXiv id in its README, its description and its docs page. The table sits
between ``<!-- packages:start -->`` and ``<!-- packages:end -->`` in both files, so a new package
appears on the home page and in the README without anyone typing it.
Usage: ``python tools/package_table.py [--check]`` (``--check`` fails if a table is stale).
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- packages:start -->", "<!-- packages:end -->"
_ARXIV = re.compile(r"arXiv[ :](\d{4}\.\d{4,5})")


def members() -> list[dict[str, str]]:
    """One dict per workspace member: name, folder, arxiv, summary, docs page."""
    found = []
    folders = sorted(ROOT.glob("shared/*/pyproject.toml")) + sorted(
        ROOT.glob("packages/*/pyproject.toml")
    )
    for pyproject in folders:
        project = tomllib.loads(pyproject.read_text())["project"]
        folder = pyproject.parent
        readme = folder / "README.md"
        text = readme.read_text() if readme.is_file() else ""
        arxiv = _ARXIV.search(text)
        summary = project.get("description", "").removesuffix(".").removesuffix(", on sparsecore")
        page = f"packages/{folder.name}.md"
        found.append(
            {
                "name": project["name"],
                "folder": str(folder.relative_to(ROOT)),
                "arxiv": arxiv.group(1) if arxiv else "",
                "summary": summary,
                "page": page if (ROOT / "docs" / page).is_file() else "",
            }
        )
    return found


def table(for_docs: bool) -> str:
    """The markdown table (links to docs pages on the site, to folders in the README)."""
    lines = ["| package | paper | what it is |", "|---|---|---|"]
    for m in members():
        link = m["page"] or "api/sparsecore.md" if for_docs else m["folder"]
        paper = f"[arXiv {m['arxiv']}](https://arxiv.org/abs/{m['arxiv']})" if m["arxiv"] else "—"
        lines.append(f"| [`{m['name']}`]({link}) | {paper} | {m['summary']} |")
    return "\n".join(lines)


def rendered(path: Path, for_docs: bool) -> str:
    """``path``'s text with the table between the markers replaced."""
    text = path.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{path}: no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table(for_docs)}\n{END}{tail}"


def main() -> int:
    """Write (or with --check, verify) the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a table is stale")
    args = parser.parse_args()
    stale = []
    for path, for_docs in ((ROOT / "README.md", False), (ROOT / "docs" / "index.md", True)):
        new = rendered(path, for_docs)
        if new != path.read_text():
            if args.check:
                stale.append(str(path.relative_to(ROOT)))
            else:
                path.write_text(new)
    if stale:
        print(f"stale package table in {', '.join(stale)}: run python tools/package_table.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
