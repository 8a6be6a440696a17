"""The paper's ruler: OpenCV contours on an area-upscaled image (docs/paper.md section 3a).

The exact ruler (``rulelib.tasks.measure``) reads the 32x32 image at sub-pixel accuracy.  The
paper measured its samples differently, and that ruler has an error of its own even on images
that follow the rule exactly; to read the paper's numbers against ours, this module reproduces it
with OpenCV itself.  Steps 1-2 (upscale, masks, options) are in ``rulelib.tasks.paper_masks``;
here, per image (a lean Python loop over cv2 calls; OpenCV has no batched contour finder):

3. External contours of the mask: ``cv2.findContours(mask, RETR_EXTERNAL, CHAIN_APPROX_SIMPLE)``.
4. Per task (pixels of the analysis size S; features are divided by S, i.e. fractions of the
   canvas side W, the units of ``task.measure``):

   * A: the largest contour (``contourArea``) of each object mask; sun and pole centres from the
     contour moments; pole top and bottom from the contour's extreme points, h2 = bottom - top;
     h1 = |sun y - pole top|; l1 = |sun x - pole x|; l2 = |far tail x - pole x|, the far tail
     being the shadow contour's extreme point (left or right) farther from the pole.
     ``sun_side`` / ``shadow_side`` (the coarse rule's inputs) are the signs of sun x - pole x
     and far tail x - pole x.
   * B: ``approxPolyDP`` with epsilon = 2 % of ``arcLength``, keep 4-vertex polygons, their
     ``boundingRect``; exactly two, sorted by x: l = x / S, h = height / S.
   * C: ``minEnclosingCircle`` per contour, keep radius > 5 px, the two smallest (r1 the smaller,
     r2 the larger: the paper matched disks by size, not colour); drop a pair with ratio >= 3.65.
   * D: ``boundingRect`` per contour, keep aspect w / h in [0.9, 1.1] with side > 10 px; exactly
     two, sorted by y (top first): side = max(w, h) / S.

5. An image whose objects are not found so is not measurable: ok False, features NaN, and the
   failed step recorded in ``reasons`` (one reason per image: the first step it failed).

The paper's fit (step 6) is ``rulelib.metrics.rule_report(..., trim="xy")``: 2.5-97.5 percentile
trimming of x and of y, least squares, residual std, bias against k = 1 ("bias_k1") and the
rule's k ("bias"), and the 0.05-bin conformity; ``PAPER_TRIM`` names it for the callers.
Pixel thresholds (C's 5 px, D's 10 px) are in pixels of the analysis size, as in the authors'
scripts (128 px).

Speed: see ``benchmarks/measure.py`` (images/s per core beside the exact ruler).
"""

from __future__ import annotations

import cv2
import numpy as np

from rulelib.tasks.paper_masks import (
    DEFAULT,
    VARIANTS,
    PaperRulerOptions,
    as_uint8,
    light_shadow_masks,
    object_mask,
    upscale,
)

TASKS = ("A", "B", "C", "D")
PAPER_TRIM = "xy"  # the paper's trimming of the scatter before the line fit (section 3a step 6)
POLY_EPS = 0.02  # B: approxPolyDP epsilon, fraction of the contour's perimeter
C_MIN_RADIUS_PX = 5.0  # C: keep enclosing circles of radius > 5 px
C_MAX_RATIO = 3.65  # C: drop a pair whose radius ratio is >= this
D_ASPECT = (0.9, 1.1)  # D: keep bounding boxes of aspect w / h in this range
D_MIN_SIDE_PX = 10  # D: ... and side > 10 px
CHUNK = 512  # images upscaled at once (128 px: 25 MB of RGB)

__all__ = [
    "DEFAULT",
    "PAPER_TRIM",
    "TASKS",
    "VARIANTS",
    "PaperRulerOptions",
    "measure",
    "sensitivity",
]

_FEATURES = {
    "A": ("l1", "h1", "h2", "l2", "sun_side", "shadow_side"),
    "B": ("l1", "h1", "l2", "h2"),
    "C": ("r1", "r2"),
    "D": ("l1", "l2"),
}
# the reasons each task can give, in the order its steps run
REASONS = {
    "A": ("no objects", "sun: not found", "pole: not found", "shadow: not found"),
    "B": ("no objects", "rectangles: fewer than two", "rectangles: more than two"),
    "C": ("no objects", "circles: fewer than two", "circles: ratio >= 3.65"),
    "D": ("no objects", "squares: fewer than two", "squares: more than two"),
}


def _contours(mask: np.ndarray):
    return cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]


def _largest(mask: np.ndarray):
    """The contour of largest area with a nonzero area (moments defined), or None."""
    best, best_area = None, 0.0
    for c in _contours(mask):
        a = cv2.contourArea(c)
        if a > best_area:
            best, best_area = c, a
    return best


def _centroid(c):
    m = cv2.moments(c)
    return m["m10"] / m["m00"], m["m01"] / m["m00"]


def _light_shadow(sun_m, pole_m, shadow_m):
    """Task A, one image: (l1, h1, h2, l2, sun_side, shadow_side) in pixels, or a reason."""
    if not (sun_m.any() or pole_m.any() or shadow_m.any()):
        return "no objects"
    sun = _largest(sun_m)
    if sun is None:
        return "sun: not found"
    pole = _largest(pole_m)
    if pole is None:
        return "pole: not found"
    shadow = _largest(shadow_m)
    if shadow is None:
        return "shadow: not found"
    sx, sy = _centroid(sun)
    px, _ = _centroid(pole)
    ys = pole[:, 0, 1]
    top, bottom = float(ys.min()), float(ys.max())  # the contour's extreme points (rows)
    xs = shadow[:, 0, 0]
    left, right = float(xs.min()), float(xs.max())
    far = left if abs(left - px) > abs(right - px) else right
    return (abs(sx - px), abs(sy - top), bottom - top, abs(far - px),
            float(np.sign(sx - px)), float(np.sign(far - px)))  # fmt: skip


