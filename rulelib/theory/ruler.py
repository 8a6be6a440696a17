"""The ruler in the theory: a measured rule error is the model's error seen through a ruler.

An image's rule residual as measured, O = y_hat - k x_hat, is the model's residual M = y - k x (the
error of what was drawn) plus the ruler's D (the error of reading it back).  Derived in sympy:

    decomposition    Var O = Var M + Var D + 2 Cov(M, D): observed^2 = model^2 + floor^2 when the
                     ruler's error is independent of the model's (cross term 0), for the fitted line
                     too (its residuals are a linear projection); model = sqrt(observed^2 - floor^2)
    trim_factors     the 2.5-97.5 % residual trim keeps sd * c: c = 0.871 for a normal, 0.95 for a
                     uniform; trimmed stds add in squares exactly when both parts are normal
    plateau_meaning  observed(n) = sqrt(m(n)^2 + floor^2): a fitted plateau c is sqrt(m_inf^2 +
                     floor^2), the model's constant is sqrt(c^2 - floor^2), and a constant below
                     the floor lifts the plateau only by m_inf^2 / (2 floor)

Checked on rendered images (``simulate``): the task draws each scene with its dependent feature
moved so that y = k x + e, e ~ N(0, sigma^2) (``rulelib.tasks.base.RuleTask.scene``'s
``dependent_scale``), the images are measured with a ruler, and the measured residual std is
compared with sqrt(model^2 + floor^2): model from the scenes' true features, floor from the same
scenes drawn without error and measured with the same ruler.

Rulers (``rulelib.tasks.rulers``): "exact" is ``task.measure`` (the project's sub-pixel fits),
"paper" the paper's OpenCV contours, each read with its own trimming (``rulers.TRIM``).
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from rulelib.metrics.rules import TRIM_MODES, TRIM_PCT, fit_rows
from rulelib.tasks import rulers

__all__ = [
    "decomposition",
    "trim_factors",
    "plateau_meaning",
    "available_rulers",
    "model_error_scale",
    "simulate",
]


# ----------------------------------------------------------------------------------------------
# 1. Derivations (sympy)
# ----------------------------------------------------------------------------------------------


def decomposition() -> dict:
    """Var(M + D) from the moments of M (model) and D (ruler), and what it gives when inverted.

    E (M + D)^2 = E M^2 + E D^2 + 2 E M D with E M D = Cov(M, D) + E M E D, so
        Var(M + D) = Var M + Var D + 2 rho sd M sd D                                         (i)
    rho = corr(M, D) = 0 for a ruler whose error is independent of the model's (the premise):
    observed^2 = model^2 + floor^2.  For the residuals of a fitted line the same holds image by
    image before the expectation: residuals are P r with P the projection off span(1, x), linear,
    so ||P(m + d)||^2 = ||P m||^2 + ||P d||^2 + 2 <P m, P d>, and E <P M, P D> = (n - 2) Cov for
    i.i.d. pairs: the (n - 2)-normalised residual variances add as in (i) (in prose; the fit on
    the measured x_hat instead of x moves P by the ruler's x error, a second-order effect).
    Inverting: model = sqrt(observed^2 - floor^2), d model / d observed = observed / model, which
    grows without bound as the model's part goes to 0: an observed error near the floor says
    little about the model's.
    Returns {"var_sum" (i), "cross", "independent" (rho = 0), "model" (inverse), "sensitivity",
    "symbols"}."""
    M, D = sp.symbols("M D", real=True)
    mM, mD = sp.symbols("m_M m_D", real=True)
    sM, sD, obs, floor = sp.symbols("sigma_M sigma_D observed floor", positive=True)
    rho = sp.symbols("rho", real=True)
    cov = rho * sM * sD
    poly = sp.Poly(sp.expand((M + D) ** 2), M, D)
    moment = {(2, 0): sM**2 + mM**2, (0, 2): sD**2 + mD**2, (1, 1): cov + mM * mD}
    second = sum(c * moment[m] for m, c in poly.terms())
    var_sum = sp.expand(second - (mM + mD) ** 2)
    model = sp.sqrt(obs**2 - floor**2)
    return {
        "var_sum": var_sum,
        "cross": sp.expand(var_sum - sM**2 - sD**2),
        "independent": var_sum.subs(rho, 0),
        "model": model,
        "sensitivity": sp.simplify(sp.diff(model, obs)),
        "symbols": {"sigma_M": sM, "sigma_D": sD, "rho": rho, "observed": obs, "floor": floor},
    }


def trim_factors() -> dict:
    """The residual trim of the reported statistic (keep the residuals inside their 2.5-97.5
    percentiles, ``rulelib.metrics.rules.TRIM_PCT``) multiplies a residual sd by a factor that
    depends on the residuals' law:
        normal:  the cut is at +-q, q = Phi^-1(0.975); c^2 = int_-q^q z^2 phi / int_-q^q phi
                 = 1 - 2 q phi(q) / (2 Phi(q) - 1)  (c = 0.871)
        uniform: the cut is at +-0.95 of the half-width; c = 0.95
    A sum of two independent normals is normal, so its trimmed sd is c sqrt(model^2 + floor^2) =
    sqrt(trimmed model^2 + trimmed floor^2): the decomposition carries to the trimmed statistic
    exactly for normal parts.  For parts of different laws it is off by at most the spread of the
    factors: c_normal^2 / c_uniform^2 = 0.84 on the floor's share when a normal model error
    dominates the trim and the floor is uniform (a pixel quantisation), and by more for a
    heavy-tailed floor (the trim removes a ruler's outliers from the floor alone, not from the sum).
    (The paper ruler's trim of x and y separately, "xy", drops the ends of the range instead of the
    large residuals: its factor is near 1 while the errors are small against the range.)
    Returns {"normal_c2" (closed form in q), "normal_c" (value), "uniform_c" (value), "q"}."""
    z, q = sp.symbols("z q", positive=True)
    phi = sp.exp(-(z**2) / 2) / sp.sqrt(2 * sp.pi)
    c2 = sp.simplify(sp.integrate(z**2 * phi, (z, -q, q)) / sp.integrate(phi, (z, -q, q)))
    lo, hi = TRIM_PCT
    q_val = sp.sqrt(2) * sp.erfinv(sp.Rational(int(round(10 * (hi - lo))), 1000))
    u = sp.symbols("u", positive=True)
    cut = 1 - sp.Rational(int(round(10 * lo)), 500)  # U[-1, 1]: the 2.5 % point is at -0.95
    var_u_trim = sp.integrate(u**2, (u, -cut, cut)) / (2 * cut)
    return {
        "normal_c2": c2,
        "normal_c": float(sp.sqrt(c2.subs(q, q_val)).evalf()),
        "uniform_c": float(sp.sqrt(var_u_trim / sp.Rational(1, 3)).evalf()),
        "q": float(q_val.evalf()),
    }


def plateau_meaning() -> dict:
    """What a plateau fitted to observed errors means when the ruler has a floor.

    Model error m(n)^2 = m_inf^2 + A n^-beta (a constant plus a decaying part), observed
    o(n) = sqrt(m(n)^2 + f^2).  In u = n^-beta:  o = c + A u / (2 c) + O(u^2), c = sqrt(m_inf^2 +
    f^2): a fit c + a n^-b to the observed errors finds the plateau c (>= f always), b = beta,
    a = A / (2c) as n grows.  The model's constant is m_inf = sqrt(c^2 - f^2); a plateau whose
    interval reaches down to f does not exclude m_inf = 0.  For m_inf << f the plateau is
    f + m_inf^2 / (2 f) + ...: a model constant below the floor lifts the plateau only to second
    order.  Returns {"series_n" (o in u to first order), "plateau", "model_constant",
    "lift_small" (c - f to second order in m_inf), "symbols"}."""
    m_inf, f, A, u = sp.symbols("m_inf f A u", positive=True)
    o = sp.sqrt(m_inf**2 + A * u + f**2)
    series = sp.series(o, u, 0, 2).removeO()
    c = sp.sqrt(m_inf**2 + f**2)
    lift = sp.series(c - f, m_inf, 0, 3).removeO()
    return {
        "series_n": sp.simplify(series),
        "plateau": c,
        "model_constant": sp.sqrt(sp.Symbol("c", positive=True) ** 2 - f**2),
        "lift_small": sp.simplify(lift),
        "symbols": {"m_inf": m_inf, "f": f, "A": A, "u": u},
    }


# ----------------------------------------------------------------------------------------------
# 2. Simulation on rendered images
# ----------------------------------------------------------------------------------------------


def available_rulers(task) -> tuple[str, ...]:
    """The rulers that can measure ``task`` (``rulelib.tasks.rulers``: "exact" always, "paper"
    for tasks A-D)."""
    return tuple(r for r in rulers.RULERS if rulers.supports(task, r))


def model_error_scale(task, base: dict, e: np.ndarray, min_scale: float = 0.05) -> np.ndarray:
    """The ``dependent_scale`` that moves each scene's y (``task.rule_xy``) from k x to k x + e.

    Every task's y is linear in its dependent feature (A: l2 h1, B: l2 h2, C: r2, D: l2), so a
    factor s on that feature gives y = s k x, and s = 1 + e / (k x).  Factors are floored at
    ``min_scale`` (positive, as the task requires); the task then clips the feature to its bounds,
    and the realised error is read back from the scene's truth, not assumed."""
    x, y = (np.asarray(v, dtype=np.float64) for v in task.rule_xy(base))
    e = np.asarray(e, dtype=np.float64)
    if e.shape != x.shape:
        raise ValueError(f"e has shape {e.shape}; expected one error per scene, {x.shape}")
    return np.maximum(1.0 + e / y, min_scale)


def _resid_std_rows(x, y, idx, trim):
    return fit_rows(x[idx], y[idx], trim)[3]


def _value_ci(point, boot):
    if not np.isfinite(boot).any():
        return {"value": float(point), "ci": [float("nan")] * 2}
    lo, hi = np.nanpercentile(boot, [2.5, 97.5])
    return {"value": float(point), "ci": [float(lo), float(hi)]}


def simulate(
    task,
    sigmas,
    *,
    n: int = 2000,
    seed: int = 0,
    ruler: str = "exact",
    trims=None,
    n_boot: int = 400,
) -> list[dict]:
    """For each sigma: draw ``n`` scenes of ``task`` whose y carries a model error e ~ N(0,
    sigma^2) (the same standard normals for every sigma, so the rows are comparable), render them,
    measure them with ``ruler``, and compare the measured residual std of the line fit (untrimmed,
    and trimmed as that ruler's metrics are: ``trims`` default ("none", ``rulers.TRIM[ruler]``))
    with sqrt(model^2 + floor^2).

    model: the residual std of the same fit on the scenes' true features (the error that was
    put in); floor: that of the same scenes drawn without error (sigma = 0), measured with the
    same ruler.  All three on the images measurable in both sets, bootstrapped jointly
    (95 % percentile intervals); scenes the task clipped to its bounds are left out (their model
    error is the clip).  Per sigma and trim a row: sigma, trim, n_used, ok_rate,
    clipped_rate, and {"value", "ci"} for model, floor, observed, predicted (root sum of squares),
    ratio (observed / predicted), ratio_sum (observed / (model + floor), the nearest alternative)
    and corr_cross (corr of the model's and the ruler's residual parts: the premise, 0)."""
    sigmas = np.asarray(sigmas, dtype=np.float64)
    if sigmas.ndim != 1 or len(sigmas) == 0 or np.any(sigmas < 0) or not np.isfinite(sigmas).all():
        raise ValueError(f"sigmas must be a 1-D list of finite values >= 0, got {sigmas!r}")
    rulers.check_ruler(ruler)
    trims = ("none", rulers.TRIM[ruler]) if trims is None else tuple(trims)
    bad = [t for t in trims if t not in TRIM_MODES]
    if bad:
        raise ValueError(f"trims {bad} unknown; expected some of {TRIM_MODES}")
    if n < 20:
        raise ValueError(f"n={n!r} is too small for a line fit and its bootstrap; use n >= 20")
    k = float(task.k)
    base = task.scene(n, seed)
    f0, ok0 = rulers.measure(task, task.render(base), ruler)
    x0m, y0m = (np.asarray(v, dtype=np.float64) for v in task.rule_xy(f0))
    z = np.random.default_rng([seed, 1]).standard_normal(n)
    rng_boot = np.random.default_rng([seed, 2])
    rows = []
    for sigma in sigmas:
        p = task.scene(n, seed, dependent_scale=model_error_scale(task, base, sigma * z))
        xt, yt = (np.asarray(v, dtype=np.float64) for v in task.rule_xy(p))
        f, ok = rulers.measure(task, task.render(p), ruler)
        xm, ym = (np.asarray(v, dtype=np.float64) for v in task.rule_xy(f))
        # clipped scenes carry the clip, not e, as their model error (A and B clip a share of their
        # scenes for any factor, since the bounds bind at the rule itself): they are left out
        clipped = np.asarray(p["clipped"]) > 0
        use = np.flatnonzero(ok & ok0 & ~clipped)
        if len(use) < 20:
            raise RuntimeError(
                f"task {task.name}, ruler {ruler}, sigma {sigma}: only {len(use)} images measurable"
            )
        resample = rng_boot.integers(0, len(use), (n_boot, len(use)))
        idx = np.concatenate([np.arange(len(use))[None], resample])  # row 0: the point estimate
        xt, yt, xm, ym, x0u, y0u = (v[use] for v in (xt, yt, xm, ym, x0m, y0m))
        m_part = yt - k * xt
        d_part = (ym - k * xm) - m_part  # the ruler's part of the measured residual
        cross = np.full(len(idx), np.nan)
        if sigma > 0:
            mc = m_part[idx] - m_part[idx].mean(1, keepdims=True)
            dc = d_part[idx] - d_part[idx].mean(1, keepdims=True)
            cross = (mc * dc).mean(1) / np.sqrt((mc**2).mean(1) * (dc**2).mean(1))
        for trim in trims:
            model = _resid_std_rows(xt, yt, idx, trim)
            floor = _resid_std_rows(x0u, y0u, idx, trim)
            obs = _resid_std_rows(xm, ym, idx, trim)
            pred = np.sqrt(model**2 + floor**2)
            with np.errstate(invalid="ignore", divide="ignore"):
                stats = {
                    "model": model,
                    "floor": floor,
                    "observed": obs,
                    "predicted": pred,
                    "ratio": obs / pred,
                    "ratio_sum": obs / (model + floor),
                    "corr_cross": cross,
                }
            rows.append(
                {
                    "task": task.name,
                    "ruler": ruler,
                    "sigma": float(sigma),
                    "trim": trim,
                    "n": int(n),
                    "n_used": int(len(use)),
                    "ok_rate": float(ok.mean()),
                    "clipped_rate": float(clipped.mean()),
                    **{key: _value_ci(v[0], v[1:]) for key, v in stats.items()},
                }
            )
    return rows
