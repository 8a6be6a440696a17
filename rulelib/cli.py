"""`python -m rulelib`: train, sample, evaluate, reproduce (and the mitigation's guide / filter).

    python -m rulelib reproduce --profile auto --out runs/reproduce    # the README's main job
    python -m rulelib train     --task A --profile quick --out runs/reproduce [--time-limit 8]
    python -m rulelib sample    --task A --out runs/reproduce [--n 1000]
    python -m rulelib evaluate  --task A --out runs/reproduce [--sweep]   # a run's samples
    python -m rulelib evaluate  --task A --images my_samples.npz       # images made elsewhere
    python -m rulelib evaluate  --task B --images folder_of_pngs/ --out scores/
    python -m rulelib export    --out runs/reproduce --to results/quick  # copy for the repo

`--profile` defaults to the one the run folder was made with, else `auto` (paper with CUDA,
else quick).

`--task` takes one or several names (`A C`, `A,C`) or `all`; `--out` is the run folder, with one
sub-folder per task (layout in rulelib.report).  Each stage of `reproduce` is resumable:

    1. train      skipped when the last checkpoint is at the profile's epochs; otherwise
                  rulelib.diffusion.train.train resumes from the last checkpoint
    2. sample     rulelib.diffusion.sample.sample with out_path: finished chunks are kept, a rerun
                  samples the rest
    3. evaluate   measure training and generated images: rule_report, figures, metrics.json,
                  report.md (cheap: always recomputed)
    4. sweep      every earlier checkpoint -> `sweep_n` samples (resumable) -> rule metrics
                  against epoch
    5. mitigation with --mitigation: rulelib.mitigation.pipeline.run -> task_dir/mitigation/
    (classifiers
                  and guided samples are reused by a rerun); its mitigation.md is embedded in
                  the task's and the run's report.md

A run folder remembers its profile and seed (task_dir/profile.json); running it again with another
profile or seed is refused instead of mixing results.  When a profile's definition changes (e.g. its
sampler), profile.json records the new settings beside the earlier ones, and samples made with
other settings are moved aside (samples_<method><steps>-<hash>.npz) and redrawn, never overwritten.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from rulelib import atomic, report
from rulelib.run import profiles

TASKS = profiles.TASK_NAMES


class RunError(ValueError):
    """A run folder or input that cannot be used as asked (the message says why and what to do)."""


# --------------------------------------------------------------------------------------------------
# Small helpers


def parse_tasks(values) -> list[str]:
    """['A', 'C'], ['A,C'], ['all'] -> task names in A-D order; unknown names -> ValueError."""
    if isinstance(values, str):
        values = [values]
    names = [v.strip() for value in values for v in str(value).split(",") if v.strip()]
    if not names:
        raise ValueError(f"no task given; expected names from {list(TASKS)} or 'all'")
    if any(n.lower() == "all" for n in names):
        return list(TASKS)
    bad = [n for n in names if n.upper() not in TASKS]
    if bad:
        raise ValueError(f"unknown task {bad[0]!r}; expected one of {list(TASKS)} or 'all'")
    upper = {n.upper() for n in names}
    return [t for t in TASKS if t in upper]


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when available, else 'cpu'; other strings are passed to torch."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for but CUDA is not available; use cpu or auto")
    return device


def task_dir(out, task: str) -> Path:
    return Path(out) / task


def _say(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(msg, flush=True)


def check_run_identity(tdir: Path, profile: profiles.Profile, seed: int) -> None:
    """Record (profile, seed) in tdir/profile.json, or refuse a folder made with other ones.

    The profile's settings are recorded as they are now: when the profile's definition changed
    since the folder was made (e.g. a new sampler for `quick`), "settings" is updated and the
    earlier settings are kept under "earlier_settings" with the time they were replaced."""
    pfile = tdir / "profile.json"
    now = json.loads(json.dumps(profile.to_dict()))  # as read back (tuples become lists)
    if not pfile.exists():
        atomic.write_json(pfile, {"profile": profile.name, "seed": seed, "settings": now})
        return
    old = atomic.read_json(pfile)
    if old.get("profile") != profile.name or old.get("seed") != seed:
        raise RunError(
            f"{tdir} was made with profile {old.get('profile')!r} seed {old.get('seed')}, "
            f"not profile {profile.name!r} seed {seed}; use another --out or the same settings"
        )
    if old.get("settings") != now:
        earlier = [*old.get("earlier_settings", []),
                   {"replaced": provenance.now_iso(), "settings": old.get("settings")}]  # fmt: skip
        atomic.write_json(pfile, {**old, "settings": now, "earlier_settings": earlier})


def run_identity(tdir: Path) -> tuple[profiles.Profile, int]:
    """(profile, seed) a task folder was made with; RunError when the folder is not a run."""
    pfile = tdir / "profile.json"
    if not pfile.exists():
        raise RunError(
            f"{tdir} is not a run folder of rulelib (no profile.json); run "
            f"`python -m rulelib train --task {tdir.name} --out {tdir.parent}` first"
        )
    info = atomic.read_json(pfile)
    return profiles.get(info["profile"]), int(info["seed"])


def stage_train(
    task_name,
    profile,
    out,
    *,
    seed=0,
    device="cpu",
    progress=True,
    quiet=False,
    time_limit_s=None,
):
    """Train (or resume, or skip when finished); returns the last checkpoint's epoch.

    time_limit_s: stop with a checkpoint after the first epoch that ends past this many seconds
    (time-limited GPU sessions); the returned epoch is then below the profile's epochs and the same
    call later continues the run."""
    from rulelib.diffusion import train as trainer

    tdir = task_dir(out, task_name)
    tdir.mkdir(parents=True, exist_ok=True)
    check_run_identity(tdir, profile, seed)
    cfg = profile.train_config(task_name, seed=seed, device=device)
    ckpts = trainer.list_checkpoints(tdir) if (tdir / "checkpoints").exists() else []
    if ckpts and ckpts[-1][0] >= cfg.epochs:
        _say(f"[{task_name}] training finished earlier (epoch {ckpts[-1][0]}); skipped", quiet)
        return ckpts[-1][0]
    images, _ = profile.training_set(task_name, seed)
    start = f"resuming from epoch {ckpts[-1][0]}" if ckpts else "from scratch"
    _say(f"[{task_name}] training {cfg.epochs} epochs on {len(images)} images, {start}", quiet)
    t0 = time.perf_counter()
    summary = trainer.train(
        cfg, images, tdir, resume=True, progress=progress, time_limit_s=time_limit_s
    )
    _add_time(tdir, "train", time.perf_counter() - t0)
    if summary.get("steps", 0) > summary.get("start_step", 0):  # how this call trained
        keep = ("device", "precision", "compile", "channels_last", "images_per_s_steady")
        atomic.write_json(tdir / "train_summary.json", {k: summary.get(k) for k in keep})
    ckpts = trainer.list_checkpoints(tdir)
    if not ckpts:
        raise RunError(f"training of {tdir} ended without writing a checkpoint")
    if not summary.get("finished", True):
        _say(
            f"[{task_name}] time limit reached at epoch {ckpts[-1][0]} of {cfg.epochs}; "
            "run the same command again to continue",
            quiet,
        )
    return ckpts[-1][0]


def _draw(ckpt, settings, n, out_path, *, seed, device, progress, quiet=False, label=""):
    """Samples of one checkpoint (a run folder = its last checkpoint) into out_path (resumable):
    (images, epoch, reused), reused True when finished samples with these settings were read back.

    Samples at out_path made with other settings (another checkpoint, sampler or count) are moved
    aside first (`_set_aside`), so they are redrawn with the current ones and never overwritten."""
    from rulelib.diffusion import sample as sampler
    from rulelib.diffusion import train as trainer

    model, cfg, epoch = trainer.load_model(ckpt, weights=settings.weights, device=device)
    schedule = cfg.schedule().to(device)
    how = dict(
        seed=seed,
        method=settings.method,
        steps=settings.steps,
        eta=settings.eta,
        clip_x0=settings.clip_x0,
        meta={"epoch": int(epoch), "weights": settings.weights},
    )
    _set_aside(Path(out_path), sampler.sample_settings(schedule, n, **how), quiet)
    reused = Path(out_path).exists()
    if not reused:
        _say(f"{label}sampling {n} images ({settings.method}, {settings.steps} steps)", quiet)
    images = sampler.sample(
        model,
        schedule,
        n,
        **how,
        batch_size=settings.batch_size,
        device=device,
        out_path=out_path,
        progress=progress,
    )
    return images, int(epoch), reused


def stage_sample(
    task_name, profile, out, *, seed=0, device="cpu", n=None, progress=True, quiet=False
):
    """Generated images of the last checkpoint into task_dir/samples.npz; returns them.

    Samples of an earlier checkpoint (the run was trained further since) or made with other
    sampler settings (the profile changed, or --n) are moved aside to samples_epochXXXXX.npz or
    samples_<method><steps>-<hash>.npz and redrawn; nothing is overwritten."""
    from rulelib.diffusion import train as trainer

    tdir = task_dir(out, task_name)
    run_identity(tdir)  # a clear error when the task was never trained here
    check_run_identity(tdir, profile, seed)
    settings = profile.sampling(task_name)
    n = n or settings.n
    path = tdir / "samples.npz"
    ckpts = trainer.list_checkpoints(tdir)
    if not ckpts:
        raise RunError(f"{tdir} has no checkpoint to sample; train it first")
    t0 = time.perf_counter()
    images, _, reused = _draw(
        tdir, settings, n, path, seed=seed, device=device, progress=progress, quiet=quiet,
        label=f"[{task_name}] ",
    )  # fmt: skip
    if not reused:
        _add_time(tdir, "sample", time.perf_counter() - t0)
    return images


def _add_time(tdir: Path, stage: str, seconds: float) -> None:
    """Add a stage's wall time to tdir/timings.json (a resumed stage adds each call's part)."""
    timings = _timings(tdir)
    timings[stage] = round(timings.get(stage, 0.0) + seconds, 1)
    atomic.write_json(tdir / "timings.json", timings)


def _timings(tdir: Path) -> dict:
    path = tdir / "timings.json"
    return atomic.read_json(path) if path.exists() else {}


def _set_aside(path: Path, expected: dict, quiet: bool) -> None:
    """Move samples (finished or partial) at `path` made with other settings than `expected` out of
    the way, so that the run's current sampler redraws them and nothing is overwritten.

    The old files keep their settings inside; they go to `<stem>_epochXXXXX` when they came from
    another checkpoint, else to `<stem>_<method><steps>-<hash of their settings>` (a counter is
    added if that name is taken)."""
    from rulelib.diffusion import sample as sampler

    old = sampler.stored_settings(path)
    if old is None or old == expected:
        return
    parts = path.with_name(path.stem + ".parts")
    src = path if path.exists() else parts
    ext = ".npz" if src is path else ".parts"
    if old.get("epoch") is not None and old.get("epoch") != expected.get("epoch"):
        tag = f"epoch{int(old['epoch']):05d}"
    else:
        digest = hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:6]
        tag = f"{old.get('method')}{old.get('steps')}-{digest}"
    dst, i = src.with_name(f"{path.stem}_{tag}{ext}"), 1
    while dst.exists():
        i += 1
        dst = src.with_name(f"{path.stem}_{tag}_{i}{ext}")
    src.rename(dst)
    if src is path and parts.exists():  # a finished npz never has parts; stray ones go with it
        parts.rename(dst.with_suffix(".parts"))
    changed = sorted(k for k in set(old) | set(expected) if old.get(k) != expected.get(k))
    _say(f"samples made with other settings ({', '.join(changed)}) moved to {dst}", quiet)


def measure_images(task, images: np.ndarray):
    """task.measure with a check of the input (uint8 (n, 32, 32, 3))."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise ValueError(
            f"expected uint8 images of shape (n, 32, 32, 3), got {images.dtype} {images.shape}"
        )
    return task.measure(images)


