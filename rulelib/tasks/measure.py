"""Sub-pixel measurement of rule-task images: segment by colour, un-blend, fit each object.

The paper measured its features with colour masks, contours and moments on images upscaled to 128 px
and dropped images where an object was not found (paper.md section 3).  We measure the 32x32 image
itself and exploit how it was made (``rulelib.tasks.render``): each pixel is white minus the sum of
the
objects' inks (1 - colour) weighted by the area they cover.  The steps, vectorised over the batch:

1. **Ink and background.**  ink = 1 - pixel (0-1 scale).  Noise on white is clipped at white, which
   biases light pixels towards ink; the noise level follows from the mean ink of near-white
   pixels and the bias of each pixel is removed (``_unclip``).
2. **Segmentation by colour.**  The hue of a pixel does not depend on how much of it an object
   covers (blending with white keeps the hue), nor does the ink's chroma ratio
   rho = (max - min) / max of its channels.  Yellow is hue -45..100 degrees with rho >= 0.4 (the
   yellow box has rho >= 0.61), blue/green hue 140..330 (box: 180-300); the tolerances absorb
   colour drift.  The largest 8-connected component of each expected colour (by ink mass) is
   the object's core; a second sizeable one (a duplicated or split object) makes the image not
   measurable.  (``extract`` also offers a dark grey class, rho below a per-image threshold.)
3. **Un-blending.**  The object's ink direction is the mean ink over its most strongly inked core
   pixels.  Each pixel of the object's support (core dilated by 2 px) gets the coverage
   alpha = <ink, d_k> / |d_k|^2; where two supports overlap, alpha solves the ridge-regularised
   least squares ink = sum_k alpha_k d_k.  Task A's pole and shadow touch and their inks are
   often nearly parallel, so there the channel sum of the ink (linear in both coverages) is
   fitted by two rectangles at once (``measure_light_shadow``).
4. **Parametric fits** of the column and row sums of alpha (profiles), by damped Gauss-Newton:
   rectangles as pixel-integrated, Gaussian-blurred boxes (exact for sharp edges as the blur
   width goes to 0; a thin bar's blur is pulled towards the blur of the image's largest
   rectangle), disks by the exact area of the disk inside each column / row strip of the canvas
   (so a disk cut by the canvas edge, task A's sun, is fitted, not biased like a centroid).  Both
   also fit an ink-depth factor m (1 when the core's ink is the object's full ink).
5. **Checks.**  An image is measurable (ok) only if every object was found, no sizeable extra blob
   or unexplained ink exists, each fitted shape explains its coverage map (1 - |residual|^2 /
   |alpha|^2 >= 0.7), the depth factor is plausible, and the fitted objects satisfy the scene's
   geometry (no overlaps; D's squares square, A's sun above the pole above the shadow).
   Otherwise its features are NaN: never a confident wrong value.  Pass ``reasons={}`` to a
   task's ``measure`` to learn which check each image failed.

The per-task functions run on blocks of ``CHUNK`` images (``chunked``), so any n fits in memory.
``perturb`` makes the harder test images of issue 2 (colour shift, blur, noise).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.special import ndtr

from rulelib.tasks import render

SIZE = render.SIZE
_SQRT2PI = np.sqrt(2.0 * np.pi)

# Segmentation thresholds (0-1 ink scale).
STRONG = 0.2  # ink above this (after background removal) is an object pixel, 4 noise std of 0.05
GREY_RHO = 0.22  # chroma ratio below this is the dark grey box (blue/green >= 0.21, grey <= 0.23)
HUE_RANGES = {"yellow": (-45.0, 100.0), "blue": (140.0, 330.0)}  # drift-tolerant hue sectors
MIN_CORE_PIXELS = 2  # an object's core has at least this many pixels
EXTRA_BLOB_PIXELS = 4  # a second component of an object's colour this large: not measurable
MIN_EXPLAINED = 0.7  # fraction of the coverage map's energy a fitted shape must explain
PRIOR_WEIGHT = 3.0  # weight of the blur prior of thin rectangles (profile units per px of sigma)
DEPTH_RANGE = (0.6, 3.0)  # plausible depth factor m (> 1: a thin blurred object has no full pixel)

# The batch axis must not connect components of different images.
_STRUCT8 = np.zeros((3, 3, 3), dtype=bool)
_STRUCT8[1] = True


# ----------------------------------------------------------------------------------------------
# Input checking


def to_float(images) -> np.ndarray:
    """Validate a batch of RGB images and return it as float32 in [0, 1], shape (n, 32, 32, 3).

    Accepts uint8 (0-255) or floating point (0-1) arrays; anything else raises ValueError.
    """
    a = np.asarray(images)
    if a.ndim == 3 and a.shape[-1] == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[1:] != (SIZE, SIZE, 3) or a.shape[0] == 0:
        raise ValueError(
            f"images must have shape (n, {SIZE}, {SIZE}, 3) with n >= 1, got {a.shape}"
        )
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"images must be uint8 (0-255) or float (0-1), got dtype {a.dtype}")
    if np.isnan(a).any():
        raise ValueError(f"images contain {int(np.isnan(a).sum())} NaN values")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"float images must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
    return a.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Perturbations for the robustness tests (issue 2)


def shift_colors(rgb: np.ndarray, box: str, rng, dh=15.0, ds=0.15, dv=0.15) -> np.ndarray:
    """Shift RGB colours (n, 3) by random HSV offsets (uniform in +-dh, ds, dv), clipped to box."""
    from matplotlib.colors import rgb_to_hsv

    hsv = rgb_to_hsv(np.clip(rgb, 0, 1))
    hsv[:, 0] *= 360.0
    b = render.COLOR_BOXES[box]
    n = len(rgb)
    hsv[:, 0] = (
        np.clip(hsv[:, 0] + rng.uniform(-dh, dh, n), *b["h"]) if box != "grey" else hsv[:, 0]
    )
    hsv[:, 1] = np.clip(hsv[:, 1] + rng.uniform(-ds, ds, n), *b["s"])
    hsv[:, 2] = np.clip(hsv[:, 2] + rng.uniform(-dv, dv, n), *b["v"])
    return render.hsv_to_rgb_deg(hsv)


def perturb(images, seed: int, *, noise: float = 0.05, blur: float = 0.5) -> np.ndarray:
    """Gaussian blur (std ``blur`` px, reflecting edges), then pixel noise (std ``noise``); uint8.

    The per-object colour shift of issue 2 needs the scene, see ``perturb_scene``.
    """
    img = to_float(images).astype(np.float64)
    if blur > 0:
        img = ndimage.gaussian_filter(img, sigma=(0, blur, blur, 0), mode="reflect")
    rng = np.random.default_rng(seed)
    img = img + rng.normal(0.0, noise, img.shape)
    return render.to_uint8(img)


def perturb_scene(task, params: dict, seed: int, *, noise=0.05, blur=0.5) -> np.ndarray:
    """Re-render a task's scene, each object's colour shifted within its box, then ``perturb``."""
    rng = np.random.default_rng(seed)
    p = dict(params)
    prims = task.primitives(p)
    for prim in prims:
        names, counts = np.unique(_box_of(prim.color), return_counts=True)
        box = str(names[counts.argmax()])  # every object's colour comes from one box
        prim.color = shift_colors(prim.color, box, rng)
    img = render.composite(prims, len(prim.color))
    return perturb(img, seed + 1, noise=noise, blur=blur)


def _box_of(rgb: np.ndarray) -> np.ndarray:
    """The colour box each RGB colour (n, 3) was drawn from: grey by saturation, else by hue."""
    from matplotlib.colors import rgb_to_hsv

    hsv = rgb_to_hsv(np.clip(rgb, 0, 1))
    chromatic = np.where(hsv[:, 0] * 360 <= 60 + 1e-6, "yellow", "blue")
    return np.where(hsv[:, 1] <= 0.2 + 1e-9, "grey", chromatic)


# ----------------------------------------------------------------------------------------------
# Segmentation


def _unclip(ink, bg):
    """Remove the bias that clipping at white adds to noisy pixels near white.

    A pixel of true ink x >= 0 with Gaussian noise n (std s) clipped at white reads
    y = max(x - n, 0), whose mean exceeds x by s g(x/s), g(u) = phi(u) - u (1 - Phi(u)).  The
    noise std follows from the background (x = 0): mean y = s phi(0).  We subtract s g(y/s)
    (plug-in), which is ~0 for clean images and for strongly inked pixels.
    """
    s = np.maximum(bg.mean(0), 0.0) / 0.3989  # (n,) noise std per image
    noisy = s > 0.004  # about one uint8 level: below it (clean images) there is nothing to remove
    if not noisy.any():
        return ink
    sn = s[noisy].astype(np.float32)[None, :, None, None]
    u = np.maximum(ink[:, noisy], 0.0) / sn
    g = np.exp(-0.5 * u * u) / np.float32(_SQRT2PI) - u * (1.0 - ndtr(u))
    ink = ink.copy()
    ink[:, noisy] -= sn * g
    return ink


def ink_and_classes(img: np.ndarray, with_grey: bool = True):
    """Background-corrected ink planes (3, n, H, W), strength (n, H, W) and colour-class masks.

    ``with_grey``: whether the scene has a dark grey object.  If not, every chromatic enough pixel
    (rho >= 0.08) is classed by hue alone, so that low-saturation blues are never taken for grey.
    With grey (task A), the grey/blue split of rho is set per image between the two clusters of
    rho values of the strongly inked, non-yellow pixels (1-D 2-means), falling back to GREY_RHO.
    """
    ink = 1.0 - np.moveaxis(img, -1, 0)  # (3, n, H, W): channel planes are contiguous and fast
    r, g, b = ink[0], ink[1], ink[2]
    strength = np.maximum(np.maximum(r, g), b)
    near_white = strength < 0.15
    cnt = np.maximum(near_white.sum((1, 2)), 1)
    bg = np.stack([(c * near_white).sum((1, 2)) for c in ink]) / cnt  # (3, n)
    # noise shows as background pixels off pure white (clean renders: nearly all are pure white)
    off_white = ((strength > 0) & near_white).sum((1, 2)) / cnt
    ink = _unclip(ink, np.where(off_white > 0.5, bg, 0.0))
    r, g, b = ink[0], ink[1], ink[2]
    mx = np.maximum(np.maximum(r, g), b)
    mn = np.minimum(np.minimum(r, g), b)
    strong = mx >= STRONG
    # colour of the strongly inked pixels only (a small share of the canvas)
    at = np.nonzero(strong)
    rs, gs, bs, mxs, mns = r[at], g[at], b[at], mx[at], mn[at]
    chroma = mxs - mns
    rho_s = chroma / np.maximum(mxs, 1e-6)
    # hue of the pixel colour p = 1 - ink (blending with white keeps the hue); the largest channel
    # of p is the smallest of the ink
    c = np.maximum(chroma, 1e-6)
    hue = np.where(
        mns == rs,
        np.mod((bs - gs) / c, 6.0),
        np.where(mns == gs, (rs - bs) / c + 2.0, (gs - rs) / c + 4.0),
    )
    hue = 60.0 * hue
    hue = np.where(hue > 330.0, hue - 360.0, hue)  # (-30, 330]: red-ish yellows stay low
    yellow_hue = (hue >= HUE_RANGES["yellow"][0]) & (hue <= HUE_RANGES["yellow"][1])
    blue_hue = (hue >= HUE_RANGES["blue"][0]) & (hue <= HUE_RANGES["blue"][1])

    def scatter(values):
        out = np.zeros(strong.shape, dtype=bool)
        out[at] = values
        return out

    classes = {"yellow": scatter((rho_s >= 0.4) & yellow_hue)}  # the yellow box has rho >= 0.61
    if with_grey:
        rho = np.zeros(strong.shape, dtype=np.float32)
        rho[at] = rho_s
        w = (strong & (mx >= 0.3) & ~classes["yellow"]).astype(np.float32)
        lo = np.full(len(mx), 0.05, dtype=np.float32)
        hi = np.full(len(mx), 0.5, dtype=np.float32)
        for _ in range(6):  # 1-D 2-means of rho per image
            t = 0.5 * (lo + hi)[:, None, None]
            lo_m = w * (rho < t)
            hi_m = w - lo_m
            nlo, nhi = lo_m.sum((1, 2)), hi_m.sum((1, 2))
            lo = np.where(nlo > 0, (rho * lo_m).sum((1, 2)) / np.maximum(nlo, 1), lo)
            hi = np.where(nhi > 0, (rho * hi_m).sum((1, 2)) / np.maximum(nhi, 1), hi)
        sep = (hi - lo) >= 0.08
        t = np.where(sep, np.clip(0.5 * (lo + hi), 0.1, 0.35), GREY_RHO)
        chromatic = rho_s >= t[at[0]]
        classes["grey"] = scatter(~chromatic)
    else:
        chromatic = rho_s >= 0.08
        classes["grey"] = np.zeros_like(strong)
    classes["blue"] = scatter(chromatic & blue_hue)
    return np.moveaxis(ink, 0, -1), mx, classes


def largest_component(mask: np.ndarray, weight: np.ndarray):
    """Per image, the 8-connected component of ``mask`` with the largest weight.

    Returns (core mask (n, H, W), its pixel count (n,), pixel count of the runner-up (n,)).
    """
    n = mask.shape[0]
    lab, nlab = ndimage.label(mask, structure=_STRUCT8)
    core = np.zeros_like(mask)
    size1 = np.zeros(n, dtype=np.int64)
    size2 = np.zeros(n, dtype=np.int64)
    if nlab == 0:
        return core, size1, size2
    flat = lab.ravel()
    cnt = np.bincount(flat, minlength=nlab + 1)[1:]
    mass = np.bincount(flat, weights=weight.ravel(), minlength=nlab + 1)[1:]
    # labels are numbered in raster order, so image i holds the labels up to its largest one
    last = np.maximum.accumulate(lab.reshape(n, -1).max(1))
    owner = np.searchsorted(last, np.arange(1, nlab + 1))
    order = np.lexsort((mass, owner))  # by image, then by mass ascending
    own_sorted = owner[order]
    last = np.r_[own_sorted[1:] != own_sorted[:-1], True]
    best = order[last]  # label index - 1 of the heaviest component of each image that has one
    best_img = owner[best]
    best_label = np.zeros(n, dtype=np.int64)
    best_label[best_img] = best + 1
    size1[best_img] = cnt[best]
    # runner-up: the element just before the last of each image's group, if same image
    prev = np.r_[False, last[:-1]]  # first element of each group is preceded by a "last"
    second_pos = np.flatnonzero(last)[:] - 1
    has_second = (second_pos >= 0) & ~prev[np.flatnonzero(last)]
    sec = order[second_pos[has_second]]
    size2[owner[sec]] = cnt[sec]
    core = (lab == best_label[:, None, None]) & (best_label[:, None, None] > 0)
    return core, size1, size2


# ----------------------------------------------------------------------------------------------
# Profile models and fits (coordinates in pixels, y up; profiles P over columns, Q over y-cells)


def _psi(t):
    """Psi(t) = t Phi(t) + phi(t), the integral of the normal cdf, and Phi, phi themselves."""
    cdf = ndtr(t)
    pdf = np.exp(-0.5 * t * t) / _SQRT2PI
    return t * cdf + pdf, cdf, pdf


def _box_profile_free(a, b, sigma, size):
    grid = np.arange(size + 1, dtype=np.float64)[None, :]
    s = sigma[:, None]
    pa, ca, fa = _psi((grid - a[:, None]) / s)
    pb, cb, fb = _psi((grid - b[:, None]) / s)
    val = s * (np.diff(pa, axis=1) - np.diff(pb, axis=1))
    return val, -np.diff(ca, axis=1), np.diff(cb, axis=1), np.diff(fa, axis=1) - np.diff(fb, axis=1)


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
    jtr = (Jt @ r[..., None])[..., 0]
    d = np.einsum("npp->np", jtj)
    jtj = jtj + (lam * d + 1e-9)[:, :, None] * np.eye(J.shape[2])[None]
    return -np.linalg.solve(jtj, jtr[..., None])[..., 0]


def _edges_init(prof):
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
    ox, ox_a, ox_b, ox_s = box_profile(x0, x1, sig)
    oy, oy_a, oy_b, oy_s = box_profile(y0, y1, sig)
    mm = m[:, None]
    if split is None:
        bands = [np.ones((1, SIZE))]
    else:
        low = (np.arange(SIZE)[None, :] < np.asarray(split)[:, None]).astype(np.float64)
        bands = [low, 1.0 - low]
    R = (len(bands) + 1) * SIZE
    model = np.empty((n, R))
    J = np.empty((n, R, 6))
    for b, w in enumerate(bands):
        sl = slice(b * SIZE, (b + 1) * SIZE)
        H = (oy * w).sum(1)[:, None]
        model[:, sl] = mm * H * ox
        J[:, sl, 0] = mm * H * ox_a
        J[:, sl, 1] = mm * H * ox_b
        J[:, sl, 2] = mm * ox * (oy_a * w).sum(1)[:, None]
        J[:, sl, 3] = mm * ox * (oy_b * w).sum(1)[:, None]
        J[:, sl, 4] = H * ox
        J[:, sl, 5] = mm * ((oy_s * w).sum(1)[:, None] * ox + H * ox_s)
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
        model = np.zeros((len(active), data.shape[1]))
        Js = []
        for k in range(K):
            mk, Jk = _rect_terms(t[:, k], None if split is None else split[active])
            model += mk
            Js.append(Jk)
        J = np.concatenate(Js, 2)
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
        step[:, keep] = _lm_solve(J[:, :, keep], res)
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
    x0, x1, pmax = _edges_init(P)
    y0, y1, _ = _edges_init(Q)
    m = np.clip(pmax / np.maximum(y1 - y0, 0.5), 0.2, 3.0)
    sig = np.full(len(P), 0.1) if sigma is None else np.asarray(sigma, dtype=np.float64)
    th0 = np.stack([x0, x1, y0, y1, m, sig], 1)[:, None, :]
    th = fit_rects(P, Q, th0, iters, fix_sigma=sigma is not None, sigma_prior=sigma_prior)[:, 0]
    return dict(zip(("x0", "x1", "y0", "y1", "m", "sigma"), th.T))


def disk_profiles(cx, cy, r, size: int = SIZE, grad: bool = False):
    """Exact area of a disk inside each column strip [j, j+1] x [0, S] and each row strip.

    Returns P (n, S), Q (n, S); with ``grad`` also their Jacobians (n, 2S, 3) w.r.t. (cx, cy, r),
    from the closed-form derivatives of ``render.disk_corner_area``.
    """
    G = render.disk_corner_area
    grid = np.arange(size + 1, dtype=np.float64)[None, :]
    cx, cy, r = cx[:, None], cy[:, None], r[:, None]
    u = grid - cx  # column boundaries relative to the centre
    v = grid - cy
    top, bot, right, left = size - cy, -cy, size - cx, -cx
    if not grad:
        gx = G(u, top, r) - G(u, bot, r)  # area left of x = grid
        gy = G(right, v, r) - G(left, v, r)  # area below y = grid
        return np.diff(gx, axis=1), np.diff(gy, axis=1)
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
    return np.diff(a1 - a0, axis=1), np.diff(b1 - b0, axis=1), J


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


# ----------------------------------------------------------------------------------------------
# The generic pipeline


def _dilate(mask, iterations):
    """Dilate (n, H, W) masks by a 3x3 square ``iterations`` times, image by image (a separable
    maximum filter of width 2 iterations + 1: the same result, faster)."""
    w = 2 * iterations + 1
    return ndimage.maximum_filter(mask.view(np.uint8), size=(1, w, w), mode="constant") > 0


def _find_object(mask, ink, strength, dilate):
    """Core (largest component of mask), its size, runner-up size, ink vector (n, 3), support.

    The ink direction is the mean over the core's strongest pixels (partly covered pixels have the
    same direction; the fits' depth factor m absorbs the scale).
    """
    core, s1, s2 = largest_component(mask, strength)
    smax = np.where(core, strength, 0.0).max((1, 2))
    full = core & (strength >= 0.75 * smax[:, None, None])
    cnt = np.maximum(full.sum((1, 2)), 1)
    d = np.einsum("nhwc,nhw->nc", ink, full.astype(ink.dtype)) / cnt[:, None]
    return core, s1, s2, d, _dilate(core, dilate)


def extract(images, spec, *, dilate: int = 2, reasons: dict | None = None, nan: bool = True):
    """Find, un-blend and fit the objects listed in ``spec`` in every image.

    spec: list of (name, colour class "yellow" | "blue" | "grey", shape "rect" | "disk").
    Returns (fits, ok): fits[name] is a dict of (n,) arrays in pixels with y up (rect: x0, x1, y0,
    y1, m, sigma; disk: cx, cy, r, m; plus "explained"), NaN where not ok; ok is (n,) bool.
    ``reasons``: pass a dict to receive, per failed check, the (n,) bool array of images it failed.
    """
    reasons = {} if reasons is None else reasons

    def check(label, passed):
        nonlocal ok
        reasons[label] = reasons.get(label, False) | ~passed
        ok &= passed

    img = to_float(images)
    n = img.shape[0]
    ink, strength, classes = ink_and_classes(img, with_grey=any(c == "grey" for _, c, _ in spec))
    K = len(spec)
    ok = np.ones(n, dtype=bool)
    cores, inks, supports = [], [], []
    for _name, cls, _shape in spec:
        core, s1, s2, d, support = _find_object(classes[cls], ink, strength, dilate)
        check(f"{_name}: not found", s1 >= MIN_CORE_PIXELS)
        check(f"{_name}: extra blob", s2 < np.maximum(EXTRA_BLOB_PIXELS, 0.25 * s1))
        check(f"{_name}: faint", np.linalg.norm(d, axis=1) > 0.1)
        cores.append(core)
        inks.append(d)
        supports.append(support)
    sup = np.stack(supports, 1)  # (n, K, H, W)
    D = np.stack(inks, 1).astype(np.float32)  # (n, K, 3)
    dn2 = np.maximum((D * D).sum(-1), 1e-6)
    alpha = np.einsum("nhwc,nkc->nkhw", ink, D) / dn2[:, :, None, None] * sup
    multi = sup.sum(1) >= 2
    if multi.any():
        ni, hi, wi = np.nonzero(multi)
        act = sup[ni, :, hi, wi].astype(np.float64)  # (m, K)
        Dm = D[ni] * act[:, :, None]
        G = np.einsum("mkc,mlc->mkl", Dm, Dm)
        G += (1e-3 * np.einsum("mkk->m", G) / K + 1e-9)[:, None, None] * np.eye(K)[None]
        rhs = np.einsum("mkc,mc->mk", Dm, ink[ni, hi, wi].astype(np.float64))
        alpha[ni, :, hi, wi] = np.linalg.solve(G, rhs[..., None])[..., 0] * act
    # unexplained strong ink: object pixels outside every support
    outside = (strength >= STRONG) & ~sup.any(1)
    check("unexplained ink", outside.sum((1, 2)) <= 3)
    fits = {}
    for shape in {s for _, _, s in spec} - {"rect", "disk"}:
        raise ValueError(f"unknown shape {shape!r}; expected 'rect' or 'disk'")
    yup = alpha[:, :, ::-1, :]  # y up: index 0 is the bottom cell
    P_all, Q_all = yup.sum(2), yup.sum(3)  # (n, K, S) column and row profiles
    rects = [k for k, (_, _, shape) in enumerate(spec) if shape == "rect"]
    rect_fits, ref = {}, None
    if len(rects) >= 2:
        # The image's blur, from its largest rectangle (most core pixels): a thin blurred bar
        # alone cannot tell its depth from its height, so the others are pulled towards it.
        sizes = np.stack([cores[k].sum((1, 2)) for k in rects], 1)
        ref = np.asarray(rects)[sizes.argmax(1)]
        rows = np.arange(n)
        f_ref = fit_rect(P_all[rows, ref], Q_all[rows, ref])
        for k in rects:
            f = {key: np.array(v) for key, v in f_ref.items()}
            other = np.flatnonzero(ref != k)
            if len(other):
                # a sharp image (sigma near its floor, where it is poorly determined) gives
                # no prior: thin sharp bars measure exactly with a free blur width
                prior = np.where(f_ref["sigma"][other] > 0.15, f_ref["sigma"][other], np.nan)
                sub = fit_rect(P_all[other, k], Q_all[other, k], sigma_prior=prior)
                for key in f:
                    f[key][other] = sub[key]
            rect_fits[k] = f
    for k, (name, _cls, shape) in enumerate(spec):
        if shape == "rect":
            f = rect_fits[k] if k in rect_fits else fit_rect(P_all[:, k], Q_all[:, k])
            model = render.rect_coverage(f["x0"], f["x1"], f["y0"], f["y1"])
        else:
            f = fit_disk(P_all[:, k], Q_all[:, k])
            model = render.disk_coverage(f["cx"], f["cy"], f["r"])
        f["explained"] = _explained(alpha[:, k], f["m"][:, None, None] * model)
        check(f"{name}: shape", f["explained"] >= MIN_EXPLAINED)
        check(f"{name}: depth", (f["m"] >= DEPTH_RANGE[0]) & (f["m"] <= DEPTH_RANGE[1]))
        fits[name] = f
    if nan:
        for f in fits.values():
            for key in f:
                f[key] = np.where(ok, f[key], np.nan)
    return fits, ok


CHUNK = 1024  # images per block: keeps the per-pixel arrays in cache and the memory bounded


def chunked(fn):
    """Run a per-task measurement on blocks of CHUNK images and concatenate (same results)."""

    def run(images, reasons: dict | None = None):
        img = to_float(images)
        if len(img) <= CHUNK:
            return fn(img, reasons=reasons)
        parts, why = [], []
        for i in range(0, len(img), CHUNK):
            why.append({})
            parts.append(fn(img[i : i + CHUNK], reasons=why[-1]))
        if reasons is not None:
            for key in set().union(*why):
                reasons[key] = np.concatenate(
                    [w.get(key, np.zeros(len(p[1]), bool)) for w, p in zip(why, parts)]
                )
        feats = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
        return feats, np.concatenate([p[1] for p in parts])

    run.__name__, run.__doc__, run.__wrapped__ = fn.__name__, fn.__doc__, fn
    return run


def _scene_check(reasons, label, ok, passed):
    """ok & passed, recording the images that failed under reasons[label] when asked."""
    if reasons is not None:
        reasons[label] = reasons.get(label, False) | ~passed
    return ok & passed


def _nan_where(features: dict, ok: np.ndarray) -> dict:
    return {k: np.where(ok, np.asarray(v, dtype=np.float64), np.nan) for k, v in features.items()}


def _overlap_1d(a0, a1, b0, b1, margin=0.0):
    return (np.minimum(a1, b1) - np.maximum(a0, b0)) > margin


# ----------------------------------------------------------------------------------------------
# Per-task measurements (features in units of W)


@chunked
def measure_light_shadow(images, reasons: dict | None = None):
    """Task A: l1, h1, h2, l2 (+ sun_x, sun_y, sun_r, pole_x, sun_side, shadow_side), ok.

    The pole (blue/green) stands on its shadow (dark grey), and the two inks are often nearly
    parallel (median cosine about 0.93 over the colour boxes), so per-pixel un-mixing is
    ill-conditioned.  Instead the two are fitted jointly: the sum of the ink's channels is linear
    in the coverage of each object (sum_c ink_c = a_pole |d_pole|_1 + a_shadow |d_shadow|_1
    exactly), so its profiles are the sum of two rectangle models, each with its own depth m
    (``fit_rects``), sharing the ground line (pole bottom = shadow top) and the image's blur.
    """
    reasons = {} if reasons is None else reasons
    img = to_float(images)
    n = img.shape[0]
    ok = np.ones(n, dtype=bool)

    def check(label, passed):
        nonlocal ok
        reasons[label] = reasons.get(label, False) | ~passed
        ok &= passed

    ink, strength, classes = ink_and_classes(img, with_grey=False)
    # the sun: the yellow object, fitted as a disk (cut by the canvas when near x = 0 or W)
    core, s1, s2, d, sup = _find_object(classes["yellow"], ink, strength, 2)
    check("sun: not found", s1 >= MIN_CORE_PIXELS)
    check("sun: extra blob", s2 < np.maximum(EXTRA_BLOB_PIXELS, 0.25 * s1))
    check("sun: faint", np.linalg.norm(d, axis=1) > 0.1)
    dn2 = np.maximum((d * d).sum(-1), 1e-6)
    a_sun = np.einsum("nhwc,nc->nhw", ink, d) / dn2[:, None, None] * sup
    yup = a_sun[:, ::-1, :]
    sun = fit_disk(yup.sum(1), yup.sum(2))
    sun_cov = render.disk_coverage(sun["cx"], sun["cy"], sun["r"])
    sun["explained"] = _explained(a_sun, sun["m"][:, None, None] * sun_cov)
    check("sun: shape", sun["explained"] >= MIN_EXPLAINED)
    check("sun: depth", (sun["m"] >= DEPTH_RANGE[0]) & (sun["m"] <= DEPTH_RANGE[1]))
    # pole + shadow: the largest non-yellow component, as channel-summed ink minus the sun's model
    other = (strength >= STRONG) & ~classes["yellow"] & ~sup
    ucore, u1, u2 = largest_component(other, strength)
    check("pole/shadow: not found", u1 >= 2 * MIN_CORE_PIXELS)
    check("pole/shadow: extra blob", u2 < np.maximum(EXTRA_BLOB_PIXELS, 0.25 * u1))
    usup = _dilate(ucore, 2)
    check("unexplained ink", ((strength >= STRONG) & ~sup & ~usup).sum((1, 2)) <= 3)
    ink_sum = ink.sum(-1) - (sun["m"] * d.sum(1))[:, None, None] * sun_cov
    a = np.where(usup, ink_sum, 0.0)
    th0 = _pole_shadow_init(a[:, ::-1, :], ucore[:, ::-1, :])
    yup = a[:, ::-1, :]
    split = np.clip(np.rint(th0[:, 0, 2]), 1, SIZE - 1).astype(int)  # near the ground line
    low = np.arange(SIZE)[None, :, None] < split[:, None, None]
    P2 = np.stack([np.where(low, yup, 0.0).sum(1), np.where(low, 0.0, yup).sum(1)], 1)
    th = fit_rects(
        P2, yup.sum(2), th0, iters=20, ties=(((0, 2), (1, 3)), ((0, 5), (1, 5))), split=split
    )
    pole = dict(zip(("x0", "x1", "y0", "y1", "m", "sigma"), th[:, 0].T))
    sh = dict(zip(("x0", "x1", "y0", "y1", "m", "sigma"), th[:, 1].T))
    model = pole["m"][:, None, None] * render.rect_coverage(
        pole["x0"], pole["x1"], pole["y0"], pole["y1"]
    ) + sh["m"][:, None, None] * render.rect_coverage(sh["x0"], sh["x1"], sh["y0"], sh["y1"])
    check("pole/shadow: shape", _explained(a, model) >= MIN_EXPLAINED)
    for obj, f in (("pole", pole), ("shadow", sh)):
        check(f"{obj}: depth", (f["m"] >= 0.25) & (f["m"] <= 4.5))  # ink sums 0.5-2.4, x blur
    pole_x = 0.5 * (pole["x0"] + pole["x1"])
    sun_side = np.sign(sun["cx"] - pole_x)
    shadow_mid = 0.5 * (sh["x0"] + sh["x1"])
    shadow_side = np.sign(shadow_mid - pole_x)
    # the shadow's far end, measured from the pole centre (where the shadow starts)
    far = np.where(shadow_side > 0, sh["x1"], sh["x0"])
    # scene geometry: a vertical pole above a horizontal shadow, the sun above the pole
    check("geometry", (sh["y1"] <= pole["y0"] + 1.0) & (sun["cy"] - sun["r"] > pole["y1"] - 0.5))
    feats = {
        "l1": np.abs(sun["cx"] - pole_x) / SIZE,
        "h1": (sun["cy"] - pole["y1"]) / SIZE,
        "h2": (pole["y1"] - pole["y0"]) / SIZE,
        "l2": np.abs(far - pole_x) / SIZE,
        "sun_x": sun["cx"] / SIZE,
        "sun_y": sun["cy"] / SIZE,
        "sun_r": sun["r"] / SIZE,
        "pole_x": pole_x / SIZE,
        "sun_side": sun_side,
        "shadow_side": shadow_side,
    }
    return _nan_where(feats, ok), ok


def _pole_shadow_init(a, core):
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
    yb, _, _ = _edges_init(np.where(cells <= bottom[:, None] + 1, Q, 0.0))  # pure shadow cells
    g = np.minimum(yb + 0.08 * SIZE, top - 0.5)
    _, yt, _ = _edges_init(np.where(cells >= np.ceil(g)[:, None] + 1, Q, 0.0))
    rows = np.arange(SIZE)[None, :, None]
    upper = (rows >= np.ceil(g)[:, None, None] + 1) & core
    lower = (rows <= np.floor(g)[:, None, None] - 1) & core
    colmask_u = upper.any(1)  # columns of the pole
    colmask_l = lower.any(1)
    Pu = np.where(rows >= np.ceil(g)[:, None, None] + 1, a, 0.0).sum(1) * _dilate1d(colmask_u)
    Pl = np.where(rows <= np.floor(g)[:, None, None] - 1, a, 0.0).sum(1) * _dilate1d(colmask_l)
    px0, px1, _ = _edges_init(Pu)
    sx0, sx1, _ = _edges_init(Pl)
    mid = np.clip(np.floor(0.5 * (g + yt)).astype(int), 0, SIZE - 1)
    smid = np.clip(np.floor(0.5 * (yb + g)).astype(int), 0, SIZE - 1)
    rows_i = np.arange(n)
    mp = Q[rows_i, mid] / np.maximum(px1 - px0, 0.5)
    ms = Q[rows_i, smid] / np.maximum(sx1 - sx0, 0.5)
    sig = np.full(n, 0.1)
    pole = np.stack([px0, px1, g, yt, np.clip(mp, 0.2, 3.0), sig], 1)
    shadow = np.stack([sx0, sx1, yb, g, np.clip(ms, 0.2, 3.0), sig], 1)
    return np.stack([pole, shadow], 1)


def _dilate1d(mask):
    """Grow a (n, S) boolean mask by one cell on each side (as float)."""
    out = mask.copy()
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out.astype(np.float64)


def _explained(alpha, model):
    """Fraction of the coverage map's energy explained by the model: 1 - |a - model|^2 / |a|^2."""
    energy = (alpha.astype(np.float64) ** 2).sum((1, 2))
    return 1.0 - ((alpha - model) ** 2).sum((1, 2)) / np.maximum(energy, 1e-9)


