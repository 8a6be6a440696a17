"""Rule metrics for measured images, with bootstrap confidence intervals (paper section 3).

Read top to bottom:

    1. validation        features, ok -> the paper's scatter quantities (x, y) of measured images
    2. the line fit      least squares after 2.5-97.5 % trimming, vectorised over bootstrap rows
    3. per-image shares  coarse rule, binned "rule-conforming", within +-1/5/10 % of the rule
    4. rule_report       every metric with a percentile-bootstrap 95 % CI, a JSON-serialisable dict
    5. PAPER, format_table, scatter_plot   the paper's numbers, "ours vs paper" table, the figure

Units.  Lengths are in units of the canvas side W (the tasks return them so), which is what the
paper's bins of width 0.05 and its intercepts refer to.  Keys ending in ``_rate`` are fractions in
[0, 1] (``measurable_rate``, ``coarse_rate``); ``conforming_pct`` and ``within_{1,5,10}pct`` are
percentages in [0, 100], as the paper prints them.  ``measurable_rate`` is over all images; every
other metric is over the measurable images only (the paper dropped unmeasurable images likewise).

Rule.  Every task's fine rule is y = k x on the scatter quantities of ``task.rule_xy`` (A: l1*h2 vs
l2*h1, B: l1*h1 vs l2*h2, C: r1 vs r2, D: l1 vs l2; k = 1, 1, sqrt(2), 1.5).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

BIN_WIDTH = 0.05  # the paper's "rule-conforming %" bin width, in units of W
WITHIN_TOLS = (0.01, 0.05, 0.10)  # the paper's +-1 %, +-5 %, +-10 % ratio bands (Task A)
TRIM_PCT = (2.5, 97.5)  # the paper trims outliers to these percentiles before the line fit
TRIM_MODES = ("residuals", "xy", "none")

# Rows of the bootstrap are processed in blocks of at most this many (row x image) elements, so that
# 1000 resamples of 20 000 images stay at a few tens of MB.
_BLOCK_ELEMENTS = 2_000_000


# -------------------------------------------------------------------------------------------------
# 1. Validation: measured features -> scatter quantities of the measurable images
# -------------------------------------------------------------------------------------------------


def _as_ok(ok, n: int | None) -> np.ndarray:
    ok = np.asarray(ok)
    if ok.ndim != 1:
        raise ValueError(f"ok must be a 1-D bool array of shape (n,), got shape {ok.shape}")
    if ok.dtype != np.bool_:
        raise ValueError(f"ok must have dtype bool, got dtype {ok.dtype}")
    if n is not None and ok.shape[0] != n:
        raise ValueError(f"ok has length {ok.shape[0]} but the features have length {n}")
    return ok


def _check_features(features: Mapping, names) -> int:
    """Check the feature arrays are 1-D, numeric and of one length; return that length."""
    if not isinstance(features, Mapping) or len(features) == 0:
        raise ValueError(
            f"features must be a non-empty dict of 1-D arrays, got {type(features).__name__}"
        )
    names = tuple(names) if names else tuple(features)
    missing = [k for k in names if k not in features]
    if missing:
        raise ValueError(f"features lack {missing}; expected keys {list(names)}")
    lengths = {}
    for k in names:
        v = np.asarray(features[k])
        if v.ndim != 1 or not np.issubdtype(v.dtype, np.number):
            raise ValueError(
                f"feature {k!r} must be a 1-D numeric array, got shape {v.shape} dtype {v.dtype}"
            )
        lengths[k] = v.shape[0]
    if len(set(lengths.values())) != 1:
        raise ValueError(f"feature arrays have different lengths: {lengths}")
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError("features are empty (n = 0); expected at least one image")
    return n


def measured_xy(task, features: Mapping, ok) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The paper's scatter quantities (x, y) and the coarse-rule flags of the measurable images.

    Features of unmeasurable images (ok False) may be anything, NaN included; features of measurable
    ones must be finite, because a NaN there means the measurement claimed a value it does not have.
    """
    n = _check_features(features, getattr(task, "feature_names", None))
    ok = _as_ok(ok, n)
    names = getattr(task, "feature_names", None) or tuple(features)
    # Every per-image entry goes to the task (A's coarse rule reads the measured sun/shadow sides,
    # which are not among its feature_names); only the named features must be finite.
    sub = {
        k: np.asarray(v)[ok]
        for k, v in features.items()
        if np.ndim(v) == 1 and len(v) == n and np.issubdtype(np.asarray(v).dtype, np.number)
    }
    for k in names:
        v = sub[k] = sub[k].astype(np.float64)
        bad = ~np.isfinite(v)
        if bad.any():
            raise ValueError(
                f"feature {k!r} has {int(bad.sum())} non-finite values (e.g. {v[bad][0]}) among "
                f"images marked ok; expected finite features for every measurable image"
            )
    x, y = task.rule_xy(sub)
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    coarse = np.asarray(task.coarse_ok(sub), dtype=bool)
    m = int(ok.sum())
    if x.shape != (m,) or y.shape != (m,) or coarse.shape != (m,):
        raise ValueError(
            f"task {getattr(task, 'name', task)!r}: rule_xy / coarse_ok returned shapes "
            f"{x.shape}, {y.shape}, {coarse.shape}; expected ({m},) each"
        )
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError(
            f"task {getattr(task, 'name', task)!r}: rule_xy gave non-finite scatter values for "
            f"{int((~np.isfinite(x) | ~np.isfinite(y)).sum())} measurable images; expected finite"
        )
    return x, y, coarse


