"""The stages of a run, each resumable, each given the run's settings (folder.RunSettings):

    1. train      skipped when the last checkpoint is at the profile's epochs; otherwise
                  rulelib.diffusion.train.train resumes from the last checkpoint
    2. sample     rulelib.diffusion.sample.sample with out_path: finished chunks are kept, a rerun
                  samples the rest
    3. evaluate   measure training and generated images: rule_report, figures, metrics.json,
                  report.md (cheap: always recomputed)
    4. sweep      every earlier checkpoint -> `sweep_n` samples (resumable) -> rule metrics
                  against epoch
    5. mitigation (rulelib.run.mitigate) rulelib.mitigation.pipeline.run -> task_dir/mitigation/

`reproduce` runs them for every task in turn, then writes the run's report.md.  Every stage holds
the task folder's lock (rulelib.run.lock) while it works and checks its inputs before anything in
the folder moves.  A run folder remembers its profile and seed (profile.json); another profile or
seed is refused instead of mixing results.  When a profile's definition changes (e.g. its
sampler), profile.json records the new settings beside the earlier ones, and samples made with
other settings are moved aside (samples_<method><steps>-<hash>.npz, folder.set_aside) and redrawn,
never overwritten.  metrics.json and the task's report.md are written by `_write_entry` alone.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from rulelib import atomic, metrics, paper, report, tasks
from rulelib.diffusion import checkpoint
from rulelib.diffusion import sample as sampler
from rulelib.diffusion import train as trainer
from rulelib.metrics import memorisation
from rulelib.mitigation import pipeline
from rulelib.run import folder, images
from rulelib.run.folder import RunError, RunSettings
from rulelib.run.lock import locked
from rulelib.tasks import rulers


def task_lock(run: RunSettings, task: str):
    """The task folder's lock (created here for training; other stages need an existing run)."""
    return locked(run.task_dir(task), command=run.command, say=run.say)


# --------------------------------------------------------------------------------------------------
# 1. train


def train(run: RunSettings, task: str, *, time_limit_s: float | None = None) -> int:
    """Train (or resume, or skip when finished); returns the last checkpoint's epoch.

    time_limit_s: stop with a checkpoint after the first epoch that ends past this many seconds
    (time-limited GPU sessions); the returned epoch is then below the profile's epochs and the same
    call later continues the run."""
    if time_limit_s is not None and not time_limit_s > 0:
        raise ValueError(f"time limit must be a positive number of seconds, got {time_limit_s}")
    cfg = run.profile.train_config(task, seed=run.seed, device=run.device)  # checks the task
    tdir = run.task_dir(task)
    if (tdir / "profile.json").exists():
        folder.check_identity(tdir, run.profile, run.seed)  # refuse before creating anything
    tdir.mkdir(parents=True, exist_ok=True)
    with task_lock(run, task):
        folder.record_identity(tdir, run.profile, run.seed)
        ckpts = checkpoint.list_checkpoints(tdir)
        if ckpts and ckpts[-1][0] >= cfg.epochs:
            run.say(f"[{task}] training finished earlier (epoch {ckpts[-1][0]}); skipped")
            return ckpts[-1][0]
        data, _ = run.profile.training_set(task, run.seed)
        start = f"resuming from epoch {ckpts[-1][0]}" if ckpts else "from scratch"
        run.say(f"[{task}] training {cfg.epochs} epochs on {len(data)} images, {start}")
        t0 = time.perf_counter()
        summary = trainer.train(
            cfg, data, tdir, resume=True, progress=run.progress, time_limit_s=time_limit_s
        )
        folder.add_time(tdir, "train", time.perf_counter() - t0)
        if summary.get("steps", 0) > summary.get("start_step", 0):  # how this call trained
            keep = ("device", "precision", "compile", "channels_last", "bf16", "threads",
                    "levers", "levers_how", "levers_figures", "levers_seconds",
                    "images_per_s_steady")  # fmt: skip
            atomic.write_json(tdir / "train_summary.json", {k: summary.get(k) for k in keep})
        ckpts = checkpoint.list_checkpoints(tdir)
    if not ckpts:
        raise RunError(f"training of {tdir} ended without writing a checkpoint")
    if not summary.get("finished", True):
        run.say(
            f"[{task}] time limit reached at epoch {ckpts[-1][0]} of {cfg.epochs}; "
            "run the same command again to continue"
        )
    return ckpts[-1][0]


