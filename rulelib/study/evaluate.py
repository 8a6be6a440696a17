"""Score every checkpoint of a study run, and gather the arms into CSV / JSON / figures.

Per checkpoint (``evaluate_run``), into <run>/eval/epoch_XXXXXX.json:

* ``n`` samples (at the run's last three points ``conclusion_n``, 512 by default) from the EMA
  weights with the quick profile's sampler (100-step ancestral DDIM,
  x0 clipped), the same noise seed at every checkpoint, so the curve compares models rather than
  noise draws; samples resume chunk by chunk (<run>/eval/epoch_XXXXXX.npz);
* the rule metrics with bootstrap CIs (rulelib.metrics.rule_report), of all images and of the
  novel ones (not copies), and the memorisation columns against the run's own training set, with
  fresh task images as the reference (rulelib.metrics.memorisation);
* the DSM loss (Ho et al. eq. 14) of the EMA weights on 512 training images against 512 fresh
  images, paired so that pair i shares its draws of t and eps (rulelib.study.loss_gap): the gap
  loss_fresh / loss_train - 1 with a bootstrap CI is memorisation in the loss; and the training
  loss the trainer logged for the segment that ended there.  (Entries scored before the gap had
  a CI hold the two means of one draw, ``dsm_loss_train`` / ``dsm_loss_fresh``, whose ratio moves
  by about 4 % (SD) from draw to draw; ``evaluate_run`` adds the 4-draw gap with its CI to them.)

``raw_ddpm``: at the last checkpoint also the paper's sampling -- raw weights, DDPM 1000 steps --
into eval/epoch_XXXXXX_raw_ddpm.json.

``summarise`` gathers the runs into study.csv / study.json, the plateau fits (fits.json) and the
figures length_<task>.png and size_<task>.png.
"""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter

from rulelib import atomic, metrics, provenance, tasks
from rulelib.diffusion import checkpoint
from rulelib.diffusion import sample as sampler
from rulelib.metrics import measurement_floor, memorisation
from rulelib.study import arms, loss_gap, plateau, seeds
from rulelib.study.fit import fit_plateau, se_from_ci
from rulelib.tasks import rulers

FRESH_SEED = 7919  # fresh reference images: task.sample(n, seed + FRESH_SEED), never trained on
LOSS_IMAGES = 512
# draws of (t, eps) per image pair for the DSM gap: its CI shrinks roughly as 1 / sqrt(draws) (on
# the size arm's fresh run, 128 000 images: +-4.2 % at 2 draws, +-2.3 % at 8), 4 costs about a
# minute per checkpoint on one core.
LOSS_DRAWS = 4
# error metrics fitted against images: (key, how to turn the metric into an error, label)
ERRORS = {
    "resid_std": (lambda v: v, "residual std (W)"),
    "not_within_5pct": (lambda v: 100.0 - v, "100 - within ±5 % (%)"),
    "not_conforming": (lambda v: 100.0 - v, "100 - rule-conforming (%)"),
}
SOURCE = {"resid_std": "resid_std", "not_within_5pct": "within_5pct",
          "not_conforming": "conforming_pct"}  # fmt: skip
# The plateau fit starts at the first checkpoint where this share of the samples is measurable
# (the coarse rule drawn: both objects found, in place): before it, the model is in its first phase
# (length_B: measurable 2-77 % up to 32 000 images), where the fine-rule error of the few
# measurable images rises and falls with that selection rather than decaying, which the power
# law c + a x^-b does not describe.
FIT_MIN_MEASURABLE = 0.8
CONCLUSION_POINTS = 3  # a run's last three points carry its conclusion: scored with more samples
CONCLUSION_N = 512  # their samples (the grid's and `study evaluate`'s default)


def _dsm_gap(model, schedule, run: arms.ArmRun, train_images, fresh) -> dict:
    n = min(LOSS_IMAGES, len(train_images))  # a set of 250 images gives 250 pairs
    return loss_gap.dsm_gap(model, schedule, train_images[:n], fresh[:n], seed=run.seed,
                            draws=LOSS_DRAWS)  # fmt: skip


