"""Sub-pixel fits of rectangles and disks to an object's coverage profiles (column and row sums).

Coordinates in pixels, y up; P is the column profile, Q the row profile (over y-cells).
Rectangles are pixel-integrated, Gaussian-blurred boxes (``box_profile``; exact for sharp edges
as the blur width goes to 0), disks the exact area of the disk inside each column / row strip of
the canvas (``disk_profiles``; a disk cut by the canvas edge is fitted, not biased like a
centroid).  Both carry an ink-depth factor m.  The fits are damped Gauss-Newton, vectorised
over the batch; ``rect_covariance`` / ``disk_covariance`` give the parameters' covariance at the
optimum (section "Uncertainty").

Speed (the same numbers to rounding, checked by tests/test_measure.py): the normal cdf and pdf
of the box profiles are evaluated only within 8.3 blur widths of an edge (``_psi``), both edges
and both axes of a rectangle in one call; a disk inside the canvas's edges has the column / row
strips of full chords (``_chord_areas``: one arcsin per grid point instead of the general
corner areas' three).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from rulelib.tasks import render

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


def edges_init(prof):
    """Sub-pixel edges of a box-like profile from its half-maximum crossing and adjacent mass."""
    n, size = prof.shape
    pmax = np.maximum(prof.max(1), 1e-6)
    c = np.clip(prof / pmax[:, None], 0.0, 1.0)
    above = c >= 0.5
    first = above.argmax(1)
    last = size - 1 - above[:, ::-1].argmax(1)
    rows = np.arange(n)
    c_prev = np.where(first > 0, c[rows, np.maximum(first - 1, 0)], 0.0)
    c_next = np.where(last < size - 1, c[rows, np.minimum(last + 1, size - 1)], 0.0)
    a = first + 1.0 - c[rows, first] - c_prev
    b = last + c[rows, last] + c_next
    return a, np.maximum(b, a + 0.5), pmax


def _rect_terms(th, split=None):
    """Profiles of one rectangle and their Jacobian w.r.t. th (n, 6) = x0, x1, y0, y1, m, sigma.

    Model: P_j = m H ox_j, Q_i = m Wd oy_i with ox = box_profile(x0, x1, sigma), oy likewise,
    H = sum_i oy_i and Wd = sum_j ox_j (so a box cut by the canvas edge is modelled exactly).
    With ``split`` (n,) the column profile is taken separately over the y-cells below and above
    the split (P_lo, P_hi with H_lo + H_hi = H), which keeps a low object under a tall one visible.
    Returns (model (n, R), J (n, R, 6)): R = 2S, [P | Q], or with a split R = 3S, [P_lo | P_hi | Q].
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
    J = np.empty((n, R, 6))
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


