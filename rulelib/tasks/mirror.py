"""Task "mirror": an object, a vertical mirror and the object's reflection (docs/paper.md s. 7).

The paper probed text-to-image models on the Syn Mirror renders (an object in front of a mirror;
the reflection's size, position and colour must agree with the object).  Here the same rule is a
rule task like A-D.

**Procedural scene (the offline default, ours).**  32x32 on white.  The mirror is a vertical grey
strip x in [14, 18] px over the full height (colour from the grey box of docs/paper.md
section 2).  The
object is a yellow rectangle left of it: width w ~ U(0.08W, 0.2W), height h1 ~ U(0.15W, 0.6W),
bottom y0 ~ U(0.05W, 0.95W - h1), at a gap d ~ U(1 px, 14 px - w - 1 px) from the strip.  The
reflection is drawn by the rule: the same rectangle mirrored about the strip's centre line
x = 16 px (gap d on the right), same bottom, same height h2 = h1, same colour.

**Rule.**  Fine: h2 = h1 (x = object height, y = reflection height, k = 1).  Coarse: the
reflection stands at the object's height (their vertical spans overlap by at least half the smaller
height).  ``consistency_flags`` adds the other agreements for reports: alignment (bottoms within
1 px), position (gaps within 1 px), colour (mean RGB within 0.1).

**Measurement.**  One scene model of the whole image (``measure_mirror``, through
``rulelib.tasks.measure.extract``): the object is the yellow rectangle whose core lies left of
the strip, the reflection the yellow one right of it, the mirror the object pixels of the
strip's own columns; the three are un-blended together and fitted as blurred rectangles, with
standard errors ``se_h1``, ``se_h2``.  Colours are the mean of the pixels fully inside each
fitted rectangle.  A scene is measurable only if the strip is where the task draws it (sides
within 1 px, spanning the canvas height), its ink is the same in every row (nothing drawn over
it), and neither object crosses it.  (An earlier version split the image at the centre line and
read each half alone; the cut through the blurred strip failed nearly every generated-looking
image: about 3 % measurable under the mild degradations of ``rulelib.tasks.degrade``, now over
99 %, with clean renders' answers unchanged to 0.03 px.)

**Contrastive data** applies: ``dependent_scale`` multiplies the reflection height h2 (bottom
kept), clipped to [2 px, the canvas top] (``dependent_bounds``).

**Syn Mirror files.**  ``use_files(folder)`` trains on the renders (``loaders.load_syn_mirror``:
cropped around mirror and object, resized to 32x32) and measures them with
``reflection_consistency`` from their segmentation maps: the object's mask (label 2 outside the
mirror's bounding box) against the reflection's mask (inside the mirror's bounding box: pixels
labelled object, or mirror pixels closer in colour to the object's mean colour than to the
mirror's median colour), compared for height ratio, vertical alignment and mean colour.
Generated images have no segmentation map, so in that mode only the training images (recognised
by their pixels) are measurable; measuring samples of the real renders needs a segmenter.
"""

from __future__ import annotations

import hashlib

import numpy as np

from rulelib.tasks import loaders, render
from rulelib.tasks import measure as _measure
from rulelib.tasks.base import PX, RuleTask, W, register
from rulelib.tasks.segment import ink_and_classes
from rulelib.tasks.uncertainty import feature_se, rect_se

MIRROR_X = (14.0, 18.0)  # the strip, pixels
ALIGN_TOL = 1.0 / W  # bottoms / gaps within 1 px
COLOR_TOL = 0.1  # mean RGB distance (0-1 scale)
STRIP_EXCESS = 0.1  # ink: a row of the strip this far from the others holds something else
MIRROR_TOL = 1.0  # px: the fitted strip's sides and its span against where the task draws it


def _check(reasons, label, ok, passed):
    """ok & passed, recording the images that failed under reasons[label] when asked."""
    if reasons is not None:
        reasons[label] = reasons.get(label, False) | ~passed
    return ok & passed