# --------------------------------------------------------------------------------------------------
# 2. sample


def _draw(run: RunSettings, ckpt, settings, n: int, out_path: Path, label: str = ""):
    """Samples of one checkpoint (a run folder = its last checkpoint) into out_path (resumable):
    (images, epoch, reused), reused True when finished samples with these settings were read back.

    Samples at out_path made with other settings (another checkpoint, sampler or count) are moved
    aside first (folder.set_aside), so they are redrawn with the current ones, never overwritten;
    the model is loaded (and so checked) before anything moves."""
    model, cfg, epoch = checkpoint.load_model(ckpt, weights=settings.weights, device=run.device)
    schedule = cfg.schedule().to(run.device)
    how = dict(
        seed=run.seed,
        method=settings.method,
        steps=settings.steps,
        eta=settings.eta,
        clip_x0=settings.clip_x0,
        meta={"epoch": int(epoch), "weights": settings.weights},
    )
    folder.set_aside(out_path, sampler.sample_settings(schedule, n, **how), run.say)
    reused = out_path.exists()
    if not reused:
        run.say(f"{label}sampling {n} images ({settings.method}, {settings.steps} steps)")
    out = sampler.sample(
        model, schedule, n, **how, batch_size=settings.batch_size, device=run.device,
        out_path=out_path, progress=run.progress,
    )  # fmt: skip
    return out, int(epoch), reused


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def sample(run: RunSettings, task: str, *, n: int | None = None) -> np.ndarray:
    """Generated images of the last checkpoint into task_dir/samples.npz; returns them.

    Samples of an earlier checkpoint (the run was trained further since) or made with other
    sampler settings (the profile changed, or n) are moved aside to samples_epochXXXXX.npz or
    samples_<method><steps>-<hash>.npz and redrawn; nothing is overwritten.  n (default: the
    profile's) is checked before anything moves."""
    settings = run.profile.sampling(task)
    n = settings.n if n is None else _positive_int(n, "n (the number of samples)")
    images.check_image_count(n)  # before old samples are moved aside: they must fit in memory
    tdir = run.task_dir(task)
    folder.check_identity(tdir, run.profile, run.seed)  # a clear error when never trained here
    with task_lock(run, task):
        folder.record_identity(tdir, run.profile, run.seed)
        if not checkpoint.list_checkpoints(tdir):
            raise RunError(f"{tdir} has no checkpoint to sample; train it first")
        t0 = time.perf_counter()
        out, _, reused = _draw(run, tdir, settings, n, tdir / "samples.npz", f"[{task}] ")
        if not reused:
            folder.add_time(tdir, "sample", time.perf_counter() - t0)
    return out


# --------------------------------------------------------------------------------------------------
# 3. evaluate


def evaluate_images(
    task_name, imgs, out_dir, *, seed=0, n_boot=1000, train_images=None, extra=None, limits="",
    grid_title="", measurement="both",
) -> dict:  # fmt: skip
    """Measure `imgs`, score them beside the training set, write metrics.json, figures, report.md.

    train_images: the images the model was trained on (default: the task's dataset(seed)); they
    are measured for the training columns and are the reference of the memorisation columns
    (rulelib.metrics.memorisation: nearest-training distances, copy rate, the novel images' rule
    metrics).  extra: further entries of metrics.json (profile, sampling, provenance...).
    measurement: "exact", "paper" or "both" (rulelib.tasks.rulers.rulers_for): the first ruler's
    numbers sit at the top level ("generated", "train", memorisation; "ruler" names it), the
    paper's ruler's also under "paper_ruler", with its own scatter_paper.png.
    Returns the entry.
    """
    task = tasks.get(task_name)
    chosen = rulers.rulers_for(task, measurement)
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    imgs = images.check_images(imgs)
    if train_images is None:
        train_images = task.dataset(seed)[0]
    scored = {r: _score(task, imgs, train_images, r, n_boot, seed) for r in chosen}
    feats, ok, train, gen_report, train_report = scored[chosen[0]]
    entry = {
        "task": task_name,
        "title": getattr(task, "title", ""),
        **(extra or {}),
        "ruler": chosen[0],
        "generated": gen_report,
        "train": train_report,
        **memorisation.memorisation_columns(
            task, imgs, train_images, feats, ok, n_boot=n_boot, seed=seed
        ),
    }
    title = f"Task {task_name} ({entry['title']}): training vs generated"
    if "paper" in chosen:
        p_feats, p_ok, p_train, p_gen, p_tr = scored["paper"]
        entry["paper_ruler"] = {
            "ruler": "paper", "options": rulers.paper_ruler.DEFAULT.label,
            "trim": rulers.TRIM["paper"], "generated": p_gen, "train": p_tr,
        }  # fmt: skip
        report.save_scatter(task, p_train, (p_feats, p_ok), out_dir / "scatter_paper.png",
                            f"{title} (the paper's ruler)")  # fmt: skip
    report.save_scatter(task, train, (feats, ok), out_dir / "scatter.png", title)
    report.save_sample_grid(imgs, out_dir / "samples.png", title=grid_title)
    entry.setdefault("timings_s", {})["evaluate"] = round(time.perf_counter() - t0, 1)
    return _write_entry(out_dir, entry, limits)


