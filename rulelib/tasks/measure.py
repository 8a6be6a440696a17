"""Sub-pixel measurement of rule-task images: segment by colour, un-blend, fit, check each object.

The paper measured its features with colour masks, contours and moments on images upscaled to 128 px
and dropped images where an object was not found (docs/paper.md section 3).  We measure the
32x32 image itself and exploit how it was made (``rulelib.tasks.render``): each pixel is the
background minus the sum of the objects' inks (1 - colour) weighted by the area they cover.  The
steps, vectorised over the batch (segmentation in ``rulelib.tasks.segment``, fits in
``rulelib.tasks.fit`` from ``rulelib.tasks.estimate``'s starts, shape checks in
``rulelib.tasks.explain``):

1. **Ink and background.**  ink = background - pixel per channel, the background level estimated
   per image and channel (a colour drift g p + o keeps the ink linear in the coverage); noise
   clipped at white is un-biased (``segment.background``).
2. **Segmentation by colour.**  Pixels with ink >= STRONG (or 4 noise std, in noisy images) are
   classed by hue and chroma ratio (blending with white keeps both); the largest 8-connected
   component of each expected colour is the object's core; a second sizeable one (a duplicated
   or split object) is rejected.
3. **Un-blending.**  The object's ink direction is the mean ink over its most strongly inked core
   pixels; each pixel of its support (core dilated by 1 px) gets the coverage
   alpha = <ink, d_k> / |d_k|^2 (ridge least squares where supports overlap).  Task A's pole and
   shadow (nearly parallel inks) are fitted jointly on the channel sum of the ink.
4. **Scene-model fits** of the column and row sums of alpha (profiles), by damped Gauss-Newton
   (``fit.fit_rects`` / ``fit.fit_disk``): blurred pixel-integrated boxes and exact clipped
   disks, each with an ink depth m.  Blur, colour drift and noise move these estimates little.
5. **Uncertainty.**  The Gauss-Newton covariance at the optimum (``rulelib.tasks.uncertainty``)
   gives each feature a standard error ``se_<feature>`` (units of W), ``se_px`` (the largest, px)
   and ``resid`` (worst object's RMS profile residual); ``rule_report(max_se_px=)`` filters by it.
6. **Checks.**  An image is measurable (ok) only if every object was found, no sizeable extra blob
   or unexplained ink exists, each fitted shape explains its coverage map (1 - |residual|^2 /
   |alpha|^2 >= 0.7) *and* explains it better than the other shape does (a disk fitted where a
   rectangle was asked and vice versa, ``ALT_RATIO``: another task's shapes are rejected), the
   depth factor is plausible, and the fitted objects satisfy the scene's geometry (no overlaps;
   D's squares square, A's sun above the pole above the shadow).  Otherwise its features are NaN:
   never a confident wrong value.  ``reasons={}`` passed to ``measure`` learns the failed checks.

The per-task functions run on blocks of ``CHUNK`` images (``chunked``), so any n fits in memory.

Speed (``benchmarks/measure.py``: process CPU time, one thread, 8192 images, 2-core AMD EPYC with
AVX2, beside two training jobs): clean renders A 5350, B 7650, C 5650, D 6950 images/s;
degraded A 1950, B 2750, C 2550, D 2400 (quiet machine, task A: 5200-5850 clean, 2000 degraded).
Before the allocator warm-up (``rulelib.allocator``) a process that had not yet freed a large
array faulted each block's pages in again (about 10 page faults per image): clean A ran
3800-4350 there and 4950 in the benchmark's own process, the same answers to the bit.

Paths: sharp renders start their fits at closed-form estimates (``rulelib.tasks.estimate``) and
stop after one Gauss-Newton step (``fit._settled``), every covariance reuses its fit's last
Jacobian, the other shape is fitted only where the object's own shape leaves over SKIP_ALT of its
coverage map unexplained and stops on its residual (ALT_COST_TOL).
"""

from __future__ import annotations

import numpy as np

from rulelib import allocator
from rulelib.tasks import render
from rulelib.tasks.estimate import pole_shadow_init
from rulelib.tasks.explain import (
    disk_window_groups,
    explained_by_other_shape,
    explained_disks,
    explained_rects,
)
from rulelib.tasks.fit import (  # noqa: F401  (box_profile, disk_profiles: public re-exports)
    box_profile,
    disk_profiles,
    fit_disk,
    fit_rect,
    fit_rects,
)
from rulelib.tasks.segment import (
    check_images,
    dilate,
    find_object,
    ink_and_classes,
    largest_component,
    project,
    to_float,  # noqa: F401  (public re-export: rulelib.tasks.mirror, tests)
)
from rulelib.tasks.uncertainty import (
    disk_covariance,
    feature_se,
    rect_covariance,
    rect_se,
    se_of,
)