def fit_rects(P, Q, th0, iters: int = 12, ties=(), split=None, fix_sigma=False, sigma_prior=None):
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
    Images stop iterating once every step is below 1e-3 px (the rest keep going).
    """
    P = np.asarray(P, dtype=np.float64).reshape(len(Q), -1)
    data = np.concatenate([P, Q], 1).astype(np.float64)
    th = np.array(th0, dtype=np.float64)
    n, K, _ = th.shape
    keep = np.arange(6 * K)
    pairs = [(6 * k1 + p1, 6 * k2 + p2) for (k1, p1), (k2, p2) in ties]
    for (k1, p1), (k2, p2) in ties:
        th[:, k2, p2] = th[:, k1, p1]
    drop = [dst for _, dst in pairs] + ([6 * k + 5 for k in range(K)] if fix_sigma else [])
    keep = keep[~np.isin(keep, drop)]
    active = np.arange(n)
    for _ in range(iters):
        t = th[active]
        terms = [_rect_terms(t[:, k], None if split is None else split[active]) for k in range(K)]
        model = terms[0][0] if K == 1 else sum(mk for mk, _ in terms)
        J = terms[0][1] if K == 1 else np.concatenate([Jk for _, Jk in terms], 2)
        for src, dst in pairs:
            J[:, :, src] += J[:, :, dst]
        res = model - data[active]
        if sigma_prior is not None:
            sp = np.asarray(sigma_prior, dtype=np.float64)[active]
            w = np.where(np.isnan(sp), 0.0, PRIOR_WEIGHT)  # NaN: no prior for that image
            rows = np.zeros((len(active), K, 6 * K))
            for k in range(K):
                rows[:, k, 6 * k + 5] = w
            J = np.concatenate([J, rows], 1)
            prior_res = w[:, None] * (t[:, :, 5] - np.nan_to_num(sp)[:, None])
            res = np.concatenate([res, prior_res], 1)
        step = np.zeros((len(active), 6 * K))
        step[:, keep] = _lm_solve(J if len(keep) == 6 * K else J[:, :, keep], res)
        for src, dst in pairs:
            step[:, dst] = step[:, src]
        step = step.reshape(-1, K, 6)
        step[..., :4] = np.clip(step[..., :4], -0.5, 0.5)
        step[..., 5] = np.clip(step[..., 5], -0.2, 0.2)
        t = t + step
        t[..., 5] = np.clip(t[..., 5], 0.02, 1.5)
        t[..., 4] = np.clip(t[..., 4], 0.05, 5.0)
        t[..., 1] = np.maximum(t[..., 1], t[..., 0] + 0.2)
        t[..., 3] = np.maximum(t[..., 3], t[..., 2] + 0.2)
        th[active] = t
        active = active[np.abs(step[..., :4]).max((1, 2)) > 1e-3]  # edges settled
        if len(active) == 0:
            break
    return th


def fit_rect(P, Q, iters: int = 12, sigma=None, sigma_prior=None):
    """Fit one axis-aligned, possibly blurred rectangle to its column and row profiles.

    ``sigma`` (n,): a known blur width (kept fixed), else fitted (with ``sigma_prior``: pulled
    weakly towards it, see ``fit_rects``).  Returns dict x0, x1, y0, y1, m, sigma (pixels, y up);
    see ``_rect_terms`` for the model.
    """
    x0, x1, pmax = edges_init(P)
    y0, y1, _ = edges_init(Q)
    m = np.clip(pmax / np.maximum(y1 - y0, 0.5), 0.2, 3.0)
    sig = np.full(len(P), 0.1) if sigma is None else np.asarray(sigma, dtype=np.float64)
    th0 = np.stack([x0, x1, y0, y1, m, sig], 1)[:, None, :]
    th = fit_rects(P, Q, th0, iters, fix_sigma=sigma is not None, sigma_prior=sigma_prior)[:, 0]
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
            gen = _disk_profiles_general(cx[cut], cy[cut], r[cut], size, grad)
            out[cut, sl] = gen[0][:, sl]
            if grad:
                J[cut, sl] = gen[1][:, sl]
    P, Q = out[:, :size], out[:, size:]
    return (P, Q, J) if grad else (P, Q)


def _disk_profiles_general(cx, cy, r, size, grad):
    """``disk_profiles`` for any disk (cut by the canvas or not): (n, 2S) and J (n, 2S, 3)."""
    G = render.disk_corner_area
    grid = np.arange(size + 1, dtype=np.float64)[None, :]
    cx, cy, r = cx[:, None], cy[:, None], r[:, None]
    u = grid - cx  # column boundaries relative to the centre
    v = grid - cy
    top, bot, right, left = size - cy, -cy, size - cx, -cx
    if not grad:
        gx = G(u, top, r) - G(u, bot, r)  # area left of x = grid
        gy = G(right, v, r) - G(left, v, r)  # area below y = grid
        return np.diff(np.concatenate([gx, gy], 1).reshape(-1, 2, size + 1), axis=2).reshape(
            -1, 2 * size
        ), None
    a1, ax1, ay1, ar1 = G(u, top, r, grad=True)
    a0, ax0, ay0, ar0 = G(u, bot, r, grad=True)
    b1, bx1, by1, br1 = G(right, v, r, grad=True)
    b0, bx0, by0, br0 = G(left, v, r, grad=True)
    n = len(cx)
    J = np.empty((n, 2 * size, 3))
    # column strips: d/dcx of G(u, .) is -dG/dx; d/dcy of G(., top) is -dG/dy
    J[:, :size, 0] = np.diff(-(ax1 - ax0), axis=1)
    J[:, :size, 1] = np.diff(-(ay1 - ay0), axis=1)
    J[:, :size, 2] = np.diff(ar1 - ar0, axis=1)
    J[:, size:, 0] = np.diff(-(bx1 - bx0), axis=1)
    J[:, size:, 1] = np.diff(-(by1 - by0), axis=1)
    J[:, size:, 2] = np.diff(br1 - br0, axis=1)
    return np.concatenate([np.diff(a1 - a0, axis=1), np.diff(b1 - b0, axis=1)], 1), J


def fit_disk(P, Q, iters: int = 12):
    """Fit a disk (cx, cy, r) and depth m to its column / row profiles (exact clipped-disk model).

    Damped Gauss-Newton with the analytic Jacobian of ``disk_profiles``, from the centroid and the
    area (exact for a disk inside the canvas); images stop once their step is below 1e-3 px.
    """
    P = P.astype(np.float64)
    Q = Q.astype(np.float64)
    n = len(P)
    grid = np.arange(SIZE) + 0.5
    area = np.maximum(P.sum(1), 1e-6)
    cx = (P * grid).sum(1) / area
    cy = (Q * grid).sum(1) / area
    r = np.sqrt(area / np.pi)
    th = np.stack([cx, cy, np.maximum(r, 0.5), np.ones(n)], 1)
    data = np.concatenate([P, Q], 1)
    active = np.arange(n)
    for _ in range(iters):
        cx, cy, r, m = th[active].T
        px, qy, Jg = disk_profiles(cx, cy, r, grad=True)
        base = np.concatenate([px, qy], 1)
        J = np.concatenate([m[:, None, None] * Jg, base[:, :, None]], 2)
        step = _lm_solve(J, m[:, None] * base - data[active])
        step[:, :3] = np.clip(step[:, :3], -1.0, 1.0)
        t = th[active] + step
        t[:, 2] = np.clip(t[:, 2], 0.3, SIZE)
        t[:, 3] = np.clip(t[:, 3], 0.05, 5.0)
        th[active] = t
        active = active[np.abs(step[:, :3]).max(1) > 1e-3]
        if len(active) == 0:
            break
    return dict(zip(("cx", "cy", "r", "m"), th.T))


def explained(alpha, model):
    """Fraction of the coverage map's energy explained by the model: 1 - |a - model|^2 / |a|^2."""
    a = alpha.reshape(len(alpha), -1).astype(np.float64)
    d = a - model.reshape(len(model), -1)
    # batched dot products (no squared temporaries)
    energy = (a[:, None, :] @ a[:, :, None])[:, 0, 0]
    return 1.0 - (d[:, None, :] @ d[:, :, None])[:, 0, 0] / np.maximum(energy, 1e-9)