def evaluate_images(
    task_name,
    images,
    out_dir,
    *,
    seed=0,
    n_boot=1000,
    train=None,
    extra=None,
    limits="",
    grid_title="",
):
    """Measure `images`, score them beside the training set, write metrics.json, figures, report.md.

    train: (features, ok) of the training images; default: the task's dataset(seed), measured.
    extra: further entries of metrics.json (profile, sampling, provenance...).  Returns the entry.
    """
    from rulelib import metrics, tasks

    task = tasks.get(task_name)
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    feats, ok = measure_images(task, images)
    if train is None:
        train_images, _ = task.dataset(seed)
        train_feats, train_ok = task.measure(train_images)
    else:
        train_feats, train_ok = train
    entry = {
        "task": task_name,
        "title": getattr(task, "title", ""),
        **(extra or {}),
        "generated": metrics.rule_report(task, feats, ok, n_boot=n_boot, seed=seed),
        "train": metrics.rule_report(task, train_feats, train_ok, n_boot=n_boot, seed=seed),
    }
    title = f"Task {task_name} ({entry['title']}): training vs generated"
    report.save_scatter(task, (train_feats, train_ok), (feats, ok), out_dir / "scatter.png", title)
    report.save_sample_grid(images, out_dir / "samples.png", title=grid_title)
    entry["files"] = sorted(
        f for f in ("scatter.png", "samples.png", "sweep.png") if (out_dir / f).exists()
    )
    entry.setdefault("timings_s", {})["evaluate"] = round(time.perf_counter() - t0, 1)
    report.write_task_report(out_dir, entry, limits=limits)
    return entry