SIZE = render.SIZE
MIN_CORE_PIXELS = 2  # an object's core has at least this many pixels
EXTRA_BLOB_PIXELS = 4  # a second component of an object's colour this large: not measurable
A_EXTRA_BLOB_PIXELS = 2  # task A: a second non-yellow component this large, absolute
MIN_EXPLAINED = 0.7  # fraction of the coverage map's energy a fitted shape must explain
DEPTH_RANGE = (0.6, 3.0)  # plausible depth factor m (> 1: a thin blurred object has no full pixel)
# An object is rejected when its residual energy exceeds ALT_RATIO times that of the other shape.
# A disk must beat the rectangle outright (the rectangle has two more free parameters: both
# extents and the blur); a rectangle may be up to twice worse than the disk, which a thin small
# bar under blur and noise sometimes is.  Calibrated on the mild degradations (tasks.degrade): true
# shapes rejected for 0.1-0.3 % of images, swapped shapes for >= 99 % (tests/test_measure.py).
ALT_RATIO = {"rect": 2.0, "disk": 1.0}
SHADOW_START_TOL = 0.75  # px: task A's shadow starts at the pole centre
# Every object of the tasks covers a whole pixel (the redraw rule of rulelib.tasks.geometric), so
# both sides of a rectangle are >= 1 px; 0.75 px leaves room for the fit's noise.
MIN_EXTENT_PX = 0.75
SKIP_ALT = 0.01  # own shape's unexplained energy below which the other shape is not fitted
ALT_ITERS = 8  # Gauss-Newton steps of the other shape's fit (it starts near its optimum)
ALT_COST_TOL = 0.01  # the other shape's fit stops once a step lowers its residual by < 1 %


# ----------------------------------------------------------------------------------------------
# The generic pipeline


