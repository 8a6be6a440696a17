"""Closed-form starting estimates of the scene-model fits (``rulelib.tasks.fit``).

Gauss-Newton from a start within ~0.01 px of the optimum stops after one step on sharp renders
(``fit._settled``), so the starts are taken as exact as the profiles allow: a box's edges from
its half-maximum crossings and the coverage of its edge cells (``edges_init``: exact for a sharp
pixel-integrated box), its blur width at the fits' floor where the profiles show sharp edges
and from their second moments elsewhere (``sigma_start``), and task A's pole and shadow from
their union (``pole_shadow_init``).  (A disk's start, from its moments, is in ``fit.fit_disk``.)
"""

from __future__ import annotations

import numpy as np

from rulelib.tasks import render

SIZE = render.SIZE
SIGMA_MIN = 0.02  # px: the fits' floor of the blur width
SIGMA_MAX_START = 1.0  # px: the largest blur width a fit starts from
SHARP_TOL = 0.01  # share of the peak below which (above 1 - which) a cell is empty (full)


def edges_init(prof):
    """Sub-pixel edges of a box-like profile from its half-maximum crossing and adjacent mass.

    For a sharp pixel-integrated box of plateau p the cell of each edge holds p times the share
    it covers and its outer neighbour 0, so a = first + 1 - c_first (b likewise) is exact; blur
    moves mass into the outer neighbour, which the estimate adds back (c_prev, c_next).
    """
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


def sharp_edges(prof):
    """Whether a box-like profile (n, S) has sharp edges: a sharp pixel-integrated box has at
    most one partly covered cell per edge (ox_j = overlap of [a, b] with [j, j+1]), a blurred one
    (sigma >= ~0.2 px) two or more per edge, and a noisy one many.  Partly covered: between
    SHARP_TOL and 1 - SHARP_TOL of the peak."""
    c = prof / np.maximum(prof.max(1), 1e-6)[:, None]
    partial = ((c > SHARP_TOL) & (c < 1.0 - SHARP_TOL)).sum(1)
    return partial <= 2


def sigma_start(*profs):
    """Initial blur width per image: SIGMA_MIN where every profile is sharp, else from the
    profiles' second moments (their mean over the profiles, within [SIGMA_MIN, SIGMA_MAX_START]).

    A box of width w blurred by a Gaussian of std sigma and integrated over pixels has the
    variance w^2 / 12 + sigma^2 + 1/12 (Sheppard's correction for the pixels), so
    sigma^2 = var - w^2 / 12 - 1/12 with w from ``edges_init`` (the half-maximum crossings move
    little with blur).  Blurred images start near their blur, a few Gauss-Newton steps sooner
    than from a fixed start (sigma moves by at most 0.2 px a step).
    """
    sharp = np.logical_and.reduce([sharp_edges(p) for p in profs])
    var = []
    for p in profs:
        a, b, _ = edges_init(p)
        centre = np.arange(p.shape[1]) + 0.5
        # the cells within 2 px of the edges only (2.5 sigma of the largest start): noise in
        # the cells beyond would dominate the spread
        p = np.where((centre > a[:, None] - 2.0) & (centre < b[:, None] + 2.0), p, 0.0)
        total = np.maximum(p.sum(1), 1e-6)
        mean = (p * centre).sum(1) / total
        spread = (p * (centre - mean[:, None]) ** 2).sum(1) / total
        var.append(spread - (b - a) ** 2 / 12.0 - 1.0 / 12.0)
    blur = np.sqrt(np.clip(np.mean(var, 0), SIGMA_MIN**2, SIGMA_MAX_START**2))
    return np.where(sharp, SIGMA_MIN, blur)


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
    # the y-cells above / below the ground as (n, 2, S) indicators: the column sums over them
    # of the map and of the core are batched products (no masked (n, S, S) copies)
    bands = np.stack([cells >= np.ceil(g)[:, None] + 1, cells <= np.floor(g)[:, None] - 1], 1)
    cols = bands.astype(np.float32) @ core.astype(np.float32)  # (n, 2, S) core cells per column
    P_ul = bands.astype(a.dtype) @ a
    Pu = P_ul[:, 0] * dilate1d(cols[:, 0] > 0)  # the pole's columns
    Pl = P_ul[:, 1] * dilate1d(cols[:, 1] > 0)  # the shadow's
    px0, px1, _ = edges_init(Pu)
    sx0, sx1, _ = edges_init(Pl)
    mid = np.clip(np.floor(0.5 * (g + yt)).astype(int), 0, SIZE - 1)
    smid = np.clip(np.floor(0.5 * (yb + g)).astype(int), 0, SIZE - 1)
    rows_i = np.arange(n)
    mp = Q[rows_i, mid] / np.maximum(px1 - px0, 0.5)
    ms = Q[rows_i, smid] / np.maximum(sx1 - sx0, 0.5)
    sig = sigma_start(Pu, Pl)
    pole = np.stack([px0, px1, g, yt, np.clip(mp, 0.2, 3.0), sig], 1)
    shadow = np.stack([sx0, sx1, yb, g, np.clip(ms, 0.2, 3.0), sig], 1)
    return np.stack([pole, shadow], 1)
