"""Samplers of a denoiser and the rule-error metrics of what they generate.

sample                 probability-flow ODE (DDIM or Heun) or reverse SDE, final Tweedie step
rule_error             R = E(b_hat - f(a_hat))^2, its decomposition, bootstrap 95 % intervals
var_f                  Var f(a) under the model's law (quadrature)
w2_1d                  the 2-Wasserstein distance between two weighted 1-D laws (exact)
marginal_bound         the premises and value of the lower bound on R for independent patches
gaussian_law_rule_error  R of jointly Gaussian (a_hat, b_hat), in closed form
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rulelib.theory.twopatch import DTYPE, EpsFn, Rule, TwoPatchModel, s_sigma

__all__ = [
    "sample",
    "rule_error",
    "var_f",
    "w2_1d",
    "marginal_bound",
    "gaussian_law_rule_error",
]


def _check_times(times) -> np.ndarray:
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or len(times) < 2 or not np.all(np.diff(times) < 0) or times[-1] <= 0:
        raise ValueError(f"times must be a decreasing 1-D grid of positive numbers, got {times!r}")
    return times


@torch.no_grad()
def sample(
    eps_fn: EpsFn,
    n: int,
    shape: tuple[int, ...],
    times,
    *,
    method: str = "ode",
    seed: int = 0,
    device: str = "cpu",
) -> torch.Tensor:
    """Draw n samples of the given shape by integrating from t_max = times[0] to t_min = times[-1]
    and finishing with a Tweedie step x_0 = (x_t - sigma_t eps(x_t)) / s_t.

    method "ode": probability-flow ODE in its exponential-integrator (DDIM, eta = 0) form,
        x_{t'} = s_{t'} x0_hat + sigma_{t'} eps_hat,  x0_hat = (x_t - sigma_t eps_hat)/s_t
        (Song et al. 2021, DDIM eq. 12 -- exact Euler in (x/s, sigma/s)).
    method "heun": the same ODE, dy/dnu = eps(x) in y = x/s, nu = sigma/s, by Heun's second-order
        rule (two denoiser calls a step; EDM, Karras et al. 2022, Alg. 1): the first-order DDIM
        step converges slowly when a covariance eigenvalue is small (a sharp fine rule).
    method "sde": reverse SDE by ancestral steps, drawing x_{t'} from the forward posterior
        q(x_{t'} | x_t, x_0 = x0_hat) (Ho et al. 2020 eqs. 6-7, generalised to any grid).
    x_{t_max} ~ N(0, I) (the prior; s_{t_max} ~ e^{-t_max} is the approximation)."""
    if method not in ("ode", "heun", "sde"):
        raise ValueError(f"sampler method {method!r} is unknown; expected 'ode', 'heun' or 'sde'")
    times = _check_times(times)
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(n, *shape, generator=g, dtype=DTYPE, device=device)
    for t, t_next in zip(times[:-1], times[1:]):
        s, sig = s_sigma(t)
        s2, sig2 = s_sigma(t_next)
        eps = eps_fn(x, float(t))
        x0_hat = (x - sig * eps) / s
        if method == "ode":
            x = s2 * x0_hat + sig2 * eps
        elif method == "heun":
            y_pred = x / s + (sig2 / s2 - sig / s) * eps  # Euler predictor in (y, nu)
            eps2 = eps_fn(s2 * y_pred, float(t_next))
            x = s2 * (x / s + (sig2 / s2 - sig / s) * 0.5 * (eps + eps2))
        else:
            a_ts = s / s2  # s_{t|t'}
            var_ts = sig**2 - a_ts**2 * sig2**2  # sigma^2_{t|t'}
            mean = (a_ts * sig2**2 / sig**2) * x + (s2 * var_ts / sig**2) * x0_hat
            std = math.sqrt(max(var_ts * sig2**2 / sig**2, 0.0))
            x = mean + std * torch.randn(x.shape, generator=g, dtype=DTYPE, device=device)
    s, sig = s_sigma(times[-1])
    return (x - sig * eps_fn(x, float(times[-1]))) / s


# ----------------------------------------------------------------------------------------------
# 6. Rule-error metrics with bootstrap confidence intervals
# ----------------------------------------------------------------------------------------------


def _as_np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)


def rule_error(
    a_hat,
    b_hat,
    rule: Rule,
    *,
    var_b: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """R = E(b_hat - f(a_hat))^2 and its decomposition, each {"value", "ci": [lo, hi]} (bootstrap
    95 %, percentile).  R = Var b_hat + Var f(a_hat) + (E b_hat - E f(a_hat))^2 - 2 Cov(b_hat,
    f(a_hat)), so for independent patches (cov = 0) R is the sum of the first three.

    Keys: R, R_over_var_b (if ``var_b``, the variance of b in the training law, is given),
    var_b_hat, var_f_a_hat, bias2, cov (Cov(b_hat, f(a_hat))), corr (corr(a_hat, b_hat), whose
    sign is the coarse trend), mean_ratio_error (E|b_hat/a_hat - gamma|, ratio rules only), n,
    and coarse_trend: +1 or -1 when the CI of corr excludes 0 (the sign of the trend), else 0."""
    a, b = _as_np(a_hat), _as_np(b_hat)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(
            f"a_hat and b_hat must be 1-D of equal length >= 2, got {a.shape}, {b.shape}"
        )
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("a_hat and b_hat must be finite (a sampler diverged?)")
    fa = np.asarray(rule(a), dtype=np.float64)

    def stats(idx):
        aa, bb, ff = a[idx], b[idx], fa[idx]
        out = {
            "R": ((bb - ff) ** 2).mean(-1),
            "var_b_hat": bb.var(-1),
            "var_f_a_hat": ff.var(-1),
            "bias2": (bb.mean(-1) - ff.mean(-1)) ** 2,
            "cov": ((bb - bb.mean(-1, keepdims=True)) * (ff - ff.mean(-1, keepdims=True))).mean(-1),
            "corr": _corr(aa, bb),
        }
        if var_b is not None:
            out["R_over_var_b"] = out["R"] / var_b
        if rule.kind == "ratio":
            out["mean_ratio_error"] = np.abs(bb / aa - rule.p("gamma", 1.0)).mean(-1)
        return out

    point = stats(np.arange(len(a)))
    rng = np.random.default_rng(seed)
    boot = stats(rng.integers(0, len(a), size=(n_boot, len(a))))
    res = {
        k: {"value": float(v), "ci": [float(x) for x in np.percentile(boot[k], [2.5, 97.5])]}
        for k, v in point.items()
    }
    res["n"] = len(a)
    lo, hi = res["corr"]["ci"]
    res["coarse_trend"] = 1 if lo > 0 else (-1 if hi < 0 else 0)
    return res


def _corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ac = a - a.mean(-1, keepdims=True)
    bc = b - b.mean(-1, keepdims=True)
    return (ac * bc).mean(-1) / np.sqrt((ac**2).mean(-1) * (bc**2).mean(-1))


def var_f(model: TwoPatchModel, n_grid: int = 100000) -> float:
    """Var f(a) under the model's law of a (quadrature).  2 Var f(a) is the R of a generator with
    independent patches and exact marginals, the limit of the lower bound of
    `symbolic.independent_rule_error_bound` as the marginals' W2 errors go to 0."""
    nodes, logw = model.latent_grid(n_grid)
    w = logw.exp()
    fb = model.rule(nodes)
    m = (w * fb).sum()
    return float((w * (fb - m) ** 2).sum())


def w2_1d(x, y, x_weights=None, y_weights=None) -> float:
    """W2 between the laws sum_i x_weights_i delta(x_i) and sum_j y_weights_j delta(y_j) (uniform
    weights when None): in 1-D the monotone (quantile) coupling is optimal, so
    W2^2 = int_0^1 (F_x^-1(p) - F_y^-1(p))^2 dp, exact for these piecewise-constant quantiles."""
    x, y = _as_np(x).ravel(), _as_np(y).ravel()
    wx = np.full(len(x), 1 / len(x)) if x_weights is None else _as_np(x_weights).ravel()
    wy = np.full(len(y), 1 / len(y)) if y_weights is None else _as_np(y_weights).ravel()
    if len(wx) != len(x) or len(wy) != len(y) or wx.min() < 0 or wy.min() < 0:
        raise ValueError("weights must be non-negative, one per point")
    ix, iy = np.argsort(x), np.argsort(y)
    cx, cy = np.cumsum(wx[ix]) / wx.sum(), np.cumsum(wy[iy]) / wy.sum()
    p = np.union1d(cx, cy)
    dp = np.diff(np.concatenate([[0.0], p]))
    mid = p - dp / 2  # inside each cell both quantile functions are constant
    qx = x[ix][np.minimum(np.searchsorted(cx, mid), len(x) - 1)]
    qy = y[iy][np.minimum(np.searchsorted(cy, mid), len(y) - 1)]
    return float(np.sqrt((dp * (qx - qy) ** 2).sum()))


def marginal_bound(a_hat, b_hat, model: TwoPatchModel, n_grid: int = 20000) -> dict:
    """The lower bound on R for a generator with independent patches (its premise):
        R >= (sigma_f - eps_b)_+^2 + (sigma_f - eps_f)_+^2,
    sigma_f = sd f(a) (= sd b) under the data law, eps_b = W2(law b_hat, law b),
    eps_f = W2(law f(a_hat), law f(a)) (`symbolic.independent_rule_error_bound`).  The data law is
    the model's quadrature.  Also returns R_product = Var b_hat + Var f(a_hat) + bias^2, the R of
    the product of the generated marginals (= E over all pairs (i, j) of (b_hat_i - f(a_hat_j))^2),
    which is what R equals in expectation when the patches are independent; the bound holds for
    R_product exactly (the empirical laws are laws), for the paired R up to its sampling error."""
    a, b = _as_np(a_hat), _as_np(b_hat)
    fa = np.asarray(model.rule(a), dtype=np.float64)
    nodes, logw = model.latent_grid(n_grid)
    fb, w = _as_np(model.rule(nodes)), _as_np(logw.exp())
    sigma = math.sqrt(float((w * (fb - (w * fb).sum()) ** 2).sum()))
    eps_b, eps_f = w2_1d(b, fb, None, w), w2_1d(fa, fb, None, w)
    bound = max(sigma - eps_b, 0.0) ** 2 + max(sigma - eps_f, 0.0) ** 2
    r_prod = b.var() + fa.var() + (b.mean() - fa.mean()) ** 2
    return {
        "sigma_f": sigma,
        "eps_b": eps_b,
        "eps_f": eps_f,
        "bound": bound,
        "R_product": float(r_prod),
        "R": float(((b - fa) ** 2).mean()),
    }


def gaussian_law_rule_error(mean, cov, rule: Rule) -> float:
    """R = E(b_hat - f(a_hat))^2 for (a_hat, b_hat) ~ N(mean, cov), f linear or quadratic:
    r = b_hat - c0 - c1 a_hat - c2 a_hat^2 has E r = m_b - c0 - c1 m_a - c2 (m_a^2 + V_a) and
    Var r = Var(b_hat - c1 a_hat) + c2^2 (4 m_a^2 V_a + 2 V_a^2) - 4 c2 m_a Cov(b_hat - c1 a_hat,
    a_hat) (Gaussian moments: E z^3 = 0, E z^4 = 3 V^2).  The affine class's DSM optimum samples
    this law (with the fitted mean and covariance) as t_min -> 0."""
    if rule.kind not in ("linear", "quadratic"):
        raise ValueError(f"rule kind {rule.kind!r}: expected 'linear' or 'quadratic'")
    (ma, mb), C = [float(x) for x in _as_np(mean)], _as_np(cov)
    if C.shape != (2, 2):
        raise ValueError(f"cov shape {C.shape} must be (2, 2)")
    if rule.kind == "linear":
        c0, c1, c2 = rule.p("c0", 0.0), rule.p("gamma", 1.0), 0.0
    else:
        c0, c1, c2 = rule.p("c0", 0.0), rule.p("c1", 0.0), rule.p("c2", 1.0)
    va, vb, cab = C[0, 0], C[1, 1], C[0, 1]
    mean_r = mb - c0 - c1 * ma - c2 * (ma**2 + va)
    var_lin = vb - 2 * c1 * cab + c1**2 * va
    var_r = var_lin + c2**2 * (4 * ma**2 * va + 2 * va**2) - 4 * c2 * ma * (cab - c1 * va)
    return float(var_r + mean_r**2)
