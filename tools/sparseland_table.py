"""Regenerate the taxonomy table of docs/sparseland.md from the installed methods and procedures.

Usage: ``python tools/sparseland_table.py`` (``integration_tests/test_sparseland_page.py`` checks
that the page matches).
"""

from __future__ import annotations

from pathlib import Path

from sparsecore import available_methods, available_procedures
from sparsecore.taxonomy import taxonomy_rows

PAGE = Path(__file__).resolve().parents[1] / "docs" / "sparseland.md"
MARKER = "<!-- taxonomy-table:"


def table() -> str:
    """The markdown table, one row per installed method and procedure (weight methods first)."""
    rows = taxonomy_rows(available_methods()) + taxonomy_rows(available_procedures())
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [f"`{row[k]}`" if k == "method" else row[k] for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    """Rewrite the table that follows the marker comment."""
    text = PAGE.read_text().splitlines()
    start = next(i for i, line in enumerate(text) if line.startswith(MARKER)) + 1
    end = start
    while end < len(text) and text[end].startswith("|"):
        end += 1
    PAGE.write_text("\n".join([*text[:start], table(), *text[end:]]) + "\n")


if __name__ == "__main__":
    main()
