"""Rule tasks: what a task is, the registry, and the four geometric tasks of the paper.

    base        ``RuleTask`` (draw -> primitives -> render -> measure -> rule) and the registry
    render      exact-area anti-aliased rectangles and disks, HSV colour boxes
    measure     colour segmentation and sub-pixel recovery of rectangles and disks
    geometric   tasks A-D (registered on import)
    pairs       the Cifar-MNIST pairing rule; mirror: object and reflection; loaders: their files

``rulelib.tasks.get("A")``, ``names()`` and ``register(task)`` are the registry; a user's own file
of tasks is loaded with ``load_tasks_from`` (the command line's ``--tasks-from``).

Defining a new rule task
------------------------
Subclass ``RuleTask`` (``rulelib.tasks.base``) in one place: scene parameters -> primitives,
measurement -> features, the rule's scatter quantities and the coarse rule, then ``register`` it.
For example, "the right bar is exactly twice as tall as the left bar"::

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
            p = {"h1": rng.uniform(0.1, 0.4, n),
                 "color1": render.sample_colors("yellow", n, rng),
                 "color2": render.sample_colors("blue", n, rng)}
            p["h2"], p["clipped"] = self.scale_dependent(2 * p["h1"], scale, p)
            return p

        def dependent_bounds(self, p):  # under dependent_scale: taller than bar 1, inside
            return p["h1"] + 1 / 32, np.full_like(p["h1"], 0.95)

        def primitives(self, p):
            s = render.SIZE
            zero = np.zeros_like(p["h1"])
            return [render.Rect(zero + 8, zero + 12, zero + 2, 2 + s * p["h1"], p["color1"]),
                    render.Rect(zero + 20, zero + 24, zero + 1, 1 + s * p["h2"], p["color2"])]

        def measure(self, images):
            fits, ok = measure.extract(images, [("left", "yellow", "rect"),
                                                ("right", "blue", "rect")])
            h = {k: (f["y1"] - f["y0"]) / render.SIZE for k, f in fits.items()}
            return {"h1": h["left"], "h2": h["right"]}, ok

        def rule_xy(self, f):
            return f["h1"], f["h2"]

        def coarse_ok(self, f):
            return f["h2"] > f["h1"]

    tasks.register(TwoBars())
    images, truth = tasks.get("E").sample(100, seed=0)

The base class supplies ``sample`` (vectorised drawing with redraws), ``dataset``, ``scene`` and
``render``; ``truth`` keeps every (n,)-shaped scene parameter (colours are dropped).

Put the class and the ``register`` call in a file of your own and every command runs the task::

    python -m rulelib reproduce --profile smoke --tasks-from my_tasks.py --task E --out runs/e
"""

from rulelib.tasks import (  # noqa: F401  (registers tasks mirror, pairs)
    geometric,  # noqa: F401  (registers tasks A-D)
    mirror,
    pairs,
)
from rulelib.tasks.base import RuleTask, get, load_tasks_from, names, register

__all__ = ["RuleTask", "get", "load_tasks_from", "names", "register"]