def _rect_color(img: np.ndarray, f: dict) -> np.ndarray:
    """Mean RGB (n, 3) of the pixels fully inside each fitted rectangle (NaN where none)."""
    n = len(img)
    out = np.full((n, 3), np.nan)
    for i in range(n):
        x0, x1, y0, y1 = (f[k][i] for k in ("x0", "x1", "y0", "y1"))
        if not np.isfinite([x0, x1, y0, y1]).all():
            continue
        c0, c1 = int(np.ceil(x0 - 1e-6)), int(np.floor(x1 + 1e-6))
        r0, r1 = W - int(np.floor(y1 + 1e-6)), W - int(np.ceil(y0 - 1e-6))  # rows, top first
        block = img[i, int(max(r0, 0)) : int(r1), max(c0, 0) : c1]
        if block.size:
            out[i] = block.reshape(-1, 3).mean(0)
    return out


@_measure.chunked
def measure_mirror(images, reasons: dict | None = None):
    """Object and reflection rectangles of procedural mirror scenes: h1, h2 (heights), w1, w2,
    y1, y2 (bottoms), d1, d2 (gaps to the strip), dcolor (mean RGB distance), all in units of W,
    and their standard errors se_h1, se_h2 (+ se_px, resid; rulelib.tasks.uncertainty).

    One scene model of the whole image (``rulelib.tasks.measure.extract``): the object is the
    yellow rectangle whose core lies left of the strip, the reflection the yellow one right of
    it, the mirror every object pixel of the strip's own columns.  Un-blending them together
    keeps the strip's blurred edge out of an object one pixel away from it, and the strip (the
    largest rectangle) sets the image's blur for the two thin objects.  The mirror must be
    where the task draws it: its sides within MIRROR_TOL px of x = 14 and 18 and spanning the
    canvas height (to MIRROR_TOL px).
    """
    img = _measure.to_float(images)
    segmented = ink_and_classes(img, with_grey=False)
    spec = [
        ("object", "yellow", "rect", (0, int(MIRROR_X[0]))),
        ("reflection", "yellow", "rect", (int(MIRROR_X[1]), int(W))),
        ("mirror", "strong", "rect", (int(MIRROR_X[0]), int(MIRROR_X[1]))),
    ]
    fits, ok = _measure.extract(img, spec, reasons=reasons, segmented=segmented)
    a, b, m = fits["object"], fits["reflection"], fits["mirror"]
    placed = (np.abs(m["x0"] - MIRROR_X[0]) <= MIRROR_TOL) & (
        np.abs(m["x1"] - MIRROR_X[1]) <= MIRROR_TOL
    )
    ok = _check(reasons, "mirror: not at the strip", ok, placed)
    tall = (m["y0"] <= MIRROR_TOL) & (m["y1"] >= W - MIRROR_TOL)
    ok = _check(reasons, "mirror: not full height", ok, tall)
    ok = _check(reasons, "mirror: not uniform", ok, _strip_uniform(segmented[0]))
    ok = _check(reasons, "object crosses the mirror", ok, a["x1"] <= MIRROR_X[0] + 0.5)
    ok = _check(reasons, "reflection crosses the mirror", ok, b["x0"] >= MIRROR_X[1] - 0.5)
    ca, cb = _rect_color(img, a), _rect_color(img, b)
    feats = {
        "h1": (a["y1"] - a["y0"]) / W,
        "h2": (b["y1"] - b["y0"]) / W,
        "w1": (a["x1"] - a["x0"]) / W,
        "w2": (b["x1"] - b["x0"]) / W,
        "y1": a["y0"] / W,
        "y2": b["y0"] / W,
        "d1": (MIRROR_X[0] - a["x1"]) / W,
        "d2": (b["x0"] - MIRROR_X[1]) / W,
        "dcolor": np.linalg.norm(ca - cb, axis=1),
    }
    se = {"h1": rect_se(a)["h"], "h2": rect_se(b)["h"]}
    feats.update(feature_se(se, np.maximum(a["resid"], b["resid"])))
    return {k: np.where(ok, np.asarray(v, np.float64), np.nan) for k, v in feats.items()}, ok


def _strip_uniform(ink) -> np.ndarray:
    """Whether the strip's ink is the same in every row (n,): the mirror spans the canvas with
    one colour, so the per-row mean ink of its columns, channel by channel, departs from its
    median over the rows by more than STRIP_EXCESS in at most one row.  An object drawn over
    the strip adds its ink there (pixel noise of 0.05 moves a row's mean of 4 pixels by 0.025)."""
    rows = ink[:, :, :, int(MIRROR_X[0]) : int(MIRROR_X[1])].mean(-1)  # (3, n, H)
    dev = np.abs(rows - np.median(rows, axis=2, keepdims=True)).max(0)  # (n, H)
    return (dev > STRIP_EXCESS).sum(1) <= 1