# -------------------------------------------------------------------------------------------------
# 2. The trimmed least-squares line, vectorised over rows (one row per bootstrap resample)
# -------------------------------------------------------------------------------------------------


def _ols(x, y, w):
    """Weighted least squares per row: slope, intercept, R^2, residual std (weights are 0/1 masks).

    slope = S_xy / S_xx, intercept = ybar - slope * xbar, R^2 = 1 - SS_res / SS_tot and residual std
    = sqrt(SS_res / (n_fit - 2)), the usual unbiased estimate of the noise std of a line fit.
    """
    sw = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = (w * x).sum(axis=1) / sw
        my = (w * y).sum(axis=1) / sw
        dx, dy = x - mx[:, None], y - my[:, None]
        sxx = (w * dx * dx).sum(axis=1)
        sxy = (w * dx * dy).sum(axis=1)
        syy = (w * dy * dy).sum(axis=1)
        slope = np.where(sxx > 0, sxy / sxx, np.nan)
        intercept = my - slope * mx
        resid = dy - slope[:, None] * dx
        ssr = (w * resid * resid).sum(axis=1)
        r2 = np.where(syy > 0, 1.0 - ssr / syy, np.nan)
        resid_std = np.where(sw > 2, np.sqrt(ssr / (sw - 2)), np.nan)
    return slope, intercept, r2, resid_std, sw


def _trim_mask(x, y, trim: str):
    """Rows of 0/1 weights keeping the points inside the 2.5-97.5 percentiles.

    "residuals" (default): fit the line on all points, keep the points whose residual lies inside
    the residuals' 2.5-97.5 percentiles, refit.  Why: the outliers of a rule scatter are points far
    from the line (mis-generated or mis-measured images), and that is what this removes.  Trimming y
    instead truncates the dependent variable, which biases the slope towards 0 whenever the noise is
    not tiny; trimming x removes the high-leverage ends of the range, not the outliers.  For
    symmetric noise the residual trim leaves the slope unbiased and cuts the residual std to that of
    a normal truncated at +-1.96 sigma (0.871 sigma for Gaussian noise).
    "xy": keep points inside the percentiles of x and of y separately (our reading of the paper's
    code, kept for side-by-side comparison).  "none": no trimming.
    """
    lo_p, hi_p = TRIM_PCT
    if trim == "none":
        return np.ones_like(x)
    if trim == "xy":
        qx = np.percentile(x, TRIM_PCT, axis=1)
        qy = np.percentile(y, TRIM_PCT, axis=1)
        keep = (x >= qx[0][:, None]) & (x <= qx[1][:, None])
        keep &= (y >= qy[0][:, None]) & (y <= qy[1][:, None])
        return keep.astype(np.float64)
    if trim == "residuals":
        slope, intercept, *_ = _ols(x, y, np.ones_like(x))
        resid = y - slope[:, None] * x - intercept[:, None]
        q = np.percentile(resid, (lo_p, hi_p), axis=1)
        keep = (resid >= q[0][:, None]) & (resid <= q[1][:, None])
        return keep.astype(np.float64)
    raise ValueError(f"trim must be one of {TRIM_MODES}, got {trim!r}")