def _fresh(task, n: int, run: arms.ArmRun) -> np.ndarray:
    return task.sample(max(n, LOSS_IMAGES), run.seed + FRESH_SEED)[0]


def _train_log(rdir: Path) -> dict[int, dict]:
    """The trainer's segment summaries keyed by the images seen at the segment's end."""
    f = rdir / "train_log.jsonl"
    if not f.exists():
        return {}
    return {int(r["images"]): r for r in atomic.read_jsonl(f)}


def score_checkpoint(run: arms.ArmRun, rdir: Path, epoch, ckpt: Path, *, n: int,
                     train_images, device="cpu", progress=True, weights="ema",
                     method=None, tag: str | None = None,
                     measurement: str = "both") -> dict:  # fmt: skip
    """Samples -> rule metrics, memorisation, DSM losses of one checkpoint (see the module
    docstring); returns the entry written to eval/<tag>[_raw_ddpm].json (tag: the point's,
    ``ArmRun.points``; by default epoch_XXXXXX; ``epoch`` is fractional at the fresh arm's
    mid-epoch points).  measurement: the rulers (rulelib.tasks.rulers.rulers_for); the first one's
    numbers under "generated" ("ruler" names it), the paper's ruler's also under "paper_ruler"."""
    task = tasks.get(run.task)
    chosen = rulers.rulers_for(task, measurement)
    tag = tag or f"epoch_{epoch:06d}"
    s = run.profile().sampling(run.task)
    kw = {"method": s.method, "steps": s.steps, "eta": s.eta, "clip_x0": s.clip_x0}
    if method == "ddpm":
        kw = {"method": "ddpm", "steps": None, "eta": 0.0, "clip_x0": False}  # the paper's
    model, cfg, _ = checkpoint.load_model(ckpt, weights=weights, device=device)
    schedule = cfg.schedule()
    suffix = "" if method is None else "_raw_ddpm"
    t0 = time.perf_counter()
    images = sampler.sample(model, schedule, n, seed=run.seed, batch_size=s.batch_size,
                            device=device, progress=progress,
                            out_path=rdir / "eval" / f"{tag}{suffix}.npz",
                            meta={"epoch": epoch, "weights": weights}, **kw)  # fmt: skip
    t_sample = time.perf_counter() - t0
    feats, ok = rulers.measure(task, images, chosen[0])
    fresh = _fresh(task, n, run)
    paper_entry = {}
    if "paper" in chosen:
        reasons = {}
        pf, pok = rulers.measure(task, images, "paper", reasons=reasons)
        paper_entry["paper_ruler"] = {
            "ruler": "paper", "options": rulers.paper_ruler.DEFAULT.label,
            "trim": rulers.TRIM["paper"],
            "generated": metrics.rule_report(task, pf, pok, n_boot=1000, seed=run.seed,
                                             trim=rulers.TRIM["paper"], reasons=reasons),
        }  # fmt: skip
    n_train = len(train_images)
    return {
        "run": run.name, "arm": run.arm, "task": run.task, "train_size": run.train_size,
        "n_train": n_train, "epoch": epoch, "images": round(epoch * n_train),
        "sampling": {**kw, "weights": weights, "n": n, "seed": run.seed},
        "ruler": chosen[0],
        "generated": metrics.rule_report(task, feats, ok, n_boot=1000, seed=run.seed,
                                         trim=rulers.TRIM[chosen[0]]),
        **paper_entry,
        **memorisation.memorisation_columns(task, images, train_images, feats, ok,
                                            fresh_images=fresh[:n], seed=run.seed),
        "dsm_gap": _dsm_gap(model, schedule, run, train_images, fresh),
        "train_loss_logged": _train_log(rdir).get(round(epoch * n_train), {}).get("loss"),
        "seconds_sampling": round(t_sample, 1), "machine": provenance.machine_info(),
        "created": provenance.now_iso(), "git_commit": provenance.git_commit(),
    }  # fmt: skip


def wanted_n(run: arms.ArmRun, tag: str, n: int, conclusion_n: int | None = None) -> int:
    """Samples for one point: ``n``, or at least ``conclusion_n`` at the run's last
    CONCLUSION_POINTS points, those its conclusion rests on (the paper's ruler drops about half
    of the samples, so they need more)."""
    last = {t for t, _ in run.points()[-CONCLUSION_POINTS:]}
    return max(n, conclusion_n or 0) if tag in last else n