def provenance(command: str | None) -> dict:
    """Machine, command, git commit and time of a result (command None: this process's argv)."""
    return {
        "machine": provenance.machine_info(),
        "command": command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "git_commit": provenance.git_commit(),
        "created": provenance.now_iso(),
    }


def stage_evaluate(task_name, out, *, command=None, quiet=False):
    """Score task_dir/samples.npz (measure, metrics, figures, metrics.json, report.md)."""
    from rulelib.diffusion import sample as sampler

    tdir = task_dir(out, task_name)
    profile, seed = run_identity(tdir)
    path = tdir / "samples.npz"
    if not path.exists():
        raise RunError(
            f"{path} does not exist; run `python -m rulelib sample --task {task_name} "
            f"--profile {profile.name} --out {out}` first"
        )
    images, meta = sampler.load_samples(path)
    settings = profile.sampling(task_name)
    old = atomic.read_json(tdir / "metrics.json") if (tdir / "metrics.json").exists() else {}
    cfg = atomic.read_json(tdir / "config.json") if (tdir / "config.json").exists() else {}
    train_images, _ = profile.training_set(task_name, seed)
    from rulelib import tasks

    train = tasks.get(task_name).measure(train_images)
    extra = {
        "profile": profile.name,
        "seed": seed,
        "epoch": meta.get("epoch"),
        "sampling": {**settings.to_dict(), "n": int(len(images)), "recorded": meta},
        "train_config": cfg,
        "n_train_images": int(len(train_images)),
        **provenance(command),
        "timings_s": _timings(tdir),
        **(
            {"trainer": atomic.read_json(tdir / "train_summary.json")}
            if (tdir / "train_summary.json").exists()
            else {}
        ),  # fmt: skip
        **({"sweep": old["sweep"]} if "sweep" in old else {}),
    }
    entry = evaluate_images(
        task_name,
        images,
        tdir,
        seed=seed,
        n_boot=profile.n_boot,
        train=train,
        extra=extra,
        limits=profile.limits,
        grid_title=f"Task {task_name}: {profile.name} profile, epoch {meta.get('epoch')}",
    )
    gen = entry["generated"]
    _say(
        f"[{task_name}] {gen['n_measurable']}/{gen['n']} measurable; rule-conforming "
        f"{_val(gen, 'conforming_pct', '.1f')} %, coarse {_val(gen, 'coarse_rate', '.3f')}, "
        f"bias(k=1) {_val(gen, 'bias_k1', '.3f')} -> {tdir / 'metrics.json'}",
        quiet,
    )
    return entry


