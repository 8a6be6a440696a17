"""The paper's rule scatter figure (training blue, generated red, rule line, trimmed fits)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from rulelib.metrics.rules import _check_features, fit_line, measured_xy


def _plot_xy(task, features, ok):
    """Scatter quantities for plotting; ok None keeps the images whose features are all finite."""
    if ok is None:
        _check_features(features, getattr(task, "feature_names", None))
        names = getattr(task, "feature_names", None) or tuple(features)
        ok = np.all([np.isfinite(np.asarray(features[k], dtype=float)) for k in names], axis=0)
    x, y, _ = measured_xy(task, features, ok)
    return x, y


def scatter_plot(
    task,
    train_features: Mapping,
    gen_features: Mapping | None = None,
    ax=None,
    *,
    train_ok=None,
    gen_ok=None,
    trim: str = "residuals",
    max_points: int = 3000,
    seed: int = 0,
    title: str | None = None,
):
    """The paper's rule scatter: training points blue, generated red, the rule line y = k x (black),
    and the trimmed least-squares line of each set (dashed) with slope, intercept and R^2 in the
    legend.  train_ok / gen_ok: measurable flags (default: images with finite features).  At most
    max_points points per set are drawn (a seeded subset; the fits use all).  Returns the Axes.
    """
    import matplotlib.pyplot as plt  # lazy: metrics are usable without a plotting backend

    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.2))
    rng = np.random.default_rng(seed)
    sets = [("train", train_features, train_ok, "tab:blue")]
    if gen_features is not None:
        sets.append(("generated", gen_features, gen_ok, "tab:red"))
    hi = 0.0
    for label, feats, ok, colour in sets:
        x, y = _plot_xy(task, feats, ok)
        if x.size == 0:
            continue
        shown = rng.permutation(x.size)[:max_points]
        ax.scatter(
            x[shown], y[shown], s=4, alpha=0.5, color=colour, lw=0, label=f"{label} (n={x.size})"
        )
        hi = max(hi, float(np.percentile(x, 99.5)) * 1.05)
        if x.size >= 3:
            f = fit_line(x, y, trim=trim)
            xs = np.array([0.0, float(x.max())])
            ax.plot(
                xs,
                f["slope"] * xs + f["intercept"],
                "--",
                color=colour,
                lw=1.2,
                label=f"{label} fit: {f['slope']:.3f}x{f['intercept']:+.4f}, R²={f['r2']:.3f}",
            )
    xs = np.array([0.0, hi or 1.0])
    ax.plot(xs, task.k * xs, "-", color="k", lw=1, label=f"rule y = {task.k:.3g}x")
    ax.set_xlabel(getattr(task, "x_label", "x"))
    ax.set_ylabel(getattr(task, "y_label", "y"))
    ax.set_title(
        title
        if title is not None
        else f"Task {getattr(task, 'name', '')}: {getattr(task, 'title', '')}"
    )
    ax.legend(fontsize=7, loc="upper left")
    return ax