def needs_scoring(entry: Path, n: int | None = None) -> bool:
    """An eval entry is missing, or (with ``n``) holds fewer than ``n`` samples."""
    if not entry.exists():
        return True
    return n is not None and atomic.read_json(entry)["sampling"]["n"] < n


def _todo(rdir: Path, run: arms.ArmRun, trained, n: int, conclusion_n, more: bool) -> list:
    """(tag, images, samples) of each trained point to score: not scored yet, or scored with
    fewer samples than it needs (its conclusion_n, or ``n`` everywhere with ``more``)."""
    todo = []
    for tag, images in run.points():
        want = wanted_n(run, tag, n, conclusion_n)
        if tag in trained and needs_scoring(rdir / "eval" / f"{tag}.json",
                                            want if more or want > n else None):  # fmt: skip
            todo.append((tag, images, want))
    return todo


def evaluate_run(out, run: arms.ArmRun, *, n=256, device="cpu", progress=True,
                 time_limit_s=None, raw_ddpm=False, epochs=None,
                 train_images=None, measurement="both", more=False,
                 conclusion_n=None) -> list[dict]:  # fmt: skip
    """Score each trained checkpoint of ``run`` not scored yet (only ``epochs`` when given, so
    that two processes can share the checkpoints); returns every entry so far.
    train_images: the run's training set when the caller has it (``run.training_set()``).
    more: also score again, with ``n`` samples, each checkpoint scored with fewer; its samples
    file keeps the earlier draws as its first ones (rulelib.diffusion.sample: the same seed's
    chunks), so only the rest are drawn.  conclusion_n: the samples of the last
    CONCLUSION_POINTS points (``wanted_n``); an entry with fewer is scored again the same way."""
    rdir = arms.run_dir(out, run)
    ckpts = dict(checkpoint.list_checkpoints(rdir))
    points = arms.trained_points(out, run)
    (rdir / "eval").mkdir(parents=True, exist_ok=True)
    todo = _todo(rdir, run, points, n, conclusion_n, more)
    if train_images is None and (todo or ckpts):
        train_images = run.training_set()
    t0 = time.time()
    for tag, images, want in todo:
        epoch = images // run.n_train() if tag.startswith("epoch_") else images / run.n_train()
        if epochs is not None and epoch not in epochs:
            continue
        e = score_checkpoint(run, rdir, epoch, points[tag], n=want, train_images=train_images,
                             device=device, progress=progress, tag=tag,
                             measurement=measurement)  # fmt: skip
        atomic.write_json(rdir / "eval" / f"{tag}.json", e)
        if time_limit_s is not None and time.time() - t0 > time_limit_s:
            break
    for f in sorted((rdir / "eval").glob("epoch_*.json")):
        e = atomic.read_json(f)
        if "dsm_gap" in e or e["epoch"] not in ckpts or (epochs and e["epoch"] not in epochs):
            continue
        atomic.write_json(f, {**e, "dsm_gap": add_gap(run, ckpts[e["epoch"]], e, train_images,
                                                      device=device)})  # fmt: skip
    last = run.epochs[-1]
    f = rdir / "eval" / f"epoch_{last:06d}_raw_ddpm.json"
    if raw_ddpm and last in ckpts and not f.exists():
        atomic.write_json(f, score_checkpoint(run, rdir, last, ckpts[last], n=n,
                                              train_images=train_images, device=device,
                                              progress=progress, weights="raw",
                                              method="ddpm",
                                              measurement=measurement))  # fmt: skip
    return load_entries(rdir)


def add_gap(run: arms.ArmRun, ckpt: Path, entry: dict, train_images, device="cpu") -> dict:
    """The paired DSM gap for an entry scored before it had one, from the entry's weights."""
    model, cfg, _ = checkpoint.load_model(ckpt, weights=entry["sampling"]["weights"], device=device)
    fresh = _fresh(tasks.get(run.task), entry["sampling"]["n"], run)
    return _dsm_gap(model, cfg.schedule(), run, train_images, fresh)