RESULT_FILES = ("scatter.png", "scatter_paper.png", "samples.png", "sweep.png",
                "mitigation/mitigation.md")  # fmt: skip


def _score(task, imgs, train_images, ruler, n_boot, seed):
    """(features, ok, (train features, ok), generated report, train report) of one ruler, each
    read with its own fit (rulelib.tasks.rulers.TRIM)."""
    reasons = {}
    feats, ok = rulers.measure(task, imgs, ruler, reasons=reasons)
    train = rulers.measure(task, train_images, ruler)
    kw = {"n_boot": n_boot, "seed": seed, "trim": rulers.TRIM[ruler]}
    gen = metrics.rule_report(task, feats, ok, reasons=reasons, **kw)
    return feats, ok, train, gen, metrics.rule_report(task, *train, **kw)


def _write_entry(out_dir: Path, entry: dict, limits: str) -> dict:
    """The one writer of metrics.json and the task's report.md (rulelib.report.write_task_report);
    entry["files"] lists the RESULT_FILES the folder holds."""
    entry["files"] = sorted(f for f in RESULT_FILES if (out_dir / f).exists())
    report.write_task_report(out_dir, entry, limits=limits)
    return entry


def _update_entry(run: RunSettings, task: str, **changes) -> dict | None:
    """Add to a task's metrics.json (a later stage: sweep, mitigation); None when there is none."""
    mfile = run.task_dir(task) / "metrics.json"
    if not mfile.exists():
        return None
    entry = {**atomic.read_json(mfile), **changes}
    return _write_entry(run.task_dir(task), entry, run.profile.limits)


def evaluate(run: RunSettings, task: str, measurement: str = "both") -> dict:
    """Score task_dir/samples.npz (measure, metrics, figures, metrics.json, report.md) with the
    rulers ``measurement`` names (evaluate_images)."""
    tdir = run.task_dir(task)
    folder.check_identity(tdir, run.profile, run.seed)
    path = tdir / "samples.npz"
    if not path.exists():
        raise RunError(
            f"{path} does not exist; run `python -m rulelib sample --task {task} "
            f"--profile {run.profile.name} --out {run.out}` first"
        )
    with task_lock(run, task):
        imgs, meta = sampler.load_samples(path)
        old = atomic.read_json(tdir / "metrics.json") if (tdir / "metrics.json").exists() else {}
        extra = {
            "profile": run.profile.name,
            "seed": run.seed,
            "epoch": meta.get("epoch"),
            "sampling": {**run.profile.sampling(task).to_dict(), "n": len(imgs), "recorded": meta},
            "train_config": _read_if(tdir / "config.json"),
            **folder.provenance_entry(run.command),
            "timings_s": folder.read_timings(tdir),
            **({"trainer": _read_if(tdir / "train_summary.json")}
               if (tdir / "train_summary.json").exists() else {}),
            **({"sweep": old["sweep"]} if "sweep" in old else {}),
        }  # fmt: skip
        data, _ = run.profile.training_set(task, run.seed)
        extra["n_train_images"] = len(data)
        entry = evaluate_images(
            task, imgs, tdir, seed=run.seed, n_boot=run.profile.n_boot,
            train_images=data, extra=extra, limits=run.profile.limits,
            grid_title=f"Task {task}: {run.profile.name} profile, epoch {meta.get('epoch')}",
            measurement=measurement,
        )  # fmt: skip
    gen = entry["generated"]
    run.say(
        f"[{task}] {gen['n_measurable']}/{gen['n']} measurable; rule-conforming "
        f"{value(gen, 'conforming_pct', '.1f')} %, coarse {value(gen, 'coarse_rate', '.3f')}, "
        f"bias(k=1) {value(gen, 'bias_k1', '.3f')} -> {tdir / 'metrics.json'}"
    )
    return entry


