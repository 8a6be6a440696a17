"""An unfinished study run packed into the results and restored on "another machine" (another
folder) trains on to the bits and scores of the run that was never moved (rulelib.study.carry)."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from rulelib.diffusion import checkpoint
from rulelib.diffusion.checkpoint import CHECKPOINT_FILES
from rulelib.run.lock import LockedError
from rulelib.study import arms, artefacts, carry, evaluate, grid


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same reductions in every run compared below
    yield
    torch.set_num_threads(threads)


def test_a_packed_run_restored_elsewhere_ends_as_the_unmoved_run(tmp_path, one_thread):
    job = grid.grid("smoke")[0]  # three points: epochs 1, 2 and 4
    run = job.run
    here, there, ref = tmp_path / "here", tmp_path / "there", tmp_path / "ref"
    parcels = tmp_path / "results"
    # this machine: the first two points trained and scored, then the session ends
    arms.train_run(here, run, progress=False, time_limit_s=0)
    arms.train_run(here, run, progress=False, time_limit_s=0)
    evaluate.evaluate_run(here, run, n=job.n, progress=False, conclusion_n=job.conclusion_n)
    assert arms.trained_epochs(here, run) == [1, 2]
    artefacts.collect(here, parcels)
    assert carry.pack(here, parcels) == {run.name: "packed at epoch 2"}
    parcel = parcels / "runs" / run.name / "resume"
    assert [p.name for p in (parcel / "checkpoint").iterdir()] == ["epoch_000002"]  # newest only
    assert sorted(p.name for p in (parcel / "eval").iterdir()) == [
        f"epoch_00000{e}.{x}" for e in (1, 2) for x in ("json", "npz")]  # fmt: skip

    # another machine: restored from the parcel alone, then the grid's job finishes it
    assert carry.restore(parcels, there) == {run.name: "restored at epoch_000002"}
    assert arms.trained_epochs(there, run) == [2]  # epoch 1's folder did not travel...
    assert grid.progress_of(there, job)["trained"] == 2  # ...but training has passed it
    assert grid.progress_of(there, job)["scored"] == 2
    grid.run_job(there, job, say=lambda m: None)
    assert grid.is_done(there, job)
    grid.run_job(ref, job, say=lambda m: None)  # the run that never moved
    for f in ("model.safetensors", "ema.safetensors"):
        a, b = (load_file(d / run.name / "checkpoints" / "epoch_000004" / f) for d in (there, ref))
        assert all(torch.equal(a[k], b[k]) for k in a)
    for tag, _ in run.points():
        a, b = (json.loads((d / run.name / "eval" / f"{tag}.json").read_text())
                for d in (there, ref))  # fmt: skip
        assert a["generated"] == b["generated"], tag
    samples = there / run.name / "eval" / "epoch_000001.npz"  # the samples came back too
    assert samples.read_bytes() == (ref / run.name / "eval" / "epoch_000001.npz").read_bytes()

    # a finished run needs no parcel; a folder that holds a checkpoint is never overwritten
    assert carry.pack(there, parcels) == {run.name: "finished: no parcel"}
    assert not parcel.exists()
    artefacts.collect(here, parcels)
    carry.pack(here, parcels)
    said = carry.restore(parcels, there)
    assert said[run.name].startswith("kept:") and "epoch 4" in said[run.name]
    assert checkpoint.list_checkpoints(there / run.name)[-1][0] == 4


def test_restore_refuses_a_parcel_without_its_checkpoint_before_writing_anything(tmp_path):
    _parcel(tmp_path / "results", "length_C")  # sound
    broken = tmp_path / "results" / "runs" / "length_B" / "resume" / "checkpoint" / "epoch_000002"
    broken.mkdir(parents=True)
    (broken / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="length_B.*one complete checkpoint folder"):
        carry.restore(tmp_path / "results", tmp_path / "runs")
    assert not (tmp_path / "runs").exists()  # not even the sound parcel of length_C


def _parcel(results, name):
    folder = results / "runs" / name / "resume" / "checkpoint" / "epoch_000002"
    folder.mkdir(parents=True)
    for f in CHECKPOINT_FILES:
        (folder / f).write_bytes(b"")


def test_restore_refuses_a_run_folder_another_process_holds(tmp_path):
    """One writer per run folder (rulelib.run.lock): a restore into a folder a training job
    holds refuses at once and writes nothing there."""
    _parcel(tmp_path / "results", "length_B")
    rdir = tmp_path / "runs" / "length_B"
    rdir.mkdir(parents=True)
    code = textwrap.dedent(f"""
        import time
        from rulelib.run.lock import locked
        with locked({str(rdir)!r}, command="study grid job length_B"):
            print("held", flush=True)
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=f"pid {proc.pid}"):
            carry.restore(tmp_path / "results", tmp_path / "runs", say=lambda m: None)
        assert sorted(p.name for p in rdir.iterdir()) == ["lock.json"]
    finally:
        proc.kill()
        proc.wait()