def load_scored(rdir) -> list[tuple[dict, Path]]:
    """(entry, its samples file) of each scored point of a run folder, by images seen."""
    files = sorted(Path(rdir).glob("eval/epoch_*.json")) + \
        sorted(Path(rdir).glob("eval/images_*.json"))  # fmt: skip
    return sorted(((atomic.read_json(p), p.with_suffix(".npz")) for p in files),
                  key=lambda pair: pair[0]["images"])  # fmt: skip


def load_entries(rdir) -> list[dict]:
    return [e for e, _ in load_scored(rdir)]


def floor_columns(e: dict, samples: Path) -> dict:
    """The exact ruler's floor on a scored point's own samples (rulelib.metrics.measurement_floor:
    the residual std its per-image uncertainty alone produces), with its CI, as row columns; None
    where the samples file is gone."""
    fl = None
    if samples.exists():
        task = tasks.get(e["task"])
        f, ok = rulers.measure(task, np.load(samples)["images"], "exact")
        fl = measurement_floor.floor(task, f, ok)
    v, (lo, hi) = (fl["value"], fl["ci"]) if fl else (None, (None, None))
    return {"exact_floor": v, "exact_floor_lo": lo, "exact_floor_hi": hi}


def _v(rep, key):
    e = (rep or {}).get(key) or {}
    return e.get("value"), (e.get("ci") or [None, None])


def row(e: dict) -> dict:
    """One flat CSV row of an entry: metrics of all and novel images with CIs, memorisation."""
    r = {k: e[k] for k in ("run", "arm", "task", "train_size", "n_train", "epoch", "images")}
    r["sampling"] = f"{e['sampling']['weights']} {e['sampling']['method']}"
    r["n"] = e["sampling"]["n"]  # samples scored (a run's last three points have more)
    for which in ("generated", "generated_novel"):
        for key in ("measurable_rate", "coarse_rate", "conforming_pct", "within_5pct", "slope",
                    "bias_k1", "resid_std"):  # fmt: skip
            v, (lo, hi) = _v(e.get(which), key)
            tag = "" if which == "generated" else "novel_"
            r[f"{tag}{key}"], r[f"{tag}{key}_lo"], r[f"{tag}{key}_hi"] = v, lo, hi
    paper = (e.get("paper_ruler") or {}).get("generated")  # the paper's ruler, where scored
    for key in ("measurable_rate", "conforming_pct", "slope", "bias_k1", "resid_std"):
        v, (lo, hi) = _v(paper, key) if paper else (None, (None, None))
        r[f"paper_{key}"], r[f"paper_{key}_lo"], r[f"paper_{key}_hi"] = v, lo, hi
    m = e["memorisation"]
    r["copy_rate"] = m["copy_rate"]["value"]
    r["nearest_median"] = m["nearest"]["median"]
    r["fresh_nearest_median"] = m["reference"]["nearest"]["median"]
    r["median_shift"], (r["median_shift_lo"], r["median_shift_hi"]) = \
        m["median_shift"]["value"], m["median_shift"]["ci"] or [None, None]  # fmt: skip
    gap = e.get("dsm_gap")  # older entries: only the two means of one draw, no CI
    r["dsm_loss_train"] = gap["loss_train"] if gap else e.get("dsm_loss_train")
    r["dsm_loss_fresh"] = gap["loss_fresh"] if gap else e.get("dsm_loss_fresh")
    r["dsm_gap"], (r["dsm_gap_lo"], r["dsm_gap_hi"]) = \
        (gap["value"], gap["ci"]) if gap else (None, [None, None])  # fmt: skip
    r["train_loss_logged"] = e.get("train_loss_logged")
    return r


