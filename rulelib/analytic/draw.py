"""Draw and score a closed-form denoiser's samples like a trained run.

``draw(task, denoiser, n, out)`` builds the denoiser from the task's training set (the one the
quick profile trains on: ``task.dataset(seed)``), samples with the quick profile's sampler (100-step
ancestral DDIM, eta = 1, each step's clean-image prediction clipped to [-1, 1]; the same noise seed
as the quick runs, so image i starts from the same x_T as a U-Net's image i), measures the images
and writes DIR/<task>/<denoiser>/ ``samples.npz`` (resumable, chunk by chunk), ``metrics.json``
(rule metrics of the generated and the training images with CIs, the memorisation columns, the
rule metrics of the novel images, settings, machine, command, time), ``report.md`` and
``samples.png``.  ``unet``: a trained run or checkpoint, sampled with the same settings and seed;
then the per-image pixel r^2 between the two (Kamb & Ganguli's agreement measure) is added.
``calibrate_to``: a trained run or checkpoint; the local machines then take their patch size per
noise level from `rulelib.analytic.calibrate` (written to DIR/<task>/<denoiser>-calibrated/, with
``calibration.json`` and ``calibration.png``).  ``summarise(out)`` gathers every
DIR/<task>/<denoiser>/metrics.json into the model-class table.
"""

from __future__ import annotations

import csv
import io
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from rulelib import atomic, metrics, provenance, report, tasks
from rulelib.analytic import calibrate, denoisers
from rulelib.diffusion import checkpoint
from rulelib.diffusion import sample as sampler
from rulelib.metrics import memorisation
from rulelib.run import profiles

DEFAULT_PATCH = 5  # px: the local machines' patch when neither given nor calibrated
# bias = |slope - k| + |intercept| against the task's own k (bias_k1, against k = 1, is the
# paper's printed column for A and B only; for C, k = sqrt 2)
TABLE_METRICS = ("measurable_rate", "coarse_rate", "conforming_pct", "within_5pct", "slope",
                 "bias", "resid_std")  # fmt: skip


def _sampling(task_name: str, steps: int | None):
    s = profiles.get("quick").sampling(task_name)
    return {"method": s.method, "steps": s.steps if steps is None else steps, "eta": s.eta,
            "clip_x0": s.clip_x0,
            "batch_size": s.batch_size}  # fmt: skip


def _provenance(command: str | None) -> dict:
    argv = ["python", "-m", "rulelib", "analytic", *sys.argv[1:]]
    return {"machine": provenance.machine_info(), "command": command or shlex.join(argv),
            "git_commit": provenance.git_commit(), "created": provenance.now_iso()}  # fmt: skip


def draw(task_name: str, name: str, n: int, out, *, seed: int = 0, patch: int = 5,
         pool: int = 16384, n_boot: int = 1000, steps: int | None = None, unet=None,
         calibrate_to=None, levels: int = 20, n_calibrate: int = 16, progress: bool = True,
         command: str | None = None) -> dict:  # fmt: skip
    """Sample n images from the closed-form denoiser ``name`` and score them; returns the
    metrics.json entry (see the module docstring)."""
    if name not in denoisers.NAMES:
        raise ValueError(f"unknown denoiser {name!r}; expected one of {list(denoisers.NAMES)}")
    local = name in ("local", "equivariant")
    if calibrate_to is not None and not local:
        raise ValueError(f"only the local machines have a patch size to calibrate, not {name!r}")
    task = tasks.get(task_name)
    tdir = Path(out) / task_name / (name + ("-calibrated" if calibrate_to is not None else ""))
    tdir.mkdir(parents=True, exist_ok=True)
    train_images, _ = task.dataset(seed)
    sset = _sampling(task_name, steps)
    schedule = profiles.get("quick").train_config(task_name).schedule()
    t0 = time.perf_counter()
    if calibrate_to is not None:
        patch = _calibrated(task_name, train_images, schedule, sset, calibrate_to, tdir,
                            equivariant=name == "equivariant", pool=pool, seed=seed,
                            levels=levels, n=n_calibrate, progress=progress)  # fmt: skip
    kw = {"patch": patch, **({"pool": pool, "seed": seed} if name == "equivariant" else {})}
    den = denoisers.make(name, train_images, schedule, **(kw if local else {}))
    meta = {"denoiser": name, "train": f"task.dataset({seed})", "n_train": len(train_images),
            **({"patch": patch.to_dict() if callable(patch) else patch} if local else {}),
            **({"pool": pool} if name == "equivariant" else {})}  # fmt: skip
    bsz = sset.pop("batch_size")
    images = sampler.sample(None, schedule, n, seed=seed, eps_fn=den, batch_size=bsz,
                            out_path=tdir / "samples.npz", progress=progress, meta=meta,
                            **sset)  # fmt: skip
    t_sample = time.perf_counter() - t0
    feats, ok = task.measure(images)
    entry = {
        "task": task_name, "denoiser": name, "settings": {**meta, **sset, "n": n, "seed": seed},
        "generated": metrics.rule_report(task, feats, ok, n_boot=n_boot, seed=seed),
        "train": metrics.rule_report(task, *task.measure(train_images), n_boot=n_boot, seed=seed),
        **memorisation.memorisation_columns(task, images, train_images, feats, ok,
                                            n_boot=n_boot, seed=seed),
        **_provenance(command),
    }  # fmt: skip
    if unet is not None:
        ref = tdir.parent / "unet_samples.npz"
        entry["unet_agreement"] = _agreement(unet, images, schedule, n, seed, sset, bsz, ref,
                                             progress)  # fmt: skip
    entry["timings_s"] = {"sample": round(t_sample, 1)}
    atomic.write_json(tdir / "metrics.json", entry)
    report.save_sample_grid(images, tdir / "samples.png", title=f"Task {task_name}: {name}")
    atomic.write_text(tdir / "report.md", markdown(entry))
    return entry