def _fit_rows(x, y, trim: str):
    """Trimmed fit of every row of x, y (shape (B, m)); returns arrays of shape (B,)."""
    return _ols(x, y, _trim_mask(x, y, trim))


def fit_line(x, y, *, trim: str = "residuals") -> dict:
    """Least-squares line y = slope * x + intercept after 2.5-97.5 % trimming (see `_trim_mask`).

    Returns {"slope", "intercept", "r2", "resid_std", "n_fit"}; values are NaN where undefined
    (fewer than 3 points, or x constant).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must be 1-D of one length, got shapes {x.shape} and {y.shape}")
    if x.size == 0:
        raise ValueError("x and y are empty; expected at least one point")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("x and y must be finite; found NaN or inf")
    if trim not in TRIM_MODES:
        raise ValueError(f"trim must be one of {TRIM_MODES}, got {trim!r}")
    slope, intercept, r2, resid_std, sw = _fit_rows(x[None], y[None], trim)
    return {
        "slope": float(slope[0]),
        "intercept": float(intercept[0]),
        "r2": float(r2[0]),
        "resid_std": float(resid_std[0]),
        "n_fit": int(sw[0]),
    }


# -------------------------------------------------------------------------------------------------
# 3. Per-image rule indicators (their mean over images is the metric; bootstrap = resampled mean)
# -------------------------------------------------------------------------------------------------


def conforming(x, y, k: float, bin_width: float = BIN_WIDTH) -> np.ndarray:
    """The paper's binned rule check: y and k x fall in the same bin floor(v / 0.05)."""
    return np.floor(np.asarray(y) / bin_width) == np.floor(k * np.asarray(x) / bin_width)


def within(x, y, k: float, tol: float) -> np.ndarray:
    """|y / (k x) - 1| <= tol, written as |y - k x| <= tol |k x| so that x = 0 needs no division."""
    kx = k * np.asarray(x)
    return np.abs(np.asarray(y) - kx) <= tol * np.abs(kx)


# -------------------------------------------------------------------------------------------------
# 4. The report
# -------------------------------------------------------------------------------------------------

# Order of the metrics in reports and tables.
METRICS = (
    "measurable_rate",
    "coarse_rate",
    "conforming_pct",
    "within_1pct",
    "within_5pct",
    "within_10pct",
    "slope",
    "intercept",
    "r2",
    "bias",
    "bias_k1",
    "resid_std",
)


def _num(v) -> float | None:
    """A JSON-safe float: NaN/inf (undefined metric) becomes None."""
    v = float(v)
    return v if math.isfinite(v) else None


def _ci(samples: np.ndarray, level: float) -> list | None:
    s = samples[np.isfinite(samples)]
    if s.size == 0:
        return None
    a = 100 * (1 - level) / 2
    lo, hi = np.percentile(s, (a, 100 - a))
    return [float(lo), float(hi)]