def fits(rows: list[dict]) -> dict:
    """Plateau fits of each error against images, per length run, on the novel images, from the
    first checkpoint with FIT_MIN_MEASURABLE of its samples measurable on (``from_images``)."""
    out = {}
    for name in sorted({r["run"] for r in rows if r["arm"] in ("length", "fresh")}):
        rs = sorted((r for r in rows if r["run"] == name and r["sampling"] == "ema ddim"),
                    key=lambda r: r["images"])  # fmt: skip
        start = next((i for i, r in enumerate(rs)
                      if (r["measurable_rate"] or 0.0) >= FIT_MIN_MEASURABLE), len(rs))  # fmt: skip
        skipped, rs = len(rs[:start]), rs[start:]
        out[name] = {}
        for err, (to_err, label) in ERRORS.items():
            key = "novel_" + SOURCE[err]
            pts = [(r["images"], to_err(r[key]), se_from_ci([r[key + "_lo"], r[key + "_hi"]]))
                   for r in rs if r[key] is not None]  # fmt: skip
            gate = {"from_images": rs[0]["images"] if rs else None, "skipped": skipped,
                    "min_measurable": FIT_MIN_MEASURABLE}  # fmt: skip
            if len(pts) < 4:
                out[name][err] = {
                    "label": label,
                    "n_points": len(pts),
                    "note": f"fewer than 4 checkpoints with >= {FIT_MIN_MEASURABLE:.0%} "
                    "measurable samples: no fit yet",
                    **gate,
                }
                continue
            x, y, se = map(np.array, zip(*pts))
            try:
                out[name][err] = {"label": label, **fit_plateau(x, y, se), **gate}
            except ValueError as e:  # e.g. points whose CI has zero width (no weight)
                out[name][err] = {"label": label, "n_points": len(pts), "note": str(e), **gate}
        task = name.split("_")[1]  # length_B, fresh_B_seed1, ...
        out[name]["plateau"] = plateau.curve_fits(_resid_points(rows, name), task=task)
    for group, curve in seed_curves(rows).items():
        pts = [(i, v, se_from_ci(ci), m) for i, v, ci, m in
               zip(curve["images"], curve["mean"], curve["ci"], curve["measurable"])]  # fmt: skip
        out.setdefault(group, {})["over_seeds"] = {
            **curve,
            "plateau": plateau.curve_fits(pts, task=curve["task"]),
        }
    return out


def _resid_points(rows, run: str) -> list[tuple]:
    """(images, residual std of the novel images, its se, measurable share, the exact ruler's
    floor on its samples and its se, or None) of a run's EMA + DDIM checkpoints."""
    rs = sorted((r for r in rows if r["run"] == run and r["sampling"] == "ema ddim"
                 and r["novel_resid_std"] is not None), key=lambda r: r["images"])  # fmt: skip
    return [(r["images"], r["novel_resid_std"],
             se_from_ci([r["novel_resid_std_lo"], r["novel_resid_std_hi"]]), r["measurable_rate"],
             r.get("exact_floor"), _floor_se(r)) for r in rs]  # fmt: skip


def _floor_se(r) -> float | None:
    lo, hi = r.get("exact_floor_lo"), r.get("exact_floor_hi")
    return None if lo is None or hi is None else se_from_ci([lo, hi])


def seed_curves(rows) -> dict[str, dict]:
    """Runs that differ only in their training seed (length_B, length_B_seed1, ...): at each
    checkpoint all of them scored, the mean residual std (novel images) over seeds with its
    seed-then-sample CI (rulelib.study.seeds) and the smallest measurable share."""
    groups: dict[str, dict[int, list]] = {}
    for r in rows:
        if r["arm"] in ("length", "fresh"):
            g, sd = seeds.group_name(r["run"])
            groups.setdefault(g, {}).setdefault(sd, []).append(r)
    out = {}
    for g, by_seed in sorted(groups.items()):
        if len(by_seed) < 2:
            continue
        pts = {sd: {p[0]: p for p in _resid_points(rs, rs[0]["run"])} for sd, rs in by_seed.items()}
        common = sorted(set.intersection(*(set(p) for p in pts.values())))
        if not common:  # a seed that has not reached a scored checkpoint of the others yet
            continue
        curve = {"task": next(iter(by_seed.values()))[0]["task"], "seeds": sorted(pts),
                 "images": [], "mean": [], "ci": [], "seed_sd": [], "measurable": []}  # fmt: skip
        for i in common:
            m = seeds.seed_mean_ci([pts[sd][i][1] for sd in pts], [pts[sd][i][2] for sd in pts])
            curve["images"].append(int(i))
            curve["mean"].append(m["value"])
            curve["ci"].append(m["ci"])
            curve["seed_sd"].append(m["seed_sd"])
            curve["measurable"].append(min(pts[sd][i][3] for sd in pts))
        out[g] = curve
    return out