def consistency_flags(f: dict) -> dict:
    """Per-image agreements of reflection and object: height (within 5 %), alignment (bottoms
    within 1 px), position (gaps within 1 px; procedural scenes only), colour (within 0.1)."""
    h1, h2 = np.asarray(f["h1"]), np.asarray(f["h2"])
    out = {
        "height": np.abs(h2 - h1) <= 0.05 * h1,
        "alignment": np.abs(np.asarray(f["y2"]) - f["y1"]) <= ALIGN_TOL,
        "colour": np.asarray(f["dcolor"]) <= COLOR_TOL,
    }
    if "d1" in f:
        out["position"] = np.abs(np.asarray(f["d2"]) - f["d1"]) <= ALIGN_TOL
    return out


# ----------------------------------------------------------------------------------------------
# Syn Mirror: the measurement from segmentation maps


def reflection_consistency(colors, segmaps) -> tuple[dict, np.ndarray, dict]:
    """Object against reflection in rendered views with segmentation (label 1 mirror, 2 object).

    colors: sequence of (H, W, 3) uint8; segmaps: sequence of (H, W) int (sizes may differ).
    Mirror region = bounding box of the mirror pixels; object mask = label 2 outside it;
    reflection mask = inside it, label 2 or a mirror pixel whose colour is nearer the object's
    mean colour than the mirror's median colour.  Returns (features, ok, reasons) with features
    (units of the image height): h1, h2 (mask heights in rows), y1, y2 (bottom rows, counted
    from the image bottom), ratio h2 / h1, dcolor (mean RGB distance, 0-1), NaN where not ok.
    """
    n = len(colors)
    keys = ("h1", "h2", "y1", "y2", "ratio", "dcolor")
    feats = {k: np.full(n, np.nan) for k in keys}
    ok = np.zeros(n, dtype=bool)
    reasons = {k: np.zeros(n, dtype=bool) for k in ("no mirror", "no object", "no reflection")}
    for i in range(n):
        col = np.asarray(colors[i], dtype=np.float64) / 255.0
        seg = np.asarray(segmaps[i])
        H = seg.shape[0]
        mirror = seg == loaders.MIRROR
        if not mirror.any():
            reasons["no mirror"][i] = True
            continue
        rr, cc = np.nonzero(mirror)
        box = np.zeros_like(mirror)
        box[rr.min() : rr.max() + 1, cc.min() : cc.max() + 1] = True
        obj = (seg == loaders.OBJECT) & ~box
        if not obj.any():
            reasons["no object"][i] = True
            continue
        c_obj, c_mir = col[obj].mean(0), np.median(col[mirror], axis=0)
        near = np.linalg.norm(col - c_obj, axis=-1) < np.linalg.norm(col - c_mir, axis=-1)
        refl = box & ((seg == loaders.OBJECT) | (mirror & near))
        if not refl.any():
            reasons["no reflection"][i] = True
            continue
        ro, rf = np.nonzero(obj)[0], np.nonzero(refl)[0]
        feats["h1"][i] = (ro.max() - ro.min() + 1) / H
        feats["h2"][i] = (rf.max() - rf.min() + 1) / H
        feats["y1"][i] = (H - 1 - ro.max()) / H
        feats["y2"][i] = (H - 1 - rf.max()) / H
        feats["ratio"][i] = feats["h2"][i] / feats["h1"][i]
        feats["dcolor"][i] = np.linalg.norm(c_obj - col[refl].mean(0))
        ok[i] = True
    return feats, ok, reasons


