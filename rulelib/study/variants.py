"""Variants of a task's training recipe against the recipe itself, at equal images, over seeds.

The length arm's run ``length_<task>`` (with its seeds ``length_<task>_seed<s>``) is the base
recipe.  Every other run of the task changes one thing: fresh images in every batch
(``fresh_<task>``), the denoiser's width or class (``length_<task>_narrow``, ``_wide``, ``_dit``),
or the training-set size (the size arm, ``size_<task>_<n>``).  At each number of training images
both have scored, is the variant's fine-rule error (residual std of the novel images) different
from the base's by more than training seeds and sampling make it differ anyway?

Each seed's residual std already carries its sampling noise, so the spread of the per-seed values
is the whole seed-to-seed variance of a recipe's estimate.  With two or three seeds a bootstrap
over seeds is degenerate (three seeds give ten distinct resamples), so the difference of the two
recipes' seed means gets the two-sample t interval (Welch 1947's equal-variance case, Student's
pooled form):

    d = mean_variant - mean_base,   se_d = s_p * sqrt(1/n_v + 1/n_b),   d +- t_(df, 0.975) se_d,

with s_p² the seed variance pooled over the two recipes, each where it has two or more seeds
(df = n_v - 1 + n_b - 1 over those).  Pooling assumes the seed-to-seed variance is the same for
the variant as for the base: it lets a variant trained with one seed be compared at all, and it
is stated with every result.  Where neither has two seeds (df = 0) there is no seed-level
interval; the row
then carries the sampling-only interval, d +- 1.96 sqrt(se_v² + se_b²), flagged ``seed_level``
False, which is too narrow for a claim about the recipe.

``detectable`` is the smallest true difference the comparison finds with 80 % power at the 5 %
level, (t_(df, 0.975) + t_(df, 0.8)) se_d: a difference below it going unseen is no evidence that
there is none.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from rulelib.study.fit import se_from_ci
from rulelib.study.seeds import group_name

LEVEL = 0.95
POWER = 0.8
METRIC = "novel_resid_std"


def base_group(task: str) -> str:
    return f"length_{task}"


def seed_difference(variant, base, pooled_sd: float | None, df: int) -> dict:
    """Seed mean of ``variant`` minus that of ``base`` (each a list of per-seed values), with the
    pooled-variance t interval and the difference detectable with 80 % power; ``pooled_sd`` and
    ``df`` are the pooled seed standard deviation and its degrees of freedom."""
    v, b = np.asarray(variant, dtype=float), np.asarray(base, dtype=float)
    if v.size == 0 or b.size == 0:
        raise ValueError(f"each side needs at least one seed, got {v.size} and {b.size}")
    if df < 1 or pooled_sd is None:
        raise ValueError(f"a seed-level interval needs df >= 1 and a pooled sd, got df={df}")
    se = pooled_sd * np.sqrt(1 / v.size + 1 / b.size)
    t = stats.t.ppf(0.5 + LEVEL / 2, df)
    d = float(v.mean() - b.mean())
    return {"value": d, "ci": [d - t * se, d + t * se], "se": float(se), "df": int(df),
            "detectable": float((t + stats.t.ppf(POWER, df)) * se), "seed_level": True}  # fmt: skip


def sampling_difference(v: float, se_v: float, b: float, se_b: float) -> dict:
    """One seed each and no pooled seed variance: the sampling-only interval (too narrow for a
    claim about the recipe, flagged ``seed_level`` False)."""
    se = float(np.hypot(se_v, se_b))
    z = stats.norm.ppf(0.5 + LEVEL / 2)
    return {"value": v - b, "ci": [v - b - z * se, v - b + z * se], "se": se, "df": None,
            "detectable": float((z + stats.norm.ppf(POWER)) * se), "seed_level": False}  # fmt: skip


def pooled(groups: list[list[float]]) -> tuple[float | None, int]:
    """(pooled seed sd, its degrees of freedom) over the groups with two or more seeds."""
    ss = sum(float(((np.asarray(g) - np.mean(g)) ** 2).sum()) for g in groups if len(g) > 1)
    df = sum(len(g) - 1 for g in groups if len(g) > 1)
    return (float(np.sqrt(ss / df)), df) if df else (None, 0)


def _points(rows) -> dict[tuple[str, int], dict[int, tuple[float, float, float]]]:
    """{(group, images): {seed: (value, se, measurable share)}} of the EMA + DDIM points with a
    residual std."""
    out: dict = {}
    for r in rows:
        if r["sampling"] != "ema ddim" or r.get(METRIC) is None or r.get(METRIC + "_lo") is None:
            continue
        g, sd = group_name(r["run"])
        se = se_from_ci([r[METRIC + "_lo"], r[METRIC + "_hi"]])
        share = float(r["measurable_rate"])
        out.setdefault((g, int(r["images"])), {})[sd] = (float(r[METRIC]), se, share)
    return out


def compare(rows) -> list[dict]:
    """One row per variant group and number of images it shares with its task's base group:
    each side's seeds and seed mean, the smallest measurable share of any seed there
    (``measurable``), and the difference (``seed_difference``, or ``sampling_difference`` where
    no seed variance can be pooled)."""
    pts = _points(rows)
    task_of = {group_name(r["run"])[0]: r["task"] for r in rows}
    out = []
    for (g, images), by_seed in sorted(pts.items()):
        task = task_of[g]
        base = pts.get((base_group(task), images))
        if g == base_group(task) or not base:
            continue
        v = [by_seed[s][0] for s in sorted(by_seed)]
        b = [base[s][0] for s in sorted(base)]
        sd, df = pooled([v, b])
        if df:
            diff = seed_difference(v, b, sd, df)
        else:  # one seed on each side
            (vv, sv, _), (bb, sb, _) = next(iter(by_seed.values())), next(iter(base.values()))
            diff = sampling_difference(vv, sv, bb, sb)
        out.append({"task": task, "variant": g, "base": base_group(task), "images": images,
                    "variant_seeds": sorted(by_seed), "base_seeds": sorted(base),
                    "variant_mean": float(np.mean(v)), "base_mean": float(np.mean(b)),
                    "measurable": min(p[2] for p in [*by_seed.values(), *base.values()]),
                    "pooled_seed_sd": sd, **diff})  # fmt: skip
    return out
