"""Does the error decay to zero or to a plateau?  Several curve shapes, each with a profile-
likelihood CI on its plateau c, a likelihood-ratio test and AIC, the ruler's floor entered
explicitly, and the fit's power for the real design by simulation.

Shapes (x = images / images_0, images_0 the first fitted point):

    power        c + a x^-b          (c = 0: a power law decaying to zero)
    exponential  c + a e^(-(x-1)/τ)  (c = 0: an exponential decaying to zero)

Each point is Gaussian with its standard error (from its bootstrap CI), so -2 log L = χ² + const
and the fit is weighted least squares (scipy.optimize.least_squares, bounds c, a >= 0,
0 < b <= B_MAX, τ > 0).  The measurement's own floor f (the ruler's residual std on perfect
images) adds in quadrature: observed(n) = sqrt(model(n)² + f²), so c is the model's plateau, not
the ruler's.  f is one number, or one per point: the floor measured on each checkpoint's own
samples, whose cleanliness, and so whose measurement noise, changes with training.

* Profile likelihood CI on c: χ²_prof(c) = min over the other parameters at fixed c; the 95 % CI
  is {c >= 0 : χ²_prof(c) - χ²_min <= 3.84} (Wilks; at the boundary c = 0 this is conservative).
* Likelihood-ratio test of "decays to zero" (c = 0) against "decays to a plateau" (c > 0):
  Δχ² = χ²(c = 0) - χ²_min; c = 0 is on the boundary, so the null distribution is the 50:50 mix of
  χ²_0 and χ²_1 (Self & Liang 1987): p = P(χ²_1 > Δχ²) / 2.  AIC = χ² + 2k for each model.
* Power (``power``): the real design (its images and standard errors), the true curve the
  data's own decay (the c = 0 fit's a and b or τ) lifted onto a plateau c_true, noise redrawn
  N(0, se') with each point's relative error kept (se' = se x truth / the c = 0 curve: a
  bootstrap CI of a residual std scales with it); the share of replicates whose LRT rejects
  c = 0 at 5 %, with its exact binomial CI (c_true = 0 gives the false-positive rate).
  (Refitting the data with c held at c_true instead makes a plateau above the data a flat
  line, which a power law with b -> 0 mimics.)
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import least_squares
from scipy.stats import chi2, norm

from rulelib.metrics.bootstrap import share_ci

B_MAX = 3.0
CHI2_1_95 = float(chi2.ppf(0.95, 1))  # 3.84
PROFILE_POINTS = 60  # grid of c for the profile; its crossings are then bisected to 1e-7 of it
SHAPES = ("power", "exponential")


def curve(shape: str, x, c, a, s):
    """c + a x^-s (power) or c + a e^(-(x - 1) / s) (exponential)."""
    x = np.asarray(x, dtype=np.float64)
    if shape == "power":
        return c + a * np.power(x, -s)
    if shape == "exponential":
        return c + a * np.exp(-(x - 1.0) / s)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def observed(shape, x, c, a, s, floor: float = 0.0):
    """What the ruler reports: the model's error and the ruler's floor added in quadrature."""
    return np.sqrt(curve(shape, x, c, a, s) ** 2 + floor**2)


def _fit(shape, x, y, se, floor, c_fixed=None):
    """(chi2, params c, a, s) of the weighted least-squares fit; c held at c_fixed if given."""
    span = float(x[-1])
    lo = [0.0, 0.0, 1e-3 if shape == "power" else 1e-3]
    hi = [np.inf, np.inf, B_MAX if shape == "power" else 100.0 * span]
    y_min = float(y.min())
    starts = []
    for s0 in (0.3, 0.8, 1.5, 2.5) if shape == "power" else (0.1 * span, 0.3 * span, span):
        c0 = 0.5 * y_min if c_fixed is None else c_fixed
        starts.append([c0, max(float(y[0]) - c0, 1e-6), s0])
    best = None
    for p0 in starts:
        if c_fixed is None:
            res = _lsq(lambda p: (observed(shape, x, *p, floor) - y) / se, p0, lo, hi)
            p = res.x
        else:
            res = _lsq(lambda q: (observed(shape, x, c_fixed, *q, floor) - y) / se, p0[1:],
                       lo[1:], hi[1:])  # fmt: skip
            p = np.array([c_fixed, *res.x])
        chi = float(np.sum(((observed(shape, x, *p, floor) - y) / se) ** 2))
        if best is None or chi < best[0]:
            best = (chi, p)
    return best


def _lsq(fun, p0, lo, hi):
    p0 = np.clip(np.asarray(p0, dtype=np.float64), np.array(lo) + 1e-12,
                 np.where(np.isfinite(hi), np.array(hi) - 1e-12, np.inf))  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return least_squares(fun, p0, bounds=(lo, hi), method="trf", max_nfev=4000)


def _check(images, error, se, floor=0.0, floor_se=0.0):
    """The points as sorted float arrays, those without a finite value or standard error dropped;
    ``floor`` and its standard error ``floor_se`` (one for all, or one per point) follow their
    points."""
    x = np.asarray(images, dtype=np.float64)
    y = np.asarray(error, dtype=np.float64)
    se = np.asarray(se, dtype=np.float64)
    f, fse = (np.asarray(v, dtype=np.float64) for v in (floor, floor_se))
    if x.ndim != 1 or x.shape != y.shape or se.shape != x.shape \
            or f.shape not in ((), x.shape) or fse.shape not in ((), x.shape):  # fmt: skip
        raise ValueError(f"images, error, se (and a per-point floor and its se) must be 1-D of "
                         f"one length, got {x.shape}, {y.shape}, {se.shape}, {f.shape}, "
                         f"{fse.shape}")  # fmt: skip
    keep = np.isfinite(x) & np.isfinite(y) & np.isfinite(se) & (se > 0)
    x, y, se = x[keep], y[keep], se[keep]
    if len(x) < 4:
        raise ValueError(f"need at least 4 points with a standard error to fit a plateau "
                         f"(3 parameters + 1), got {len(x)}")  # fmt: skip
    if np.any(x <= 0):
        raise ValueError("images must be positive")
    o = np.argsort(x)
    f, fse = (v[keep][o] if v.ndim else v for v in (f, fse))
    if not (np.all(np.isfinite(f)) and np.all(f >= 0) and np.all(np.isfinite(fse))):
        raise ValueError(f"a floor must be finite and >= 0, got {np.atleast_1d(f).tolist()}")
    return x[o], y[o], se[o], f, fse


def fit_shape(shape: str, images, error, se, *, floor=0.0, floor_se=0.0, level: float = 0.95,
              grid_points: int | None = None) -> dict:  # fmt: skip
    """One shape fitted with and without a plateau: c, a, s, the profile CI on c, χ², AIC of
    both models, Δχ² and the LRT's p (see the module docstring); JSON-serialisable.  ``floor``:
    the ruler's floor, one for all points or one per point (each checkpoint's own samples);
    ``floor_se``: its standard error, which widens each point's to first order,
    se² + (f se_f / y)² (d observed / d f = f / observed).  The floor and the error are read from
    the same images, and their errors correlate positively, so adding them is conservative."""
    x0, y, se, floor, floor_se = _check(images, error, se, floor, floor_se)
    se = np.sqrt(se**2 + (floor * floor_se / y) ** 2)
    x = x0 / x0[0]
    chi_min, p = _fit(shape, x, y, se, floor)
    chi_zero, pz = _fit(shape, x, y, se, floor, c_fixed=0.0)
    if chi_zero < chi_min:  # c = 0 is inside the free fit's space: take the better optimum
        chi_min, p = chi_zero, pz
    thr = float(chi2.ppf(level, 1))
    # the profile: c from 0 to past the largest error, refined near the crossing
    cs = np.linspace(0.0, float(y.max()), grid_points or PROFILE_POINTS)
    prof = np.array([_fit(shape, x, y, se, floor, c_fixed=c)[0] for c in cs])
    inside = prof - chi_min <= thr
    lo = 0.0 if inside[0] else float(cs[np.argmax(inside)])
    hi_i = len(cs) - 1 - int(np.argmax(inside[::-1]))
    hi = float(cs[min(hi_i + 1, len(cs) - 1)]) if hi_i < len(cs) - 1 else float(cs[-1])
    lo, hi = _refine(shape, x, y, se, floor, chi_min + thr, cs, inside, lo, hi)
    delta = max(chi_zero - chi_min, 0.0)
    return {
        "shape": shape,
        "model": ("c + a (images / images_0)^-b" if shape == "power"
                  else "c + a exp(-(images / images_0 - 1) / tau)"),  # fmt: skip
        "floor": float(floor) if floor.ndim == 0 else floor.tolist(),
        "floor_se": float(floor_se) if floor_se.ndim == 0 else floor_se.tolist(),
        "observed": "sqrt(model^2 + floor^2)",
        "c": float(p[0]), "a": float(p[1]), ("b" if shape == "power" else "tau"): float(p[2]),
        "c_ci": [lo, hi], "ci": "profile likelihood, chi2_1 95 %",
        "chi2": chi_min, "chi2_zero": chi_zero, "dof": int(len(x) - 3),
        "aic": chi_min + 2 * 3, "aic_zero": chi_zero + 2 * 2,
        "lrt_delta_chi2": delta, "lrt_p": float(0.5 * chi2.sf(delta, 1)) if delta > 0 else 0.5,
        "images_0": float(x0[0]), "n_points": int(len(x)), "last": float(y[-1]),
    }  # fmt: skip


def _refine(shape, x, y, se, floor, target, cs, inside, lo, hi):
    """Bisect the profile's crossings of χ²_min + 3.84 between grid points."""

    def prof(c):
        return _fit(shape, x, y, se, floor, c_fixed=c)[0] - target

    def bisect(a, b):
        fa = prof(a)
        for _ in range(25):
            m = 0.5 * (a + b)
            fm = prof(m)
            if (fm <= 0) == (fa <= 0):
                a, fa = m, fm
            else:
                b = m
        return 0.5 * (a + b)

    step = cs[1] - cs[0]
    if lo > 0:
        lo = bisect(lo, lo - step)
    if hi < cs[-1]:
        hi = bisect(hi - step, hi)
    return float(lo), float(hi)


