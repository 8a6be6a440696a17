"""The four rule tasks of the paper (docs/paper.md section 2): scenes, rendering, measurement, rule.

A rule task draws scene parameters, turns them into primitives (``rulelib.tasks.render``), renders
32x32 uint8 images on white, reads the features back (``rulelib.tasks.measure``) and states its
rule: the paper's scatter quantities (x, y) with y = k x (the fine rule) and a coarse rule.

=====  ==============  ==========================================  ==================  ====
task   title           features (units of W = 32 px)               scatter (x, y)      k
=====  ==============  ==========================================  ==================  ====
A      light-shadow    l1 sun-pole distance, h1 sun above pole     (l1*h2, l2*h1)      1
                       top, h2 pole height, l2 shadow length
B      perspective     l1, h1 left edge / height of rect 1,        (l1*h1, l2*h2)      1
                       l2, h2 of rect 2
C      two circles     r1, r2 radii                                (r1, r2)            sqrt 2
D      two squares     l1 top side, l2 bottom side                 (l1, l2)            1.5
=====  ==============  ==========================================  ==================  ====

Choices marked **ours** (docs/paper.md leaves them open):

* **Redraws.**  A scene in which some object does not fully cover at least one pixel is redrawn.
  This includes every object thinner than one pixel (our rule for task B) and also, e.g.,
  a 1.5 px high bar straddling a pixel boundary: without a fully covered pixel an object's colour
  depth and size cannot be separated in the image, so no method can measure it exactly.  The
  number of redraws of each image is returned in ``truth["n_redraws"]`` and the total of the last
  call in ``task.last_redraws``.  Geometric rejections (overlapping disks in C, a shadow that would
  leave the canvas with ``independent_sun_height``) redraw positions and are not counted there.
* Distinct objects keep at least one pixel of white between them (C, D); touching is allowed only
  where the paper's geometry makes objects touch (A's pole stands on its shadow).
* Colours: object 1 of B, C, D (rect 1, disk 1, top square) and A's sun are yellow, object 2 (and
  A's pole) blue/green, A's shadow dark grey; drawn per image from the HSV boxes of docs/paper.md.
* Task A's sun intervals are assigned cyclically (image i in interval i mod 4), so a set of 4000
  has 1000 images per interval, and any n is balanced to within one image.
* ``dependent_scale`` (contrastive data, docs/paper.md section 5): multiplies the rule's dependent
  feature (A: shadow l2, B: h2, C: r2, D: l2) after the rule is applied, and then clips it so the
  scene stays valid and the coarse rule still holds (bounds in each task's ``dependent_bounds``:
  A's shadow and B's rectangle 2 at least 2 px, so they keep a fully covered pixel; B's
  rectangle 2 at least 1 px shorter than rectangle 1; C's disk 2 and D's bottom square at least
  5 % larger than disk 1 / the top square, so scale factors below about 0.74 (C) / 0.70 (D) are
  clipped there).  Clipped images are flagged in ``truth["clipped"]`` (1.0): their rule ratio
  differs from the requested factor.
"""

from __future__ import annotations

import math

import numpy as np

from rulelib import paper
from rulelib.tasks import measure as _measure
from rulelib.tasks import render
from rulelib.tasks.base import COARSE_MARGIN, GAP, PX, RuleTask, W, register


