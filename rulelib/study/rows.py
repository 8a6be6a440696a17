"""One flat row per scored point of a study run, and the selections of rows the fits, figures and
notebooks read.

A row (``row``) holds a point's rule metrics on all and on the novel images (not copies of a
training image), each with its bootstrap CI (``<key>``, ``<key>_lo``, ``<key>_hi``), the paper's
ruler's where it was scored, the memorisation columns and the DSM gap; ``floor_columns`` adds the
exact ruler's floor on the point's own samples.  ``study.csv`` is a list of these rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rulelib import tasks
from rulelib.metrics import measurement_floor
from rulelib.study.fit import se_from_ci
from rulelib.tasks import rulers

# error metrics fitted against images: (key, how to turn the metric into an error, label)
ERRORS = {
    "resid_std": (lambda v: v, "residual std (W)"),
    "not_within_5pct": (lambda v: 100.0 - v, "100 - within ±5 % (%)"),
    "not_conforming": (lambda v: 100.0 - v, "100 - rule-conforming (%)"),
}
SOURCE = {"resid_std": "resid_std", "not_within_5pct": "within_5pct",
          "not_conforming": "conforming_pct"}  # fmt: skip


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


def point_key(r: dict) -> tuple:
    """A row's scored point: (run, images seen, sampling)."""
    return r["run"], r["images"], r["sampling"]


def resid_points(rows, run: str) -> list[tuple]:
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


def length_at_budget(rows, task) -> list[dict]:
    """The length arm's scored checkpoints (EMA + DDIM) at the image budget of the size arm's
    runs of ``task``: the same compute on the task's own training set, the size arm's point at
    that set's size."""
    budgets = {r["images"] for r in rows if r["arm"] == "size" and r["task"] == task}
    return [r for r in rows if r["arm"] == "length" and r["task"] == task
            and r["sampling"] == "ema ddim" and r["images"] in budgets]  # fmt: skip


def size_points(rows) -> list[dict]:
    """The size arm's points: the last checkpoint of each training-set size (rows sorted by
    images), of runs scored to their end -- a stopped evaluation's first checkpoint is no such
    point (``run_complete`` False)."""
    done = [r for r in rows if r.get("run_complete") is not False]
    return list({r["n_train"]: r for r in done}.values())
