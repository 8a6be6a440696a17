"""The study's job grid: named lists of jobs, each one run of an arm trained and then scored at
every checkpoint, run in parallel on submitit (its local executor, or Slurm).

A job is keyed by its run's spec (``arms.ArmRun``: arm, task, seed, training set, image budget,
network): its folder is ``<out>/<run name>``, the folder's ``study_run.json`` records the spec,
and a folder made for another spec is refused (``arms.train_run``).  So a job is idempotent and
resumable: relaunching a grid skips finished jobs (every checkpoint trained and scored), resumes
interrupted ones from their newest checkpoint or resume point (to the bit, the trainer's
guarantee), and adopts folders made by ``study train`` with the same spec.  One writer per job
folder: the job holds the folder's lock (rulelib.run.lock: ``lock.json``, an flock the kernel
drops when the process dies) while it trains or scores; a second writer is refused at once.

Local executor (the default): ``jobs`` worker processes, each with ``threads`` torch threads
(default: the machine's cores shared out), walk the grid in its order and take each job that is
neither finished nor locked by another worker; a job that fails is recorded and the worker goes
on.  Slurm: one array task per unfinished job (``jobs`` of them at once), each with its
partition, time limit and GPUs.  Outside the run folders a grid writes only ``<out>/grid/``:
``jobs/<name>.json`` (state, times, host, the error of a failed job) and submitit's logs.

The grids (the quick profile's settings; checkpoints log-spaced, two per doubling), in the
order that decides the question first:

    seeds      Task B, length arm to 512 000 images, training seeds 1 and 2 (seed 0: the first
               study's length_B)
    longer     Task B, seed 0 on to 1 024 000 images (extends a 512 000-image length_B)
    fresh      Task B, every image new, to 512 000 images (the no-memorisation control)
    widths     Task B, length arm to 256 000 images with the 0.24 M "narrow" and 3.8 M "wide"
               U-Nets (seed 0); widths-seed1: the same with seed 1
    dit        Task B, the transformer denoiser ("dit", 1.4 M) at the quick budget, 64 000 images
    length-C   Task C, length arm on to 512 000 images (extends a smaller length_C)
    size       Task B, size arm: training sets of 250, 1 000, 4 000 and 16 000 images and fresh
               images, 128 000 images each (the same runs as ``study train --arm size``)
    all        the above in that order (widths-seed1 last)
    smoke      seconds-long jobs of the smoke profile (tests)
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
import traceback
from pathlib import Path

import submitit
import torch

from rulelib import atomic, provenance
from rulelib.run.lock import LOCK_NAME, LockedError, locked
from rulelib.study import arms, evaluate

N_SAMPLES = 128  # samples per scored checkpoint: the first study's (keep one n per run)
WIDTH_IMAGES = 256_000
DIT_IMAGES = 64_000  # the quick profile's budget
LOCAL_TIMEOUT_MIN = 60 * 24 * 14  # submitit's local jobs are killed at their timeout: two weeks


@dataclasses.dataclass(frozen=True)
class Job:
    """One job of a grid: train ``run`` and score each checkpoint with ``n`` samples, its last
    three with ``conclusion_n`` (``evaluate.wanted_n``).
    extend: a folder of the same run made for a smaller budget is taken on (``arms.extends``)."""

    run: arms.ArmRun
    n: int = N_SAMPLES
    extend: bool = False
    conclusion_n: int = evaluate.CONCLUSION_N

    @property
    def name(self) -> str:
        return self.run.name


def _grids() -> dict[str, list[Job]]:
    seeds = [Job(arms.length_run("B", arms.LENGTH_IMAGES, s)) for s in (1, 2)]
    longer = [Job(arms.length_run("B", 2 * arms.LENGTH_IMAGES), extend=True)]
    fresh = [Job(arms.fresh_run("B", arms.LENGTH_IMAGES))]
    widths = [Job(arms.length_run("B", WIDTH_IMAGES, preset=p)) for p in ("narrow", "wide")]
    widths1 = [Job(arms.length_run("B", WIDTH_IMAGES, 1, preset=p)) for p in ("narrow", "wide")]
    dit = [Job(arms.length_run("B", DIT_IMAGES, preset="dit"))]
    length_c = [Job(arms.length_run("C", arms.LENGTH_IMAGES), extend=True)]
    size = [Job(arms.size_run("B", s)) for s in arms.SIZES]
    smoke = [
        Job(arms.size_run("B", 32, images=128, base="smoke"), n=16, conclusion_n=16),
        Job(arms.fresh_run("B", 128, first=32, base="smoke"), n=16, conclusion_n=16),
    ]
    return {
        "seeds": seeds, "longer": longer, "fresh": fresh, "widths": widths,
        "widths-seed1": widths1, "dit": dit, "length-C": length_c, "size": size,
        "all": seeds + longer + fresh + widths + dit + length_c + size + widths1, "smoke": smoke,
    }  # fmt: skip


GRID_NAMES = tuple(_grids())


def grid(name: str) -> list[Job]:
    """The jobs of the grid called ``name`` (one of GRID_NAMES), in the order they run."""
    grids = _grids()
    if name not in grids:
        raise ValueError(f"unknown grid {name!r}; expected one of {sorted(grids)}")
    return grids[name]


# -------------------------------------------------------------------------------------------------
# One job


def progress_of(out, job: Job) -> dict:
    """How far a job is: its points trained and scored, the last trained one (images)."""
    rdir = arms.run_dir(out, job.run)
    points = job.run.points()
    trained = arms.passed_tags(out, job.run) if rdir.is_dir() else set()
    scored = [
        t
        for t, _ in points
        if not evaluate.needs_scoring(
            rdir / "eval" / f"{t}.json", evaluate.wanted_n(job.run, t, job.n, job.conclusion_n)
        )
    ]
    last = max((i for t, i in points if t in trained), default=None)
    return {"points": len(points), "trained": len(trained), "scored": len(scored),
            "last_images": last}  # fmt: skip


def is_done(out, job: Job) -> bool:
    p = progress_of(out, job)
    return p["trained"] == p["scored"] == p["points"]


def _record_path(out, job: Job) -> Path:
    return Path(out) / "grid" / "jobs" / f"{job.name}.json"


def _record(out, job: Job, **fields) -> None:
    path = _record_path(out, job)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = atomic.read_json(path) if path.exists() else {}
    atomic.write_json(path, {**old, "spec": job.run.to_dict(), "n": job.n, **fields})


def run_job(out, job: Job, *, device="cpu", progress=False, say=print) -> dict:
    """Train and score one job under its folder's lock (LockedError when another process holds
    it); each checkpoint is scored as soon as it is trained. Returns ``progress_of``."""
    rdir = arms.run_dir(out, job.run)
    rdir.mkdir(parents=True, exist_ok=True)
    with locked(rdir, command=f"study grid job {job.name}", say=say):
        _record(out, job, state="running", started=provenance.now_iso(),
                host=socket.gethostname(), pid=os.getpid(), error=None)  # fmt: skip
        cache = {}

        def score():
            if "images" not in cache:  # rendered once per job (the fresh arm's 512 000 images)
                cache["images"] = job.run.training_set()
            evaluate.evaluate_run(out, job.run, n=job.n, device=device, progress=progress,
                                  train_images=cache["images"],
                                  conclusion_n=job.conclusion_n)  # fmt: skip

        if arms.trained_points(out, job.run):
            score()  # checkpoints trained before an interruption, not scored yet
        arms.train_run(out, job.run, device=device, progress=progress, extend=job.extend,
                       after_segment=score)  # fmt: skip
        score()
        _record(out, job, state="done", ended=provenance.now_iso())
    return progress_of(out, job)


def _run_or_record(out, job: Job, device, progress, say) -> str:
    try:
        run_job(out, job, device=device, progress=progress, say=say)
    except LockedError as e:
        say(f"{job.name}: skipped, {e}")
        return "locked"
    except Exception as e:  # recorded for `study status`, then the next job
        _record(out, job, state="failed", ended=provenance.now_iso(),
                error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())  # fmt: skip
        say(f"{job.name}: failed, {type(e).__name__}: {e}")
        return "failed"
    return "done"


def worker(jobs: list[Job], out, threads: int, device="cpu") -> dict[str, str]:
    """A local worker: each job in order that is not finished and not locked by another worker
    is run; returns {job name: "done" | "finished before" | "locked" | "failed"}."""
    torch.set_num_threads(threads)
    res = {}
    for job in jobs:
        if is_done(out, job):
            res[job.name] = "finished before"
            continue
        res[job.name] = _run_or_record(out, job, device, False, lambda m: print(m, flush=True))
    return res


def slurm_task(job: Job, out, threads: int, device="cuda") -> str:
    """One Slurm array task: its job, unless finished or locked."""
    torch.set_num_threads(threads)
    if is_done(out, job):
        return "finished before"
    status = _run_or_record(out, job, device, False, lambda m: print(m, flush=True))
    if status == "failed":
        raise RuntimeError(atomic.read_json(_record_path(out, job))["error"])
    return status


# -------------------------------------------------------------------------------------------------
# Launching


def default_threads(n_jobs: int) -> int:
    """The cores this process may use, shared out over ``n_jobs`` jobs (at least one each)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // max(1, n_jobs))


