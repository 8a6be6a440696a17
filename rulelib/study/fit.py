"""The plateau fit: error(images) = c + a * images^(-b), with a confidence interval on c.

"Is the fine-rule error constant?" becomes "is the asymptote c above zero, and how far above".
The fit is weighted least squares (scipy.optimize.curve_fit with each point's standard error, taken
from its bootstrap CI as (hi - lo) / (2 * 1.96)), with c >= 0, a >= 0 and 0 < b <= B_MAX (a power
law that decays; b is capped because with few points a very steep decay and a plateau cannot be
told apart).  The CI on c is a parametric bootstrap: each point is redrawn from N(fitted value,
its standard error), the curve refitted, and the percentile interval of the refitted c taken
(refits that fail are counted, not hidden).  The images axis is scaled by its first value inside
the fit, so a is the excess error over c at the first checkpoint.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

B_MAX = 3.0
Z95 = 1.959963984540054


def plateau(x, c, a, b):
    """c + a * x^(-b)."""
    return c + a * np.power(x, -b)


def _jac(x, c, a, b):
    """Partial derivatives of c + a x^-b in (c, a, b): 1, x^-b, -a x^-b ln x."""
    p = np.power(x, -b)
    return np.stack([np.ones_like(x), p, -a * p * np.log(x)], axis=1)


def _fit(x, y, sigma, p0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        popt, _ = curve_fit(plateau, x, y, p0=p0, sigma=sigma, absolute_sigma=True,
                            bounds=([0.0, 0.0, 1e-6], [np.inf, np.inf, B_MAX]), jac=_jac,
                            maxfev=20000)  # fmt: skip
    return popt


def fit_plateau(images, error, se=None, *, n_boot: int = 1000, seed: int = 0,
                level: float = 0.95) -> dict:  # fmt: skip
    """Fit error = c + a (images / images[0])^(-b); returns a JSON-serialisable dict with "c",
    "a", "b", "c_ci" (bootstrap percentile CI), "n_points", "n_boot_ok" (refits that converged),
    "last" (the error at the last point) and "chi2" (weighted residual sum of squares).

    se: standard error of each point (None: equal weights, and the bootstrap redraws the
    residuals instead of normal noise).  Needs at least 4 points (3 parameters + 1).
    """
    x = np.asarray(images, dtype=np.float64)
    y = np.asarray(error, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"images and error must be 1-D of one length, got {x.shape}, {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    if se is not None:
        se = np.asarray(se, dtype=np.float64)
        if se.shape != x.shape:
            raise ValueError(f"se must have the shape of images {x.shape}, got {se.shape}")
        keep &= np.isfinite(se) & (se > 0)
    x, y = x[keep], y[keep]
    se = se[keep] if se is not None else None
    if len(x) < 4:
        raise ValueError(f"need at least 4 finite points to fit c + a x^-b, got {len(x)}")
    if np.any(x <= 0):
        raise ValueError("images must be positive")
    order = np.argsort(x)
    x, y = x[order], y[order]
    se = se[order] if se is not None else None
    xs = x / x[0]
    p0 = [max(float(y.min()) * 0.9, 0.0), max(float(y[0] - y.min()), 1e-9), 0.5]
    popt = _fit(xs, y, se, p0)
    fitted = plateau(xs, *popt)
    rng = np.random.default_rng(seed)
    resid = y - fitted
    cs = []
    for _ in range(n_boot):
        if se is not None:
            yb = fitted + rng.normal(0.0, se)
        else:
            yb = fitted + rng.choice(resid, size=len(y), replace=True)
        try:
            cs.append(_fit(xs, yb, se, popt)[0])
        except (RuntimeError, ValueError):
            continue
    a = (1 - level) / 2
    ci = [float(np.quantile(cs, a)), float(np.quantile(cs, 1 - a))] if cs else None
    w = 1.0 / se**2 if se is not None else np.ones_like(y)
    return {
        "model": "error = c + a * (images / images_0)^(-b)",
        "c": float(popt[0]), "a": float(popt[1]), "b": float(popt[2]), "c_ci": ci,
        "images_0": float(x[0]), "n_points": int(len(x)), "n_boot": int(n_boot),
        "n_boot_ok": len(cs), "last": float(y[-1]), "chi2": float((w * resid**2).sum()),
        "weights": "1 / se^2 from the bootstrap CIs" if se is not None else "equal",
    }  # fmt: skip


def se_from_ci(ci) -> float:
    """Standard error from a 95 % CI [lo, hi]: (hi - lo) / (2 * 1.96); NaN when missing."""
    if ci is None or ci[0] is None or ci[1] is None:
        return float("nan")
    return (float(ci[1]) - float(ci[0])) / (2 * Z95)
