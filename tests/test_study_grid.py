"""The study's job grid (rulelib.study.grid): specs that adopt the first study's folders, the
fresh arm's mid-epoch checkpoints, one writer per job folder, a grid on submitit's local executor
killed and relaunched, and `study status`."""

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rulelib.diffusion import train as trainer
from rulelib.run.lock import LOCK_NAME, LockedError, locked
from rulelib.study import arms, grid

STUDY_JSON = Path(__file__).resolve().parents[1] / "results" / "study" / "study.json"


def test_grids_adopt_the_first_studys_folders():
    """A job's record is the record `study train` wrote for the same run: the committed runs'
    records are rebuilt exactly, so the grid resumes those folders instead of refusing them."""
    runs = json.loads(STUDY_JSON.read_text())["runs"]
    for name, rec in runs.items():
        r = rec["run"]
        if r["arm"] == "length":
            spec = arms.length_run(r["task"], r["images"], r["seed"], preset=r.get("preset"))
        elif r["arm"] == "fresh":
            spec = arms.fresh_run(r["task"], r["images"], r["seed"], preset=r.get("preset"))
        else:
            spec = arms.size_run(r["task"], r["train_size"], r["images"], r["seed"])
        assert spec.name == name and spec.to_dict() == r
    seeds = grid.grid("seeds")
    assert [j.name for j in seeds] == ["length_B_seed1", "length_B_seed2"]
    assert seeds[1].run == arms.length_run("B", 512_000, 2)
    (longer,) = grid.grid("longer")  # seed 0 on to 1 024 000 on the same checkpoint grid
    seed0 = runs["length_B"]["run"]  # the first study's 512 000-image run, or this job's own
    assert longer.extend and (arms.extends(seed0, longer.run) or seed0 == longer.run.to_dict())
    assert longer.run.to_dict()["images_at"][-1] == 1_024_000
    (c,) = grid.grid("length-C")
    assert c.run.to_dict() == runs["length_C"]["run"]  # set up for 512 000 there already
    size = grid.grid("size")  # the size arm's committed runs, retrained by the grid
    assert [j.run.to_dict() for j in size] == [runs[f"size_B_{s}"]["run"] for s in arms.SIZES]
    names = [j.name for j in grid.grid("all")]
    assert len(set(names)) == len(names) and "length_B_wide_seed1" in names
    with pytest.raises(ValueError, match="unknown grid 'nope'"):
        grid.grid("nope")


def test_fresh_arm_checkpoints_are_log_spaced_steps_of_one_epoch():
    f = arms.fresh_run("B", 512_000)
    images = [i for _, i in f.points()]
    assert f.epochs == (1,) and f.n_train() == 512_000 and images[-1] == 512_000
    assert images[0] == 8_000 and all(i % 32 == 0 for i in images)  # whole optimizer steps
    ratios = [b / a for a, b in zip(images, images[1:])]
    assert all(1.35 < r < 1.48 for r in ratios)  # two per doubling
    # the names and records of new kinds of runs: network and profile told apart
    w = arms.length_run("B", 256_000, 1, preset="wide")
    assert w.name == "length_B_wide_seed1" and w.to_dict()["preset"] == "wide"
    assert w.train_config().preset == "wide" and "preset" not in arms.length_run("B").to_dict()


def test_fresh_arm_stops_leave_the_arithmetic_alone(tmp_path):
    """Scoring the fresh arm part way (mid-epoch stops, their resume points kept) trains the
    same bits as the epoch trained in one go; a job killed between a stop and its copy keeps
    the point at the next call."""
    run = arms.fresh_run("B", 128, first=32, base="smoke")
    assert [t for t, _ in run.points()][:1] == ["images_000000032"] and run.stops[-1] == 96
    cut = tmp_path / "cut"
    rdir = arms.run_dir(cut, run)
    rdir.mkdir(parents=True)
    cfg = run.train_config()
    images = run.training_set()
    # a "killed" job: the trainer stopped at 64 images, the points before it were copied
    arms.train_run(cut, run, progress=False, time_limit_s=0)  # the first stop, then the limit
    trainer.train(cfg.__class__(**{**cfg.to_dict(), "epochs": 1, "stop_step": 2}), images, rdir,
                  progress=False)  # fmt: skip
    assert sorted(p.name for p in (rdir / "points").iterdir()) == ["images_000000032"]
    res = arms.train_run(cut, run, progress=False)
    assert res["finished"] and sorted(arms.trained_points(cut, run)) == sorted(
        t for t, _ in run.points()
    )
    whole = tmp_path / "whole"
    trainer.train(cfg, images, whole, progress=False)  # no stops
    for f in ("model.safetensors", "ema.safetensors"):
        a = load_file(rdir / "checkpoints" / "epoch_000001" / f)
        b = load_file(whole / "checkpoints" / "epoch_000001" / f)
        assert all(torch.equal(a[k], b[k]) for k in a)
    # the kept point at 64 images is the state after two steps: not the final weights
    mid = load_file(rdir / "points" / "images_000000064" / "ema.safetensors")
    end = load_file(rdir / "checkpoints" / "epoch_000001" / "ema.safetensors")
    assert not all(torch.equal(mid[k], end[k]) for k in mid)