def launch(jobs: list[Job], out, *, executor: str = "local", n_jobs: int = 1,
           threads: int | None = None, device: str = "cpu", wait: bool = True,
           partition: str | None = None, time_min: int = 24 * 60, gpus_per_job: int = 0,
           say=print) -> list:  # fmt: skip
    """Submit the unfinished jobs of a grid (see the module docstring); with ``wait``, wait for
    them and say how each ended. Returns the submitit jobs."""
    if executor not in ("local", "slurm"):
        raise ValueError(f"executor must be 'local' or 'slurm', got {executor!r}")
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {n_jobs!r}")
    threads = threads or default_threads(n_jobs)
    if threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    out = Path(out).resolve()
    todo = [j for j in jobs if not is_done(out, j)]
    say(f"{len(jobs) - len(todo)} of {len(jobs)} jobs finished before; {len(todo)} to run")
    if not todo:
        return []
    folder = out / "grid" / "submitit"
    if executor == "local":
        ex = submitit.LocalExecutor(folder)
        ex.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN)
        subs = [ex.submit(worker, todo, out, threads, device)
                for _ in range(min(n_jobs, len(todo)))]  # fmt: skip
    else:
        ex = submitit.AutoExecutor(folder, cluster="slurm")
        ex.update_parameters(timeout_min=time_min, slurm_partition=partition,
                             gpus_per_node=gpus_per_job, cpus_per_task=threads,
                             slurm_array_parallelism=n_jobs)  # fmt: skip
        subs = ex.map_array(slurm_task, todo, [out] * len(todo), [threads] * len(todo),
                            [device] * len(todo))  # fmt: skip
    say(f"submitted {len(subs)} {executor} job(s), {threads} thread(s) each; logs in {folder}")
    if wait:
        for s in subs:
            try:
                say(f"job {s.job_id}: {s.result()}")
            except Exception as e:  # a worker killed or a Slurm task failed: `study status`
                say(f"job {s.job_id} ended without a result: {type(e).__name__}: {e}")
    return subs