def _stats(x, y, coarse, k: float, trim: str, idx=None) -> dict[str, np.ndarray]:
    """Every metric except measurable_rate, for each row of resample indices idx (B, m).

    idx None means the data as given (one row).  Shares are means of per-image indicators; the fit
    metrics come from `_fit_rows` on the resampled scatter.
    """
    if idx is None:
        idx = np.arange(x.size)[None]
    xs, ys = x[idx], y[idx]
    out = {
        "coarse_rate": coarse[idx].mean(axis=1),
        "conforming_pct": 100 * conforming(xs, ys, k).mean(axis=1),
    }
    for tol in WITHIN_TOLS:
        out[f"within_{round(tol * 100)}pct"] = 100 * within(xs, ys, k, tol).mean(axis=1)
    slope, intercept, r2, resid_std, _ = _fit_rows(xs, ys, trim)
    out.update(slope=slope, intercept=intercept, r2=r2, resid_std=resid_std)
    # Fit error of the paper: distance of the fitted line from the rule line y = k x.
    out["bias"] = np.abs(slope - k) + np.abs(intercept)
    # The same with k = 1 for every task, as the paper's code computed it.
    out["bias_k1"] = np.abs(slope - 1.0) + np.abs(intercept)
    return out


def _check_bootstrap(n_boot, level, trim) -> None:
    """Raise ValueError naming a bad bootstrap option (rule_report, paired_difference)."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 0:
        raise ValueError(f"n_boot must be an int >= 0, got {n_boot!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if trim not in TRIM_MODES:
        raise ValueError(f"trim must be one of {TRIM_MODES}, got {trim!r}")


def rule_report(
    task,
    features: Mapping,
    ok,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    trim: str = "residuals",
    level: float = 0.95,
) -> dict:
    """Rule metrics of a set of measured images, each with a percentile-bootstrap CI.

    Args:
        task: a RuleTask (uses .name, .k, .feature_names, .rule_xy, .coarse_ok).
        features: measured features, dict of (n,) float arrays (task.measure's first output).
        ok: (n,) bool, the image was measurable (task.measure's second output).
        n_boot: bootstrap resamples (0: no CIs).  seed: seeds the resampling.
        trim: "residuals" (default), "xy" or "none"; see `_trim_mask`.
        level: CI level (0.95).

    Returns a JSON-serialisable dict: "task", "k", "n" (images), "n_measurable", "n_fit" (points
    left after trimming), "trim", "n_boot", "seed", and for each name in METRICS a dict
    {"value": float | None, "ci": [lo, hi] | None} (None where undefined, e.g. no measurable image).

    The bootstrap resamples the measurable images with replacement (B rows of m indices at once,
    in memory-bounded blocks) and recomputes every metric on each row; measurable_rate, a mean of
    n Bernoulli flags, is resampled exactly as Binomial(n, p_hat) / n.  CIs are percentile
    intervals.  The biases are absolute values, so near a perfect fit their point values and CIs
    sit slightly above 0 (|noise| > 0); read them against the CIs of slope and intercept.
    """
    _check_bootstrap(n_boot, level, trim)
    k = float(task.k)
    x, y, coarse = measured_xy(task, features, ok)
    ok = np.asarray(ok)
    n, m = ok.size, x.size

    rng = np.random.default_rng(seed)
    p_hat = m / n
    report = {
        "task": str(getattr(task, "name", "")),
        "k": k,
        "n": int(n),
        "n_measurable": int(m),
        "n_fit": 0,
        "trim": trim,
        "n_boot": int(n_boot),
        "seed": int(seed),
        "measurable_rate": {
            "value": p_hat,
            "ci": _ci(rng.binomial(n, p_hat, n_boot) / n, level) if n_boot else None,
        },
    }
    if m == 0:  # nothing measurable: the other metrics are undefined, not an error
        report.update({name: {"value": None, "ci": None} for name in METRICS[1:]})
        return report

    point = _stats(x, y, coarse, k, trim)
    report["n_fit"] = int(_trim_mask(x[None], y[None], trim).sum())
    boot = {name: [] for name in point}
    rows_per_block = max(1, _BLOCK_ELEMENTS // m)
    for start in range(0, n_boot, rows_per_block):
        idx = rng.integers(0, m, size=(min(rows_per_block, n_boot - start), m))
        for name, v in _stats(x, y, coarse, k, trim, idx).items():
            boot[name].append(v)
    for name in METRICS[1:]:
        ci = _ci(np.concatenate(boot[name]), level) if n_boot else None
        value = _num(point[name][0])
        report[name] = {"value": value, "ci": ci if value is not None else None}
    return report


def paired_difference(
    task,
    base: tuple[Mapping, np.ndarray],
    other: tuple[Mapping, np.ndarray],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    trim: str = "residuals",
    level: float = 0.95,
) -> dict:
    """Each rule metric of `other` minus that of `base`, with a paired-bootstrap CI.

    `base` and `other` are (features, ok) of the same n images drawn twice from the same noise, e.g.
    unguided and guided samples of the same seed (rulelib.mitigation.guidance.scale_sweep): image i
    of both
    sets starts from the same x_T.  The bootstrap therefore resamples image indices i (the same
    indices for both sets) and recomputes both sets' metrics on the measurable images among them;
    the shared noise cancels out of the difference, so its CI is narrower than the two separate
    CIs would suggest.  A CI that excludes 0 is a difference the guidance made, not a noise draw.

    Returns {"n", "n_boot", "seed", and for each name in METRICS {"value": other - base, "ci"}}.
    """
    _check_bootstrap(n_boot, level, trim)
    k = float(task.k)
    sets = []
    for features, ok in (base, other):
        x, y, coarse = measured_xy(task, features, ok)
        ok = _as_ok(ok, None)
        sets.append((ok, np.cumsum(ok) - 1, x, y, coarse))
    n = sets[0][0].size
    if sets[1][0].size != n:
        raise ValueError(
            f"paired sets must have the same number of images, got {n} and {sets[1][0].size}"
        )

    def metrics_of(idx):
        """{metric: other - base} on the images idx (indices into 0..n-1, repeats allowed)."""
        values = []
        for ok, pos, x, y, coarse in sets:
            sel = idx[ok[idx]]
            v = {"measurable_rate": np.array([ok[idx].mean()])}
            if sel.size:
                v |= _stats(x, y, coarse, k, trim, pos[sel][None])
            values.append(v)
        return {
            m: float(values[1][m][0] - values[0][m][0])
            if m in values[0] and m in values[1]
            else math.nan
            for m in METRICS
        }

    point = metrics_of(np.arange(n))
    rng = np.random.default_rng(seed)
    boot = [metrics_of(rng.integers(0, n, n)) for _ in range(n_boot)]
    out = {"n": int(n), "n_boot": int(n_boot), "seed": int(seed), "trim": trim}
    for m in METRICS:
        value = _num(point[m])
        ci = _ci(np.array([b[m] for b in boot]), level) if n_boot else None
        out[m] = {"value": value, "ci": ci if value is not None else None}
    return out


# -------------------------------------------------------------------------------------------------
# 5. The paper's numbers, the "ours vs paper" table, the scatter figure
# -------------------------------------------------------------------------------------------------

# Paper section 3 (unguided DDPM at the paper's epochs), in the units of rule_report.  "train" is
# the paper's own measurement of its training images, "generated" of its samples.  Coarse rate of A:
# 1 violation in 3000 samples.  Measurable rates: the paper's detector dropped about 3/4 of the
# generated images of B-D and about 4 in 10 training images of B.
PAPER = {
    "A": {
        "train": {"conforming_pct": 95.02},
        "generated": {
            "n": 3000,
            "coarse_rate": 1 - 1 / 3000,
            "conforming_pct": 75.53,
            "within_1pct": 1.8,
            "within_5pct": 9.4,
            "bias_k1": 0.17,
            "resid_std": 0.014,
        },
    },
    "B": {
        "train": {"measurable_rate": 0.6, "conforming_pct": 97.22},
        "generated": {
            "measurable_rate": 0.25,
            "conforming_pct": 80.99,
            "bias_k1": 0.073,
            "resid_std": 0.013,
        },
    },
    "C": {
        "train": {"conforming_pct": 99.51},
        "generated": {
            "measurable_rate": 0.25,
            "conforming_pct": 49.27,
            "bias_k1": 0.209,
            "resid_std": 0.026,
        },
    },
    "D": {
        "train": {"conforming_pct": 98.63},
        "generated": {
            "measurable_rate": 0.25,
            "conforming_pct": 69.67,
            "bias_k1": 0.42,
            "resid_std": 0.030,
        },
    },
}
# The paper's numbers that it gives only roughly ("about", "≈"); tables prefix them with ≈.
PAPER_APPROX = {("B", "train", "measurable_rate")} | {
    (t, "generated", m) for t in "ABCD" for m in ("measurable_rate", "bias_k1", "resid_std")
}

_LABELS = {
    "measurable_rate": "measurable %",
    "coarse_rate": "coarse rule %",
    "conforming_pct": "rule-conforming % (bins 0.05)",
    "within_1pct": "within ±1 % of rule",
    "within_5pct": "within ±5 % of rule",
    "within_10pct": "within ±10 % of rule",
    "slope": "slope (trimmed fit)",
    "intercept": "intercept",
    "r2": "R²",
    "bias": "bias, true k",
    "bias_k1": "bias, k = 1 (paper's code)",
    "resid_std": "residual std",
}
_PERCENT_RATES = ("measurable_rate", "coarse_rate")  # shown in % in tables


def _fmt(v, name: str, paper: bool = False) -> str:
    """Ours with fixed decimals per metric; the paper's numbers with the digits it printed."""
    if v is None:
        return "–"
    if name in _PERCENT_RATES:
        v = 100 * v
    if paper:
        return f"{v:.4g}"
    if name in _PERCENT_RATES or name.endswith("pct"):
        return f"{v:.2f}"
    return f"{v:.3f}" if name in ("slope", "r2") else f"{v:.4f}"


def format_table(
    reports: Mapping, paper: Mapping | None = PAPER, *, kind: str = "generated", ci: bool = True
) -> str:
    """Markdown table, one row per metric and for each task the columns "ours" and "paper".

    reports: {task or task name: rule_report(...)}.  kind: which of the paper's numbers to set
    beside ours, "generated" (samples) or "train" (training images).  ci: print [lo, hi] after ours.
    Rates are printed in %.  Paper cells are "–" where the paper gives no number, "≈" where it
    gives one only roughly.
    """
    if kind not in ("generated", "train"):
        raise ValueError(f"kind must be 'generated' or 'train', got {kind!r}")
    if not reports:
        raise ValueError("reports is empty; expected {task name: rule_report(...)}")
    names = [str(getattr(t, "name", t)) for t in reports]
    header = "| metric | " + " | ".join(f"{t} ours | {t} paper" for t in names) + " |"
    lines = [header, "|---|" + "---:|---:|" * len(names)]
    for metric in METRICS:
        cells = []
        for t, rep in zip(names, reports.values()):
            entry = rep.get(metric) or {}
            ours = _fmt(entry.get("value"), metric)
            if ci and entry.get("ci") is not None:
                lo, hi = entry["ci"]
                ours += f" [{_fmt(lo, metric)}, {_fmt(hi, metric)}]"
            p = (paper or {}).get(t, {}).get(kind, {}).get(metric)
            pcell = _fmt(p, metric, paper=True)
            if p is not None and (t, kind, metric) in PAPER_APPROX:
                pcell = "≈" + pcell
            cells += [ours, pcell]
        lines.append(f"| {_LABELS[metric]} | " + " | ".join(cells) + " |")
    counts = [
        f"{rep.get('n_measurable', '–')} / {rep.get('n', '–')} | –" for rep in reports.values()
    ]
    lines.append("| images measured / total | " + " | ".join(counts) + " |")
    return "\n".join(lines)


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
