"""Degradations and junk images: what generated samples look like, and what is not a scene.

Used by the measurement's tests, its benchmark, the rulers' floors and the notebooks.
``degrade`` applies the degradations generated samples show: per-channel colour gains and
offsets of a few per cent, a Gaussian blur of about half a pixel and additive pixel noise (std
up to 0.05 of the range).  ``perturb_scene`` also shifts each object's colour inside its HSV
box.  ``junk`` builds images that do not contain a task's scene: blank, uniform noise, another
task's shapes (disk for square, square for disk, disk for rectangle), one object removed, the
objects merged (piled on the centre), one object duplicated.
"""

from __future__ import annotations

import numpy as np
from matplotlib.colors import rgb_to_hsv
from scipy import ndimage

from rulelib.tasks import render
from rulelib.tasks.measure import to_float

W = render.SIZE
LEVELS = {"gain": 0.05, "offset": 0.03, "blur": 0.5, "noise": 0.05}  # the "mild" set


def degrade(images, seed: int, *, gain=0.05, offset=0.03, blur=0.5, noise=0.05) -> np.ndarray:
    """uint8 images with per-image, per-channel gain U(1 - gain, 1 + gain) and offset
    U(-offset, offset), then a Gaussian blur of std ``blur`` px (reflecting edges), then pixel
    noise of std ``noise`` (0-1 range), clipped and rounded."""
    rng = np.random.default_rng(seed)
    img = to_float(images).astype(np.float64)
    n = len(img)
    g = rng.uniform(1 - gain, 1 + gain, (n, 1, 1, 3))
    o = rng.uniform(-offset, offset, (n, 1, 1, 3))
    img = img * g + o
    if blur > 0:
        img = ndimage.gaussian_filter(img, sigma=(0, blur, blur, 0), mode="reflect")
    if noise > 0:
        img = img + rng.normal(0.0, noise, img.shape)
    return render.to_uint8(img)


def shift_colors(rgb: np.ndarray, box: str, rng, dh=15.0, ds=0.15, dv=0.15) -> np.ndarray:
    """Shift RGB colours (n, 3) by random HSV offsets (uniform in +-dh, ds, dv), clipped to box."""
    hsv = rgb_to_hsv(np.clip(rgb, 0, 1))
    hsv[:, 0] *= 360.0
    b = render.COLOR_BOXES[box]
    n = len(rgb)
    if box != "grey":
        hsv[:, 0] = np.clip(hsv[:, 0] + rng.uniform(-dh, dh, n), *b["h"])
    hsv[:, 1] = np.clip(hsv[:, 1] + rng.uniform(-ds, ds, n), *b["s"])
    hsv[:, 2] = np.clip(hsv[:, 2] + rng.uniform(-dv, dv, n), *b["v"])
    return render.hsv_to_rgb_deg(hsv)


def _box_of(rgb: np.ndarray) -> np.ndarray:
    """The colour box each RGB colour (n, 3) was drawn from: grey by saturation, else by hue."""
    hsv = rgb_to_hsv(np.clip(rgb, 0, 1))
    chromatic = np.where(hsv[:, 0] * 360 <= 60 + 1e-6, "yellow", "blue")
    return np.where(hsv[:, 1] <= 0.2 + 1e-9, "grey", chromatic)


def perturb_scene(task, params: dict, seed: int, **levels) -> np.ndarray:
    """Re-render a scene with each object's colour shifted inside its box, then ``degrade``."""
    rng = np.random.default_rng(seed)
    prims = task.primitives(dict(params))
    for prim in prims:
        names, counts = np.unique(_box_of(prim.color), return_counts=True)
        prim.color = shift_colors(prim.color, str(names[counts.argmax()]), rng)
    img = render.composite(prims, len(prim.color))
    return degrade(img, seed + 1, **{**LEVELS, **levels})


def _copy(p, **changes):
    fields = {k: np.copy(v) if isinstance(v, np.ndarray) else v for k, v in vars(p).items()}
    fields.update(changes)
    return fields