def _read_if(path: Path) -> dict:
    return atomic.read_json(path) if path.exists() else {}


def value(rep: dict, key: str, fmt: str) -> str:
    """A rule_report metric's value formatted, 'n/a' when it has none."""
    v = (rep.get(key) or {}).get("value")
    return "n/a" if v is None else format(v, fmt)


# --------------------------------------------------------------------------------------------------
# 4. sweep


def sweep(run: RunSettings, task: str, measurement: str = "both") -> list[dict]:
    """Rule metrics against training epoch: every checkpoint -> samples -> metrics; CSV + plot.

    Each earlier checkpoint gets `sweep_n` samples in task_dir/sweep/epoch_XXXXX.npz (resumable, the
    same noise seed for every checkpoint, so the curve compares models rather than noise draws); the
    last checkpoint uses the main samples when they exist.  measurement: the rulers
    (rulelib.tasks.rulers.rulers_for); the paper's ruler's metrics go in ``paper_*`` columns.
    """
    tdir = run.task_dir(task)
    folder.check_identity(tdir, run.profile, run.seed)
    settings = run.profile.sampling(task)
    n, t = settings.sweep_n or 64, tasks.get(task)
    chosen = rulers.rulers_for(t, measurement)
    with task_lock(run, task):
        ckpts = checkpoint.list_checkpoints(tdir)
        if not ckpts:
            raise RunError(f"{tdir} has no checkpoints to sweep; train it first")
        t0, n_drawn = time.perf_counter(), 0
        main = tdir / "samples.npz"
        main_images, main_meta = sampler.load_samples(main) if main.exists() else (None, {})
        pairs = {r: [] for r in chosen}
        for epoch, ckpt in ckpts:
            if main_meta.get("epoch") == epoch:
                imgs = main_images
            else:
                path = tdir / "sweep" / f"epoch_{epoch:05d}.npz"
                path.parent.mkdir(exist_ok=True)
                label = f"[{task}] sweep, epoch {epoch}: "
                imgs, _, reused = _draw(run, ckpt, settings, n, path, label)
                n_drawn += not reused
            for r in chosen:
                feats, ok = rulers.measure(t, imgs, r)
                pairs[r].append((epoch, metrics.rule_report(
                    t, feats, ok, n_boot=run.profile.n_boot, seed=run.seed,
                    trim=rulers.TRIM[r])))  # fmt: skip
        rows = report.sweep_rows(pairs[chosen[0]], paper=pairs.get("paper") if
                                 chosen[0] != "paper" else None)  # fmt: skip
        if n_drawn:
            folder.add_time(tdir, "sweep", time.perf_counter() - t0)
        title = f"Task {task}: rule metrics against training epoch ({run.profile.name} profile)"
        report.save_sweep(rows, tdir / "sweep.csv", tdir / "sweep.png", title=title)
        timings = {**(_read_if(tdir / "metrics.json").get("timings_s") or {})}
        _update_entry(run, task, sweep=rows, timings_s={**timings, **folder.read_timings(tdir)})
    run.say(f"[{task}] sweep over {len(rows)} checkpoints -> {tdir / 'sweep.csv'}")
    return rows


# --------------------------------------------------------------------------------------------------
# 5. mitigation


def run_mitigation(run: RunSettings, task: str) -> dict:
    """`reproduce --mitigation`: rulelib.mitigation.pipeline.run for the task's folder; its
    results (task_dir/mitigation/) are then embedded in the task's report.md (and, by
    report.write_run_report, in the run's)."""
    tdir = run.task_dir(task)
    folder.check_identity(tdir, run.profile, run.seed)
    with task_lock(run, task):
        result = pipeline.run(
            task, tdir, run.profile, device=run.device, seed=run.seed, quiet=run.quiet
        )
        _update_entry(run, task)
    return result


