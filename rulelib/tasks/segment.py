"""Segmentation of rule-task images: background, colour classes, object cores and supports.

Each pixel of a render is white minus the sum of the objects' inks (1 - colour) weighted by the
area they cover (``rulelib.tasks.render``).  Generated images add a colour drift (per-channel
gain and offset), blur and noise; ``background`` removes the drift's background level so that
the ink stays linear in the coverage, ``ink_and_classes`` classes the strongly inked pixels by
hue (blending with white keeps the hue) and chroma ratio, and ``largest_component`` /
``find_object`` pick each object's core (its largest 8-connected component of the expected
colour) and support (the core dilated).
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
NOISE_Z = 4.0  # object pixels lie this many noise std above the background at least
GREY_RHO = 0.22  # chroma ratio below this is the dark grey box (blue/green >= 0.21, grey <= 0.23)
HUE_RANGES = {"yellow": (-45.0, 100.0), "blue": (140.0, 330.0)}  # drift-tolerant hue sectors

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
# Segmentation


_G_STEPS, _G_MAX = 200, 8  # g(u) tabulated on [0, 8] (g(8) < 1e-16)
_U = np.arange(_G_STEPS * _G_MAX + 1) / _G_STEPS + 0.5 / _G_STEPS  # bin centres
_G_TABLE = (np.exp(-0.5 * _U * _U) / _SQRT2PI - _U * (1.0 - ndtr(_U))).astype(np.float32)


def _unclip(ink, bg):
    """Remove the bias that clipping at white adds to noisy pixels near white.

    A pixel of true ink x >= 0 with Gaussian noise n (std s) clipped at white reads
    y = max(x - n, 0), whose mean exceeds x by s g(x/s), g(u) = phi(u) - u (1 - Phi(u)).  The
    noise std follows from the background (x = 0): mean y = s phi(0).  We subtract s g(y/s)
    (plug-in), which is ~0 for clean images and for strongly inked pixels.  ``bg`` (3, n): mean
    ink of the background per channel and image (0 where the channel is not clipped).
    """
    s = np.maximum(bg, 0.0) / 0.3989  # (3, n) noise std per channel and image
    noisy = s > 0.004  # about one uint8 level: below it (clean images) there is nothing to remove
    if not noisy.any():
        return ink
    ink = ink.copy()
    for c in range(3):
        sel = noisy[c]
        if not sel.any():
            continue
        sn = s[c, sel].astype(np.float32)[:, None, None]
        # g(u) from a table (steps of 1/200: error below 0.003 s, a tenth of a uint8 level)
        u = np.minimum(np.maximum(ink[c, sel], 0.0) * (_G_STEPS / sn), _G_STEPS * _G_MAX)
        ink[c, sel] -= sn * _G_TABLE[u.astype(np.int32)]
    return ink


def _window_mean(ink, med, win):
    """Mean ink (3, n) and share of exact zeros (3, n) of the pixels within win (n,) of the
    per-channel median med (3, n) in every channel (the background pixels)."""
    near = (np.abs(ink - med[:, :, None, None]) < win[:, None, None]).all(0).astype(ink.dtype)
    cnt = np.maximum(near.sum((1, 2)), 1)
    level = np.einsum("cnhw,nhw->cn", ink, near) / cnt  # one pass, no temporaries
    zero = np.einsum(
        "cnhw,nhw->cn", (ink <= 0).view(np.uint8), near.astype(np.uint8), dtype=np.int64
    )
    return level, zero / cnt


def background(ink):
    """Remove the background from ink planes (3, n, H, W): returns (ink, level (3, n), noise (n,)).

    Generated images drift in colour: a per-channel gain g and offset o turn a pixel p into
    g p + o, so the background reads g + o instead of white and an object's ink becomes
    g (1 - colour) scaled by its coverage, still linear in the coverage (the fits' depth
    factor absorbs g).  The background pixels are those within a window of the per-channel
    median in every channel (objects cover well under half of every scene, so the median is
    background); the level is their mean ink.  A channel whose background sits at white (over
    20 % of those pixels exactly 0) is clipped: its level stays 0 and the clipping bias of its
    noise is removed (``_unclip``).  ``noise``: the pixel noise std, from the median absolute
    difference of horizontally neighbouring pixels (1.4826 / sqrt 2 of it: background and
    object interiors are flat, only edges differ otherwise), the largest over the channels; it
    widens the window (0.15, or 3 std above a std of 0.06) and sets the threshold of an object
    pixel (``ink_and_classes``).
    """
    n = ink.shape[1]
    # the median of every third pixel (341 of 1024; a third of the cost) is as good a start
    med = np.median(ink.reshape(3, n, -1)[:, :, ::3], axis=2)  # (3, n)
    step = np.abs(np.diff(ink[:, :, ::2, :], axis=3)).reshape(3, n, -1)  # every other row
    sigma = 1.4826 / np.sqrt(2.0) * np.median(step, axis=2)  # (3, n)
    level, zero = _window_mean(ink, med, np.full(n, 0.15, dtype=ink.dtype))
    # a channel at white clips half its noise to 0, and so its differences: there the std is
    # s = mean ink / phi(0) of the clipped noise (as in _unclip), when half of it reads 0
    sigma = np.where(zero >= 0.45, np.maximum(sigma, level / 0.3989), sigma)
    noise = sigma.max(0)  # (n,)
    wide = noise > 0.06  # noisier than the 0.05: the 0.15 window would truncate it
    if wide.any():
        lw, zw = _window_mean(ink[:, wide], med[:, wide], (3 * noise[wide]).astype(ink.dtype))
        level[:, wide], zero[:, wide] = lw, zw
    clipped = zero > 0.2
    ink = ink - np.where(clipped, 0.0, level).astype(ink.dtype)[:, :, None, None]
    ink = _unclip(ink, np.where(clipped, level, 0.0))
    return ink, np.where(clipped, 0.0, level), noise


def ink_and_classes(img: np.ndarray, with_grey: bool = True):
    """Background-corrected ink planes (3, n, H, W), strength (n, H, W) and colour-class masks;
    classes["strong"] marks the object pixels of every colour.

    ``with_grey``: whether the scene has a dark grey object.  If not, every chromatic enough pixel
    (rho >= 0.08) is classed by hue alone, so that low-saturation blues are never taken for grey.
    With grey (task A), the grey/blue split of rho is set per image between the two clusters of
    rho values of the strongly inked, non-yellow pixels (1-D 2-means), falling back to GREY_RHO.
    """
    ink = 1.0 - np.moveaxis(img, -1, 0)  # (3, n, H, W): channel planes are contiguous and fast
    ink, _, noise = background(ink)
    r, g, b = ink[0], ink[1], ink[2]
    mx = np.maximum(np.maximum(r, g), b)
    mn = np.minimum(np.minimum(r, g), b)
    # an object pixel: ink above STRONG, or above NOISE_Z noise std in noisier images (at a fixed
    # threshold, noise above 0.05 would scatter "object pixels" over the background)
    strong = mx >= np.maximum(STRONG, NOISE_Z * noise)[:, None, None].astype(mx.dtype)
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
    classes["strong"] = strong
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


def dilate(mask, iterations):
    """Dilate (n, H, W) masks by a 3x3 square ``iterations`` times, image by image (a separable
    maximum filter of width 2 iterations + 1: the same result, faster)."""
    w = 2 * iterations + 1
    return ndimage.maximum_filter(mask.view(np.uint8), size=(1, w, w), mode="constant") > 0


def find_object(mask, ink, strength, grow: int):
    """Core (largest component of mask), its size, runner-up size, ink vector (n, 3), support.

    The ink direction is the mean over the core's strongest pixels (partly covered pixels have the
    same direction; the fits' depth factor m absorbs the scale).
    """
    core, s1, s2 = largest_component(mask, strength)
    smax = np.where(core, strength, 0.0).max((1, 2))
    full = core & (strength >= 0.75 * smax[:, None, None])
    cnt = np.maximum(full.sum((1, 2)), 1)
    d = np.einsum("nhwc,nhw->nc", ink, full.astype(ink.dtype)) / cnt[:, None]
    return core, s1, s2, d, dilate(core, grow)
