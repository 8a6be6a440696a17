"""One writer per task folder: a second command refuses at once naming the
holder; a lock whose process died is detected as stale and taken over; the lock is re-entrant in
one process and gone when the command ends."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rulelib import cli
from rulelib.run import lock

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def holder(tmp_path):
    """Another process holding tmp_path/A's lock until it is killed: (its pid, the folder)."""
    tdir = tmp_path / "A"
    tdir.mkdir()
    code = textwrap.dedent(f"""
        import sys, time
        from rulelib.run.lock import locked
        with locked({str(tdir)!r}, command="python -m rulelib train --task A"):
            print("held", flush=True)
            time.sleep(120)
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    yield proc.pid, tdir
    proc.kill()
    proc.wait()


def test_a_second_command_refuses_at_once_naming_the_holder(holder, capsys):
    pid, tdir = holder
    (tdir / "profile.json").write_text(json.dumps({"profile": "smoke", "seed": 0}))
    t0 = time.perf_counter()
    for argv in (
        ["train", "--task", "A", "--out", str(tdir.parent), "--device", "cpu"],
        ["sample", "--task", "A", "--out", str(tdir.parent), "--device", "cpu"],
        ["reproduce", "--task", "A", "--out", str(tdir.parent), "--device", "cpu"],
    ):
        with pytest.raises(SystemExit) as e:
            cli.main([*argv, "--quiet"])
        err = capsys.readouterr().err
        assert e.value.code == 2, argv
        assert f"is in use by pid {pid} on {socket.gethostname()}" in err, err
        assert "python -m rulelib train --task A" in err  # the holder's command
    assert time.perf_counter() - t0 < 20  # at once: no training started, no waiting
    assert sorted(p.name for p in tdir.iterdir()) == ["lock.json", "profile.json"]


def test_a_lock_of_a_dead_process_is_stale_and_taken_over(tmp_path, capsys):
    tdir = tmp_path / "A"
    tdir.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid no longer runs, and it never held a flock
    stale = {"pid": dead.pid, "host": socket.gethostname(), "started": "then", "command": "old"}
    (tdir / "lock.json").write_text(json.dumps(stale))
    with lock.locked(tdir, command="new") as held:
        assert json.loads((held / "lock.json").read_text())["pid"] == os.getpid()
        # re-entrant within this process (a stage inside reproduce)
        with lock.locked(tdir):
            pass
        assert (tdir / "lock.json").exists()
    assert f"stale lock of pid {dead.pid}" in capsys.readouterr().out
    assert not (tdir / "lock.json").exists()  # released


def test_the_lock_needs_an_existing_folder(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        with lock.locked(tmp_path / "nothing"):
            pass
    assert not (tmp_path / "nothing").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "--task", "A", "--images", "{tmp}/imgs.npz", "--out", "{tdir}", "--quiet"],
        ["export", "--out", "{tmp}/run", "--to", "{tdir}"],
        ["analytic", "--task", "A", "--n", "2", "--out", "{tdir}", "--quiet"],
    ],
)
def test_every_folder_a_command_writes_is_locked(argv, holder, capsys):
    """Not only run folders: the scores of `evaluate --images`, an export's destination and the
    analytic command's folder have the same one writer."""
    import numpy as np

    pid, tdir = holder
    tmp = tdir.parent
    np.savez(tmp / "imgs.npz", images=np.zeros((2, 32, 32, 3), np.uint8))
    (tmp / "run" / "A").mkdir(parents=True)
    (tmp / "run" / "A" / "metrics.json").write_text("{}")
    with pytest.raises(SystemExit) as e:
        cli.main([a.replace("{tmp}", str(tmp)).replace("{tdir}", str(tdir)) for a in argv])
    assert e.value.code == 2 and f"is in use by pid {pid}" in capsys.readouterr().err
    assert sorted(p.name for p in tdir.iterdir()) == ["lock.json"]  # nothing written