def disk_coverage(cx, cy, r, groups: int = 3):
    """``render.disk_coverage`` (n, S, S) in ``groups`` groups of similar radius: it evaluates a
    window sized by the largest disk of a call on every image, so small disks in a batch with a
    large one cost as much as it; the same numbers (to rounding, 1e-15)."""
    cx, cy, r = (np.asarray(v, dtype=np.float64) for v in (cx, cy, r))
    if len(r) < 64 * groups:
        return render.disk_coverage(cx, cy, r)
    out = np.empty((len(r), SIZE, SIZE))
    for idx in np.array_split(np.argsort(r), groups):
        out[idx] = render.disk_coverage(cx[idx], cy[idx], r[idx])
    return out


def dilate1d(mask):
    """Grow a (n, S) boolean mask by one cell on each side (as float)."""
    out = mask.copy()
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out.astype(np.float64)


def pole_shadow_init(a, core):
    """Initial pole and shadow rectangles (n, 2, 6) from their union (y-up maps).

    The union's bottom edge is the shadow's, its top edge the pole's; the ground (pole bottom,
    shadow top) starts at the bottom edge plus the paper's shadow thickness 0.08 W (an initial
    guess only).  Columns are taken from the rows above / below the ground.
    """
    n = len(a)
    Q = a.sum(2)
    has = core.any(2)  # (n, S) y-cells with core pixels
    bottom = has.argmax(1)
    top = SIZE - 1 - has[:, ::-1].argmax(1)
    cells = np.arange(SIZE)[None, :]
    yb, _, _ = edges_init(np.where(cells <= bottom[:, None] + 1, Q, 0.0))  # pure shadow cells
    g = np.minimum(yb + 0.08 * SIZE, top - 0.5)
    _, yt, _ = edges_init(np.where(cells >= np.ceil(g)[:, None] + 1, Q, 0.0))
    rows = np.arange(SIZE)[None, :, None]
    upper = (rows >= np.ceil(g)[:, None, None] + 1) & core
    lower = (rows <= np.floor(g)[:, None, None] - 1) & core
    colmask_u = upper.any(1)  # columns of the pole
    colmask_l = lower.any(1)
    Pu = np.where(rows >= np.ceil(g)[:, None, None] + 1, a, 0.0).sum(1) * dilate1d(colmask_u)
    Pl = np.where(rows <= np.floor(g)[:, None, None] - 1, a, 0.0).sum(1) * dilate1d(colmask_l)
    px0, px1, _ = edges_init(Pu)
    sx0, sx1, _ = edges_init(Pl)
    mid = np.clip(np.floor(0.5 * (g + yt)).astype(int), 0, SIZE - 1)
    smid = np.clip(np.floor(0.5 * (yb + g)).astype(int), 0, SIZE - 1)
    rows_i = np.arange(n)
    mp = Q[rows_i, mid] / np.maximum(px1 - px0, 0.5)
    ms = Q[rows_i, smid] / np.maximum(sx1 - sx0, 0.5)
    sig = np.full(n, 0.1)
    pole = np.stack([px0, px1, g, yt, np.clip(mp, 0.2, 3.0), sig], 1)
    shadow = np.stack([sx0, sx1, yb, g, np.clip(ms, 0.2, 3.0), sig], 1)
    return np.stack([pole, shadow], 1)