def _calibrated(task_name, train_images, schedule, sset, ckpt, tdir, *, equivariant, pool, seed,
                levels, n, progress) -> calibrate.PatchSchedule:  # fmt: skip
    """The patch schedule calibrated to the U-Net ``ckpt`` (EMA weights) at ``levels`` of the
    sampler's timesteps on n held-out images; written to tdir/calibration.json and .png."""
    path = tdir / "calibration.json"
    model, _, epoch = checkpoint.load_model(ckpt, weights="ema")
    ts = calibrate.levels_of(sampler.ddim_timesteps(schedule.T, sset["steps"]), levels)
    want = {"unet": str(ckpt), "epoch": epoch, "ts": ts, "n": n, "seed": seed,
            "patches": list(calibrate.PATCHES)}  # fmt: skip
    if path.exists():  # resumable: a finished calibration with the same settings is reused
        old = atomic.read_json(path)
        if old.get("settings") == want:
            return calibrate.PatchSchedule.from_dict(old["schedule"])
    fresh = tasks.get(task_name).sample(n, seed + calibrate.FRESH_SEED)[0]
    res = calibrate.calibrate(model, train_images, fresh, schedule, ts,
                              patches=calibrate.PATCHES, equivariant=equivariant, pool=pool,
                              seed=seed, progress=progress)  # fmt: skip
    atomic.write_json(path, {"settings": want, "schedule": res["schedule"].to_dict(),
                             "r2": {str(p): v for p, v in res["r2"].items()}})  # fmt: skip
    calibrate.figure(
        res,
        tdir / "calibration.png",
        f"Task {task_name}: patch size calibrated to the U-Net (epoch {epoch})",
    )
    return res["schedule"]


def _agreement(unet, images, schedule, n, seed, sset, bsz, path, progress) -> dict:
    """Per-image pixel r^2 of the denoiser's samples against a U-Net's from the same noise.

    unet: a trained run or checkpoint (sampled here with the same settings and seed into
    ``path``), or a samples.npz drawn by ``rulelib.diffusion.sample.sample`` with the same
    sampler settings and seed (e.g. results/quick/B/samples.npz): image i of both then started
    from the same x_T and saw the same step noise."""
    if str(unet).endswith(".npz"):
        ref, meta = sampler.load_samples(unet, given=True)  # the user's file: never "delete it"
        want = {"seed": seed, "noise_chunk": sampler.NOISE_CHUNK, **sset}
        bad = {k: (meta.get(k), v) for k, v in want.items() if meta.get(k) != v}
        if bad:
            raise ValueError(f"{unet} was drawn with other settings {bad} (theirs, ours); the "
                             "agreement needs the same sampler and noise")  # fmt: skip
        epoch = meta.get("epoch")
    else:
        model, _, epoch = checkpoint.load_model(unet, weights="ema")
        ref = sampler.sample(model, schedule, n, seed=seed, batch_size=bsz, out_path=path,
                             progress=progress, meta={"unet": str(unet), "epoch": epoch},
                             **sset)  # fmt: skip
    m = min(len(ref), len(images))
    r2 = denoisers.pixel_r2(images[:m], ref[:m])
    return {"unet": str(unet), "epoch": epoch, "weights": "ema", "n": m,
            "r2_median": float(np.nanmedian(r2)), "r2_mean": float(np.nanmean(r2)),
            "r2_q25": float(np.nanquantile(r2, 0.25)),
            "r2_q75": float(np.nanquantile(r2, 0.75))}  # fmt: skip