def _on_scale(c: float, lo: float, hi: float) -> str:
    """ "c [lo, hi]" with two significant digits of the CI's upper end (a fitted c of 4e-18 is
    0.0000 on a CI of [0, 0.0036], not "4e-18")."""
    digits = max(0, 1 - math.floor(math.log10(hi))) if hi > 0 else 4
    return f"{c:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def length_at_budget(rows, task) -> list[dict]:
    """The length arm's scored checkpoints (EMA + DDIM) at the image budget of the size arm's
    runs of ``task``: the same compute on the task's own training set, the size arm's point at
    that set's size."""
    budgets = {r["images"] for r in rows if r["arm"] == "size" and r["task"] == task}
    return [r for r in rows if r["arm"] == "length" and r["task"] == task
            and r["sampling"] == "ema ddim" and r["images"] in budgets]  # fmt: skip


def _draw_fit(ax, f: dict, x_max: float) -> None:
    """The plateau fit c + a (x / x0)^-b of one error, its CI on c, and where the fit starts."""
    if f.get("skipped") and f.get("from_images"):
        gate = f"fit from here (>= {f['min_measurable']:.0%} measurable)"
        ax.axvline(f["from_images"], ls=":", color="grey", label=gate)
    if f.get("c_ci"):
        xx = np.geomspace(f["from_images"], x_max * 4, 100)
        ax.plot(xx, f["c"] + f["a"] * (xx / f["images_0"]) ** (-f["b"]), "k--",
                label="c + a x^-b: c = " + _on_scale(f["c"], *f["c_ci"]))  # fmt: skip
        ax.axhspan(*f["c_ci"], color="grey", alpha=0.2)


def size_points(rows) -> list[dict]:
    """The size arm's points: the last checkpoint of each training-set size (rows sorted by
    images), of runs scored to their end -- a stopped evaluation's first checkpoint is no such
    point (``run_complete`` False)."""
    done = [r for r in rows if r.get("run_complete") is not False]
    return list({r["n_train"]: r for r in done}.values())


