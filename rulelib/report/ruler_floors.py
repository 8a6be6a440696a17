"""Both rulers' floors and the paper's ruler's validation (docs/rulers.md has the tables).

A ruler's *floor* is what it reports on images that follow the rule exactly: any residual std,
bias or non-conformity there is the ruler's own, not a model's.

* ``validate``: the paper measured its *training* images rendered large (analysed at 256 px for B,
  larger for C and D; docs/paper.md section 3) and reports 95.02 / 97.22 / 99.51 / 98.63 %
  rule-conforming (A-D).  We render the training set of each task at ``VALIDATION_SIZES`` and
  measure it with the reconstructed ruler (every mask variant at that size: the band).
* ``calibrate``: the degradation of generated samples (``rulelib.tasks.degrade.perturb_scene``:
  colour shift inside the box, then per-channel gain / offset, blur and pixel noise at
  ``degrade.LEVELS`` = 5 %, 3 %, 0.5 px, 0.05) with all four levels multiplied by one scale s,
  chosen so that the exact ruler's median per-image uncertainty ``se_px`` on degraded renders
  equals its median on the committed generated samples (``COMMITTED``); the samples' background
  noise is recorded beside it as a check.
* ``floors``: rule-exact 32 px renders (``task.sample``) over seeds, clean and degraded at that
  level, through both rulers (paper: 128 px, its fit; exact: its own); each metric's mean over
  seeds with a 95 % t-interval.
* ``measurement_only``: the exact ruler's per-image standard errors on the committed samples,
  propagated through r = y - k x (first order, features independent), turned into the residual
  std that measurement alone would give: sqrt(mean se_r^2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage, stats
from tqdm.auto import tqdm

from rulelib import paper
from rulelib.metrics import measurement_floor, rule_report
from rulelib.tasks import degrade, rulers
from rulelib.tasks.paper_masks import PaperRulerOptions

TASKS = ("A", "B", "C", "D")
VALIDATION_SIZES = {"A": 256, "B": 256, "C": 512, "D": 512}  # "256 for B, larger for C and D"
# the generated samples committed to the repository that the degradation is calibrated to
COMMITTED = {
    "A": ("results/quick/A/samples.npz",),
    "B": ("results/quick/B/samples.npz", "results/analytic/B/unet_samples.npz"),
    "C": ("results/quick/C/samples.npz", "results/analytic/C/unet_samples.npz"),
    "D": ("results/quick/D/samples.npz",),
}
SCALE_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)  # multiples of degrade.LEVELS tried
FLOOR_METRICS = ("measurable_rate", "resid_std", "bias_k1", "bias", "conforming_pct", "slope")
CALIBRATION_N = 400
RENDER_CHUNK = 128  # large renders are made and measured this many at a time


def _report(task, features, ok, ruler, n_boot=0, seed=0):
    return rule_report(task, features, ok, n_boot=n_boot, seed=seed, trim=rulers.TRIM[ruler])


def _value(rep, name):
    v = rep[name]["value"]
    return np.nan if v is None else float(v)


_RANGE = {"measurable_rate": (0.0, 1.0), "conforming_pct": (0.0, 100.0), "slope": (-np.inf, np.inf)}


def t_interval(values, lo: float = 0.0, hi: float = np.inf) -> dict:
    """Mean of per-seed values and its 95 % t-interval (NaN seeds dropped), clipped to the
    metric's range [lo, hi] (a share, a std and a bias cannot leave it)."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "ci": None, "n_seeds": 0}
    if v.size == 1:
        return {"mean": float(v[0]), "ci": None, "n_seeds": 1}
    half = stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
    m = float(v.mean())
    return {"mean": m, "ci": [max(lo, m - half), min(hi, m + half)], "n_seeds": int(v.size)}


# ------------------------------------------------------------------------------------------------
# Validation on the paper's training-image measurement


def validate(task, *, seed: int = 0, n: int | None = None, n_boot: int = 500) -> dict:
    """The training set (``task.scene(train_size, seed)``) rendered at VALIDATION_SIZES[task] and
    measured at that size by every mask variant; plus the same scenes at 32 px read at 128 px."""
    size = VALIDATION_SIZES[task.name]
    n = task.train_size if n is None else n
    params = task.scene(n, seed=seed)
    variants = [
        PaperRulerOptions(size=size),
        *(PaperRulerOptions("notwhite", t, size) for t in (15, 30, 60)),
    ]
    parts = {v.label: [] for v in variants}
    for start in tqdm(range(0, n, RENDER_CHUNK), desc=f"validate {task.name} @{size}", leave=False):
        sub = {k: v[start : start + RENDER_CHUNK] for k, v in params.items()}
        big = task.render(sub, size)
        for v in variants:
            parts[v.label].append(rulers.measure(task, big, "paper", options=v))
    out = {"task": task.name, "size": size, "n": n, "seed": seed, "variants": {}}
    for label, chunks in parts.items():
        features = {k: np.concatenate([c[0][k] for c in chunks]) for k in chunks[0][0]}
        ok = np.concatenate([c[1] for c in chunks])
        out["variants"][label] = _summary(_report(task, features, ok, "paper", n_boot, seed))
    out["default"] = variants[0].label
    conf = [v["conforming_pct"]["value"] for v in out["variants"].values()]
    conf = [c for c in conf if c is not None]
    out["conforming_band"] = [min(conf), max(conf)] if conf else None
    small = task.render(params)
    f, ok = rulers.measure(task, small, "paper")
    out["from_32px_at_128"] = _summary(_report(task, f, ok, "paper", n_boot, seed))
    out["paper_conforming_pct"] = paper.RULE_METRICS[task.name]["train"]["conforming_pct"]
    return out