def extract(
    images, spec, *, grow: int = 1, reasons: dict | None = None, nan: bool = True, segmented=None
):
    """Find, un-blend and fit the objects listed in ``spec`` in every image.

    spec: list of (name, colour class "yellow" | "blue" | "grey" | "strong", shape "rect" |
    "disk"), or (name, class, shape, (c0, c1)): the object's core is searched in the columns
    c0 <= column < c1 only (two objects of one colour on known sides, task mirror).  "strong" is
    every object pixel, whatever its colour.
    Returns (fits, ok): fits[name] is a dict of (n,) arrays in pixels with y up (rect: x0, x1, y0,
    y1, m, sigma; disk: cx, cy, r, m; plus "explained", "alt_explained" (by the other shape, NaN
    where not fitted), "resid" (RMS profile residual) and "cov" (n, 4, 4) over x0, x1, y0, y1 /
    (n, 3, 3) over cx, cy, r) and "ink" (n, 3, the ink direction of its strongest core pixels),
    NaN where not ok; ok is (n,) bool.
    ``reasons``: pass a dict to receive, per failed check, the (n,) bool array of images it failed.
    ``segmented``: ``ink_and_classes(images, ...)`` where the caller has it already.
    """
    reasons = {} if reasons is None else reasons

    def check(label, passed):
        nonlocal ok
        reasons[label] = reasons.get(label, False) | ~passed
        ok &= passed

    spec = [(*entry, None) if len(entry) == 3 else tuple(entry) for entry in spec]
    grey = any(c == "grey" for _, c, _, _ in spec)
    if segmented is None:
        segmented = ink_and_classes(images, with_grey=grey)
    ink, strength, classes = segmented
    n = ink.shape[1]
    K = len(spec)
    ok = np.ones(n, dtype=bool)
    cores, inks, supports = [], [], []
    for _name, cls, _shape, cols in spec:
        mask = classes[cls]
        if cols is not None:
            inside = np.zeros(SIZE, dtype=bool)
            inside[cols[0] : cols[1]] = True
            mask = mask & inside
        core, s1, s2, d, support = find_object(mask, ink, strength, grow)
        check(f"{_name}: not found", s1 >= MIN_CORE_PIXELS)
        check(f"{_name}: extra blob", s2 < _extra_blob_limit(s1))
        check(f"{_name}: faint", np.linalg.norm(d, axis=1) > 0.1)
        cores.append(core)
        inks.append(d)
        supports.append(support)
    sup = np.stack(supports, 1)  # (n, K, H, W)
    D = np.stack(inks, 1).astype(np.float32)  # (n, K, 3)
    dn2 = np.maximum((D * D).sum(-1), 1e-6)
    alpha = np.stack([project(ink, D[:, k]) for k in range(K)], 1) / dn2[:, :, None, None] * sup
    multi = sup.sum(1) >= 2
    if multi.any():
        ni, hi, wi = np.nonzero(multi)
        act = sup[ni, :, hi, wi].astype(np.float64)  # (m, K)
        Dm = D[ni] * act[:, :, None]
        G = np.einsum("mkc,mlc->mkl", Dm, Dm)
        G += (1e-3 * np.einsum("mkk->m", G) / K + 1e-9)[:, None, None] * np.eye(K)[None]
        rhs = np.einsum("mkc,mc->mk", Dm, ink[:, ni, hi, wi].T.astype(np.float64))
        alpha[ni, :, hi, wi] = np.linalg.solve(G, rhs[..., None])[..., 0] * act
    # unexplained strong ink: object pixels outside every support
    outside = classes["strong"] & ~sup.any(1)
    check("unexplained ink", outside.sum((1, 2)) <= 3)
    fits = {}
    for shape in {s for _, _, s, _ in spec} - {"rect", "disk"}:
        raise ValueError(f"unknown shape {shape!r}; expected 'rect' or 'disk'")
    # (n, K, S) column and row profiles, the rows y up (index 0: the bottom cell)
    P_all, Q_all = alpha.sum(2), alpha.sum(3)[:, :, ::-1]
    rects = [k for k, (_, _, shape, _) in enumerate(spec) if shape == "rect"]
    rect_fits, ref, states = {}, None, {}
    if len(rects) >= 2:
        # The image's blur, from its largest rectangle (most core pixels): a thin blurred bar
        # alone cannot tell its depth from its height, so the others are pulled towards it.
        sizes = np.stack([cores[k].sum((1, 2)) for k in rects], 1)
        ref = np.asarray(rects)[sizes.argmax(1)]
        rows, st_ref = np.arange(n), {}
        f_ref = fit_rect(P_all[rows, ref], Q_all[rows, ref], state=st_ref)
        for k in rects:
            f, st = dict(f_ref), dict(st_ref)
            other = np.flatnonzero(ref != k)
            if len(other):
                # a sharp image (sigma near its floor, where it is poorly determined) gives
                # no prior: thin sharp bars measure exactly with a free blur width
                prior = np.where(f_ref["sigma"][other] > 0.15, f_ref["sigma"][other], np.nan)
                sub_st = {}
                sub = fit_rect(P_all[other, k], Q_all[other, k], sigma_prior=prior, state=sub_st)
                for d, part in ((f, sub), (st, sub_st)):
                    for key in d:
                        d[key] = np.array(d[key])
                        d[key][other] = part[key]
            rect_fits[k], states[k] = f, st
    for k, (name, _cls, shape, _cols) in enumerate(spec):
        P, Q, a = P_all[:, k], Q_all[:, k], alpha[:, k]
        st = states.get(k, {})
        if shape == "rect":
            f = rect_fits[k] if k in rect_fits else fit_rect(P, Q, state=st)
            th = np.stack([f[key] for key in ("x0", "x1", "y0", "y1", "m", "sigma")], 1)
            cov, f["resid"] = rect_covariance(P, Q, th[:, None, :], state=st)
            f["cov"] = cov[:, :4, :4]  # x0, x1, y0, y1
            f["explained"] = explained_rects(a, [[f[key] for key in ("x0", "x1", "y0", "y1", "m")]])
        else:
            f = fit_disk(P, Q, state=st)
            cov, f["resid"] = disk_covariance(P, Q, f, state=st)
            f["cov"] = cov[:, :3, :3]  # cx, cy, r
            f["explained"] = explained_disks(a, f["cx"], f["cy"], f["r"], f["m"])
        check(f"{name}: shape", f["explained"] >= MIN_EXPLAINED)
        f["alt_explained"] = _other_shape(P, Q, a, shape, 1.0 - f["explained"])
        other_better = 1.0 - f["explained"] > ALT_RATIO[shape] * (1.0 - f["alt_explained"])
        check(f"{name}: other shape", ~other_better)
        check(f"{name}: depth", (f["m"] >= DEPTH_RANGE[0]) & (f["m"] <= DEPTH_RANGE[1]))
        if shape == "rect":
            check(f"{name}: too small", _extent_ok(f))
        f["ink"] = inks[k]  # (n, 3): the object's ink direction (mean ink of its core)
        fits[name] = f
    if nan:
        for f in fits.values():
            for key in f:
                mask = ok.reshape((-1,) + (1,) * (np.ndim(f[key]) - 1))
                f[key] = np.where(mask, f[key], np.nan)
    return fits, ok