def _val(rep, key, fmt):
    v = (rep.get(key) or {}).get("value")
    return "n/a" if v is None else format(v, fmt)


def stage_sweep(task_name, out, *, device="cpu", progress=True, quiet=False):
    """Rule metrics against training epoch: every checkpoint -> samples -> metrics; CSV + plot.

    Each earlier checkpoint gets `sweep_n` samples in task_dir/sweep/epoch_XXXXX.npz (resumable, the
    same noise seed for every checkpoint, so the curve compares models rather than noise draws); the
    last checkpoint uses the main samples when they exist.
    """
    from rulelib import metrics, tasks
    from rulelib.diffusion import sample as sampler
    from rulelib.diffusion import train as trainer

    tdir = task_dir(out, task_name)
    profile, seed = run_identity(tdir)
    settings = profile.sampling(task_name)
    n = settings.sweep_n or 64
    task = tasks.get(task_name)
    ckpts = trainer.list_checkpoints(tdir)
    if not ckpts:
        raise RunError(f"{tdir} has no checkpoints to sweep; train it first")
    t0, n_drawn = time.perf_counter(), 0
    main = tdir / "samples.npz"
    main_images, main_meta = sampler.load_samples(main) if main.exists() else (None, {})
    pairs = []
    for epoch, ckpt in ckpts:
        if main_meta.get("epoch") == epoch:
            images = main_images
        else:
            path = tdir / "sweep" / f"epoch_{epoch:05d}.npz"
            path.parent.mkdir(exist_ok=True)
            images, _, reused = _draw(
                ckpt, settings, n, path, seed=seed, device=device, progress=progress,
                quiet=quiet, label=f"[{task_name}] sweep, epoch {epoch}: ",
            )  # fmt: skip
            n_drawn += not reused
        feats, ok = task.measure(images)
        pairs.append(
            (epoch, metrics.rule_report(task, feats, ok, n_boot=profile.n_boot, seed=seed))
        )
    rows = report.sweep_rows(pairs)
    if n_drawn:
        _add_time(tdir, "sweep", time.perf_counter() - t0)
    report.save_sweep(
        rows,
        tdir / "sweep.csv",
        tdir / "sweep.png",
        title=f"Task {task_name}: rule metrics against training epoch ({profile.name} profile)",
    )
    mfile = tdir / "metrics.json"
    if mfile.exists():  # record the figure in the report
        entry = atomic.read_json(mfile)
        entry["files"] = sorted({*entry.get("files", []), "sweep.png"})
        entry["sweep"] = rows
        entry["timings_s"] = {**entry.get("timings_s", {}), **_timings(tdir)}
        report.write_task_report(tdir, entry, limits=profile.limits)
    _say(f"[{task_name}] sweep over {len(rows)} checkpoints -> {tdir / 'sweep.csv'}", quiet)
    return rows


