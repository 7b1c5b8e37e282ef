"""`write_cache_entry`: atomic cache entries shared by the core's and the packages' caches."""

from __future__ import annotations

import json

import pytest

from sparsecore.bench.pretrained import write_cache_entry


def test_entry_is_written_whole_with_its_meta(tmp_path):
    path = tmp_path / "models" / "entry"
    write_cache_entry(path, lambda tmp: (tmp / "weights.bin").write_bytes(b"abc"), {"seed": 3})
    assert (path / "weights.bin").read_bytes() == b"abc"
    assert json.loads((path / "sparse_meta.json").read_text()) == {"seed": 3}
    assert [p.name for p in path.parent.iterdir()] == ["entry"]  # no temporary folder left


def test_a_finished_entry_of_another_process_is_kept(tmp_path):
    path = tmp_path / "entry"
    write_cache_entry(path, lambda tmp: (tmp / "w").write_text("first"), {"n": 1})
    write_cache_entry(path, lambda tmp: (tmp / "w").write_text("second"), {"n": 2})
    assert (path / "w").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]


def test_a_failing_writer_leaves_nothing(tmp_path):
    def fail(tmp):
        (tmp / "partial").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_cache_entry(tmp_path / "entry", fail, {})
    assert list(tmp_path.iterdir()) == []