def swap_shapes(prims):
    """Every disk drawn as the square of equal area, every rectangle as the disk of equal area,
    same centre and colour (another task's shapes in this task's layout)."""
    out = []
    for p in prims:
        if isinstance(p, render.Disk):
            h = 0.5 * np.sqrt(np.pi) * p.r
            out.append(render.Rect(p.cx - h, p.cx + h, p.cy - h, p.cy + h, p.color, p.name))
        else:
            cx, cy = (p.x0 + p.x1) / 2, (p.y0 + p.y1) / 2
            r = np.sqrt((p.x1 - p.x0) * (p.y1 - p.y0) / np.pi)
            out.append(render.Disk(cx, cy, r, p.color, p.name))
    return out


def junk(task, n: int, seed: int) -> dict:
    """Images without the task's scene, by kind (uint8 (n, 32, 32, 3) each; "object duplicated"
    keeps only the scenes with room for a copy on white, so it may hold fewer)."""
    rng = np.random.default_rng(seed)
    params = task.scene(n, seed=seed)
    prims = task.primitives(params)
    cases = {
        "blank": np.full((n, W, W, 3), 255, np.uint8),
        "uniform noise": rng.integers(0, 256, (n, W, W, 3), dtype=np.uint8),
        "other shapes": render.render(swap_shapes(prims), n),
    }
    # one object removed: image i loses object i mod K
    k = len(prims)
    full = [render.render([q for j, q in enumerate(prims) if j != drop], n) for drop in range(k)]
    cases["object removed"] = np.stack(full, 0)[np.arange(n) % k, np.arange(n)]
    # objects merged: every object moved onto the canvas centre, on top of each other
    cases["objects merged"] = render.render([_centred(p) for p in prims], n)
    # one object duplicated: a copy placed on white, two pixels clear of every object (closer,
    # a 0.5 px blur fills the gap and the copy merges with its neighbour: "objects merged")
    occupied = ndimage.binary_dilation(
        render.render(prims, n).min(-1) < 250, structure=np.ones((1, 5, 5), bool)
    )
    dup = []
    for i in range(n):
        copy = _free_copy([prims[(i + j) % k] for j in range(k)], i, occupied[i], rng)
        if copy is None:  # a crowded scene (e.g. C's two largest disks): no room for a copy
            continue
        one_scene = [type(q)(**{key: v[i : i + 1] if isinstance(v, np.ndarray) else v
                                for key, v in vars(q).items()}) for q in prims]  # fmt: skip
        dup.append(render.render([*one_scene, copy], 1)[0])
    cases["object duplicated"] = np.stack(dup)
    return cases


def _centred(p):
    """The primitive moved so that its centre is the canvas centre."""
    f = _copy(p)
    if isinstance(p, render.Disk):
        f["cx"], f["cy"] = np.full_like(p.cx, W / 2), np.full_like(p.cy, W / 2)
    else:
        dx, dy = W / 2 - (p.x0 + p.x1) / 2, W / 2 - (p.y0 + p.y1) / 2
        f["x0"], f["x1"], f["y0"], f["y1"] = p.x0 + dx, p.x1 + dx, p.y0 + dy, p.y1 + dy
    return type(p)(**f)


def _free_copy(candidates, i, occupied, rng, tries: int = 200):
    """A copy of image i's first candidate object that fits on white (one pixel clear of every
    object), by rejection sampling of its place; the next candidate if it never fits; None if
    none does."""
    for p in candidates:
        one = {key: v[i : i + 1] if isinstance(v, np.ndarray) else v for key, v in vars(p).items()}
        for _ in range(tries):
            f = dict(one)
            if isinstance(p, render.Disk):
                f["cx"] = rng.uniform(f["r"], W - f["r"])
                f["cy"] = rng.uniform(f["r"], W - f["r"])
            else:
                wd, ht = f["x1"] - f["x0"], f["y1"] - f["y0"]
                f["x0"] = rng.uniform(0, np.maximum(W - wd, 1e-9))
                f["y0"] = rng.uniform(0, np.maximum(W - ht, 1e-9))
                f["x1"], f["y1"] = f["x0"] + wd, f["y0"] + ht
            copy = type(p)(**f)
            if not (copy.coverage()[0] > 0)[occupied].any():
                return copy
    return None