def run_mitigation(task_name, out, profile, *, seed=0, device="cpu", quiet=False):
    """`reproduce --mitigation`: rulelib.mitigation.pipeline.run(task, task_dir, profile), when it
        exists;
    its results (task_dir/mitigation/) are then embedded in the task's report.md (and, by
    report.write_run_report, in the run's)."""
    mitigation = _mitigation_module()
    if mitigation is None or not hasattr(mitigation, "run"):
        raise RunError(
            "--mitigation needs mitigation.pipeline.run, which this installation does not have"
        )
    tdir = task_dir(out, task_name)
    result = mitigation.run(task_name, tdir, profile, device=device, seed=seed, quiet=quiet)
    md = tdir / "mitigation" / "mitigation.md"
    if md.exists() and (tdir / "metrics.json").exists():
        entry = atomic.read_json(tdir / "metrics.json")
        entry["files"] = sorted({*entry.get("files", []), "mitigation/mitigation.md"})
        report.write_task_report(tdir, entry, limits=profile.limits)
    return result


def reproduce(
    task_names,
    profile_name="auto",
    out="runs/reproduce",
    *,
    seed=0,
    device="auto",
    progress=True,
    quiet=False,
    sweep=True,
    mitigation=False,
    command=None,
    time_limit_s=None,
):
    """Every task in turn: train -> sample -> evaluate (-> sweep, -> mitigation); then report.md.

    Resumable: a rerun skips finished stages and continues interrupted training and sampling.
    time_limit_s bounds the training time of this call (the run stops after the task whose
    training it cut short).  Returns {task: metrics.json entry} of the tasks finished.
    """
    profile = profiles.get(profile_name)
    device = resolve_device(device)
    out = Path(out)
    if command is None:  # called from Python (a notebook, a test): record the call itself
        command = (
            f"rulelib.cli.reproduce({task_names!r}, {profile_name!r}, {str(out)!r}, seed={seed})"
        )
    entries = {}
    t_call = time.perf_counter()
    for name in parse_tasks(task_names):
        left = None if time_limit_s is None else time_limit_s - (time.perf_counter() - t_call)
        if left is not None and left <= 0:
            _say(f"time limit reached before task {name}; run the same command to continue", quiet)
            break
        epoch = stage_train(
            name,
            profile,
            out,
            seed=seed,
            device=device,
            progress=progress,
            quiet=quiet,
            time_limit_s=left,
        )
        if epoch < profile.epochs_for(name):
            break  # out of time: the same command continues from the last checkpoint
        stage_sample(name, profile, out, seed=seed, device=device, progress=progress, quiet=quiet)
        stage_evaluate(name, out, command=command, quiet=quiet)
        if sweep and profile.sweep_n > 0:
            stage_sweep(name, out, device=device, progress=progress, quiet=quiet)
        if mitigation:
            run_mitigation(name, out, profile, seed=seed, device=device, quiet=quiet)
        entries[name] = atomic.read_json(task_dir(out, name) / "metrics.json")  # as written
        report.write_run_report(out, limits=profile.limits)
    if entries:
        _say(f"report: {out / 'report.md'}", quiet)
    return entries