def _perspective(mask):
    """Task B, one image: (l1, h1, l2, h2) in pixels, or a reason."""
    cs = _contours(mask)
    if not cs:
        return "no objects"
    boxes = []
    for c in cs:
        poly = cv2.approxPolyDP(c, POLY_EPS * cv2.arcLength(c, True), True)
        if len(poly) == 4:
            boxes.append(cv2.boundingRect(poly))
    if len(boxes) != 2:
        return "rectangles: fewer than two" if len(boxes) < 2 else "rectangles: more than two"
    (x1, _, _, h1), (x2, _, _, h2) = sorted(boxes)
    return x1, h1, x2, h2


def _two_circles(mask):
    """Task C, one image: (r_small, r_large) in pixels, or a reason."""
    cs = _contours(mask)
    if not cs:
        return "no objects"
    radii = sorted(r for r in (cv2.minEnclosingCircle(c)[1] for c in cs) if r > C_MIN_RADIUS_PX)
    if len(radii) < 2:
        return "circles: fewer than two"
    r1, r2 = radii[0], radii[1]
    if r2 / r1 >= C_MAX_RATIO:
        return "circles: ratio >= 3.65"
    return r1, r2


def _two_squares(mask):
    """Task D, one image: (l_top, l_bottom) in pixels, or a reason."""
    cs = _contours(mask)
    if not cs:
        return "no objects"
    boxes = []
    for c in cs:
        x, y, w, h = cv2.boundingRect(c)
        if D_ASPECT[0] <= w / h <= D_ASPECT[1] and max(w, h) > D_MIN_SIDE_PX:
            boxes.append((y, max(w, h)))
    if len(boxes) != 2:
        return "squares: fewer than two" if len(boxes) < 2 else "squares: more than two"
    (_, l1), (_, l2) = sorted(boxes)
    return l1, l2


_STEPS = {"B": _perspective, "C": _two_circles, "D": _two_squares}


def _task_name(task) -> str:
    name = task if isinstance(task, str) else getattr(task, "name", None)
    if name not in TASKS:
        raise ValueError(f"the paper's ruler measures tasks {TASKS} only, got task {name!r}")
    return name


def measure(task, images, reasons: dict | None = None, options: PaperRulerOptions | None = None):
    """The paper's measurement of a batch: (features, ok), as ``task.measure`` returns them.

    task: a task of A-D (a RuleTask or its name).  images: (n, S, S, 3) uint8 or float in [0, 1],
    any square size S >= 8 (32 for samples; larger renders for the paper's training images).
    reasons: an optional dict that receives {step: (n,) bool, the images that failed it}.
    options: ``PaperRulerOptions`` (``DEFAULT``: colour boxes at 128 px).
    Features are in units of the canvas side (pixels / S), NaN where ok is False.
    """
    name = _task_name(task)
    options = DEFAULT if options is None else options
    if not isinstance(options, PaperRulerOptions):
        raise ValueError(f"options must be PaperRulerOptions, got {type(options).__name__}")
    images = as_uint8(images)
    n, size = len(images), options.size
    values = np.full((n, len(_FEATURES[name])), np.nan)
    failed = np.full(n, -1)  # index into REASONS[name] of the first failed step, -1: measured
    codes = {r: i for i, r in enumerate(REASONS[name])}
    for start in range(0, n, CHUNK):
        up = upscale(images[start : start + CHUNK], size)
        if name == "A":
            masks = light_shadow_masks(up, options)
            results = [_light_shadow(*(m[i] for m in masks)) for i in range(len(up))]
        else:
            mask, step = object_mask(up, name, options), _STEPS[name]
            results = [step(m) for m in mask]
        for i, r in enumerate(results, start):
            if isinstance(r, str):
                failed[i] = codes[r]
            else:
                values[i] = r
    ok = failed < 0
    features = {}
    for j, key in enumerate(_FEATURES[name]):
        v = values[:, j]
        features[key] = v if key.endswith("_side") else v / size
    if reasons is not None:
        for code, label in enumerate(REASONS[name]):
            hit = failed == code
            reasons[label] = reasons.get(label, False) | hit
    return features, ok


def sensitivity(task, images, summary, variants=VARIANTS) -> dict:
    """A number computed with each of the reconstruction's alternatives, and its band.

    summary(features, ok) -> float (e.g. a residual std from ``rule_report``); returns
    {"values": {label: float}, "default": the first variant's label, "low", "high"} over the
    variants (``paper_masks.VARIANTS``: colour boxes at 128 and 256 px, not-white at 15, 30, 60).
    """
    if not variants:
        raise ValueError("sensitivity needs at least one PaperRulerOptions variant")
    values = {}
    for opt in variants:
        features, ok = measure(task, images, options=opt)
        values[opt.label] = float(summary(features, ok))
    finite = [v for v in values.values() if np.isfinite(v)]
    return {
        "values": values,
        "default": variants[0].label,
        "low": min(finite) if finite else None,
        "high": max(finite) if finite else None,
    }
