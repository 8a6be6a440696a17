"""Sub-pixel fits of rectangles and disks to an object's coverage profiles (column and row sums).

Coordinates in pixels, y up; P is the column profile, Q the row profile (over y-cells).
Rectangles are pixel-integrated, Gaussian-blurred boxes (``box_profile``; exact for sharp edges
as the blur width goes to 0), disks the exact area of the disk inside each column / row strip of
the canvas (``disk_profiles``; a disk cut by the canvas edge is fitted, not biased like a
centroid).  Both carry an ink-depth factor m.  The fits are damped Gauss-Newton, vectorised
over the batch, from the closed-form starts of ``rulelib.tasks.estimate``; they can leave their
last Jacobian for ``rulelib.tasks.uncertainty`` (the parameters' covariance at the optimum).

Speed (the same numbers to rounding, checked by tests/test_measure.py): the normal cdf and pdf
of the box profiles are evaluated only within 8.3 blur widths of an edge (``_psi``), both edges
and both axes of a rectangle in one call; a disk inside the canvas's edges has the column / row
strips of full chords (``_chord_areas``: one arcsin per grid point instead of the general
corner areas' three).  Early stops (``_settled``, ``_cost_settled``): a fit with an (almost)
zero residual stops after a step below FAST_STEP px (sharp renders: one step from their
closed-form start), and a fit whose residual alone is wanted (the other-shape check of
``rulelib.tasks.measure``) once a small step lowers it by less than its ``cost_tol``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from rulelib.tasks import render
from rulelib.tasks.estimate import SIGMA_MIN, edges_init, sigma_start

SIZE = render.SIZE
_SQRT2PI = np.sqrt(2.0 * np.pi)
PRIOR_WEIGHT = 3.0  # weight of the blur prior of thin rectangles (profile units per px of sigma)


# ----------------------------------------------------------------------------------------------
# Profile models and fits (coordinates in pixels, y up; profiles P over columns, Q over y-cells)


_T_FAR = 8.3  # |t| beyond which Phi(t) is 0 or 1 and phi(t) is 0 to within 1e-16


def _psi(t):
    """Psi(t) = t Phi(t) + phi(t), the integral of the normal cdf, and Phi, phi themselves.

    The special functions (ndtr costs ~15-30 ns a value) are evaluated only where |t| < _T_FAR:
    beyond, Phi is the step H(t), phi is 0 and Psi is t^+ to within 1e-16.  A box's grid points
    lie mostly that far from both edges (sharp or mildly blurred boxes).
    """
    near = np.abs(t) < _T_FAR
    if near.mean() > 0.6:  # mostly near (a wide blur): the masking would cost more than it saves
        cdf = ndtr(t)
        pdf = np.exp(-0.5 * t * t) / _SQRT2PI
        return t * cdf + pdf, cdf, pdf
    cdf = (t > 0).astype(np.float64)
    pdf = np.zeros_like(t)
    tn = t[near]
    cdf[near] = ndtr(tn)
    pdf[near] = np.exp(-0.5 * tn * tn) / _SQRT2PI
    return t * cdf + pdf, cdf, pdf


def _box_profile_free(a, b, sigma, size):
    grid = np.arange(size + 1, dtype=np.float64)
    s = sigma[:, None]
    # both edges in one evaluation (n, 2, S + 1), then the pixel differences
    p, c, f = _psi((grid - np.stack([a, b], 1)[:, :, None]) / s[:, :, None])
    p, c, f = (x[..., 1:] - x[..., :-1] for x in (p, c, f))
    return s * (p[:, 0] - p[:, 1]), -c[:, 0], c[:, 1], f[:, 0] - f[:, 1]


def box_profile(a, b, sigma, size: int = SIZE):
    """Pixel integrals of a box [a, b] blurred by a Gaussian of std sigma, and their derivatives.

    ox_j = sigma [Psi((j+1-a)/s) - Psi((j-a)/s) - Psi((j+1-b)/s) + Psi((j-b)/s)] (the blurred box
    integrated over [j, j+1]), Psi(t) = t Phi(t) + phi(t); d/da, d/db use Psi' = Phi and
    d/dsigma uses d(s Psi(u/s))/ds = phi(u/s).  The blur reflects at the canvas edges (the
    boxes mirrored about 0 and S are added, as scipy's default "reflect" mode does), so a box
    touching the edge keeps its mass.  As sigma -> 0 this is the exact overlap of [a, b] with each
    pixel.  Returns value, d/da, d/db, d/dsigma, each (n, size).
    """
    v, da, db, ds = _box_profile_free(a, b, sigma, size)
    near = np.flatnonzero((a < 8 * sigma) | (b > size - 8 * sigma))  # mirrors reach the canvas
    if len(near):
        an, bn, sn = a[near], b[near], sigma[near]
        for lo, hi in ((-bn, -an), (2 * size - bn, 2 * size - an)):  # mirrored boxes
            v2, da2, db2, ds2 = _box_profile_free(lo, hi, sn, size)
            v[near] += v2
            da[near] -= db2
            db[near] -= da2
            ds[near] += ds2
    return v, da, db, ds


def _lm_solve(J, r, lam=1e-3):
    """One damped Gauss-Newton step per image: (J^T J + lam diag) delta = -J^T r."""
    Jt = J.transpose(0, 2, 1)
    jtj = Jt @ J  # batched matmul: faster than einsum here
    jtr = Jt @ r[..., None]
    diag = jtj.reshape(len(J), -1)[:, :: J.shape[2] + 1]  # a view of the diagonals
    diag += lam * diag + 1e-9
    return -np.linalg.solve(jtj, jtr)[..., 0]


def _rect_terms(th, split=None, out=None):
    """Profiles of one rectangle and their Jacobian w.r.t. th (n, 6) = x0, x1, y0, y1, m, sigma.

    Model: P_j = m H ox_j, Q_i = m Wd oy_i with ox = box_profile(x0, x1, sigma), oy likewise,
    H = sum_i oy_i and Wd = sum_j ox_j (so a box cut by the canvas edge is modelled exactly).
    With ``split`` (n,) the column profile is taken separately over the y-cells below and above
    the split (P_lo, P_hi with H_lo + H_hi = H), which keeps a low object under a tall one visible.
    Returns (model (n, R), J (n, R, 6)): R = 2S, [P | Q], or with a split R = 3S, [P_lo | P_hi | Q].
    ``out``: an (n, R, 6) array (a view) to write J into.
    """
    x0, x1, y0, y1, m, sig = th.T
    n = len(th)
    # both axes in one call (2n rows): half the calls on twice the rows
    prof = box_profile(np.concatenate([x0, y0]), np.concatenate([x1, y1]), np.tile(sig, 2))
    (ox, oy), (ox_a, oy_a), (ox_b, oy_b), (ox_s, oy_s) = (np.split(v, 2) for v in prof)
    mm = m[:, None]
    oys = np.stack([oy, oy_a, oy_b, oy_s], 1)  # (n, 4, S)
    if split is None:
        band_sums = [oys.sum(2)]  # (n, 4): the sums over every y-cell
    else:
        low = (np.arange(SIZE)[None, :] < np.asarray(split)[:, None]).astype(np.float64)
        lo_sums = (oys @ low[:, :, None])[..., 0]
        band_sums = [lo_sums, oys.sum(2) - lo_sums]
    R = (len(band_sums) + 1) * SIZE
    model = np.empty((n, R))
    J = np.empty((n, R, 6)) if out is None else out
    for b, sums in enumerate(band_sums):
        sl = slice(b * SIZE, (b + 1) * SIZE)
        H, H_a, H_b, H_s = (sums[:, i : i + 1] for i in range(4))
        mH = mm * H
        model[:, sl] = mH * ox
        J[:, sl, 0] = mH * ox_a
        J[:, sl, 1] = mH * ox_b
        J[:, sl, 2] = (mm * H_a) * ox
        J[:, sl, 3] = (mm * H_b) * ox
        J[:, sl, 4] = H * ox
        J[:, sl, 5] = mm * (H_s * ox + H * ox_s)
    Wd = ox.sum(1)[:, None]
    sl = slice(R - SIZE, R)
    model[:, sl] = mm * Wd * oy
    J[:, sl, 0] = mm * oy * ox_a.sum(1)[:, None]
    J[:, sl, 1] = mm * oy * ox_b.sum(1)[:, None]
    J[:, sl, 2] = mm * Wd * oy_a
    J[:, sl, 3] = mm * Wd * oy_b
    J[:, sl, 4] = Wd * oy
    J[:, sl, 5] = mm * (ox_s.sum(1)[:, None] * oy + Wd * oy_s)
    return model, J


def fit_rects(
    P,
    Q,
    th0,
    iters: int = 12,
    ties=(),
    split=None,
    fix_sigma=False,
    sigma_prior=None,
    state=None,
    cost_tol=None,
):
    """Fit K rectangles whose profiles add up to (P, Q), by damped Gauss-Newton.

    th0: (n, K, 6) initial x0, x1, y0, y1, m, sigma per rectangle.  ``ties``: pairs
    ((k1, p1), (k2, p2)) forcing parameter p2 of rectangle k2 to equal parameter p1 of rectangle
    k1 (task A: the shadow's top is the pole's bottom, the ground line; one blur for the image).
    ``split``: see ``_rect_terms``; then P is (n, 2, S), the column profiles below and above the
    split.  ``fix_sigma``: keep the blur widths of th0 (the blur of the image measured on a larger
    object; a thin blurred bar alone cannot tell its depth from its height).  ``sigma_prior``
    (n,): instead of fixing it, pull every sigma towards this value (NaN: not) with a weak penalty
    (PRIOR_WEIGHT (sigma - prior) as one more residual): it decides only where the profiles leave
    the blur undetermined.  Returns (n, K, 6).
    Images stop iterating once their edges' step is below STEP_TOL px, or below FAST_STEP px
    with an (almost) zero residual (``_settled``); the rest keep going.
    ``state``: pass a dict to receive, per image, the Jacobian "J" (n, R, p) of the free
    parameters (ties summed, without the prior rows) at the last evaluated point and the model
    there advanced to the final th along it, "model" (n, R) = model + J delta (first order; the
    last step is below STEP_TOL or FAST_STEP px), for ``uncertainty.rect_covariance`` (saves one
    evaluation of the model); images stopped by ``iters`` get both evaluated at their final th.
    ``cost_tol``: as ``fit_disk``'s.
    """
    P = np.asarray(P, dtype=np.float64).reshape(len(Q), -1)
    data = np.concatenate([P, Q], 1).astype(np.float64, copy=False)
    th = np.array(th0, dtype=np.float64)
    n, K, _ = th.shape
    for (k1, p1), (k2, p2) in ties:
        th[:, k2, p2] = th[:, k1, p1]
    pairs, keep = free_params(K, ties, fix_sigma)
    active = np.arange(n)
    for _ in range(iters):
        t = th[active]
        model, Jk = _rects_terms(t, None if split is None else split[active], pairs, keep)
        res, J = model - data[active], Jk
        if sigma_prior is not None:
            sp = np.asarray(sigma_prior, dtype=np.float64)[active]
            w = np.where(np.isnan(sp), 0.0, PRIOR_WEIGHT)  # NaN: no prior for that image
            rows = np.zeros((len(active), K, 6 * K))
            for k in range(K):
                rows[:, k, 6 * k + 5] = w
            J = np.concatenate([Jk, rows[:, :, keep]], 1)
            prior_res = w[:, None] * (t[:, :, 5] - np.nan_to_num(sp)[:, None])
            res = np.concatenate([res, prior_res], 1)
        step = np.zeros((len(active), 6 * K))
        step[:, keep] = _lm_solve(J, res)
        for src, dst in pairs:
            step[:, dst] = step[:, src]
        step = step.reshape(-1, K, 6)
        step[..., :4] = np.clip(step[..., :4], -0.5, 0.5)
        step[..., 5] = np.clip(step[..., 5], -0.2, 0.2)
        t = t + step
        t[..., 5] = np.clip(t[..., 5], SIGMA_MIN, 1.5)
        t[..., 4] = np.clip(t[..., 4], 0.05, 5.0)
        t[..., 1] = np.maximum(t[..., 1], t[..., 0] + 0.2)
        t[..., 3] = np.maximum(t[..., 3], t[..., 2] + 0.2)
        delta = (t - th[active]).reshape(-1, 6 * K)[:, keep]
        model = model + (Jk @ delta[:, :, None])[..., 0]  # first order at the new th
        moved = np.abs((t - th[active])[..., [0, 1, 2, 3, 5]]).max((1, 2))  # edges and blur
        edge_step = np.abs(step[..., :4]).max((1, 2))
        settled = _settled(edge_step, moved, model, data[active])
        if cost_tol is not None:
            r0, r1 = res[:, : data.shape[1]], model - data[active]
            settled |= _cost_settled(edge_step, r0, r1, cost_tol)
        if state is not None:
            _keep_state(state, n, active, settled, Jk, model)
        th[active] = t
        active = active[~settled]
        if len(active) == 0:
            break
    if state is not None and len(active):  # out of iterations: evaluate at the final th
        model, J = _rects_terms(th[active], None if split is None else split[active], pairs, keep)
        _keep_state(state, n, active, np.ones(len(active), bool), J, model)
    return th


STEP_TOL = 1e-3  # px: an image stops iterating once its step (edges, centre, radius) is below
# Fast stop: a step below FAST_STEP px whose linearised residual is below FAST_RESID of the
# data's energy.  There the problem has (almost) zero residual, where Gauss-Newton converges
# quadratically (|e_k+1| <= K |e_k|^2; the models are at most cubic in the parameters: m, the
# extents and their overlaps), so the error left after the step is ~K FAST_STEP^2 << STEP_TOL:
# sharp renders (quantisation is their only residual) stop after one step from their
# closed-form start instead of two.  Noisy or blurred images keep the STEP_TOL rule.
FAST_STEP, FAST_RESID = 0.02, 1e-4


def _settled(step_max, moved, model, data):
    """Which images stop iterating: step_max (m,) (edges, or centre and radius) below STEP_TOL,
    or the change of every length parameter (the blur width too: ``moved``, (m,) px) below
    FAST_STEP with the residual of the model at the new parameters (m, R) below FAST_RESID of
    the data's energy."""
    d = model - data
    small = (d * d).sum(1) <= FAST_RESID * (data * data).sum(1)
    return (step_max <= STEP_TOL) | ((moved <= FAST_STEP) & small)


COST_STEP = 0.05  # px: the largest step after which a fit may stop on its residual


def _cost_settled(step_max, res, res_new, cost_tol):
    """Images whose step, below COST_STEP px (step_max (m,)), lowers the squared residual |r|^2
    (res (m, R): before, res_new: after, to first order) by at most cost_tol of it: near the
    optimum Gauss-Newton's decrease shrinks quadratically with the step, so the residual (and
    the ``explained`` share it gives) is within about that share of its minimum while the
    parameters may still creep.  (A small decrease after a large step is no such sign: a poor
    start can stall the first steps.)"""
    before, after = (res * res).sum(1), (res_new * res_new).sum(1)
    return (step_max <= COST_STEP) & (before - after <= cost_tol * after)


def _keep_state(state, n, active, settled, J, model):
    """Store the Jacobian J (m, R, p) and model (m, R) of the settled ones of the active images
    (m,) of n in ``state``.  The first evaluation covers every image: its (fresh) arrays become
    the state's without a copy, and the rows of the images that go on iterating are overwritten
    when they settle (each image's last store wins: the same arrays as copying row by row)."""
    if "J" not in state:
        if len(active) == n:
            state["J"], state["model"] = J, model
            return
        state["J"] = np.empty((n,) + J.shape[1:])
        state["model"] = np.empty((n,) + model.shape[1:])
    state["J"][active[settled]] = J[settled]
    state["model"][active[settled]] = model[settled]


def free_params(K: int, ties=(), fix_sigma=False):
    """The free parameters of K rectangles (6 each): ``ties`` ((k1, p1), (k2, p2)) as index pairs
    (src, dst) into the 6K, and the indices ``keep`` of those fitted: all but the tied copies
    (and the blur widths when ``fix_sigma``)."""
    pairs = [(6 * k1 + p1, 6 * k2 + p2) for (k1, p1), (k2, p2) in ties]
    drop = [dst for _, dst in pairs] + ([6 * k + 5 for k in range(K)] if fix_sigma else [])
    return pairs, np.flatnonzero(~np.isin(np.arange(6 * K), drop))


def _rects_terms(th, split, pairs, keep):
    """Summed model (n, R) of K rectangles th (n, K, 6) and its Jacobian (n, R, p) in the free
    parameters ``keep`` (p,) of the 6K: the columns of each tied parameter added to its
    source's (``fit_rects``'s ``ties`` as index pairs).  The rectangles' Jacobians are written
    into one array (no concatenation); the free columns are taken out once."""
    n, K = th.shape[:2]
    J = np.empty((n, (2 if split is None else 3) * SIZE, 6 * K))
    model = _rect_terms(th[:, 0], split, out=J[:, :, :6])[0]
    for k in range(1, K):
        model = model + _rect_terms(th[:, k], split, out=J[:, :, 6 * k : 6 * k + 6])[0]
    for src, dst in pairs:
        J[:, :, src] += J[:, :, dst]
    return model, (J if len(keep) == 6 * K else J[:, :, keep])


def fit_rect(P, Q, iters: int = 12, sigma=None, sigma_prior=None, state=None, cost_tol=None):
    """Fit one axis-aligned, possibly blurred rectangle to its column and row profiles.

    ``sigma`` (n,): a known blur width (kept fixed), else fitted (with ``sigma_prior``: pulled
    weakly towards it, see ``fit_rects``) from ``sigma_start``.  Returns dict x0, x1, y0, y1, m,
    sigma (pixels, y up); see ``_rect_terms`` for the model.  ``state``, ``cost_tol``: see
    ``fit_rects``.
    """
    x0, x1, pmax = edges_init(P)
    y0, y1, _ = edges_init(Q)
    m = np.clip(pmax / np.maximum(y1 - y0, 0.5), 0.2, 3.0)
    sig = sigma_start(P, Q) if sigma is None else np.asarray(sigma, dtype=np.float64)
    th0 = np.stack([x0, x1, y0, y1, m, sig], 1)[:, None, :]
    fixed = sigma is not None
    th = fit_rects(
        P, Q, th0, iters, fix_sigma=fixed, sigma_prior=sigma_prior, state=state, cost_tol=cost_tol
    )[:, 0]
    return dict(zip(("x0", "x1", "y0", "y1", "m", "sigma"), th.T))


def _chord_areas(u, r):
    """Area of a disk of radius r left of x = u, for a disk that spans the strip's full height:
    r^2 (t sqrt(1 - t^2) + asin t) + pi r^2 / 2, t = clip(u / r, -1, 1), less the constant
    (cancelled by the differences), and its derivatives in u (the chord 2 r sqrt(1 - t^2)) and
    r (2 r asin t): the general corner areas of ``render.disk_corner_area`` with the disk inside
    the other axis' canvas edges, at a quarter of their cost."""
    t = np.clip(u / r, -1.0, 1.0)
    s = np.sqrt(1.0 - t * t)
    asin = np.arcsin(t)
    return r * r * (t * s + asin), 2.0 * r * s, 2.0 * r * asin


def disk_profiles(cx, cy, r, size: int = SIZE, grad: bool = False):
    """Exact area of a disk inside each column strip [j, j+1] x [0, S] and each row strip.

    Returns P (n, S), Q (n, S); with ``grad`` also their Jacobians (n, 2S, 3) w.r.t. (cx, cy, r),
    from the closed-form derivatives of ``render.disk_corner_area``.  A disk inside the canvas's
    top and bottom (left and right) edges has the column (row) strips of ``_chord_areas``.
    """
    cx, cy, r = (np.asarray(v, dtype=np.float64) for v in (cx, cy, r))
    n = len(cx)
    grid = np.arange(size + 1, dtype=np.float64)[None, :]
    out = np.empty((n, 2 * size))
    J = np.zeros((n, 2 * size, 3)) if grad else None
    for axis, (c, other) in enumerate(((cx, cy), (cy, cx))):
        sl = slice(axis * size, (axis + 1) * size)
        inside = (other - r >= 0) & (other + r <= size)  # the strips cut the disk's full chords
        a, da, dr = _chord_areas(grid - c[:, None], r[:, None])
        out[:, sl] = np.diff(a, axis=1)
        if grad:
            J[:, sl, axis] = -np.diff(da, axis=1)
            J[:, sl, 2] = np.diff(dr, axis=1)
        cut = np.flatnonzero(~inside)
        if len(cut):
            gen = _disk_profiles_general(cx[cut], cy[cut], r[cut], size, grad, axis)
            out[cut, sl] = gen[0]
            if grad:
                J[cut, sl] = gen[1]
    P, Q = out[:, :size], out[:, size:]
    return (P, Q, J) if grad else (P, Q)


def _disk_profiles_general(cx, cy, r, size, grad, axis=None):
    """``disk_profiles`` for any disk (cut by the canvas or not): (n, 2S) and J (n, 2S, 3), or
    for ``axis`` 0 (column strips) / 1 (row strips) alone (n, S) and J (n, S, 3).

    The area left of x = u inside the canvas's rows is G(u, top) - G(u, bottom) (corner areas
    ``render.disk_corner_area`` relative to the centre), the area below y = v likewise; the
    strips are their differences over the grid.  d/dcx of G(u, .) is -dG/dx, d/dcy of G(., top)
    is -dG/dy."""
    if axis is None:
        parts = [_disk_profiles_general(cx, cy, r, size, grad, ax) for ax in (0, 1)]
        J = np.concatenate([p[1] for p in parts], 1) if grad else None
        return np.concatenate([p[0] for p in parts], 1), J
    G = render.disk_corner_area
    grid = np.arange(size + 1, dtype=np.float64)[None, :]
    cx, cy, r = cx[:, None], cy[:, None], r[:, None]
    if axis == 0:  # column boundaries u against the top and bottom edges
        g1, g0 = G(grid - cx, size - cy, r, grad=grad), G(grid - cx, -cy, r, grad=grad)
    else:  # row boundaries v against the right and left edges
        g1, g0 = G(size - cx, grid - cy, r, grad=grad), G(-cx, grid - cy, r, grad=grad)
    if not grad:
        return np.diff(g1 - g0, axis=1), None
    (a1, ax1, ay1, ar1), (a0, ax0, ay0, ar0) = g1, g0
    J = np.empty((len(cx), size, 3))
    J[:, :, 0] = np.diff(-(ax1 - ax0), axis=1)
    J[:, :, 1] = np.diff(-(ay1 - ay0), axis=1)
    J[:, :, 2] = np.diff(ar1 - ar0, axis=1)
    return np.diff(a1 - a0, axis=1), J


def fit_disk(P, Q, iters: int = 12, state=None, cost_tol=None):
    """Fit a disk (cx, cy, r) and depth m to its column / row profiles (exact clipped-disk model).

    Damped Gauss-Newton with the analytic Jacobian of ``disk_profiles``, from the centroid and the
    area (exact for a disk inside the canvas); images stop as in ``fit_rects`` (``_settled``).
    ``state``: pass a dict to receive the last Jacobian "J" (n, 2S, 4) and the model advanced to
    the final parameters along it, "model" (n, 2S), for ``disk_covariance`` (as ``fit_rects``).
    ``cost_tol``: also stop where the step lowers the squared residual by at most this share
    (``_cost_settled``: for fits whose residual, not their parameters, is wanted).
    """
    P = P.astype(np.float64)
    Q = Q.astype(np.float64)
    n = len(P)
    grid = np.arange(SIZE) + 0.5
    area = np.maximum(P.sum(1), 1e-6)
    cx = (P * grid).sum(1) / area
    cy = (Q * grid).sum(1) / area
    # radius: sqrt(area / pi) (exact at depth 1) or from the second moments, var_x + var_y =
    # r^2 / 2 for a disk plus 1/12 per axis for the pixel integration (Sheppard's correction),
    # whichever is smaller: the depth exceeds 1 by a few % (the ink direction comes from partly
    # covered pixels too), which inflates the first, and blur (variance sigma^2 per axis) the
    # second; the depth then from the area m pi r^2
    var = (P * (grid - cx[:, None]) ** 2).sum(1) + (Q * (grid - cy[:, None]) ** 2).sum(1)
    r = np.sqrt(np.maximum(np.minimum(2.0 * var / area - 1.0 / 3.0, area / np.pi), 0.25))
    m = np.clip(area / (np.pi * r * r), 0.5, 2.0)
    th = np.stack([cx, cy, np.maximum(r, 0.5), m], 1)
    data = np.concatenate([P, Q], 1)
    active = np.arange(n)
    for _ in range(iters):
        model, J = _disk_terms(th[active])
        res = model - data[active]
        step = _lm_solve(J, res)
        step[:, :3] = np.clip(step[:, :3], -1.0, 1.0)
        t = th[active] + step
        t[:, 2] = np.clip(t[:, 2], 0.3, SIZE)
        t[:, 3] = np.clip(t[:, 3], 0.05, 5.0)
        model = model + (J @ (t - th[active])[:, :, None])[..., 0]  # first order at the new th
        moved = np.abs(step[:, :3]).max(1)  # centre and radius
        settled = _settled(moved, moved, model, data[active])
        if cost_tol is not None:
            settled |= _cost_settled(moved, res, model - data[active], cost_tol)
        if state is not None:  # (see fit_rects)
            _keep_state(state, n, active, settled, J, model)
        th[active] = t
        active = active[~settled]
        if len(active) == 0:
            break
    if state is not None and len(active):
        model, J = _disk_terms(th[active])
        _keep_state(state, n, active, np.ones(len(active), bool), J, model)
    return dict(zip(("cx", "cy", "r", "m"), th.T))


def _disk_terms(th):
    """Model m [P | Q] (n, 2S) of disks th (n, 4) = cx, cy, r, m and its Jacobian (n, 2S, 4)."""
    cx, cy, r, m = th.T
    px, qy, Jg = disk_profiles(cx, cy, r, grad=True)
    base = np.concatenate([px, qy], 1)
    J = np.concatenate([m[:, None, None] * Jg, base[:, :, None]], 2)
    return m[:, None] * base, J