@chunked
def measure_perspective(images, reasons: dict | None = None):
    """Task B: l1, h1, l2, h2 (+ widths w1, w2 and vertical centres yc1, yc2), ok."""
    spec = [("rect1", "yellow", "rect"), ("rect2", "blue", "rect")]
    fits, ok = extract(images, spec, reasons=reasons)
    a, b = fits["rect1"], fits["rect2"]
    overlap = _overlap_1d(a["x0"], a["x1"], b["x0"], b["x1"]) & _overlap_1d(
        a["y0"], a["y1"], b["y0"], b["y1"]
    )
    ok = _scene_check(reasons, "overlap", ok, ~overlap)
    feats = {
        "l1": a["x0"] / SIZE,
        "h1": (a["y1"] - a["y0"]) / SIZE,
        "l2": b["x0"] / SIZE,
        "h2": (b["y1"] - b["y0"]) / SIZE,
        "w1": (a["x1"] - a["x0"]) / SIZE,
        "w2": (b["x1"] - b["x0"]) / SIZE,
        "yc1": 0.5 * (a["y0"] + a["y1"]) / SIZE,
        "yc2": 0.5 * (b["y0"] + b["y1"]) / SIZE,
    }
    return _nan_where(feats, ok), ok


@chunked
def measure_two_circles(images, reasons: dict | None = None):
    """Task C: r1, r2 (+ centres x1, y1, x2, y2), ok."""
    spec = [("disk1", "yellow", "disk"), ("disk2", "blue", "disk")]
    fits, ok = extract(images, spec, reasons=reasons)
    a, b = fits["disk1"], fits["disk2"]
    apart = np.hypot(a["cx"] - b["cx"], a["cy"] - b["cy"]) >= a["r"] + b["r"] - 0.5
    ok = _scene_check(reasons, "overlap", ok, apart)
    feats = {
        "r1": a["r"] / SIZE,
        "r2": b["r"] / SIZE,
        "x1": a["cx"] / SIZE,
        "y1": a["cy"] / SIZE,
        "x2": b["cx"] / SIZE,
        "y2": b["cy"] / SIZE,
    }
    return _nan_where(feats, ok), ok


