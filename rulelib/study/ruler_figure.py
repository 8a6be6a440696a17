"""The study's answer read with both rulers: residual std against training images seen.

Per task, each length run's residual std of its novel samples (95 % bootstrap CIs) read with the
exact ruler (blue) and, where scored, the paper's OpenCV ruler (red), each ruler's floor as a band
of its colour, and the paper's reported value as a dashed line (docs/paper.md section 3).  The
floors come from ``python -m rulelib rulers floors`` (results/rulers/floors.json):

    exact ruler   from its floor on rule-exact renders degraded like generated samples to the
                  upper CI of the residual std its own per-image uncertainty produces on committed
                  U-Net samples ("measurement only");
    paper ruler   from its floor on clean rule-exact 32-px renders to that on degraded ones.

A point inside its ruler's band is no evidence of a model error beyond the ruler's.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from rulelib import atomic
from rulelib.metrics import PAPER

COLOURS = {"exact": "tab:blue", "paper": "tab:red"}


def floor_bands(floors: dict, task: str) -> dict:
    """{ruler: (low, high)} residual-std band of each ruler's floor for ``task``."""
    t = floors["tasks"][task]
    cases = t["floors"]["cases"]
    only = [v["resid_std_from_se"]["ci"][1] for k, v in t["measurement_only"].items()
            if "unet" in k and v.get("resid_std_from_se")]  # fmt: skip
    exact_hi = max(only) if only else cases["exact/degraded"]["resid_std"]["ci"][1]
    return {
        "exact": (cases["exact/degraded"]["resid_std"]["ci"][0], exact_hi),
        "paper": (cases["paper/clean"]["resid_std"]["ci"][0],
                  cases["paper/degraded"]["resid_std"]["ci"][1]),
    }  # fmt: skip


def _series(rows, prefix: str):
    """(images, value, lo, hi) of the rows that carry the metric, sorted by images."""
    key = f"{prefix}resid_std"
    pts = sorted((int(r["images"]), r[key], r[key + "_lo"], r[key + "_hi"])
                 for r in rows if r.get(key) not in (None, ""))  # fmt: skip
    return np.array(pts, dtype=float).reshape(-1, 4)


def draw(rows: list[dict], floors: dict, task: str, path) -> Path | None:
    """The figure for ``task`` (None where no length run of it is scored)."""
    runs = sorted({r["run"] for r in rows if r["arm"] == "length" and r["task"] == task})
    if not runs or task not in floors.get("tasks", {}):
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for ruler, (lo, hi) in floor_bands(floors, task).items():
        ax.axhspan(lo, hi, color=COLOURS[ruler], alpha=0.12,
                   label=f"{ruler} ruler's floor ({lo:.4f}–{hi:.4f})")  # fmt: skip
    markers = dict(zip(runs, "osD^v<>"))
    for run in runs:
        rs = [r for r in rows if r["run"] == run and r["sampling"] == "ema ddim"]
        for ruler, prefix in (("exact", "novel_"), ("paper", "paper_")):
            p = _series(rs, prefix)
            if len(p):
                err = np.abs(p[:, 2:4].T - p[:, 1])
                ax.errorbar(p[:, 0], p[:, 1], yerr=err, marker=markers[run], ms=4, capsize=2,
                            color=COLOURS[ruler], alpha=0.85, lw=1,
                            label=f"{run}, {ruler} ruler")  # fmt: skip
    reported = PAPER[task]["generated"]["resid_std"]
    ax.axhline(reported, color="k", ls="--", lw=1, label=f"paper's reported value (≈{reported})")
    ax.set(xscale="log", yscale="log", xlabel="training images seen",
           ylabel="residual std of y − kx (units of W)",
           title=f"Task {task}: the fine-rule error read with both rulers (95 % CIs)")  # fmt: skip
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    fig.tight_layout()
    out = atomic.savefig(fig, path)
    plt.close(fig)
    return out