def _summary(rep: dict) -> dict:
    keep = ("n", "n_measurable", "n_fit", "trim", "rejections")
    return {**{k: rep[k] for k in keep}, **{m: rep[m] for m in FLOOR_METRICS}}


# ------------------------------------------------------------------------------------------------
# Calibration of the degradation to the committed samples


def background_noise(images) -> float:
    """Median over images of the std (0-1 range) of the background: pixels whose 5x5
    neighbourhood is near-white (every channel >= 200), about each channel's median."""
    a = np.asarray(images)
    white = a.min(-1) >= 200
    white = ndimage.binary_erosion(white, np.ones((1, 5, 5), bool))
    out = []
    for im, w in zip(a, white, strict=True):
        if w.sum() < 20:
            continue
        px = im[w].astype(np.float64) / 255.0
        dev = px - np.median(px, axis=0)
        out.append(float(np.sqrt(np.mean(dev**2))))
    return float(np.median(out)) if out else float("nan")


def load_committed(name: str, root: str | Path = ".") -> dict:
    """{path: uint8 images} of the committed generated samples of task ``name`` that exist."""
    out = {}
    for rel in COMMITTED.get(name, ()):
        path = Path(root) / rel
        if path.is_file():
            with np.load(path) as z:
                out[rel] = np.asarray(z["images"])
    return out


def calibrate(task, samples: dict, *, seed: int = 0, n: int = CALIBRATION_N) -> dict:
    """The scale s of ``degrade.LEVELS`` at which degraded renders match the samples' median
    se_px; returns {"scale", "levels" (the degradation to use), "grid", "target_se_px", ...}."""
    pooled = np.concatenate(list(samples.values())) if samples else None
    out = {"samples": sorted(samples), "grid": []}
    if pooled is None:
        out.update(target_se_px=None, scale=1.0, note="no committed samples")
        out["levels"] = dict(degrade.LEVELS)
        return out
    f, ok = rulers.measure(task, pooled, "exact")
    out["target_se_px"] = float(np.median(f["se_px"][ok])) if ok.any() else None
    out["samples_background_noise"] = background_noise(pooled)
    params = task.scene(n, seed=10_000 + seed)
    for scale in SCALE_GRID:
        levels = {k: v * scale for k, v in degrade.LEVELS.items()}
        img = degrade.perturb_scene(task, params, seed=20_000 + seed, **levels)
        fd, okd = rulers.measure(task, img, "exact")
        out["grid"].append({
            "scale": scale,
            "se_px_median": float(np.median(fd["se_px"][okd])) if okd.any() else None,
            "background_noise": background_noise(img),
            "measurable_rate": float(okd.mean()),
        })  # fmt: skip
    se = np.array([g["se_px_median"] for g in out["grid"]], dtype=np.float64)
    grid = np.array(SCALE_GRID)
    keep = np.isfinite(se)
    if out["target_se_px"] is None or keep.sum() < 2:
        out["scale"] = 1.0
    else:  # se_px grows with the scale; clamped to the grid's ends
        order = np.argsort(se[keep])
        out["scale"] = float(np.interp(out["target_se_px"], se[keep][order], grid[keep][order]))
    out["levels"] = {k: v * out["scale"] for k, v in degrade.LEVELS.items()}
    return out


# ------------------------------------------------------------------------------------------------
# Floors


def floors(task, *, seeds=range(5), n: int = 2000, levels: dict) -> dict:
    """Both rulers on rule-exact renders, clean and degraded (levels: the calibrated
    ``perturb_scene`` levels);
    per seed the metrics of FLOOR_METRICS, then their mean and 95 % t-interval over seeds."""
    cases = {(r, c): [] for r in rulers.RULERS for c in ("clean", "degraded")}
    for seed in tqdm(list(seeds), desc=f"floors {task.name}", leave=False):
        params = task.scene(n, seed=seed)
        images = {
            "clean": task.render(params),
            "degraded": degrade.perturb_scene(task, params, seed=30_000 + seed, **levels),
        }
        for (ruler, cond), rows in cases.items():
            f, ok = rulers.measure(task, images[cond], ruler)
            rep = _report(task, f, ok, ruler)
            rows.append({m: _value(rep, m) for m in FLOOR_METRICS})
    out = {"task": task.name, "k": float(task.k), "n": n, "seeds": list(seeds)}
    out["levels"] = dict(levels)
    out["cases"] = {
        f"{ruler}/{cond}": {
            "trim": rulers.TRIM[ruler],
            "per_seed": rows,
            **{
                m: t_interval([r[m] for r in rows], *_RANGE.get(m, (0.0, np.inf)))
                for m in FLOOR_METRICS
            },
        }
        for (ruler, cond), rows in cases.items()
    }
    return out


def measurement_only(task, samples: dict, *, n_boot: int = 500, seed: int = 0) -> dict:
    """Per committed samples file: the exact ruler's measurement-only residual std
    sqrt(mean se_r^2) (bootstrap 95 % CI over images) beside the samples' residual std under
    each ruler."""
    out = {}
    for path, images in samples.items():
        f, ok = rulers.measure(task, images, "exact")
        entry = {"n": len(images), "n_measurable": int(ok.sum())}
        fl = measurement_floor.floor(task, f, ok, n_boot=n_boot, seed=seed)
        if fl:
            entry["resid_std_from_se"] = {"value": fl["value"], "ci": fl["ci"]}
            entry["se_r_median"] = fl["se_r_median"]
        for ruler in rulers.RULERS:
            fr, okr = rulers.measure(task, images, ruler)
            rep = _report(task, fr, okr, ruler, n_boot=n_boot, seed=seed)
            entry[ruler] = {m: rep[m] for m in FLOOR_METRICS}
        out[path] = entry
    return out