def fit_all(images, error, se, *, floor=0.0, floor_se=0.0) -> dict:
    """Every shape (``SHAPES``) on the same points; and which the AIC prefers."""
    fits = {s: fit_shape(s, images, error, se, floor=floor, floor_se=floor_se) for s in SHAPES}
    aics = {f"{s} {'plateau' if p else 'zero'}": fits[s]["aic" if p else "aic_zero"]
            for s in SHAPES for p in (True, False)}  # fmt: skip
    return {"shapes": fits, "aic_best": min(aics, key=aics.get), "aic": aics}


def power(
    images,
    se,
    template: dict,
    c_true: float,
    *,
    reps: int = 200,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """How often the LRT rejects "decays to zero" at ``alpha`` when the truth has plateau
    ``c_true``: the design (images, se) of the real data; the true curve c_true + the decay of
    ``template``'s shape fitted with c = 0 to the template's own points ("points": (images,
    error, se)); noise N(0, se)."""
    shape, floor = template["shape"], template["floor"]
    x0, y0, se0, _, _ = _check(*template["points"])
    xt = x0 / x0[0]
    _, p = _fit(shape, xt, y0, se0, floor, c_fixed=0.0)
    xd, _, sed, _, _ = _check(images, np.ones(len(images)), se)
    truth = observed(shape, xd / x0[0], c_true, p[1], p[2], floor)
    sed = sed * truth / observed(shape, xd / x0[0], 0.0, p[1], p[2], floor)  # relative errors kept
    rng = np.random.default_rng(seed)
    hits = 0
    xd_s = xd / xd[0]
    for _ in range(reps):
        y = truth + rng.normal(0.0, sed)
        chi_zero = _fit(shape, xd_s, y, sed, floor, c_fixed=0.0)[0]
        d = max(chi_zero - _fit(shape, xd_s, y, sed, floor)[0], 0.0)
        hits += bool(d > 0 and 0.5 * chi2.sf(d, 1) < alpha)
    return {"c_true": float(c_true), "shape": shape, "floor": float(floor), "reps": int(reps),
            "detected": hits / reps, "detected_ci": share_ci(hits, reps),
            "alpha": alpha}  # fmt: skip


def min_detectable_difference(
    se_a: float, se_b: float, *, alpha: float = 0.05, power_: float = 0.8, paired_corr: float = 0.0
) -> float:
    """The smallest true difference a two-sided z-test at ``alpha`` detects with ``power_``:
    (z_(1-alpha/2) + z_power) * SE of the difference, SE² = se_a² + se_b² - 2 ρ se_a se_b
    (ρ: the correlation of paired estimates, 0 for independent ones)."""
    sd = np.sqrt(max(se_a**2 + se_b**2 - 2 * paired_corr * se_a * se_b, 0.0))
    return float((norm.ppf(1 - alpha / 2) + norm.ppf(power_)) * sd)


# -------------------------------------------------------------------------------------------------
# The summary's table: every shape, on each length-like curve, with the power for its design

MIN_MEASURABLE = 0.95  # a point is fitted only where this share of its samples is measurable
LOOSE_MEASURABLE = 0.8  # the first study's gate: fitted too, as a sensitivity check (no power)
POWER_C = (0.0, 0.002, 0.003, 0.005)
POWER_REPS = 200  # replicates per power entry: its exact CI is about +-7 points at 50 %
# The exact ruler's floor on generated samples (residual std that measurement alone adds, per
# task), entered in the fit in quadrature beside floor 0: its per-image standard errors propagated
# through y - k x on the analytic study's U-Net samples (rulelib.metrics.measurement_floor on
# results/analytic/<task>/unet_samples.npz: B 0.0015 [0.0015, 0.0016], C 0.0029 [0.0029, 0.0029]).
# Kept as a sensitivity check beside each checkpoint's own floor, which the summary measures on
# the checkpoint's samples (the "floor per checkpoint" fit).
FLOORS: dict[str, float | None] = {"B": 0.0015, "C": 0.0029}


def curve_fits(points, *, task: str, floors=None, power_reps: int | None = None,
               seed: int = 0) -> dict:  # fmt: skip
    """fit_all at floor 0, at the task's ruler floor (``FLOORS``) and, where every fitted point
    carries one, at each point's own floor ("floor per checkpoint": the exact ruler's floor on
    that checkpoint's samples, rulelib.metrics.measurement_floor); and the power table (POWER_C,
    each shape, floor 0) for the design of ``points`` [(images, error, se, measurable[, floor,
    floor_se])]; points below MIN_MEASURABLE are left out (their count is recorded)."""
    floors = FLOORS if floors is None else floors
    points = [tuple(p) + (None,) * (6 - len(p)) for p in points]
    used = [(i, e, s, f, fs) for i, e, s, m, f, fs in points
            if m is not None and m >= MIN_MEASURABLE]  # fmt: skip
    out = {"min_measurable": MIN_MEASURABLE, "n_left_out": len(points) - len(used),
           "images": [int(p[0]) for p in used]}  # fmt: skip
    loose = [(i, e, s) for i, e, s, m, _, _ in points if m is not None and m >= LOOSE_MEASURABLE]
    if len(loose) >= 4:
        out[f"at {LOOSE_MEASURABLE:.0%} measurable"] = {
            "images": [int(i) for i, _, _ in loose],
            "fits": fit_all(*map(np.array, zip(*loose))),
        }
    if len(used) < 4:
        return {**out, "note": f"fewer than 4 points with >= {MIN_MEASURABLE:.0%} of the samples "
                "measurable: no fit"}  # fmt: skip
    x, y, se = (np.array([p[j] for p in used], dtype=np.float64) for j in range(3))
    fl = [0.0] + ([float(floors[task])] if floors.get(task) else [])
    out["fits"] = {f"floor {f:g}": fit_all(x, y, se, floor=f) for f in fl}
    own = [p[3] for p in used]
    if all(f is not None for f in own):
        own_se = np.array([p[4] or 0.0 for p in used], dtype=np.float64)
        out["fits"]["floor per checkpoint"] = fit_all(
            x, y, se, floor=np.array(own, dtype=np.float64), floor_se=own_se
        )
    reps = POWER_REPS if power_reps is None else power_reps
    out["power"] = [power(x, se, {"shape": s, "floor": 0.0, "points": (x, y, se)}, c,
                          reps=reps, seed=seed) for s in SHAPES for c in POWER_C]  # fmt: skip
    return out