# --------------------------------------------------------------------------------------------------
# Images made elsewhere


def load_images(path) -> np.ndarray:
    """uint8 (n, 32, 32, 3) from an .npz (key 'images', else its only 4-D array), an .npy, a PNG,
    or a folder of PNGs (sorted by name).  Float arrays in [0, 1] are scaled to uint8."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; expected an .npz/.npy file or PNG folder")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".png")
        if not files:
            raise ValueError(f"{path} holds no .png files")
        arr = np.stack([_read_png(p) for p in files])
    elif path.suffix.lower() == ".png":
        arr = _read_png(path)[None]
    elif path.suffix.lower() == ".npz":
        with np.load(path) as z:
            if "images" in z:
                arr = z["images"]
            else:
                four_d = [k for k in z.files if z[k].ndim == 4]
                if len(four_d) != 1:
                    raise ValueError(
                        f"{path} has no 'images' array and {len(four_d)} 4-D arrays "
                        f"({z.files}); expected one array of shape (n, 32, 32, 3)"
                    )
                arr = z[four_d[0]]
    elif path.suffix.lower() == ".npy":
        arr = np.load(path)
    else:
        raise ValueError(f"{path}: unsupported file type; expected .npz, .npy, .png or a folder")
    return _to_uint8(arr, path)


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image  # pillow: a dependency of matplotlib

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _to_uint8(arr: np.ndarray, path) -> np.ndarray:
    if arr.ndim == 4 and arr.shape[1] == 3 and arr.shape[-1] != 3:  # (n, 3, H, W) -> (n, H, W, 3)
        arr = arr.transpose(0, 2, 3, 1)
    if arr.ndim != 4 or arr.shape[1:] != (32, 32, 3):
        raise ValueError(f"{path}: expected images of shape (n, 32, 32, 3), got {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise ValueError(f"{path}: float images must be finite and in [0, 1]")
        return np.round(arr * 255).astype(np.uint8)
    raise ValueError(f"{path}: expected uint8 or float images, got {arr.dtype}")


# --------------------------------------------------------------------------------------------------
# Command line


def _mitigation_module():
    try:
        mitigation = importlib.import_module("rulelib.mitigation.pipeline")
    except ModuleNotFoundError as e:
        if (
            e.name != "rulelib.mitigation.pipeline"
        ):  # a bug inside the module must not look like "missing"
            raise
        return None
    return mitigation


def _common(p: argparse.ArgumentParser, *, out_default="runs/reproduce", task_default=None):
    p.add_argument(
        "--task",
        nargs="+",
        default=[task_default] if task_default else None,
        required=task_default is None,
        help="task name(s) A-D, comma or space separated, or 'all'",
    )
    p.add_argument(
        "--profile",
        default=None,
        help=f"one of {profiles.names()} (default: the run's own, else auto: paper with CUDA, "
        "else quick)",
    )
    p.add_argument("--out", default=out_default, help="run folder (one sub-folder per task)")
    p.add_argument("--seed", type=int, default=0, help="seed of data, training and sampling")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--quiet", action="store_true", help="no progress bars or messages")
    p.add_argument(
        "--time-limit",
        type=float,
        default=None,
        metavar="MIN",
        help="stop training (with a checkpoint) after about MIN minutes; rerun to continue",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rulelib",
        description="Can diffusion models learn hidden inter-feature rules? Train, sample, score.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train (or resume) the DDPM of each task")
    _common(p)

    p = sub.add_parser("sample", help="sample the last checkpoint into task_dir/samples.npz")
    _common(p)
    p.add_argument("--n", type=int, default=None, help="number of samples (default: profile's)")

    p = sub.add_parser(
        "evaluate",
        help="score a run's samples (--sweep: every checkpoint), or --images made elsewhere",
    )
    _common(p, out_default=None)
    p.add_argument("--images", default=None, help="an .npz/.npy of uint8 images or a PNG folder")
    p.add_argument(
        "--sweep", action="store_true", help="rule metrics of every checkpoint against epoch"
    )
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (--images)")

    p = sub.add_parser("reproduce", help="train -> sample -> evaluate every task; report.md")
    _common(p, task_default="all")
    p.add_argument("--no-sweep", action="store_true", help="skip the training-length sweep")
    p.add_argument(
        "--mitigation",
        action="store_true",
        help="also run rulelib.mitigation.pipeline for each task",
    )

    p = sub.add_parser("export", help="copy a run's results (small) into e.g. results/<profile>/")
    p.add_argument("--out", default="runs/reproduce", help="the run folder")
    p.add_argument("--to", required=True, help="destination, e.g. results/quick")
    p.add_argument("--max-samples", type=int, default=512, help="samples kept per task")

    mitigation = _mitigation_module()
    if mitigation is not None and hasattr(mitigation, "add_cli"):
        mitigation.add_cli(sub)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    command = "python -m rulelib " + shlex.join(argv)
    try:
        return _dispatch(args, command)
    except (ValueError, FileNotFoundError) as e:
        # Bad input: one clear line and exit status 2, like argparse's own errors.
        parser.exit(2, f"{parser.prog} {args.command}: error: {e}\n")


def _seconds(minutes):
    if minutes is None:
        return None
    if not minutes > 0:
        raise ValueError(f"--time-limit must be a positive number of minutes, got {minutes}")
    return 60.0 * minutes


def _dispatch(args, command: str) -> int:
    if args.command == "export":
        copied = report.export_results(args.out, args.to, max_samples=args.max_samples)
        print(f"exported {len(copied)} files to {args.to}")
        return 0
    if not hasattr(args, "profile"):  # a subcommand added by rulelib.mitigation.pipeline
        return int(args.func(args) or 0)
    names = parse_tasks(args.task)
    if args.profile is None:  # the profile the run was made with, else auto
        pfile = task_dir(args.out or "runs/reproduce", names[0]) / "profile.json"
        args.profile = atomic.read_json(pfile)["profile"] if pfile.exists() else "auto"
    profile = profiles.get(args.profile)
    progress = not args.quiet
    if args.command == "reproduce":
        reproduce(
            names,
            args.profile,
            args.out,
            seed=args.seed,
            device=args.device,
            progress=progress,
            quiet=args.quiet,
            sweep=not args.no_sweep,
            mitigation=args.mitigation,
            command=command,
            time_limit_s=_seconds(args.time_limit),
        )
        return 0
    device = resolve_device(args.device)
    if args.command == "train":
        for name in names:
            epoch = stage_train(
                name,
                profile,
                args.out,
                seed=args.seed,
                device=device,
                progress=progress,
                quiet=args.quiet,
                time_limit_s=_seconds(args.time_limit),
            )
            if epoch < profile.epochs_for(name):
                break  # out of time
        return 0
    if args.command == "sample":
        for name in names:
            stage_sample(
                name,
                profile,
                args.out,
                seed=args.seed,
                device=device,
                n=args.n,
                progress=progress,
                quiet=args.quiet,
            )
        return 0
    # evaluate
    if args.images is not None:
        if len(names) != 1:
            raise ValueError(f"--images is scored for one task at a time, got {names}")
        images = load_images(args.images)
        src = Path(args.images)
        out_dir = Path(args.out) if args.out else src.parent / f"{src.stem}_eval"
        entry = evaluate_images(
            names[0],
            images,
            out_dir,
            seed=args.seed,
            n_boot=args.n_boot,
            extra={"source": str(src), **provenance(command)},
        )
        gen = entry["generated"]
        _say(
            f"[{names[0]}] {src}: {gen['n_measurable']}/{gen['n']} measurable; rule-conforming "
            f"{_val(gen, 'conforming_pct', '.1f')} %, coarse {_val(gen, 'coarse_rate', '.3f')} "
            f"-> {out_dir / 'metrics.json'}",
            args.quiet,
        )
        return 0
    out = args.out or "runs/reproduce"
    for name in names:
        if args.sweep:
            stage_sweep(name, out, device=device, progress=progress, quiet=args.quiet)
        else:
            stage_evaluate(name, out, command=command, quiet=args.quiet)
    run_profile, _ = run_identity(task_dir(out, names[0]))
    report.write_run_report(out, limits=run_profile.limits)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
