"""Paired comparisons of one run's checkpoints: is the error still falling at the end?

Every checkpoint of a study run is sampled with the run's seed (rulelib.study.evaluate), and the
sampler draws chunk c's noise from (seed, c) alone (rulelib.diffusion.sample), so image i of
checkpoint a and image i of checkpoint b start from the same x_T and see the same step noise.
Their rule metrics then share that noise, and the difference between two checkpoints has a paired
bootstrap CI (resample the image indices once for both; rulelib.metrics.paired_difference) that is
narrower than the two separate CIs suggest.  A checkpoint scored with more samples holds the
other's draws as its first ones, so the pair is formed on the first min(n_a, n_b) images.

``compare`` reads one pair with one ruler; ``run_pairs`` compares each of a run's last points
with its last one, from the scored samples a summary commits (``<to>/runs/<run>/samples_<images>
.npz``, rulelib.study.artefacts); ``summarise`` does so for every run and ruler into paired.json.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from rulelib import metrics, tasks
from rulelib.diffusion import sample as sampler
from rulelib.tasks import rulers

SAMPLES_RE = re.compile(r"^samples_(\d+)\.npz$")  # the EMA + DDIM samples (not *_raw_ddpm)
LAST_POINTS = 3  # the points a run's conclusion rests on (rulelib.study.evaluate.CONCLUSION_POINTS)
SHOWN = ("resid_std", "within_5pct", "conforming_pct", "measurable_rate")


def compare(task, images_a, images_b, *, ruler: str = "exact", n_boot: int = 1000,
            seed: int = 0) -> dict:  # fmt: skip
    """Metrics of images_b minus those of images_a (the same noise draws, image for image) read
    with ``ruler``, each with its paired-bootstrap CI, on the first min(n_a, n_b) images."""
    n = min(len(images_a), len(images_b))
    if n < 2:
        raise ValueError(f"a paired comparison needs at least 2 images in each set, got {n}")
    sets = [rulers.measure(task, np.asarray(im)[:n], ruler) for im in (images_a, images_b)]
    d = metrics.paired_difference(task, *sets, n_boot=n_boot, seed=seed,
                                  trim=rulers.TRIM[ruler])  # fmt: skip
    return {"n": n, "ruler": ruler, **{m: d[m] for m in SHOWN}}


def run_samples(folder) -> dict[int, Path]:
    """{images seen: samples file} of the scored checkpoints committed for one run."""
    out = {}
    for p in Path(folder).glob("samples_*.npz"):
        m = SAMPLES_RE.match(p.name)
        if m:
            out[int(m.group(1))] = p
    return dict(sorted(out.items()))


def run_pairs(task, folder, *, ruler: str = "exact", last: int = LAST_POINTS, n_boot: int = 1000,
              seed: int = 0) -> list[dict]:  # fmt: skip
    """Each of the run's ``last`` points before its last one, compared with the last one."""
    files = run_samples(folder)
    points = list(files)[-last:]
    if len(points) < 2:
        return []
    end = points[-1]
    b = sampler.load_samples(files[end])[0]
    rows = []
    for start in points[:-1]:
        a = sampler.load_samples(files[start])[0]
        rows.append({"from_images": start, "to_images": end,
                     **compare(task, a, b, ruler=ruler, n_boot=n_boot, seed=seed)})  # fmt: skip
    return rows


def summarise(runs_dir, rows_by_run: dict[str, str], *, n_boot: int = 1000) -> dict:
    """{run: {ruler: run_pairs}} for every run folder under ``runs_dir`` whose task
    (``rows_by_run``: run -> task) has the rulers; the length arm's runs are the ones to ask."""
    out = {}
    for run, task_name in sorted(rows_by_run.items()):
        folder = Path(runs_dir) / run
        if not folder.is_dir():
            continue
        task = tasks.get(task_name)
        out[run] = {r: run_pairs(task, folder, ruler=r, n_boot=n_boot)
                    for r in rulers.rulers_for(task, "both")}  # fmt: skip
    return out
