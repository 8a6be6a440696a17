"""Atomic writes: a write that fails half-way leaves the old file and no temporary file behind."""

import stat

import pytest

from rulelib import atomic


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    atomic.write_text(path, "old")
    with pytest.raises(RuntimeError), atomic.atomic_path(path) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_successful_write_replaces_and_is_world_readable(tmp_path):
    path = tmp_path / "sub" / "report.md"  # the directory is created
    atomic.write_text(path, "first")
    atomic.write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.md"]
