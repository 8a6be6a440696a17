"""Task E of the rulelib.tasks docstring ("the right bar is exactly twice as tall as the left
bar"), as a user would write it in a file of their own: the fixture of `--tasks-from` tests."""

import numpy as np

from rulelib import tasks
from rulelib.tasks import measure, render


class TwoBars(tasks.RuleTask):
    name, title = "E", "two bars"
    feature_names = ("h1", "h2")
    k, train_size, paper_epochs = 2.0, 2000, 0
    x_label, y_label = "h1", "h2"
    dependent = "h2"

    def draw(self, idx, rng, scale):
        n = len(idx)
        p = {
            "h1": rng.uniform(0.1, 0.4, n),
            "color1": render.sample_colors("yellow", n, rng),
            "color2": render.sample_colors("blue", n, rng),
        }
        p["h2"], p["clipped"] = self.scale_dependent(2 * p["h1"], scale, p)
        return p

    def dependent_bounds(self, p):  # under dependent_scale: taller than bar 1, inside
        return p["h1"] + 1 / 32, np.full_like(p["h1"], 0.95)

    def primitives(self, p):
        s = render.SIZE
        zero = np.zeros_like(p["h1"])
        return [
            render.Rect(zero + 8, zero + 12, zero + 2, 2 + s * p["h1"], p["color1"]),
            render.Rect(zero + 20, zero + 24, zero + 1, 1 + s * p["h2"], p["color2"]),
        ]

    def measure(self, images):
        fits, ok = measure.extract(images, [("left", "yellow", "rect"), ("right", "blue", "rect")])
        h = {k: (f["y1"] - f["y0"]) / render.SIZE for k, f in fits.items()}
        return {"h1": h["left"], "h2": h["right"]}, ok

    def rule_xy(self, f):
        return f["h1"], f["h2"]

    def coarse_ok(self, f):
        return f["h2"] > f["h1"]


tasks.register(TwoBars())