# --------------------------------------------------------------------------------------------------
# The whole run


def paper_tasks() -> list[str]:
    """The registered tasks the paper reports results for (rulelib.paper.RULE_METRICS): A-D."""
    return [t for t in tasks.names() if t in paper.RULE_METRICS]


def parse_tasks(values) -> list[str]:
    """['A', 'C'], ['A,C'], ['all'], ['paper'] -> registered task names (rulelib.tasks.names()), in
    registry order: 'all' is every registered task, 'paper' those of the paper (`paper_tasks`);
    unknown names -> ValueError naming the valid ones."""
    known = tasks.names()
    if isinstance(values, str):
        values = [values]
    names = [v.strip() for value in values for v in str(value).split(",") if v.strip()]
    if not names:
        raise ValueError(f"no task given; expected names from {known}, 'paper' or 'all'")
    chosen = set()
    by_upper = {k.upper(): k for k in known}
    for n in names:
        if n.lower() in ("all", "paper"):
            chosen.update(known if n.lower() == "all" else paper_tasks())
        elif n in known or n.upper() in by_upper:
            chosen.add(n if n in known else by_upper[n.upper()])
        else:
            raise ValueError(
                f"unknown task {n!r}; expected one of {known}, 'paper' or 'all' (a task of your "
                "own: --tasks-from FILE_OR_MODULE)"
            )
    return [k for k in known if k in chosen]


def run_tasks(
    run: RunSettings, names, *, sweep_too=True, mitigation=False, time_limit_s=None,
    measurement="both",
) -> dict:  # fmt: skip
    """train -> sample -> evaluate (-> sweep, -> mitigation) for each task, each task's folder
    locked throughout; then the run's report.md.  time_limit_s bounds the training time of this
    call (the run stops after the task whose training it cut short).  Returns {task: metrics.json
    entry} of the tasks finished."""
    entries, t_call = {}, time.perf_counter()
    for name in names:
        left = None if time_limit_s is None else time_limit_s - (time.perf_counter() - t_call)
        if left is not None and left <= 0:
            run.say(f"time limit reached before task {name}; run the same command to continue")
            break
        tdir = run.task_dir(name)
        if (tdir / "profile.json").exists():
            folder.check_identity(tdir, run.profile, run.seed)  # before anything is created
        tdir.mkdir(parents=True, exist_ok=True)
        with task_lock(run, name):
            if train(run, name, time_limit_s=left) < run.profile.epochs_for(name):
                break  # out of time: the same command continues from the last checkpoint
            sample(run, name)
            evaluate(run, name, measurement)
            if sweep_too and run.profile.sweep_n > 0:
                sweep(run, name, measurement)
            if mitigation and not tasks.get(name).dependent:
                run.say(f"[{name}] no dependent feature to scale: no contrastive data, mitigation "
                        "skipped")  # fmt: skip
            elif mitigation:
                run_mitigation(run, name)
            entries[name] = atomic.read_json(tdir / "metrics.json")  # as written
        report.write_run_report(run.out, limits=run.profile.limits)
    if entries:
        run.say(f"report: {Path(run.out) / 'report.md'}")
    return entries


def reproduce(
    task_names="paper", profile_name="auto", out="runs/reproduce", *, seed=0, device="auto",
    progress=True, quiet=False, sweep=True, mitigation=False, command=None, time_limit_s=None,
    measurement="both",
) -> dict:  # fmt: skip
    """Every task in turn: train -> sample -> evaluate (-> sweep, -> mitigation); then report.md.

    The Python face of `python -m rulelib reproduce`: settings resolved once (folder.resolve),
    then `run_tasks`.  Resumable: a rerun skips finished stages and continues interrupted training
    and sampling."""
    if command is None:  # called from Python (a notebook, a test): record the call itself
        command = f"reproduce({task_names!r}, {profile_name!r}, {str(out)!r}, seed={seed})"
    names = parse_tasks(task_names)
    run = folder.resolve(out, names, profile_name, seed, device=device, progress=progress,
                         quiet=quiet, command=command)  # fmt: skip
    return run_tasks(run, names, sweep_too=sweep, mitigation=mitigation,
                     time_limit_s=time_limit_s, measurement=measurement)  # fmt: skip
