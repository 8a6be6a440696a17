"""Anti-aliased rasterisation of the rule tasks' primitives with exact area coverage.

Every scene of the paper is a few axis-aligned rectangles and disks on a white canvas.  We render
them directly at 32x32 with the *exact* fraction of each pixel that a shape covers (its area
coverage), vectorised over a batch of scenes; no per-image Python loop.

Coordinates are in pixels with y pointing up: pixel column j covers x in [j, j+1], and pixel row i
of the image (row 0 at the top) covers y in [S-1-i, S-i] for a canvas of S pixels.

Coverage (each exact, no supersampling):

* rectangle [x0, x1] x [y0, y1]: separable, coverage(i, j) = ox(j) * oy(i) with the 1-D overlaps
  ox(j) = clip(min(x1, j+1) - max(x0, j), 0, 1) (and oy alike);
* disk (cx, cy, r): the area of the disk inside any axis-aligned box follows by inclusion-exclusion
  from the signed "corner" area G(x, y) = area of the disk (centred at 0) inside the box between the
  origin and (x, y), which has a closed form (``disk_corner_area``).  The coverage of every pixel is
  a second difference of G on the 33x33 grid of pixel corners.

Compositing (``composite``): the image is 1 - sum_k coverage_k * (1 - colour_k), i.e. each object
subtracts its "ink" (1 - colour) in proportion to the area it covers.  For shapes that do not
overlap (all our scenes; touching is allowed) this is exactly the area-averaged colour of each
pixel, which the usual "over" operator is not for two shapes sharing a pixel.  The inverse of this
linear mixing is what ``rulelib.tasks.measure`` uses to read coverage back ("un-blending").

Colours: HSV boxes of docs/paper.md section 2, drawn per image (``sample_colors``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.colors import hsv_to_rgb

SIZE = 32  # canvas side in pixels (the paper's 32x32 images)

# HSV colour boxes of docs/paper.md section 2: hue in degrees, saturation and value in [0, 1].
COLOR_BOXES = {
    "yellow": {"h": (0.0, 60.0), "s": (0.4, 1.0), "v": (0.8, 1.0)},
    "blue": {"h": (180.0, 300.0), "s": (0.4, 1.0), "v": (0.4, 1.0)},
    "grey": {"h": (0.0, 360.0), "s": (0.0, 0.2), "v": (0.2, 0.6)},
}


def sample_hsv(box: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw n HSV triples (hue in degrees) uniformly from the named colour box; shape (n, 3)."""
    if box not in COLOR_BOXES:
        raise ValueError(f"unknown colour box {box!r}; expected one of {sorted(COLOR_BOXES)}")
    b = COLOR_BOXES[box]
    return np.stack([rng.uniform(*b["h"], n), rng.uniform(*b["s"], n), rng.uniform(*b["v"], n)], 1)


def hsv_to_rgb_deg(hsv: np.ndarray) -> np.ndarray:
    """HSV with hue in degrees -> RGB in [0, 1] (matplotlib's conversion, hue wrapped to [0, 1))."""
    hsv = np.asarray(hsv, dtype=np.float64)
    h01 = np.mod(hsv[..., 0] / 360.0, 1.0)
    return hsv_to_rgb(np.stack([h01, hsv[..., 1], hsv[..., 2]], -1))