# ----------------------------------------------------------------------------------------------
class LightShadow(RuleTask):
    """Task A: sun, pole and shadow; l1 h2 = l2 h1 (docs/paper.md section 2, task A).

    Ground at y = 0.1W.  Pole: x in [0.44W, 0.56W], from the ground up to 0.1W + h2,
    h2 ~ U(0.2W, 0.4W).  Sun: disk of radius 0.1W at height 0.1W + h2 + h1 (paper: h1 = h2;
    ``independent_sun_height=True``: h1 ~ U(0.2W, 0.4W) independently, ours), centre x in one of
    four intervals.  Shadow: y in [0.02W, 0.1W], from the pole centre x = W/2 away from the sun,
    length l2 = h2 l1 / h1 (a shadow longer than 0.5W would leave the canvas: redrawn).
    """

    name, title = "A", "light-shadow"
    feature_names = ("l1", "h1", "h2", "l2")
    k, train_size, paper_epochs = 1.0, 4000, paper.EPOCHS["A"]
    x_label, y_label = "l1*h2", "l2*h1"
    dependent = "l2"
    INTERVALS = np.array([[0.0, 0.2], [0.3, 0.5], [0.5, 0.7], [0.8, 1.0]])
    GROUND, POLE_W, SUN_R, SHADOW_T = 0.1, 0.12, 0.1, 0.08

    def __init__(self, independent_sun_height: bool = False):
        super().__init__()
        self.independent_sun_height = independent_sun_height

    def draw(self, idx, rng, scale):
        n = len(idx)
        interval = np.asarray(idx) % 4
        sun_x = rng.uniform(self.INTERVALS[interval, 0], self.INTERVALS[interval, 1])
        h2 = rng.uniform(0.2, 0.4, n)
        h1 = rng.uniform(0.2, 0.4, n) if self.independent_sun_height else h2.copy()
        p = {
            "sun_x": sun_x,
            "h1": h1,
            "h2": h2,
            "l1": np.abs(sun_x - 0.5),
            "interval": interval.astype(np.float64),
            "color_sun": render.sample_colors("yellow", n, rng),
            "color_pole": render.sample_colors("blue", n, rng),
            "color_shadow": render.sample_colors("grey", n, rng),
        }
        p["sun_y"] = self.GROUND + h2 + h1
        p["sun_side"] = np.sign(sun_x - 0.5)
        p["shadow_side"] = -p["sun_side"]
        p["l2"], p["clipped"] = self.scale_dependent(h2 * p["l1"] / h1, scale, p)
        return p

    def dependent_bounds(self, p):
        return 2 * PX, 0.5  # at least 2 px long; the shadow ends inside the canvas

    def valid(self, p):
        return (p["l2"] <= 0.5 + 1e-12) & (p["sun_side"] != 0)

    def primitives(self, p):
        s = W
        n = len(p["h2"])
        one = np.ones(n)
        x_far = 0.5 + p["shadow_side"] * p["l2"]
        return [
            render.Disk(
                s * p["sun_x"], s * p["sun_y"], s * self.SUN_R * one, p["color_sun"], "sun"
            ),
            render.Rect(
                s * (0.5 - self.POLE_W / 2) * one,
                s * (0.5 + self.POLE_W / 2) * one,
                s * self.GROUND * one,
                s * (self.GROUND + p["h2"]),
                p["color_pole"],
                "pole",
            ),
            render.Rect(
                s * np.minimum(0.5, x_far),
                s * np.maximum(0.5, x_far),
                s * (self.GROUND - self.SHADOW_T) * one,
                s * self.GROUND * one,
                p["color_shadow"],
                "shadow",
            ),
        ]

    def measure(self, images, reasons=None):
        return _measure.measure_light_shadow(images, reasons)

    def rule_xy(self, f):
        return f["l1"] * f["h2"], f["l2"] * f["h1"]

    def coarse_ok(self, f):
        return np.asarray(f["sun_side"]) * np.asarray(f["shadow_side"]) < 0


class Perspective(RuleTask):
    """Task B: two vertical rectangles; l1 h1 = l2 h2 (docs/paper.md section 2, task B).

    Width 0.12W, both centred at y = W/2.  Rect 1: left edge l1 ~ U(0, 0.3W), height
    h1 ~ U(0.2W, 0.6W); rect 2: left edge l2 ~ U(l1 + 0.2W, 0.8W), height h2 = h1 l1 / l2.
    """

    name, title = "B", "perspective"
    feature_names = ("l1", "h1", "l2", "h2")
    k, train_size, paper_epochs = 1.0, 2000, paper.EPOCHS["B"]
    x_label, y_label = "l1*h1", "l2*h2"
    dependent = "h2"
    RECT_W = 0.12

    def draw(self, idx, rng, scale):
        n = len(idx)
        l1 = rng.uniform(0.0, 0.3, n)
        h1 = rng.uniform(0.2, 0.6, n)
        l2 = rng.uniform(l1 + 0.2, 0.8)
        p = {
            "l1": l1,
            "h1": h1,
            "l2": l2,
            "color1": render.sample_colors("yellow", n, rng),
            "color2": render.sample_colors("blue", n, rng),
        }
        p["h2"], p["clipped"] = self.scale_dependent(h1 * l1 / l2, scale, p)
        return p

    def dependent_bounds(self, p):
        return 2 * PX, p["h1"] - PX  # the right rectangle stays shorter by at least 1 px

    def primitives(self, p):
        s, w = W, self.RECT_W
        return [
            render.Rect(s * p["l1"], s * (p["l1"] + w), s * (0.5 - p["h1"] / 2),
                        s * (0.5 + p["h1"] / 2), p["color1"], "rect1"),
            render.Rect(s * p["l2"], s * (p["l2"] + w), s * (0.5 - p["h2"] / 2),
                        s * (0.5 + p["h2"] / 2), p["color2"], "rect2"),
        ]  # fmt: skip

    def measure(self, images, reasons=None):
        return _measure.measure_perspective(images, reasons)

    def rule_xy(self, f):
        return f["l1"] * f["h1"], f["l2"] * f["h2"]

    def coarse_ok(self, f):
        # the rectangle farther right is the shorter one
        return (np.asarray(f["l2"]) > np.asarray(f["l1"])) == (np.asarray(f["h2"]) < f["h1"])


def _place(n, rng, lo1, hi1, lo2, hi2, ok_fn, max_rounds=1000):
    """Rejection-sample positions: draws until ok_fn(p1, p2) holds for every image (vectorised)."""
    p1 = rng.uniform(lo1, hi1, (2, n))
    p2 = rng.uniform(lo2, hi2, (2, n))
    for _ in range(max_rounds):
        bad = ~ok_fn(p1, p2)
        if not bad.any():
            return p1, p2
        m = int(bad.sum())
        p1[:, bad] = rng.uniform(lo1[bad], hi1[bad], (2, m))
        p2[:, bad] = rng.uniform(lo2[bad], hi2[bad], (2, m))
    raise RuntimeError("could not place non-overlapping objects")