def _key(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


# ----------------------------------------------------------------------------------------------
# The task


class Mirror(RuleTask):
    """Task "mirror" (module docstring): x = object height h1, y = reflection height h2, k = 1."""

    name, title = "mirror", "mirror reflection"
    feature_names = ("h1", "h2")
    k, train_size, paper_epochs = 1.0, 2000, 1000  # epochs ours: the paper trained no mirror model
    x_label, y_label = "object height h1", "reflection height h2"
    dependent = "h2"

    def __init__(self):
        super().__init__()
        self.files = None  # Syn Mirror renders when use_files was called

    # ---- procedural scenes ------------------------------------------------------------------
    def draw(self, idx, rng, scale):
        if self.files is not None:
            raise ValueError("task mirror on Syn Mirror files: dependent_scale does not apply")
        n = len(idx)
        w = rng.uniform(0.08, 0.2, n)
        h1 = rng.uniform(0.15, 0.6, n)
        p = {
            "w": w,
            "h1": h1,
            "y0": rng.uniform(0.05, 0.95 - h1),
            "d": rng.uniform(PX, MIRROR_X[0] / W - w - PX),
            "color": render.sample_colors("yellow", n, rng),
            "color_mirror": render.sample_colors("grey", n, rng),
        }
        p["h2"], p["clipped"] = self.scale_dependent(h1.copy(), scale, p)
        return p

    def dependent_bounds(self, p):
        return 2 * PX, 1.0 - p["y0"]  # at least 2 px; the reflection's top inside the canvas

    def primitives(self, p):
        s, n = W, len(p["w"])
        one = np.ones(n)
        xo1 = s * (MIRROR_X[0] / W - p["d"])
        xr0 = s * (MIRROR_X[1] / W + p["d"])
        return [
            render.Rect(MIRROR_X[0] * one, MIRROR_X[1] * one, 0 * one, s * one, p["color_mirror"],
                        "mirror"),
            render.Rect(xo1 - s * p["w"], xo1, s * p["y0"], s * (p["y0"] + p["h1"]), p["color"],
                        "object"),
            render.Rect(xr0, xr0 + s * p["w"], s * p["y0"], s * (p["y0"] + p["h2"]), p["color"],
                        "reflection"),
        ]  # fmt: skip

    # ---- Syn Mirror files -------------------------------------------------------------------
    def use_files(self, folder, *, size: int = 32, margin: float = 0.1) -> Mirror:
        """Train on Syn Mirror's renders under ``folder`` instead of procedural scenes."""
        data = loaders.load_syn_mirror(folder, size=size, margin=margin)
        f, ok, _ = reflection_consistency(
            [d["colors"] for d in data["full"]], [d["category_id_segmaps"] for d in data["full"]]
        )
        data["features"], data["ok"] = f, ok
        data["index"] = {_key(im): i for i, im in enumerate(data["images"])}
        data["folder"] = str(folder)
        self.files = data
        return self

    def data_source(self) -> str:
        if self.files is None:
            return "procedural scenes rendered by rulelib"
        return f"Syn Mirror files in {self.files.get('folder', '?')}"

    def use_procedural(self) -> Mirror:
        self.files = None
        return self

    def sample(self, n: int, seed: int, *, dependent_scale=None):
        if self.files is None:
            return super().sample(n, seed, dependent_scale=dependent_scale)
        if dependent_scale is not None:
            raise ValueError("task mirror on Syn Mirror files: dependent_scale does not apply")
        m = len(self.files["images"])
        rng = np.random.default_rng(seed)
        pick = rng.permutation(m)[:n] if n <= m else rng.integers(0, m, n)
        truth = {k: v[pick] for k, v in self.files["features"].items()}
        truth["file_index"] = pick.astype(np.float64)
        return self.files["images"][pick], truth

    def measure(self, images, reasons=None):
        if self.files is None:
            return measure_mirror(images, reasons)
        images = np.asarray(images)
        idx = np.array([self.files["index"].get(_key(im), -1) for im in images])
        known = idx >= 0
        ok = known & self.files["ok"][np.maximum(idx, 0)]
        if reasons is not None:
            reasons["no segmentation (not a Syn Mirror training image)"] = ~known
        f = {
            k: np.where(ok, v[np.maximum(idx, 0)], np.nan)
            for k, v in self.files["features"].items()
        }
        return f, ok

    # ---- rule -------------------------------------------------------------------------------
    def rule_xy(self, f):
        return np.asarray(f["h1"]), np.asarray(f["h2"])

    def coarse_ok(self, f):
        h1, h2 = np.asarray(f["h1"]), np.asarray(f["h2"])
        y1, y2 = np.asarray(f["y1"]), np.asarray(f["y2"])
        overlap = np.minimum(y1 + h1, y2 + h2) - np.maximum(y1, y2)
        return overlap >= 0.5 * np.minimum(h1, h2)


TASK = register(Mirror())


def use_files(folder, *, size: int = 32, margin: float = 0.1) -> Mirror:
    """Point the registered task "mirror" at a folder of Syn Mirror HDF5 files (the command line's
    ``--syn-mirror-dir``).  Returns the task."""
    return TASK.use_files(folder, size=size, margin=margin)
