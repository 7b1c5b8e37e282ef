"""The concepts page's quickstart runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def python_blocks(markdown: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown.read_text(), flags=re.S)


def test_concepts_quickstart_runs():
    torch.set_num_threads(1)
    blocks = python_blocks(ROOT / "docs" / "concepts.md")
    assert blocks, "the concepts page has no python quickstart"
    namespace: dict = {}
    exec(compile(blocks[0], "concepts.md", "exec"), namespace)
    assert abs(namespace["method"].config.sparsity - 0.9) < 1e-12
