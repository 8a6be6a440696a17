"""Rule quantities of measured images: validation, the trimmed line fit, per-image indicators.

Units.  Lengths are in units of the canvas side W (the tasks return them so), which is what the
paper's bins of width 0.05 and its intercepts refer to.  Every task's fine rule is y = k x on the
scatter quantities of ``task.rule_xy`` (A: l1*h2 vs l2*h1, B: l1*h1 vs l2*h2, C: r1 vs r2, D: l1
vs l2; k = 1, 1, sqrt(2), 1.5).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

BIN_WIDTH = 0.05  # the paper's "rule-conforming %" bin width, in units of W
WITHIN_TOLS = (0.01, 0.05, 0.10)  # the paper's +-1 %, +-5 %, +-10 % ratio bands (Task A)
TRIM_PCT = (2.5, 97.5)  # the paper trims outliers to these percentiles before the line fit
TRIM_MODES = ("residuals", "xy", "none")

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


def fit_rows(x, y, trim: str):
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
    slope, intercept, r2, resid_std, sw = fit_rows(x[None], y[None], trim)
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
