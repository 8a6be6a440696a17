"""How much of an object's coverage map a fitted shape explains, and the shapes' coverage maps.

``explained`` is 1 - |a - model|^2 / |a|^2 for a coverage map a (n, S, S) (image rows top
first) and a model map.  The shapes' models need not be built on the whole canvas: a
rectangle's coverage is separable (``explained_rects``) and a disk's is zero outside a window
around it (``explained_disks``); both give the same numbers as ``explained`` of the full model
(to rounding, checked by tests/test_measure.py) at a fraction of the memory traffic.
``explained_by_other_shape`` fits the other shape (a disk for a rectangle and vice versa) for
the other-shape check of ``rulelib.tasks.measure``.
"""

from __future__ import annotations

import numpy as np

from rulelib.tasks import render
from rulelib.tasks.fit import fit_disk, fit_rect

SIZE = render.SIZE


def explained(alpha, model):
    """Fraction of the coverage map's energy explained by the model: 1 - |a - model|^2 / |a|^2."""
    a = alpha.reshape(len(alpha), -1).astype(np.float64, copy=False)
    d = a - model.reshape(len(model), -1)
    # batched dot products (no squared temporaries)
    energy = (a[:, None, :] @ a[:, :, None])[:, 0, 0]
    return 1.0 - (d[:, None, :] @ d[:, :, None])[:, 0, 0] / np.maximum(energy, 1e-9)


def explained_rects(alpha, rects):
    """``explained`` of the coverage map alpha (n, S, S) (rows top first) by a sum of rectangles
    rects = [(x0, x1, y0, y1, m), ...] (n,) each, without their (n, S, S) model.

    Each rectangle's coverage is separable, M_k = oy_k ox_k^T (``render.rect_coverage``), so
    |a - sum_k m_k M_k|^2 = |a|^2 - 2 sum_k m_k oy_k^T a ox_k
    + sum_k,l m_k m_l (ox_k . ox_l) (oy_k . oy_l): one (S, S) by S product per rectangle.
    """
    a = alpha.reshape(len(alpha), SIZE, SIZE).astype(np.float64, copy=False)
    energy = (a.reshape(len(a), 1, -1) @ a.reshape(len(a), -1, 1))[:, 0, 0]
    ox, oy, m = [], [], []
    for x0, x1, y0, y1, mk in rects:
        ox.append(render.interval_overlap(x0, x1))
        oy.append(render.interval_overlap(y0, y1)[:, ::-1])  # image rows, top first
        m.append(np.asarray(mk, dtype=np.float64))
    resid = energy.copy()
    for k in range(len(rects)):
        cross = (oy[k][:, None, :] @ (a @ ox[k][:, :, None]))[:, 0, 0]
        resid -= 2.0 * m[k] * cross
        for j in range(len(rects)):
            resid += m[k] * m[j] * (ox[k] * ox[j]).sum(1) * (oy[k] * oy[j]).sum(1)
    return 1.0 - resid / np.maximum(energy, 1e-9)


def _disk_windows(cx, cy, r):
    """Coverage of disks inside a window of w x w pixels around each (``render.disk_coverage``'s
    window, not placed on the canvas): (win (n, w, w) over image rows top first, clipped to
    [0, 1], rows (n, w) and cols (n, w) of the window's pixels on the canvas)."""
    w = int(min(SIZE, np.ceil(2 * np.max(r, initial=0.0)) + 2))
    x0 = np.clip(np.floor(cx - r), 0, SIZE - w).astype(np.int64)
    y0 = np.clip(np.floor(cy - r), 0, SIZE - w).astype(np.int64)
    k = np.arange(w + 1, dtype=np.float64)
    gx = (x0[:, None] + k[None, :] - cx[:, None])[:, None, :]
    gy = (y0[:, None] + k[None, :] - cy[:, None])[:, :, None]
    g = render.disk_corner_area(gx, gy, r[:, None, None])
    win = g[:, 1:, 1:] - g[:, :-1, 1:] - g[:, 1:, :-1] + g[:, :-1, :-1]  # (n, y-cell, x-cell)
    rows = SIZE - 1 - (y0[:, None] + np.arange(w)[None, :])  # image rows of the y-cells
    cols = x0[:, None] + np.arange(w)[None, :]
    return np.clip(win, 0.0, 1.0), rows, cols


def disk_window_groups(cx, cy, r, groups: int = 4):
    """``_disk_windows`` in up to ``groups`` groups of similar radius (of 32 disks at least; a
    window is sized by the largest disk of its group): a list of (index, win, rows, cols)."""
    cx, cy, r = (np.asarray(v, dtype=np.float64) for v in (cx, cy, r))
    groups = max(1, min(groups, len(r) // 32))
    parts = np.array_split(np.argsort(r), groups) if groups > 1 else [np.arange(len(r))]
    return [(idx,) + _disk_windows(cx[idx], cy[idx], r[idx]) for idx in parts if len(idx)]


def explained_disks(alpha, cx, cy, r, m, windows=None):
    """``explained`` of alpha (n, S, S) by disks of depth m (``render.disk_coverage`` times m)
    from their windows: |a - m M|^2 = |a|^2 - 2 m <a, M> + m^2 |M|^2, with <a, M> and |M|^2
    summed over the window outside which M is 0.  ``windows``: ``disk_window_groups`` of the
    disks, if already computed."""
    a = alpha.reshape(len(alpha), SIZE, SIZE)
    energy = np.einsum("nij,nij->n", a, a, dtype=np.float64)
    cross, mass = np.empty(len(a)), np.empty(len(a))
    for idx, win, rows, cols in windows or disk_window_groups(cx, cy, r):
        aw = a[idx[:, None, None], rows[:, :, None], cols[:, None, :]]
        cross[idx] = np.einsum("nij,nij->n", aw, win, dtype=np.float64)
        mass[idx] = np.einsum("nij,nij->n", win, win)
    m = np.asarray(m, dtype=np.float64)
    return 1.0 - (energy - 2.0 * m * cross + m * m * mass) / np.maximum(energy, 1e-9)


def explained_by_other_shape(P, Q, a, shape, unexplained, skip, iters, cost_tol):
    """Share of the coverage map a (n, S, S) explained by the other shape (a disk for "rect", a
    rectangle for "disk"), fitted to the same profiles P, Q (``fit_disk`` / ``fit_rect`` with
    ``iters`` and ``cost_tol``); NaN where not fitted.

    Fast path: the other shape is fitted only where the object's own shape leaves more than
    ``skip`` (rulelib.tasks.measure.SKIP_ALT) of the energy unexplained (``unexplained`` (n,)).
    Below that measure's other-shape check cannot fail: it would need the other shape to explain
    all but SKIP_ALT / ALT_RATIO of it too, and a disk and a rectangle (square) differ by >= 2.6 %
    of the energy even at the tasks' smallest sizes (1st percentile over clean renders of B, C,
    D), so both fits cannot be that good on one object.
    """
    out = np.full(len(P), np.nan)
    need = np.flatnonzero(~(unexplained <= skip))
    if len(need) == 0:
        return out
    P, Q, a = P[need], Q[need], a[need]
    if shape == "rect":
        alt = fit_disk(P, Q, iters=iters, cost_tol=cost_tol)
        out[need] = explained_disks(a, alt["cx"], alt["cy"], alt["r"], alt["m"])
    else:
        alt = fit_rect(P, Q, iters=iters, cost_tol=cost_tol)
        out[need] = explained_rects(a, [[alt[k] for k in ("x0", "x1", "y0", "y1", "m")]])
    return out