# -------------------------------------------------------------------------------------------------
# Status


def _holder(rdir: Path) -> dict | None:
    """The lock's record when a live process holds the folder (on this host: its pid runs; on
    another host it cannot be checked and counts as held)."""
    f = rdir / LOCK_NAME
    if not f.exists():
        return None
    info = atomic.read_json(f) if f.stat().st_size else {}
    if info.get("host") != socket.gethostname():
        return info
    try:
        os.kill(int(info.get("pid", 0)), 0)
    except ProcessLookupError:
        return None
    except (PermissionError, ValueError):
        pass
    return info


def _last_write_s(rdir: Path) -> float | None:
    times = [p.stat().st_mtime for p in rdir.rglob("*") if p.is_file()] if rdir.is_dir() else []
    return time.time() - max(times) if times else None


def status(out, jobs: list[Job]) -> list[dict]:
    """Each job's state: done, running (the folder's lock is held), failed (with its error),
    pending; its points trained / scored and the last checkpoint's images."""
    rows = []
    for job in jobs:
        rdir = arms.run_dir(out, job.run)
        p = progress_of(out, job)
        rec = atomic.read_json(_record_path(out, job)) if _record_path(out, job).exists() else {}
        holder = _holder(rdir)
        if p["trained"] == p["scored"] == p["points"]:
            state = "done"
        elif holder is not None:
            state = "running"
        elif rec.get("state") == "failed":
            state = "failed"
        else:
            state = "pending"
        rows.append({"job": job.name, "state": state, **p, "error": rec.get("error")
                     if state == "failed" else None,
                     "holder": holder, "last_write_s": _last_write_s(rdir)})  # fmt: skip
    return rows


def format_status(rows: list[dict]) -> str:
    lines = [f"{'job':<24} {'state':<8} {'trained':>9} {'scored':>9} {'last checkpoint':>16}"]
    for r in rows:
        last = "-" if r["last_images"] is None else f"{r['last_images']:,} images"
        line = (f"{r['job']:<24} {r['state']:<8} {r['trained']:>4}/{r['points']:<4} "
                f"{r['scored']:>4}/{r['points']:<4} {last:>16}")  # fmt: skip
        if r["state"] == "running":
            h = r["holder"]
            line += f"  (pid {h.get('pid')} on {h.get('host')} since {h.get('started')})"
        elif r["state"] == "failed":
            line += f"  {r['error']}"
        elif r["state"] == "pending" and r["last_write_s"] is not None and r["last_write_s"] < 900:
            line += (f"  (no lock, but written {r['last_write_s']:.0f} s ago: a `study train` "
                     "without the lock may be running)")  # fmt: skip
        lines.append(line)
    return "\n".join(lines)
