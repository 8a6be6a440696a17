"""Atomic file writes, used for every result, sample chunk and checkpoint.

A file is written under a temporary name in its own directory and then renamed over its final
name with `os.replace`, which is atomic on POSIX and Windows: a killed run leaves either the old
file or the new one, never half of one, and an interrupted run resumes from what is complete.

A write that cannot complete (a full disk, a read-only folder) raises OSError naming the final
file, not its temporary name; numpy's own "problem writing element" (no errno) on a full disk is
reported as ENOSPC.  Logs of one line per event are JSON lines (`append_jsonl`, `read_jsonl`),
rewritten atomically on each append rather than appended in place, so a kill never leaves half a
line.
"""

import errno
import io
import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; write it in the block. On success it is flushed to
    disk and renamed to `path`; on an exception it is removed and `path` is left untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:  # a read-only folder, say: name the file that was to be written
        raise _named(e, path) from e
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; these are ordinary results
        os.replace(tmp, path)
    except OSError as e:
        if e.filename not in (None, tmp, str(tmp)):  # names another file already
            raise
        raise _named(e, path) from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _named(e: OSError, path: Path) -> OSError:
    """The fault `e` of writing `path`, with `path` as its file name (the user never sees the
    temporary name); no errno (numpy's "problem writing element ... to file") on a full disk is
    ENOSPC."""
    code, cause = e.errno, e.strerror or str(e)
    if code is None and _disk_full(path.parent):
        code, cause = errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({e})"
    return OSError(code, cause, str(path))  # OSError(errno.EACCES, ...) is a PermissionError


def _disk_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < 1 << 20  # under 1 MiB left
    except OSError:
        return False


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj) -> Path:
    return write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")


def savez(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """np.savez_compressed into memory, then an atomic write (savez on a path appends .npz)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return write_bytes(path, buf.getvalue())


def savefig(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure atomically, format from the suffix, then close it."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return write_bytes(path, buf.getvalue())


def _jsonable(obj):
    """numpy scalars/arrays and Paths -> plain JSON types; NaN/inf -> None (JSON has no NaN)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def read_json(path: str | os.PathLike) -> dict:
    """Read a JSON file; a clear ValueError when it is corrupt (e.g. not written by rulelib)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it to recompute") from e


def append_jsonl(path: str | os.PathLike, record: Mapping) -> Path:
    """Add one JSON line to `path`: the complete lines so far plus this one, written atomically
    (`read_jsonl`'s lines; a line truncated by an earlier in-place append is dropped)."""
    path = Path(path)
    lines = [json.dumps(r) for r in read_jsonl(path)] if path.exists() else []
    return write_text(
        path, "".join(f"{line}\n" for line in [*lines, json.dumps(_jsonable(record))])
    )


def read_jsonl(path: str | os.PathLike) -> list:
    """The records of a JSON-lines file.  A last line without its newline that does not parse was
    cut by a kill during an in-place append (files written before `append_jsonl`): skipped with a
    warning naming the file.  Any other line that does not parse: ValueError naming the file and
    the line."""
    path = Path(path)
    text = path.read_text()
    lines = text.splitlines()
    records = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) and not text.endswith("\n"):
                warnings.warn(f"{path}: line {i} is truncated (a killed write); skipped",
                              RuntimeWarning, stacklevel=2)  # fmt: skip
                continue
            raise ValueError(f"{path}: line {i} is not valid JSON ({e})") from e
    return records