# ----------------------------------------------------------------------------------------------
# Uncertainty


PROFILE_REUSE = 2.0  # each pixel's noise enters one column and one row profile element


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


def rect_covariance(P, Q, th, ties=(), split=None, fix_sigma=False):
    """Covariance (n, 6K, 6K) of the rectangles' parameters th (n, K, 6) fitted by ``fit_rects``
    (same ``ties``, ``split``, ``fix_sigma``), and the profile residual's RMS (n,).

    A tied parameter shares the variance of its source; a fixed blur gets variance 0.
    """
    P = np.asarray(P, dtype=np.float64).reshape(len(Q), -1)
    data = np.concatenate([P, Q], 1).astype(np.float64)
    n, K, _ = th.shape
    model = np.zeros_like(data)
    Js = []
    for k in range(K):
        mk, Jk = _rect_terms(th[:, k], split)
        model += mk
        Js.append(Jk)
    J = np.concatenate(Js, 2)
    pairs = [(6 * k1 + p1, 6 * k2 + p2) for (k1, p1), (k2, p2) in ties]
    for src, dst in pairs:
        J[:, :, src] += J[:, :, dst]
    drop = [dst for _, dst in pairs] + ([6 * k + 5 for k in range(K)] if fix_sigma else [])
    keep = np.flatnonzero(~np.isin(np.arange(6 * K), drop))
    sub, rms = _covariance(J[:, :, keep], model - data, data, model)
    full = np.arange(6 * K)
    for src, dst in pairs:
        full[dst] = src
    pos = {k: i for i, k in enumerate(keep)}
    idx = np.array([pos.get(int(full[i]), -1) for i in range(6 * K)])
    cov = np.zeros((n, 6 * K, 6 * K))
    has = idx >= 0
    cov[:, has[:, None] & has[None, :]] = sub[:, idx[has]][:, :, idx[has]].reshape(n, -1)
    return cov, rms


def disk_covariance(P, Q, fit):
    """Covariance (n, 4, 4) of a disk fit's (cx, cy, r, m) and the profile residual's RMS (n,)."""
    data = np.concatenate([P, Q], 1).astype(np.float64)
    px, qy, Jg = disk_profiles(fit["cx"], fit["cy"], fit["r"], grad=True)
    base = np.concatenate([px, qy], 1)
    m = fit["m"]
    J = np.concatenate([m[:, None, None] * Jg, base[:, :, None]], 2)
    model = m[:, None] * base
    return _covariance(J, model - data, data, model)


def se_of(cov, grad) -> np.ndarray:
    """Standard error sqrt(g^T C g) of a linear combination g (p,) of the parameters."""
    g = np.asarray(grad, dtype=np.float64)
    return np.sqrt(np.maximum(np.einsum("p,npq,q->n", g, cov, g), 0.0))
