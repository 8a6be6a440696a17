"""Confidence intervals over training seeds: a hierarchical bootstrap (seeds, then samples).

One trained model's CI covers the sampling noise of that model only; the question "what does
this training recipe give?" also has the seed-to-seed spread of training.  The two-level
bootstrap resamples seeds with replacement, then within each drawn seed its samples, and
averages the per-seed statistic (Davison & Hinkley 1997, section 3.8; resampling at both levels
is mildly conservative).  With one seed it reduces to the ordinary bootstrap over samples.

Where only each seed's estimate and standard error are at hand (the summary's rows), the inner
level is parametric: each drawn seed's value is redrawn from N(estimate, se²)
(``seed_mean_ci``).  Checkpoints of one trajectory are not independent, so each checkpoint
gets its own seed-level CI; nothing is bootstrapped across checkpoints.
"""

from __future__ import annotations

import re

import numpy as np

SEED_RE = re.compile(r"_seed(\d+)$")


def hierarchical_bootstrap(groups, statistic=np.mean, *, n_boot: int = 2000, seed: int = 0,
                           level: float = 0.95) -> dict:  # fmt: skip
    """Mean over groups (seeds) of statistic(group's values), with the two-level percentile
    bootstrap CI; groups: a list of 1-D arrays (one per seed, each its samples' values)."""
    groups = [np.asarray(g, dtype=np.float64) for g in groups]
    if not groups or any(g.ndim != 1 or g.size == 0 for g in groups):
        raise ValueError("groups must be a non-empty list of non-empty 1-D arrays")
    rng = np.random.default_rng(seed)
    value = float(np.mean([statistic(g) for g in groups]))
    k = len(groups)
    boot = np.empty(n_boot)
    for b in range(n_boot):
        picks = rng.integers(0, k, k)
        inner = [groups[i][rng.integers(0, groups[i].size, groups[i].size)] for i in picks]
        boot[b] = np.mean([statistic(g) for g in inner])
    a = (1 - level) / 2
    return {"value": value, "ci": [float(np.quantile(boot, a)), float(np.quantile(boot, 1 - a))],
            "n_groups": k, "n_boot": n_boot}  # fmt: skip


def seed_mean_ci(values, ses, *, n_boot: int = 4000, seed: int = 0, level: float = 0.95) -> dict:
    """Mean over seeds of per-seed estimates, CI by resampling seeds and redrawing each drawn
    seed's estimate from N(value, se²) (the parametric inner level)."""
    v = np.asarray(values, dtype=np.float64)
    s = np.asarray(ses, dtype=np.float64)
    if v.ndim != 1 or v.shape != s.shape or v.size == 0:
        raise ValueError(f"values and ses must be 1-D of one length, got {v.shape}, {s.shape}")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, v.size, (n_boot, v.size))
    boot = (v[picks] + rng.normal(0.0, 1.0, picks.shape) * s[picks]).mean(axis=1)
    a = (1 - level) / 2
    return {"value": float(v.mean()), "n_seeds": int(v.size),
            "seed_sd": float(v.std(ddof=1)) if v.size > 1 else None,
            "ci": [float(np.quantile(boot, a)), float(np.quantile(boot, 1 - a))]}  # fmt: skip


def group_name(run: str) -> tuple[str, int]:
    """(the run's name without its seed suffix, seed): length_B_seed2 -> (length_B, 2)."""
    m = SEED_RE.search(run)
    return (run[: m.start()], int(m.group(1))) if m else (run, 0)