def sample_colors(box: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw n RGB colours (n, 3) in [0, 1] from the named HSV box."""
    return hsv_to_rgb_deg(sample_hsv(box, n, rng))


# --------------------------------------------------------------------------------------------
# Primitives: batched shapes, arrays of shape (n,) in pixels, colour (n, 3) RGB in [0, 1].


@dataclass
class Rect:
    """Axis-aligned rectangle [x0, x1] x [y0, y1] (pixels, y up), one per image of the batch."""

    x0: np.ndarray
    x1: np.ndarray
    y0: np.ndarray
    y1: np.ndarray
    color: np.ndarray
    name: str = "rect"

    def coverage(self, size: int = SIZE) -> np.ndarray:
        return rect_coverage(self.x0, self.x1, self.y0, self.y1, size)

    def has_full_pixel(self, size: int = SIZE) -> np.ndarray:
        """Whether the rectangle covers some pixel completely (a unit cell inside, both ways)."""
        ok = np.ones(len(self.x0), dtype=bool)
        for a, b in ((self.x0, self.x1), (self.y0, self.y1)):
            ok &= np.floor(np.minimum(b, size)) - np.ceil(np.maximum(a, 0)) >= 1
        return ok


@dataclass
class Disk:
    """Disk of centre (cx, cy) and radius r (pixels, y up), one per image of the batch."""

    cx: np.ndarray
    cy: np.ndarray
    r: np.ndarray
    color: np.ndarray
    name: str = "disk"

    def coverage(self, size: int = SIZE) -> np.ndarray:
        return disk_coverage(self.cx, self.cy, self.r, size)

    def has_full_pixel(self, size: int = SIZE) -> np.ndarray:
        """Whether the disk covers some pixel completely: all four corners inside it for one of
        the 3x3 canvas pixels nearest its centre (the best candidates)."""
        ok = np.zeros(len(self.cx), dtype=bool)
        bx = np.clip(np.floor(self.cx), 1, size - 2)
        by = np.clip(np.floor(self.cy), 1, size - 2)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                px, py = bx + dx, by + dy  # lower-left corner of the candidate pixel
                far_x = np.maximum(np.abs(px - self.cx), np.abs(px + 1 - self.cx))
                far_y = np.maximum(np.abs(py - self.cy), np.abs(py + 1 - self.cy))
                inside = (px >= 0) & (px + 1 <= size) & (py >= 0) & (py + 1 <= size)
                ok |= inside & (far_x**2 + far_y**2 <= self.r**2)
        return ok


def interval_overlap(a: np.ndarray, b: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Length of [a, b] inside each unit cell [j, j+1], j = 0..size-1; shape (n, size)."""
    a = np.asarray(a, dtype=np.float64)[:, None]
    b = np.asarray(b, dtype=np.float64)[:, None]
    j = np.arange(size, dtype=np.float64)[None, :]
    return np.clip(np.minimum(b, j + 1.0) - np.maximum(a, j), 0.0, 1.0)


def rect_coverage(x0, x1, y0, y1, size: int = SIZE) -> np.ndarray:
    """Exact pixel coverage (n, size, size) of rectangles, row 0 at the top (separable overlaps)."""
    ox = interval_overlap(x0, x1, size)  # (n, size) over columns
    oy = interval_overlap(y0, y1, size)[:, ::-1]  # (n, size) over image rows, top first
    return oy[:, :, None] * ox[:, None, :]


def disk_corner_area(x: np.ndarray, y: np.ndarray, r: np.ndarray, grad: bool = False):
    """Signed area G(x, y) of {X^2 + Y^2 <= r^2} inside the box between (0, 0) and (x, y).

    For x, y >= 0 with x' = min(x, r), y' = min(y, r) and x_c = min(x', sqrt(r^2 - y'^2)) (where
    the circle leaves the line Y = y'), the region is a full-height strip of width x_c plus the
    part under the circle:  f = y' x_c + I(x') - I(x_c), with the integral of sqrt(r^2 - X^2)
    I(u) = (u sqrt(r^2 - u^2) + r^2 asin(u/r)) / 2.  By symmetry G(x, y) = sgn(x) sgn(y)
    f(|x|, |y|), so the area inside [a, b] x [c, d] is G(b, d) - G(a, d) - G(b, c) + G(a, c).

    ``grad=True`` also returns the partial derivatives (used by the disk fit of
    rulelib.tasks.measure):
    dG/dx = sgn(y) min(|y|, sqrt(r^2 - x^2)) (the chord inside the box), dG/dy likewise, and
    dG/dr = sgn(x) sgn(y) r (asin(min(|y|/r, 1)) - acos(min(|x|/r, 1)))^+ (the arc inside the box).
    """
    r = np.maximum(r, 1e-12)
    ax = np.minimum(np.abs(x), r)
    ay = np.minimum(np.abs(y), r)
    r2 = r * r
    sx = np.sqrt(np.maximum(r2 - ax * ax, 0.0))  # half chord at X = x'
    sy = np.sqrt(np.maximum(r2 - ay * ay, 0.0))
    xc = np.minimum(ax, sy)
    sxc = np.sqrt(np.maximum(r2 - xc * xc, 0.0))
    asx = np.arcsin(np.minimum(ax / r, 1.0))
    asxc = np.arcsin(np.minimum(xc / r, 1.0))
    # I(x') - I(x_c) with I(u) = (u sqrt(r^2 - u^2) + r^2 asin(u / r)) / 2
    f = ay * xc + 0.5 * (ax * sx - xc * sxc + r2 * (asx - asxc))
    sgn = np.sign(x) * np.sign(y)
    if not grad:
        return sgn * f
    gx = np.sign(y) * np.where(np.abs(x) < r, np.minimum(ay, sx), 0.0)
    gy = np.sign(x) * np.where(np.abs(y) < r, np.minimum(ax, sy), 0.0)
    # arc from angle acos(x'/r) up to asin(y'/r); asin(a) = pi/2 - acos(a)
    asy = np.arcsin(np.minimum(ay / r, 1.0))
    gr = sgn * r * np.maximum(asy - (0.5 * np.pi - asx), 0.0)
    return sgn * f, gx, gy, gr


def disk_coverage(cx, cy, r, size: int = SIZE) -> np.ndarray:
    """Exact pixel coverage (n, size, size) of disks, row 0 at the top (second differences of G).

    Only a window of corners around each disk is evaluated (the rest of the canvas is 0).
    """
    cx = np.asarray(cx, dtype=np.float64)
    cy = np.asarray(cy, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    n = len(cx)
    w = int(min(size, np.ceil(2 * np.max(r, initial=0.0)) + 2))  # cells per side of the window
    x0 = np.clip(np.floor(cx - r), 0, size - w).astype(np.int64)  # window origin (cells)
    y0 = np.clip(np.floor(cy - r), 0, size - w).astype(np.int64)
    k = np.arange(w + 1, dtype=np.float64)
    gx = (x0[:, None] + k[None, :] - cx[:, None])[:, None, :]  # (n, 1, w+1)
    gy = (y0[:, None] + k[None, :] - cy[:, None])[:, :, None]  # (n, w+1, 1)
    g = disk_corner_area(gx, gy, r[:, None, None])
    win = g[:, 1:, 1:] - g[:, :-1, 1:] - g[:, 1:, :-1] + g[:, :-1, :-1]  # (n, y-cell, x-cell)
    out = np.zeros((n, size, size))
    rows = (y0[:, None] + np.arange(w)[None, :])[:, :, None]
    cols = (x0[:, None] + np.arange(w)[None, :])[:, None, :]
    out[np.arange(n)[:, None, None], rows, cols] = win
    return np.clip(out[:, ::-1, :], 0.0, 1.0)


def composite(primitives, n: int, size: int = SIZE) -> np.ndarray:
    """Float image (n, size, size, 3) in [0, 1]: white minus each object's coverage-weighted ink."""
    img = np.ones((n, size, size, 3), dtype=np.float32)  # ample for 8-bit output
    for p in primitives:
        ink = (1.0 - np.asarray(p.color, dtype=np.float64)).astype(np.float32)  # (n, 3)
        img -= p.coverage(size).astype(np.float32)[..., None] * ink[:, None, None, :]
    return np.clip(img, 0.0, 1.0)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Round a float image in [0, 1] to uint8."""
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def render(primitives, n: int, size: int = SIZE, chunk: int = 1024) -> np.ndarray:
    """Render a list of batched primitives to uint8 images (n, size, size, 3) on white.

    Works in blocks of ``chunk`` images (same result; keeps the float arrays in cache).
    """
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(0, n, chunk):
        part = [_take(p, slice(i, i + chunk)) for p in primitives]
        out[i : i + chunk] = to_uint8(composite(part, min(chunk, n - i), size))
    return out


def scaled(prim, factor: float):
    """The primitive with every length multiplied by ``factor`` (the scene drawn on a canvas
    ``factor`` times larger, e.g. the paper's training images rendered large)."""
    keep = ("color", "name")
    return type(prim)(**{k: v if k in keep else v * factor for k, v in vars(prim).items()})


def _take(prim, idx):
    """The primitive restricted to the images idx."""
    return type(prim)(
        **{k: (v[idx] if isinstance(v, np.ndarray) else v) for k, v in vars(prim).items()}
    )
