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

With two or three seeds the outer level has almost nothing to resample (three seeds give ten
distinct resamples), and the bootstrap covers too rarely when seeds differ by more than their
sampling error: simulated, 78 % (two seeds) and 86 % (three) for a seed spread twice the
standard error, where it should be 95 %.  Student's t interval on the seed values,
mean +- t_(k-1, 0.975) s / sqrt(k), covers 94-96 % there (each seed's value already holds its
sampling noise), but it ignores the standard errors and is needlessly wide when seeds agree by
chance.  ``seed_mean_ci`` therefore reports the union of the two (``ci``), beside each
(``ci_bootstrap``, ``ci_t``): it covers at least as often as either.
"""

from __future__ import annotations

import re

import numpy as np
from scipy import stats

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
    """Mean over seeds of per-seed estimates; CI the union of the bootstrap's (resample seeds,
    redraw each drawn seed's estimate from N(value, se²): the parametric inner level) and, with
    two or more seeds, Student's t interval on the seed values (see the module docstring)."""
    v = np.asarray(values, dtype=np.float64)
    s = np.asarray(ses, dtype=np.float64)
    if v.ndim != 1 or v.shape != s.shape or v.size == 0:
        raise ValueError(f"values and ses must be 1-D of one length, got {v.shape}, {s.shape}")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, v.size, (n_boot, v.size))
    boot = (v[picks] + rng.normal(0.0, 1.0, picks.shape) * s[picks]).mean(axis=1)
    a = (1 - level) / 2
    ci_boot = [float(np.quantile(boot, a)), float(np.quantile(boot, 1 - a))]
    ci_t = None
    if v.size > 1:  # Student's t on the seed values (see the module docstring)
        half = stats.t.ppf(1 - a, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
        ci_t = [float(v.mean() - half), float(v.mean() + half)]
    ci = ci_boot if ci_t is None else [min(ci_boot[0], ci_t[0]), max(ci_boot[1], ci_t[1])]
    return {"value": float(v.mean()), "n_seeds": int(v.size),
            "seed_sd": float(v.std(ddof=1)) if v.size > 1 else None,
            "ci": ci, "ci_bootstrap": ci_boot, "ci_t": ci_t}  # fmt: skip


def group_name(run: str) -> tuple[str, int]:
    """(the run's name without its seed suffix, seed): length_B_seed2 -> (length_B, 2)."""
    m = SEED_RE.search(run)
    return (run[: m.start()], int(m.group(1))) if m else (run, 0)