@chunked
def measure_two_squares(images, reasons: dict | None = None):
    """Task D: l1 (top square side), l2 (bottom square side), mean of width and height, ok.

    The squares are matched by colour (top yellow, bottom blue/green); ``top_above`` tells whether
    the yellow square really is above the blue one (part of the coarse rule).
    """
    spec = [("top", "yellow", "rect"), ("bottom", "blue", "rect")]
    fits, ok = extract(images, spec, reasons=reasons)
    a, b = fits["top"], fits["bottom"]
    overlap = _overlap_1d(a["x0"], a["x1"], b["x0"], b["x1"]) & _overlap_1d(
        a["y0"], a["y1"], b["y0"], b["y1"]
    )
    ok = _scene_check(reasons, "overlap", ok, ~overlap)
    for f in (a, b):  # a side length is only defined for a square (to 20 % or half a pixel)
        w, h = f["x1"] - f["x0"], f["y1"] - f["y0"]
        ok = _scene_check(reasons, "not square", ok, np.abs(w - h) <= 0.2 * np.maximum(w, h) + 0.5)
    feats = {
        "l1": 0.5 * ((a["x1"] - a["x0"]) + (a["y1"] - a["y0"])) / SIZE,
        "l2": 0.5 * ((b["x1"] - b["x0"]) + (b["y1"] - b["y0"])) / SIZE,
        "w1": (a["x1"] - a["x0"]) / SIZE,
        "h1": (a["y1"] - a["y0"]) / SIZE,
        "w2": (b["x1"] - b["x0"]) / SIZE,
        "h2": (b["y1"] - b["y0"]) / SIZE,
        "x1": a["x0"] / SIZE,
        "y1": a["y0"] / SIZE,
        "x2": b["x0"] / SIZE,
        "y2": b["y0"] / SIZE,
        "top_above": (a["y0"] >= b["y1"] - 0.5).astype(np.float64),
    }
    return _nan_where(feats, ok), ok
