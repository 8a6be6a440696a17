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
from rulelib.study.seeds import group_name


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
            if err == "resid_std" and over:  # the mean over training seeds (rulelib.study.seeds)
                lo, hi = np.array(over["ci"]).T
                ax.fill_between(over["images"], lo, hi, color="tab:orange", alpha=0.3)
                band = f"mean of seeds {over['seeds']} (CI: seed bootstrap joined with t)"
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


def variants_figure(rows, comparisons, task, path, min_measurable: float = 0.8):
    """Left: the residual std of the novel images against training images for the base recipe
    (each seed) and each variant of the length arm (fresh data, width, class), 95 % CIs.  Right:
    each variant minus the base at the images both scored, with its seed-level t interval
    (hollow: one seed each, a sampling-only interval; rulelib.study.variants).  Only points with
    ``min_measurable`` of their samples measurable: before that the few measurable images'
    residual std follows their selection, not the model (the plateau fit's gate)."""
    rs = [r for r in rows if r["task"] == task and r["arm"] in ("length", "fresh")
          and r["sampling"] == "ema ddim" and r.get("novel_resid_std") is not None
          and r.get("novel_resid_std_lo") is not None
          and r["measurable_rate"] >= min_measurable]  # fmt: skip
    groups = sorted({group_name(r["run"])[0] for r in rs})
    if len(groups) < 2:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2))
    compared = set()
    for i, g in enumerate(groups):
        color = f"C{i}"
        for run in sorted({r["run"] for r in rs if group_name(r["run"])[0] == g}):
            pts = sorted((r for r in rs if r["run"] == run), key=lambda r: r["images"])
            x = np.array([r["images"] for r in pts], dtype=float)
            y, lo, hi = (
                np.array([r["novel_resid_std" + s] for r in pts]) for s in ("", "_lo", "_hi")
            )
            seed = group_name(run)[1]
            left.errorbar(x, y, yerr=[y - np.minimum(lo, y), np.maximum(hi, y) - y], fmt="o-",
                          ms=3, capsize=2, color=color, alpha=1.0 if seed == 0 else 0.5,
                          label=f"{g}" if seed == 0 else f"{g} seed {seed}")  # fmt: skip
        mine = [c for c in comparisons if c["variant"] == g and c["measurable"] >= min_measurable]
        mine.sort(key=lambda c: c["images"])
        compared.update(c["images"] for c in mine)
        for c in mine:
            err = [[c["value"] - c["ci"][0]], [c["ci"][1] - c["value"]]]
            face = color if c["seed_level"] else "none"
            right.errorbar([c["images"]], [c["value"]], yerr=err, fmt="o", capsize=3, color=color,
                           mfc=face)  # fmt: skip
        if mine:
            right.plot([c["images"] for c in mine], [c["value"] for c in mine], "-", color=color,
                       label=g)  # fmt: skip
    for ax in (left, right):
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("training images seen")
        ax.legend(fontsize=7)
    left.set_yscale("log")
    left.set_ylabel("residual std, novel images (exact ruler)")
    left.set_title("each run, 95 % CI over its samples", fontsize=9)
    right.axhline(0, color="k", lw=0.6)
    ticks = sorted(compared)  # a span inside one decade gets no major log tick: label them
    if ticks:
        right.set_xticks(ticks, [f"{x / 1000:g}k" for x in ticks])
    right.set_ylabel(f"variant - length_{task} (residual std)")
    right.set_title("difference of seed means, 95 % t interval over seeds (hollow: one seed "
                    "each, sampling only)", fontsize=9)  # fmt: skip
    fig.suptitle(f"Task {task}: the recipe's variants at equal training images (points with "
                 f">= {min_measurable:.0%} of the samples measurable)")  # fmt: skip
    fig.tight_layout()
    atomic.savefig(fig, path)
    plt.close(fig)
    return path
