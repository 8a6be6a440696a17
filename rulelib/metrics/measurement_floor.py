"""The exact ruler's own floor on a set of images: the residual std that its measurement error
alone would put into the rule's residual.

The exact measurement returns, per image, a standard error for each feature (``se_<feature>``,
rulelib.tasks.measure).  Propagated to first order through the rule's residual r = y - k x
(features independent, derivatives of ``task.rule_xy`` by central differences) they give each
image's se_r; sqrt(mean se_r²) over the measurable images is the residual std that measurement
noise alone would produce.  A reported residual std is then, to first order,
sqrt(model² + floor²), the form the study's plateau fits enter it in (rulelib.study.plateau).
The floor depends on the images (blur, colour drift and noise raise it), so the study takes it
from each checkpoint's own samples rather than from one set.  It is taken over the images the
residual std itself is computed on (the exact ruler's metrics trim the 2.5-97.5 percentiles of
the residuals, rulelib.metrics.rules), less the 2.5 % of them with the largest se_r.  Why the
second cut: a root mean square is set by its largest terms, and one image in 500 with an se_r
20-1000x the median (a nearly unmeasurable shape whose residual is nonetheless ordinary, so its
se overstates its error) moved the floor of one set of B samples from 0.0018 to 0.074; with the
cut the floors of B's checkpoints lie within 0.0002 of their medians.
"""

from __future__ import annotations

import numpy as np

from rulelib.metrics.rules import _trim_mask, measured_xy

EPS = 1e-6  # central-difference step in feature units (pixels); r is linear or smooth in each
SE_KEEP_PCT = 97.5  # the images with se_r above this percentile are left out (module docstring)


def residual_se(task, features: dict, ok) -> np.ndarray:
    """Per measurable image, the standard error of r = y - k x that the features' standard errors
    (``se_<feature>``) alone produce: first order, features independent, derivatives of
    ``task.rule_xy`` by central differences."""
    sub = {k: np.asarray(v, dtype=np.float64)[ok] for k, v in features.items() if np.ndim(v) == 1}
    var = np.zeros(int(np.sum(ok)))
    for name in task.feature_names:
        se = sub.get(f"se_{name}")
        if se is None:
            continue
        hi, lo = dict(sub), dict(sub)
        hi[name], lo[name] = sub[name] + EPS, sub[name] - EPS
        (xh, yh), (xl, yl) = task.rule_xy(hi), task.rule_xy(lo)
        dr = ((yh - task.k * xh) - (yl - task.k * xl)) / (2 * EPS)
        var += (dr * se) ** 2
    return np.sqrt(var)


def floor(task, features: dict, ok, *, trim: str = "residuals", n_boot: int = 500,
          seed: int = 0, level: float = 0.95) -> dict | None:  # fmt: skip
    """sqrt(mean se_r²) over the measurable images that ``trim`` keeps (the trimming of the
    residual std this floor is set beside: rulelib.metrics.rules._trim_mask) and whose se_r is
    not above its SE_KEEP_PCT percentile, with a percentile-bootstrap CI over them, the median
    se_r and the count; None when no image is measurable or none carries an se."""
    se_r = residual_se(task, features, ok)
    if trim != "none" and se_r.size >= 3:
        x, y, _ = measured_xy(task, features, ok)
        se_r = se_r[_trim_mask(x[None], y[None], trim)[0] > 0]
    if se_r.size == 0 or not np.any(se_r > 0):
        return None
    se_r = se_r[se_r <= np.percentile(se_r, SE_KEEP_PCT)]
    rng = np.random.default_rng(seed)
    boots = np.sqrt(np.mean(se_r[rng.integers(0, se_r.size, (n_boot, se_r.size))] ** 2, axis=1))
    a = 100 * (1 - level) / 2
    return {"value": float(np.sqrt(np.mean(se_r**2))),
            "ci": [float(np.percentile(boots, a)), float(np.percentile(boots, 100 - a))],
            "se_r_median": float(np.median(se_r)), "n": int(se_r.size)}  # fmt: skip