def _extra_blob_limit(s1):
    """Core pixels from which a second component of an object's colour rejects the image:
    EXTRA_BLOB_PIXELS, a quarter of the object's core for large objects (blur and noise split
    off fragments), half of it (at least 2) for objects smaller than 2 EXTRA_BLOB_PIXELS (a copy
    of a small object has a small core)."""
    return np.maximum(np.minimum(EXTRA_BLOB_PIXELS, np.maximum(2, 0.5 * s1)), 0.25 * s1)


def _extent_ok(f) -> np.ndarray:
    """Both sides of a fitted rectangle at least MIN_EXTENT_PX (a missing object is fitted as a
    sliver at the fit's floor of 0.2 px, e.g. task A's absent shadow)."""
    return (f["x1"] - f["x0"] >= MIN_EXTENT_PX) & (f["y1"] - f["y0"] >= MIN_EXTENT_PX)


def _other_shape(P, Q, a, shape, unexplained):
    """``explain.explained_by_other_shape`` with this module's SKIP_ALT, ALT_ITERS and
    ALT_COST_TOL (read at each call: benchmarks/measure.py switches the fast paths off)."""
    return explained_by_other_shape(P, Q, a, shape, unexplained, SKIP_ALT, ALT_ITERS, ALT_COST_TOL)


CHUNK = 256  # images per block: per-pixel arrays in cache, few passes (fastest of 128-512)


