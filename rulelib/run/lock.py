"""One writer per task folder: `with locked(task_dir): ...` around everything a command does there.

The lock is the file `<task_dir>/lock.json`, holding the owner's pid, host, start time and command,
and an exclusive `fcntl.flock` on it while the owner runs.  The kernel drops the flock when its
process dies (even by `kill -9`), so a lock file that nobody holds is stale: the next command says
whose it was, takes it over and cleans the temporary files the dead run left
(rulelib.run.folder.clean_stale).  A second command on a folder whose lock is held refuses at once
with a `LockedError` naming the holder.  Where `fcntl` is missing (Windows) the pid decides: a
lock of this host whose process no longer runs is stale.  Nested `locked` calls of one process on
one folder are re-entrant (a stage inside `reproduce`).

The flock is reliable on local file systems; on network file systems (NFS) across machines it may
not be, and the lock's host name then tells the user which machine holds the folder.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rulelib import provenance
from rulelib.run.folder import RunError, clean_stale

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_NAME = "lock.json"
_HELD: dict[Path, int] = {}  # folders this process holds -> nesting depth


class LockedError(RunError):
    """The task folder is in use by another process (the message names it)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return {}


def _holder(info: dict, path: Path) -> str:
    if not info:
        return f"another process (lock file {path} is empty)"
    return (
        f"pid {info.get('pid')} on {info.get('host')} since {info.get('started')} "
        f"({info.get('command')})"
    )


def _try_flock(fd: int) -> bool:
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _acquire(tdir: Path, command: str, say) -> int:
    """Open and lock tdir/lock.json; returns its descriptor, or raises LockedError."""
    path = tdir / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_flock(fd):
            os.close(fd)
            raise LockedError(
                f"{tdir} is in use by {_holder(_read(path), path)}; wait until it ends, or run on "
                "another --out"
            )
        try:  # the file may have been removed by its previous owner after we opened it
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        old = _read(path)
        if fcntl is None and old and old.get("host") == socket.gethostname():
            if old.get("pid") != os.getpid() and _alive(int(old.get("pid", 0))):
                os.close(fd)
                raise LockedError(f"{tdir} is in use by {_holder(old, path)}")
        if old:
            say(f"{tdir}: stale lock of {_holder(old, path)} taken over (that run ended)")
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": provenance.now_iso(),
                "command": command}  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        os.fsync(fd)
        return fd


@contextmanager
def locked(tdir, *, command: str = "", say=print) -> Iterator[Path]:
    """Hold the task folder's lock for the block (re-entrant within this process); on first entry
    clean what a dead run left behind.  The folder must exist (RunError otherwise)."""
    tdir = Path(tdir).resolve()
    if not tdir.is_dir():
        raise RunError(f"{tdir} does not exist")
    if tdir in _HELD:
        _HELD[tdir] += 1
        try:
            yield tdir
        finally:
            _HELD[tdir] -= 1
        return
    fd = _acquire(tdir, command or " ".join(sys.argv), say)
    _HELD[tdir] = 1
    try:
        clean_stale(tdir, say)
        yield tdir
    finally:
        del _HELD[tdir]
        try:
            os.unlink(tdir / LOCK_NAME)  # while still locked: the next owner opens a new file
        except FileNotFoundError:
            pass
        os.close(fd)