def _figure(rows, fitd, arm, task, path):
    rs = sorted(
        (r for r in rows if r["arm"] == arm and r["task"] == task and r["sampling"] == "ema ddim"
         and (arm != "length" or r["run"] == f"length_{task}")),  # other seeds: the band
        key=lambda r: (r["n_train"], r["images"]),
    )  # fmt: skip
    if not rs:
        return None
    fig, axes = plt.subplots(1, 5, figsize=(21, 3.8))
    xkey = "images" if arm == "length" else "n_train"
    for ax, (err, (to_err, label)) in zip(axes, ERRORS.items()):
        key = "novel_" + SOURCE[err]
        have = [r for r in rs if r[key] is not None and r[key + "_lo"] is not None]
        if arm == "size":
            have = size_points(have)
        if have:
            x = np.array([r[xkey] for r in have], dtype=float)
            y = np.array([to_err(r[key]) for r in have])
            a = np.array([to_err(r[key + "_lo"]) for r in have])
            b = np.array([to_err(r[key + "_hi"]) for r in have])
            lo, hi = np.minimum(a, b), np.maximum(a, b)
            ax.errorbar(x, y, yerr=[y - lo, hi - y], fmt="o-", capsize=3, label="novel images")
        for r in length_at_budget(rows, task) if arm == "size" else ():
            if r[key] is None or r[key + "_lo"] is None:
                continue
            y, a, b = (to_err(r[key + s]) for s in ("", "_lo", "_hi"))
            ax.errorbar([r["n_train"]], [y], yerr=[[y - min(a, b)], [max(a, b) - y]], fmt="s",
                        color="tab:red", capsize=3,
                        label="length arm (its own set), same images")  # fmt: skip
        floored = [r for r in rs if r.get("exact_floor") is not None]
        if err == "resid_std" and floored:  # what the ruler's own uncertainty alone would give
            fx = [r[xkey] for r in floored]
            ax.fill_between(fx, [r["exact_floor_lo"] for r in floored],
                            [r["exact_floor_hi"] for r in floored], color="0.6", alpha=0.4,
                            label="exact ruler's floor on these samples")  # fmt: skip
        if arm == "length":
            _draw_fit(ax, (fitd.get(f"length_{task}") or {}).get(err, {}), rs[-1]["images"])
            over = (fitd.get(f"length_{task}") or {}).get("over_seeds")
            if err == "resid_std" and over:  # the mean over training seeds, seeds-then-samples CI
                lo, hi = np.array(over["ci"]).T
                ax.fill_between(over["images"], lo, hi, color="tab:orange", alpha=0.3)
                band = f"mean of seeds {over['seeds']} (CI over seeds, then samples)"
                ax.plot(over["images"], over["mean"], color="tab:orange", label=band)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide within a decade
        ax.set_xlabel("training images seen" if arm == "length" else "training-set size")
        ax.set_title(label, fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    ax = axes[-2]
    xs = [r[xkey] for r in rs]
    ax.plot(xs, [100 * r["measurable_rate"] for r in rs], "o-", color="tab:green",
            label="measurable % (all images)")  # fmt: skip
    ax.set_ylabel("measurable %")
    ax.set_xscale("log")
    ax.legend(fontsize=7, loc="upper left")
    twin = ax.twinx()
    gaps = [r for r in rs if r["dsm_gap"] is not None]
    if gaps:
        v, lo, hi = 100 * np.array([[r["dsm_gap"], r["dsm_gap_lo"], r["dsm_gap_hi"]]
                                    for r in gaps]).T  # fmt: skip
        twin.errorbar([r[xkey] for r in gaps], v, yerr=[v - lo, hi - v], fmt="ks--", capsize=3,
                      label="DSM gap: loss fresh / training - 1")  # fmt: skip
        twin.axhline(0, color="k", lw=0.5)
    twin.set_ylabel("DSM gap (%, EMA weights)")
    twin.legend(fontsize=7, loc="upper right")
    ax.set_title("measurable share and DSM gap (fresh vs training images)", fontsize=9)
    ax = axes[-1]
    ax.plot([r[xkey] for r in rs], [100 * r["copy_rate"] for r in rs], "o-", label="copy %")
    ax.plot(
        [r[xkey] for r in rs],
        [r["nearest_median"] for r in rs],
        "s-",
        label="median nearest-training distance",
    )
    ax.plot(
        [r[xkey] for r in rs],
        [r["fresh_nearest_median"] for r in rs],
        "kx:",
        label="same, fresh task images",
    )
    ax.set_xscale("log")
    ax.set_title("memorisation (copy: d1/d2 < 1/3)", fontsize=9)
    ax.legend(fontsize=7)
    fig.suptitle(f"Task {task}, {arm} arm (quick-profile settings; 95 % bootstrap CIs)")
    fig.tight_layout()
    atomic.savefig(fig, path)
    plt.close(fig)
    return path


def completeness(out) -> dict[str, dict]:
    """{run: {"planned", "scored", "complete"}} of each run under ``out`` with a study_run.json:
    the checkpoint epochs it plans, those scored (eval/*.json), and whether its last planned one
    is scored (False after a `study evaluate` stopped part way)."""
    done = {}
    for rdir in sorted(Path(out).glob("*_*")):
        if not (rdir / "study_run.json").exists():
            continue
        spec = atomic.read_json(rdir / "study_run.json")
        planned = list(spec.get("run", {}).get("epochs", []))  # arms.train_run's record
        scored = sorted({e["epoch"] for e in load_entries(rdir)}) if (rdir / "eval").is_dir() \
            else []  # fmt: skip
        done[rdir.name] = {"planned": planned, "scored": scored,
                           "complete": bool(planned) and planned[-1] in scored}  # fmt: skip
    return done


def point_key(r: dict) -> tuple:
    """A row's scored point: (run, images seen, sampling)."""
    return r["run"], r["images"], r["sampling"]


def _same_run(old: dict, name: str, spec: dict, log: list) -> bool:
    """The folder here holds the run that ``old`` (an earlier study.json) scored: the same spec,
    and the same training loss at every checkpoint both trainer logs hold (training is
    deterministic, so the same run redraws the same losses to the bit; a changed trainer does
    not)."""
    if (old.get("runs", {}).get(name) or {}).get("run") != spec.get("run"):
        return False
    before = {e["images"]: e["loss"] for e in old.get("train_logs", {}).get(name, [])}
    return all(before.get(e["images"], e["loss"]) == e["loss"] for e in log)


def carried(previous: Path, here: dict, logs: dict, scored: set) -> dict:
    """Rows, run records and trainer logs of an earlier summary (``previous``, a study.json) for
    the runs whose folders are not under this ``out``: a study spread over machines, or one whose
    early run folders are gone, keeps the scores it committed.  A run present here (``here``:
    {name: its study_run.json}, ``logs``: its trainer log) replaces its carried rows at the points
    it has scored (``scored``: their ``point_key``s); its carried rows at the points not scored
    here yet stay while the folder holds the same run (``_same_run``), so a run retrained on
    another machine keeps its committed scores until it has caught up.  Carried rows are marked
    ``carried``."""
    old = atomic.read_json(previous) if Path(previous).exists() else {}
    same = {n: _same_run(old, n, spec, logs.get(n, [])) for n, spec in here.items()}
    rows = [{**r, "carried": True} for r in old.get("rows", [])
            if r["run"] not in here or (same[r["run"]] and point_key(r) not in scored)]  # fmt: skip
    names = sorted({r["run"] for r in rows})
    pick = lambda d: {k: v for k, v in (old.get(d) or {}).items() if k in names}  # noqa: E731
    return {"rows": rows, "names": names, "runs": pick("runs"), "train_logs": pick("train_logs")}


def summarise(out, to, command: str | None = None) -> dict:
    """study.csv, study.json, fits.json and the figures from every run under ``out``."""
    scored_here = [pair for rdir in sorted(Path(out).glob("*_*")) if (rdir / "eval").is_dir()
                   for pair in load_scored(rdir)]  # fmt: skip
    rows = [{**row(e), **floor_columns(e, npz), "carried": False} for e, npz in scored_here]
    done = completeness(out)
    for r in rows:  # a run whose `study evaluate` was stopped part way is flagged, row by row
        r["run_complete"] = done.get(r["run"], {}).get("complete")
    to = Path(to)
    to.mkdir(parents=True, exist_ok=True)
    folders = sorted(Path(out).glob("*_*"))
    runs = {d.name: atomic.read_json(d / "study_run.json")
            for d in folders if (d / "study_run.json").exists()}  # fmt: skip
    logs = {d.name: list(_train_log(d).values()) for d in folders}
    here = {**{r["run"]: {} for r in rows}, **runs}  # a folder without its record: no spec
    kept = carried(to / "study.json", here, logs, {point_key(r) for r in rows})
    rows = kept["rows"] + rows
    train_logs = dict(kept["train_logs"])
    for name, log in logs.items():  # a run catching up: its carried log beyond its own so far
        merged = {e["images"]: e for e in [*train_logs.get(name, []), *log]}
        train_logs[name] = sorted(merged.values(), key=lambda e: e["images"])
    fitd = fits(rows)
    if rows:
        buf = io.StringIO()
        names = list(dict.fromkeys(k for r in rows for k in r))  # carried rows may lack new keys
        w = csv.DictWriter(buf, fieldnames=names)
        w.writeheader()
        w.writerows(rows)
        atomic.write_text(to / "study.csv", buf.getvalue())
    atomic.write_json(to / "study.json", {
        "rows": rows, "command": command, "created": provenance.now_iso(),
        "machine": provenance.machine_info(), "git_commit": provenance.git_commit(),
        "runs": {**kept["runs"], **runs}, "train_logs": train_logs,
        "completeness": done, "carried": kept["names"],
    })  # fmt: skip
    atomic.write_json(to / "fits.json", fitd)
    figs = []
    for arm in ("length", "size"):
        for task in sorted({r["task"] for r in rows if r["arm"] == arm}):
            p = _figure(rows, fitd, arm, task, to / f"{arm}_{task}.png")
            if p:
                figs.append(str(p))
    return {"rows": rows, "fits": fitd, "figures": figs}