def chunked(fn):
    """Run a per-task measurement on blocks of CHUNK images and concatenate (same results)."""

    def run(images, reasons: dict | None = None):
        allocator.warm()  # keep the blocks' memory (rulelib.allocator)
        img = check_images(images)  # once; the blocks are converted one by one
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
    ink, strength, classes = ink_and_classes(images, with_grey=False)
    n = ink.shape[1]
    ok = np.ones(n, dtype=bool)

    def check(label, passed):
        nonlocal ok
        reasons[label] = reasons.get(label, False) | ~passed
        ok &= passed

    # the sun: the yellow object, fitted as a disk (cut by the canvas when near x = 0 or W)
    core, s1, s2, d, sup = find_object(classes["yellow"], ink, strength, 2)
    check("sun: not found", s1 >= MIN_CORE_PIXELS)
    check("sun: extra blob", s2 < _extra_blob_limit(s1))
    check("sun: faint", np.linalg.norm(d, axis=1) > 0.1)
    d32 = d.astype(np.float32)  # float32 maps, as extract's (half the memory traffic)
    dn2 = np.maximum((d32 * d32).sum(-1), 1e-6)
    a_sun = project(ink, d32) / dn2[:, None, None] * sup
    Ps, Qs = a_sun.sum(1), a_sun.sum(2)[:, ::-1]  # column and row (y up) profiles
    sun_state = {}
    sun = fit_disk(Ps, Qs, state=sun_state)
    windows = disk_window_groups(sun["cx"], sun["cy"], sun["r"])  # the sun's coverage
    sun["explained"] = explained_disks(a_sun, *(sun[k] for k in ("cx", "cy", "r", "m")), windows)
    check("sun: shape", sun["explained"] >= MIN_EXPLAINED)
    box_expl = _other_shape(Ps, Qs, a_sun, "disk", 1.0 - sun["explained"])
    check("sun: other shape", ~(1.0 - sun["explained"] > ALT_RATIO["disk"] * (1.0 - box_expl)))
    S, sun_resid = disk_covariance(Ps, Qs, sun, state=sun_state)
    check("sun: depth", (sun["m"] >= DEPTH_RANGE[0]) & (sun["m"] <= DEPTH_RANGE[1]))
    # pole + shadow: the largest non-yellow component, as channel-summed ink minus the sun's model
    other = classes["strong"] & ~classes["yellow"] & ~sup
    ucore, u1, u2 = largest_component(other, strength)
    check("pole/shadow: not found", u1 >= 2 * MIN_CORE_PIXELS)
    # absolute, not relative: a copy of a short shadow alone is a few pixels, far smaller than
    # the pole and shadow together (noise at >= 4 std seldom makes 2 touching pixels)
    check("pole/shadow: extra blob", u2 < A_EXTRA_BLOB_PIXELS)
    usup = dilate(ucore, 2)
    check("unexplained ink", (classes["strong"] & ~sup & ~usup).sum((1, 2)) <= 3)
    # channel-summed ink less the sun's model m |d|_1 coverage, subtracted in its window only
    ink_sum = ink.sum(0, dtype=np.float64)
    depth = sun["m"] * d.sum(1)
    for idx, win, rows, cols in windows:
        at = (idx[:, None, None], rows[:, :, None], cols[:, None, :])
        ink_sum[at] -= depth[idx, None, None] * win
    a = np.where(usup, ink_sum, 0.0)
    th0 = pole_shadow_init(a[:, ::-1, :], ucore[:, ::-1, :])
    split = np.clip(np.rint(th0[:, 0, 2]), 1, SIZE - 1).astype(int)  # near the ground line
    # column profiles below and above the split: sums over the image rows (top first) of the
    # y-cells below it, as one batched product with their indicator, and the rest
    low = (np.arange(SIZE)[None, ::-1] < split[:, None]).astype(a.dtype)[:, None, :]
    P_lo, P = (low @ a)[:, 0], a.sum(1)
    P2, Q = np.stack([P_lo, P - P_lo], 1), a.sum(2)[:, ::-1]
    ties = (((0, 2), (1, 3)), ((0, 5), (1, 5)))
    st = {}
    th = fit_rects(P2, Q, th0, iters=20, ties=ties, split=split, state=st)
    C, ps_resid = rect_covariance(P2, Q, th, ties=ties, split=split, state=st)
    pole = dict(zip(("x0", "x1", "y0", "y1", "m", "sigma"), th[:, 0].T))
    sh = dict(zip(("x0", "x1", "y0", "y1", "m", "sigma"), th[:, 1].T))
    keys = ("x0", "x1", "y0", "y1", "m")
    expl = explained_rects(a, [[pole[k] for k in keys], [sh[k] for k in keys]])
    check("pole/shadow: shape", expl >= MIN_EXPLAINED)
    for obj, f in (("pole", pole), ("shadow", sh)):
        check(f"{obj}: depth", (f["m"] >= 0.25) & (f["m"] <= 4.5))  # ink sums 0.5-2.4, x blur
    # (the shadow's length may be under a pixel beside the pole, which hides most of it)
    check("pole: too small", _extent_ok(pole))
    check("shadow: too small", sh["y1"] - sh["y0"] >= MIN_EXTENT_PX)
    pole_x = 0.5 * (pole["x0"] + pole["x1"])
    sun_side = np.sign(sun["cx"] - pole_x)
    shadow_mid = 0.5 * (sh["x0"] + sh["x1"])
    shadow_side = np.sign(shadow_mid - pole_x)
    # the shadow's far end, measured from the pole centre (where the shadow starts)
    far = np.where(shadow_side > 0, sh["x1"], sh["x0"])
    # scene geometry: a vertical pole above a horizontal shadow, the sun above the pole
    check("geometry", (sh["y1"] <= pole["y0"] + 1.0) & (sun["cy"] - sun["r"] > pole["y1"] - 0.5))
    # the shadow starts under the pole's centre (a missing shadow is fitted as the pole's foot,
    # which starts at the pole's edge, 1.9 px away)
    near = np.where(shadow_side > 0, sh["x0"], sh["x1"])
    check("shadow: not at pole", np.abs(near - pole_x) <= SHADOW_START_TOL)
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
    # standard errors: sun and pole/shadow are separate fits (independent), see module doc 5
    e = np.eye(12)
    far_g = np.where(shadow_side[:, None] > 0, e[7], e[6]) - 0.5 * (e[0] + e[1])
    se = {
        "l1": np.sqrt(S[:, 0, 0] + se_of(C, 0.5 * (e[0] + e[1])) ** 2),
        "h1": np.sqrt(S[:, 1, 1] + C[:, 3, 3]),
        "h2": se_of(C, e[3] - e[2]),
        "l2": np.sqrt(np.maximum(np.einsum("np,npq,nq->n", far_g, C, far_g), 0.0)),
    }
    feats.update(feature_se(se, np.maximum(sun_resid, ps_resid)))
    return _nan_where(feats, ok), ok


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
    sa, sb = rect_se(a), rect_se(b)
    se = {"l1": sa["x0"], "h1": sa["h"], "l2": sb["x0"], "h2": sb["h"]}
    feats.update(feature_se(se, np.maximum(a["resid"], b["resid"])))
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
    se = {
        "r1": np.sqrt(np.maximum(a["cov"][:, 2, 2], 0)),
        "r2": np.sqrt(np.maximum(b["cov"][:, 2, 2], 0)),
    }
    feats.update(feature_se(se, np.maximum(a["resid"], b["resid"])))
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
    se = {"l1": rect_se(a)["side"], "l2": rect_se(b)["side"]}
    feats.update(feature_se(se, np.maximum(a["resid"], b["resid"])))
    return _nan_where(feats, ok), ok