class TwoCircles(RuleTask):
    """Task C: two disks; r2 = sqrt(2) r1 (ranges ours, docs/paper.md section 2, task C).

    r1 ~ U(0.05W, 0.175W), r2 = sqrt(2) r1; centres uniform with each disk inside the canvas and at
    least one pixel of white between the disks (rejection sampling of the positions).
    """

    name, title = "C", "two circles"
    feature_names = ("r1", "r2")
    k, train_size, paper_epochs = math.sqrt(2.0), 2000, paper.EPOCHS["C"]
    x_label, y_label = "r1", "r2"
    dependent = "r2"

    def draw(self, idx, rng, scale):
        n = len(idx)
        r1 = rng.uniform(0.05, 0.175, n)
        p = {
            "r1": r1,
            "color1": render.sample_colors("yellow", n, rng),
            "color2": render.sample_colors("blue", n, rng),
        }
        p["r2"], p["clipped"] = self.scale_dependent(math.sqrt(2.0) * r1, scale, p)
        r2 = p["r2"]

        def apart(c1, c2):
            return np.hypot(*(c1 - c2)) >= r1 + r2 + GAP

        c1, c2 = _place(n, rng, r1, 1 - r1, r2, 1 - r2, apart)
        p["x1"], p["y1"], p["x2"], p["y2"] = c1[0], c1[1], c2[0], c2[1]
        return p

    def dependent_bounds(self, p):
        # disk 2 stays larger (by 5 %, so the coarse rule is visible) and both disks still fit
        return COARSE_MARGIN * p["r1"], np.full_like(p["r1"], 0.3)

    def primitives(self, p):
        s = W
        return [
            render.Disk(s * p["x1"], s * p["y1"], s * p["r1"], p["color1"], "disk1"),
            render.Disk(s * p["x2"], s * p["y2"], s * p["r2"], p["color2"], "disk2"),
        ]

    def measure(self, images, reasons=None):
        return _measure.measure_two_circles(images, reasons)

    def rule_xy(self, f):
        return f["r1"], f["r2"]

    def coarse_ok(self, f):
        return np.asarray(f["r2"]) > np.asarray(f["r1"])


class TwoSquares(RuleTask):
    """Task D: two squares stacked vertically; l2 = 1.5 l1 (ranges ours, docs/paper.md section 2 D).

    Top square side l1 ~ U(0.10W, 0.28W), bottom square side l2 = 1.5 l1; horizontal positions
    uniform; the bottom square's base y2 ~ U(0, W - l1 - l2 - gap), the top square's base
    y1 ~ U(y2 + l2 + gap, W - l1), so the top square is always above (gap = one pixel, ours).
    """

    name, title = "D", "two squares"
    feature_names = ("l1", "l2")
    k, train_size, paper_epochs = 1.5, 2000, paper.EPOCHS["D"]
    x_label, y_label = "l1", "l2"
    dependent = "l2"

    def draw(self, idx, rng, scale):
        n = len(idx)
        l1 = rng.uniform(0.10, 0.28, n)
        p = {
            "l1": l1,
            "color1": render.sample_colors("yellow", n, rng),
            "color2": render.sample_colors("blue", n, rng),
        }
        p["l2"], p["clipped"] = self.scale_dependent(1.5 * l1, scale, p)
        l2 = p["l2"]
        p["x1"] = rng.uniform(0.0, 1.0 - l1)
        p["x2"] = rng.uniform(0.0, 1.0 - l2)
        p["y2"] = rng.uniform(0.0, 1.0 - l1 - l2 - GAP)
        p["y1"] = rng.uniform(p["y2"] + l2 + GAP, 1.0 - l1)
        return p

    def dependent_bounds(self, p):
        # the bottom square stays larger (by 5 %); both fit, stacked with their gap
        return COARSE_MARGIN * p["l1"], 1.0 - p["l1"] - 2 * GAP

    def primitives(self, p):
        s = W
        return [
            render.Rect(s * p["x1"], s * (p["x1"] + p["l1"]), s * p["y1"],
                        s * (p["y1"] + p["l1"]), p["color1"], "top"),
            render.Rect(s * p["x2"], s * (p["x2"] + p["l2"]), s * p["y2"],
                        s * (p["y2"] + p["l2"]), p["color2"], "bottom"),
        ]  # fmt: skip

    def measure(self, images, reasons=None):
        return _measure.measure_two_squares(images, reasons)

    def rule_xy(self, f):
        return f["l1"], f["l2"]

    def coarse_ok(self, f):
        return np.asarray(f["l2"]) > np.asarray(f["l1"])


for _t in (LightShadow(), Perspective(), TwoCircles(), TwoSquares()):
    register(_t)
