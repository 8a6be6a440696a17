"""Standard errors of the scene-model fits: the Gauss-Newton covariance at the optimum.

``rect_covariance`` / ``disk_covariance`` take the Jacobian of the fitted profiles
(``rulelib.tasks.fit``) at the optimum, or the one ``fit_rects`` / ``fit_disk`` left in their
``state`` (evaluated within one small step of it), and give PROFILE_REUSE s^2 (J^T J)^-1
(``_covariance``); ``se_of`` the standard error of a linear combination of the parameters,
``rect_se`` those of a rectangle's lengths and ``feature_se`` the per-feature standard errors a
measurement returns (with the floor MODEL_SE_PX added in quadrature).
"""

from __future__ import annotations

import numpy as np

from rulelib.tasks import render
from rulelib.tasks.estimate import SIGMA_MIN
from rulelib.tasks.fit import _disk_terms, _rects_terms, free_params

SIZE = render.SIZE
PROFILE_REUSE = 2.0  # each pixel's noise enters one column and one row profile element

# Standard error floor (px) for what the scene model leaves out: blur of a disk (not modelled),
# colour drift across an object, anti-aliasing of the generator.  Added in quadrature to the
# Gauss-Newton standard error; chosen so that the error of each feature lies within 2 standard
# errors for >= 90 % of images under the mild degradations (rulelib.tasks.degrade.LEVELS).
MODEL_SE_PX = 0.05


def _covariance(J, res, data, model):
    """Gauss-Newton covariance PROFILE_REUSE s^2 (J^T J)^-1 and the residual's RMS per image.

    s^2 = |r|^2 / (R - p) over the R profile elements that carry ink (data or model above 1e-3;
    the empty rest of the canvas has neither signal nor residual).  The column and row profiles
    are sums of the same coverage map, so the 2S residuals hold about S independent ones: the
    usual covariance is multiplied by PROFILE_REUSE = 2 (calibrated on perturbed images by
    tests/test_measure.py: the true error lies within 2 standard errors for >= 90 % of them).
    """
    p = J.shape[2]
    live = (np.abs(data) > 1e-3) | (np.abs(model) > 1e-3)
    dof = np.maximum(live.sum(1) - p, 1)
    s2 = (res * res).sum(1) / dof
    jtj = J.transpose(0, 2, 1) @ J
    jtj += (1e-9 * np.einsum("npp->np", jtj).max(1) + 1e-12)[:, None, None] * np.eye(p)[None]
    cov = PROFILE_REUSE * s2[:, None, None] * np.linalg.inv(jtj)
    return cov, np.sqrt((res * res).sum(1) / np.maximum(live.sum(1), 1))


def rect_covariance(P, Q, th, ties=(), split=None, fix_sigma=False, state=None):
    """Covariance (n, 6K, 6K) of the rectangles' parameters th (n, K, 6) fitted by ``fit_rects``
    (same ``ties``, ``split``, ``fix_sigma``), and the profile residual's RMS (n,).

    A tied parameter shares the variance of its source; a fixed blur gets variance 0.
    ``state``: the dict filled by ``fit_rects`` (its last Jacobian and model, within one small
    step of th: the same covariance to ~0.5 %), else the model is evaluated at th.
    """
    P = np.asarray(P, dtype=np.float64).reshape(len(Q), -1)
    data = np.concatenate([P, Q], 1).astype(np.float64, copy=False)
    n, K, _ = th.shape
    pairs, keep = free_params(K, ties, fix_sigma)
    if state is None:
        model, J = _rects_terms(th, split, pairs, keep)
    else:
        model, J = state["model"], state["J"]
    # A blur width at its floor SIGMA_MIN is an active bound (a sharp render): there the profiles
    # hardly depend on it (phi(u / sigma) vanishes off the edges' cells) and a free sigma would
    # only inflate the edges' variances through a near-degenerate column; the covariance is
    # taken with it fixed (variance 0), as for a known blur.
    floor = [
        (i, np.flatnonzero(th[:, j // 6, 5] <= SIGMA_MIN * (1 + 1e-9)))
        for i, j in enumerate(keep)
        if j % 6 == 5
    ]
    if any(len(rows) for _, rows in floor):
        J = np.array(J)
        for i, rows in floor:
            J[rows, :, i] = 0.0
    sub, rms = _covariance(J, model - data, data, model)
    for i, rows in floor:
        sub[rows, i, :] = sub[rows, :, i] = 0.0
    full = np.arange(6 * K)
    for src, dst in pairs:
        full[dst] = src
    pos = {k: i for i, k in enumerate(keep)}
    idx = np.array([pos.get(int(full[i]), -1) for i in range(6 * K)])
    cov = np.zeros((n, 6 * K, 6 * K))
    has = idx >= 0
    cov[:, has[:, None] & has[None, :]] = sub[:, idx[has]][:, :, idx[has]].reshape(n, -1)
    return cov, rms


def disk_covariance(P, Q, fit, state=None):
    """Covariance (n, 4, 4) of a disk fit's (cx, cy, r, m) and the profile residual's RMS (n,).
    ``state``: the dict filled by ``fit_disk`` (as ``rect_covariance``'s), else evaluated."""
    data = np.concatenate([P, Q], 1).astype(np.float64, copy=False)
    if state is None:
        model, J = _disk_terms(np.stack([fit[k] for k in ("cx", "cy", "r", "m")], 1))
    else:
        model, J = state["model"], state["J"]
    return _covariance(J, model - data, data, model)


def se_of(cov, grad) -> np.ndarray:
    """Standard error sqrt(g^T C g) of a linear combination g (p,) of the parameters."""
    g = np.asarray(grad, dtype=np.float64)
    return np.sqrt(np.maximum(np.einsum("p,npq,q->n", g, cov, g), 0.0))


def feature_se(se_px: dict, resid) -> dict:
    """Per-feature standard errors se_<name> (units of W), their largest se_px (pixels) and the
    worst object's RMS profile residual ``resid`` (coverage units)."""
    se_px = {k: np.hypot(v, MODEL_SE_PX) for k, v in se_px.items()}
    out = {f"se_{k}": v / SIZE for k, v in se_px.items()}
    out["se_px"] = np.max(np.stack(list(se_px.values())), 0)
    out["resid"] = resid
    return out


def rect_se(f) -> dict:
    """Standard errors (px) of a rectangle's left edge, width, height, bottom and centre height."""
    c = f["cov"]
    return {
        "x0": np.sqrt(np.maximum(c[:, 0, 0], 0.0)),
        "w": se_of(c, [-1, 1, 0, 0]),
        "h": se_of(c, [0, 0, -1, 1]),
        "y0": np.sqrt(np.maximum(c[:, 2, 2], 0.0)),
        "side": se_of(c, [-0.5, 0.5, -0.5, 0.5]),
    }
