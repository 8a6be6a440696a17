"""Gather the scored points of every study run into study.csv / study.json, the plateau fits
(fits.json) and the figures (rulelib.study.figures).

A summary written to ``results/`` is also the record the next summary starts from: the rows of
runs whose folders are not on this machine are carried over (``carried``), so a study spread over
machines and sessions keeps every score it committed.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from rulelib import atomic, provenance
from rulelib.study import figures, plateau, seeds, variants
from rulelib.study.evaluate import load_entries, load_scored, train_log
from rulelib.study.fit import fit_plateau, se_from_ci
from rulelib.study.rows import ERRORS, SOURCE, floor_columns, point_key, resid_points, row

# The plateau fit starts at the first checkpoint where this share of the samples is measurable
# (the coarse rule drawn: both objects found, in place): before it, the model is in its first phase
# (length_B: measurable 2-77 % up to 32 000 images), where the fine-rule error of the few
# measurable images rises and falls with that selection rather than decaying, which the power
# law c + a x^-b does not describe.
FIT_MIN_MEASURABLE = 0.8


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
        out[name]["plateau"] = plateau.curve_fits(resid_points(rows, name), task=task)
    for group, curve in seed_curves(rows).items():
        pts = [(i, v, se_from_ci(ci), m) for i, v, ci, m in
               zip(curve["images"], curve["mean"], curve["ci"], curve["measurable"])]  # fmt: skip
        out.setdefault(group, {})["over_seeds"] = {
            **curve,
            "plateau": plateau.curve_fits(pts, task=curve["task"]),
        }
    return out


def seed_curves(rows) -> dict[str, dict]:
    """Runs that differ only in their training seed (length_B, length_B_seed1, ...): at each
    checkpoint all of them scored, the mean residual std (novel images) over seeds with its
    CI over seeds (rulelib.study.seeds.seed_mean_ci) and the smallest measurable share."""
    groups: dict[str, dict[int, list]] = {}
    for r in rows:
        if r["arm"] in ("length", "fresh"):
            g, sd = seeds.group_name(r["run"])
            groups.setdefault(g, {}).setdefault(sd, []).append(r)
    out = {}
    for g, by_seed in sorted(groups.items()):
        if len(by_seed) < 2:
            continue
        pts = {sd: {p[0]: p for p in resid_points(rs, rs[0]["run"])} for sd, rs in by_seed.items()}
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
    """study.csv, study.json, fits.json, variants.json (each variant of a task's recipe against
    the recipe at equal images, rulelib.study.variants) and the figures from every run under
    ``out``."""
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
    logs = {d.name: list(train_log(d).values()) for d in folders}
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
    comparisons = variants.compare(rows)
    atomic.write_json(to / "variants.json", {
        "comparisons": comparisons, "metric": variants.METRIC, "level": variants.LEVEL,
        "power": variants.POWER, "method": "difference of seed means, pooled-variance t "
        "interval (rulelib.study.variants)", "command": command, "created": provenance.now_iso(),
    })  # fmt: skip
    figs = []
    for arm in ("length", "size"):
        for task in sorted({r["task"] for r in rows if r["arm"] == arm}):
            p = figures.arm_figure(rows, fitd, arm, task, to / f"{arm}_{task}.png")
            if p:
                figs.append(str(p))
    for task in sorted({r["task"] for r in rows}):
        p = figures.variants_figure(rows, comparisons, task, to / f"variants_{task}.png")
        if p:
            figs.append(str(p))
    return {"rows": rows, "fits": fitd, "figures": figs}