def _fmt(entry: dict | None, key: str) -> str:
    if entry is None or entry.get(key, {}).get("value") is None:
        return "-"
    v, ci = entry[key]["value"], entry[key].get("ci")
    scale = 100 if key.endswith("_rate") else 1
    f = (lambda z: f"{z * scale:.1f}") if scale == 100 or key.endswith("pct") else \
        (lambda z: f"{z:.3f}" if abs(z) >= 0.01 else f"{z:.4f}")  # fmt: skip
    return f"{f(v)} [{f(ci[0])}, {f(ci[1])}]" if ci else f(v)


def _label(entry: dict) -> str:
    """The class's name in tables: the denoiser, "-calibrated" for a patch schedule, "-pP" for a
    fixed patch other than DEFAULT_PATCH (a patch-size sweep)."""
    patch = entry["settings"].get("patch")
    if isinstance(patch, dict):
        return entry["denoiser"] + "-calibrated"
    return entry["denoiser"] + (f"-p{patch}" if patch not in (None, DEFAULT_PATCH) else "")


def _patch_text(patch) -> str:
    if not isinstance(patch, dict):
        return f"patch {patch}"
    return "patch per noise level (t: P) " + ", ".join(
        f"{t}: {p}" for t, p in zip(patch["ts"], patch["patches"])
    )


def table_rows(entries: list[dict]) -> list[dict]:
    """One row per (task, class): rule metrics of all and of the novel images, memorisation."""
    rows = []
    for e in entries:
        mem = e["memorisation"]
        for which, rep in (("all", e["generated"]), ("novel", e.get("generated_novel"))):
            rows.append({"task": e["task"], "class": _label(e), "images": which,
                         "n": rep["n"] if rep else 0,
                         **{k: _fmt(rep, k) for k in TABLE_METRICS},
                         "copy_rate": _fmt(mem, "copy_rate") if which == "all" else "",
                         "nearest_median": f"{mem['nearest']['median']:.2f}"
                         if which == "all" else "",
                         "fresh_median": f"{mem['reference']['nearest']['median']:.2f}"
                         if which == "all" else ""})  # fmt: skip
    return rows


def markdown(entry: dict) -> str:
    s = entry["settings"]
    rows = table_rows([entry])
    head = ["images", "n", *TABLE_METRICS, "copy_rate", "nearest_median", "fresh_median"]
    lines = [f"# Task {entry['task']}: the {_label(entry)} denoiser (closed form)", "",
             f"Sampler: {s['method']} {s['steps']} steps, eta {s['eta']}, x0 clipped: "
             f"{s['clip_x0']}; {s['n']} samples, seed {s['seed']}; training set {s['train']} "
             f"({s['n_train']} images)" + (f"; {_patch_text(s['patch'])}" if "patch" in s else "")
             + (f", pool {s['pool']}" if "pool" in s else "") + ".", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    lines += ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows]
    tr = entry["train"]
    lines += ["", f"Training images: rule-conforming {_fmt(tr, 'conforming_pct')} %, residual "
              f"std {_fmt(tr, 'resid_std')}.", "",
              f"Copy: nearest / second-nearest training distance below "
              f"{entry['memorisation']['copy_ratio']:.3f}; distances are L2 over the 3x32x32 "
              "values in [-1, 1]; fresh_median is that of fresh task images.", ""]  # fmt: skip
    if "unet_agreement" in entry:
        a = entry["unet_agreement"]
        lines += [f"Agreement with the U-Net {a['unet']} (epoch {a['epoch']}, same noise): pixel "
                  f"r^2 median {a['r2_median']:.3f} [IQR {a['r2_q25']:.3f}, {a['r2_q75']:.3f}].",
                  ""]  # fmt: skip
    lines += [f"Command: `{entry['command']}`; machine: "
              f"{provenance.machine_summary(entry['machine'])}; {entry['created']}; sampling "
              f"{entry['timings_s']['sample']:.0f} s.", ""]  # fmt: skip
    return "\n".join(lines)


def summarise(out, to=None) -> list[dict]:
    """The model-class table from every out/<task>/<denoiser>/metrics.json: table.csv and
    table.md in ``to`` (default: out)."""
    entries = [atomic.read_json(p) for p in sorted(Path(out).glob("*/*/metrics.json"))]
    order = {n: i for i, n in enumerate(denoisers.NAMES)}
    entries.sort(key=lambda e: (e["task"], order.get(e["denoiser"], 99), _label(e)))
    rows = table_rows(entries)
    to = Path(to or out)
    if rows:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        atomic.write_text(to / "table.csv", buf.getvalue())
        head = list(rows[0])
        md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        md += ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows]
        atomic.write_text(to / "table.md", "\n".join(md) + "\n")
    return rows
