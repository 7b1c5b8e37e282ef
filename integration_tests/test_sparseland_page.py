"""The Sparseland page's taxonomy table lists every installed method and procedure as declared."""

from pathlib import Path

from sparsecore import available_methods, available_procedures
from sparsecore.taxonomy import taxonomy_rows

PAGE = Path(__file__).resolve().parents[1] / "docs" / "sparseland.md"


def _page_rows() -> dict[str, list[str]]:
    rows = {}
    for line in PAGE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 6:
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_taxonomy_table_matches_the_installed_methods():
    page = _page_rows()
    rows = taxonomy_rows(available_methods()) + taxonomy_rows(available_procedures())
    declared = {r["method"]: list(r.values())[1:] for r in rows}
    expected = "\n".join(
        f"| `{name}` | " + " | ".join(cells) + " |" for name, cells in declared.items()
    )
    assert page == declared, f"regenerate the table in docs/sparseland.md:\n{expected}"
