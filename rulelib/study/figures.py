"""The study's figures: each error of an arm against training images (length arm) or training-set
size (size arm), with its 95 % CIs, the plateau fit, the band over training seeds and the exact
ruler's own floor on the same samples."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter

from rulelib import atomic
from rulelib.study.rows import ERRORS, SOURCE, length_at_budget, size_points


def on_scale(c: float, lo: float, hi: float) -> str:
    """ "c [lo, hi]" with two significant digits of the CI's upper end (a fitted c of 4e-18 is
    0.0000 on a CI of [0, 0.0036], not "4e-18")."""
    digits = max(0, 1 - math.floor(math.log10(hi))) if hi > 0 else 4
    return f"{c:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _draw_fit(ax, f: dict, x_max: float) -> None:
    """The plateau fit c + a (x / x0)^-b of one error, its CI on c, and where the fit starts."""
    if f.get("skipped") and f.get("from_images"):
        gate = f"fit from here (>= {f['min_measurable']:.0%} measurable)"
        ax.axvline(f["from_images"], ls=":", color="grey", label=gate)
    if f.get("c_ci"):
        xx = np.geomspace(f["from_images"], x_max * 4, 100)
        ax.plot(xx, f["c"] + f["a"] * (xx / f["images_0"]) ** (-f["b"]), "k--",
                label="c + a x^-b: c = " + on_scale(f["c"], *f["c_ci"]))  # fmt: skip
        ax.axhspan(*f["c_ci"], color="grey", alpha=0.2)


def arm_figure(rows, fitd, arm, task, path):
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