def _wait_for(cond, timeout=120.0):
    t0 = time.time()
    while not cond():
        if time.time() - t0 > timeout:
            raise TimeoutError("condition not met in time")
        time.sleep(0.2)


def test_grid_on_submitit_resumes_after_a_kill_to_the_same_results(tmp_path):
    """A smoke job on submitit's local executor is killed (SIGKILL) after its first checkpoint,
    the grid relaunched: it finishes, and its weights and scores equal an uninterrupted run."""
    job = grid.grid("smoke")[0]
    out = tmp_path / "grid"
    rdir = arms.run_dir(out, job.run)
    (sub,) = grid.launch([job], out, n_jobs=1, threads=1, wait=False, say=lambda m: None)
    _wait_for(lambda: (rdir / "eval" / "epoch_000001.json").exists())
    pid = json.loads((rdir / LOCK_NAME).read_text())["pid"]
    with pytest.raises(LockedError, match=f"pid {pid}"):  # one writer per job folder
        grid.run_job(out, job, say=lambda m: None)
    (state,) = grid.status(out, [job])
    assert state["state"] == "running" and state["holder"]["pid"] == pid
    os.kill(pid, signal.SIGKILL)
    _wait_for(lambda: sub.done())
    (state,) = grid.status(out, [job])
    assert state["state"] == "pending" and 1 <= state["trained"] < state["points"]
    said = []
    grid.launch([job], out, n_jobs=1, threads=1, say=said.append)
    assert any("'done'" in m for m in said), said
    (state,) = grid.status(out, [job])
    assert state["state"] == "done" and state["scored"] == state["points"] == 3
    assert grid.launch([job], out, say=said.append) == []  # finished: nothing submitted
    ref = tmp_path / "ref"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the grid's jobs ran with one thread: the same reductions
    try:
        grid.run_job(ref, job, say=lambda m: None)
    finally:
        torch.set_num_threads(threads)
    rref = arms.run_dir(ref, job.run)
    for f in ("model.safetensors", "ema.safetensors"):
        a, b = (load_file(d / "checkpoints" / "epoch_000004" / f) for d in (rdir, rref))
        assert all(torch.equal(a[k], b[k]) for k in a)
    for tag, _ in job.run.points():
        a, b = (json.loads((d / "eval" / f"{tag}.json").read_text()) for d in (rdir, rref))
        assert a["generated"] == b["generated"] and a["dsm_gap"] == b["dsm_gap"]


def test_status_tells_each_state(tmp_path):
    size, fresh = grid.grid("smoke")
    other = arms.size_run("B", 32, images=64, base="smoke")  # same folder, another spec
    out = tmp_path
    arms.train_run(out, other, progress=False)
    rows = {r["job"]: r for r in grid.status(out, [size, fresh])}
    assert rows["size_B_32"]["state"] == "pending" and rows["size_B_32"]["trained"] == 2
    assert rows["fresh_B"]["state"] == "pending" and rows["fresh_B"]["last_images"] is None
    res = grid.worker([size], out, threads=torch.get_num_threads())
    assert res == {"size_B_32": "failed"}
    (row,) = grid.status(out, [size])
    assert row["state"] == "failed" and "set up for another run" in row["error"]
    assert "failed" in grid.format_status([row]) and "another run" in grid.format_status([row])
    with locked(arms.run_dir(out, size.run)):
        (row,) = grid.status(out, [size])
        assert row["state"] == "running" and row["holder"]["pid"] == os.getpid()
