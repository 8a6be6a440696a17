"""The rule report: every metric with a percentile-bootstrap CI, selection-bias bounds, rejections.

``rule_report`` computes the paper's metrics on the measurable images (as the paper did) and,
because the measurable images may be a biased subset (generated images), also bounds on the
rule-conforming and within-+-5 % shares over *all* images: unmeasurable images counted as
violating (lower bound) and as conforming (upper bound).  The true share over all images lies
between them whatever the unmeasurable images hold.  With the measurement's ``reasons`` it also
tabulates why images were rejected, and ``max_se_px`` drops images whose per-image standard error
(``se_px``, rulelib.tasks.measure) exceeds a tolerance.  ``paired_difference`` compares two sets
of the same images (guided vs unguided) with a paired bootstrap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from scipy.stats import binomtest

from rulelib.metrics.rules import (
    TRIM_MODES,
    WITHIN_TOLS,
    _as_ok,
    _trim_mask,
    conforming,
    fit_rows,
    measured_xy,
    within,
)

# Rows of the bootstrap are processed in blocks of at most this many (row x image) elements, so that
# 1000 resamples of 20 000 images stay at a few tens of MB.
_BLOCK_ELEMENTS = 2_000_000


# Order of the metrics in reports and tables.
METRICS = (
    "measurable_rate",
    "coarse_rate",
    "conforming_pct",
    "within_1pct",
    "within_5pct",
    "within_10pct",
    "slope",
    "intercept",
    "r2",
    "bias",
    "bias_k1",
    "resid_std",
)


# Over all images, unmeasurable ones counted as violating (_low) and as conforming (_high).
BOUNDS = (
    "conforming_pct_all_low",
    "conforming_pct_all_high",
    "within_5pct_all_low",
    "within_5pct_all_high",
)


def _num(v) -> float | None:
    """A JSON-safe float: NaN/inf (undefined metric) becomes None."""
    v = float(v)
    return v if math.isfinite(v) else None


def _ci(samples: np.ndarray, level: float) -> list | None:
    s = samples[np.isfinite(samples)]
    if s.size == 0:
        return None
    a = 100 * (1 - level) / 2
    lo, hi = np.percentile(s, (a, 100 - a))
    return [float(lo), float(hi)]


def _stats(x, y, coarse, k: float, trim: str, idx=None) -> dict[str, np.ndarray]:
    """Every metric except measurable_rate, for each row of resample indices idx (B, m).

    idx None means the data as given (one row).  Shares are means of per-image indicators; the fit
    metrics come from `fit_rows` on the resampled scatter.
    """
    if idx is None:
        idx = np.arange(x.size)[None]
    xs, ys = x[idx], y[idx]
    out = {
        "coarse_rate": coarse[idx].mean(axis=1),
        "conforming_pct": 100 * conforming(xs, ys, k).mean(axis=1),
    }
    for tol in WITHIN_TOLS:
        out[f"within_{round(tol * 100)}pct"] = 100 * within(xs, ys, k, tol).mean(axis=1)
    slope, intercept, r2, resid_std, _ = fit_rows(xs, ys, trim)
    out.update(slope=slope, intercept=intercept, r2=r2, resid_std=resid_std)
    # Fit error of the paper: distance of the fitted line from the rule line y = k x.
    out["bias"] = np.abs(slope - k) + np.abs(intercept)
    # The same with k = 1 for every task, as the paper's code computed it.
    out["bias_k1"] = np.abs(slope - 1.0) + np.abs(intercept)
    return out


def _check_bootstrap(n_boot, level, trim) -> None:
    """Raise ValueError naming a bad bootstrap option (rule_report, paired_difference)."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 0:
        raise ValueError(f"n_boot must be an int >= 0, got {n_boot!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if trim not in TRIM_MODES:
        raise ValueError(f"trim must be one of {TRIM_MODES}, got {trim!r}")


def rule_report(
    task,
    features: Mapping,
    ok,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    trim: str = "residuals",
    level: float = 0.95,
    reasons: Mapping | None = None,
    max_se_px: float | None = None,
) -> dict:
    """Rule metrics of a set of measured images, each with a percentile-bootstrap CI.

    Args:
        task: a RuleTask (uses .name, .k, .feature_names, .rule_xy, .coarse_ok).
        features: measured features, dict of (n,) float arrays (task.measure's first output).
        ok: (n,) bool, the image was measurable (task.measure's second output).
        n_boot: bootstrap resamples (0: no CIs).  seed: seeds the resampling.
        trim: "residuals" (default), "xy" or "none"; see `rules._trim_mask`.
        level: CI level (0.95).
        reasons: the dict task.measure(images, reasons) filled ({check: (n,) bool failed}):
            tabulated as "rejections".
        max_se_px: drop images whose per-image standard error features["se_px"] (pixels)
            exceeds this, as if unmeasurable ("n_uncertain" counts them).

    Returns a JSON-serialisable dict: "task", "k", "n" (images), "n_measurable", "n_fit" (points
    left after trimming), "trim", "n_boot", "seed", for each name in METRICS and BOUNDS a dict
    {"value": float | None, "ci": [lo, hi] | None} (None where undefined, e.g. no measurable
    image), "rejections" ({check: images that failed it}, most frequent first; {} without
    ``reasons``), "n_uncertain" and "max_se_px", and "se_px_median" (median per-image standard
    error of the measured images, None without ``se_px``).

    The bootstrap resamples the measurable images with replacement (B rows of m indices at once,
    in memory-bounded blocks) and recomputes every metric on each row; measurable_rate and the
    BOUNDS, means of n Bernoulli flags over all images, are resampled exactly as
    Binomial(n, p_hat) / n.  CIs are percentile intervals.  The biases are absolute values, so
    near a perfect fit their point values and CIs sit slightly above 0 (|noise| > 0); read them
    against the CIs of slope and intercept.
    """
    _check_bootstrap(n_boot, level, trim)
    k = float(task.k)
    ok = _as_ok(ok, None)
    n_uncertain = 0
    if max_se_px is not None:
        if "se_px" not in features:
            raise ValueError("max_se_px needs features['se_px'] (rulelib.tasks.measure)")
        if not max_se_px > 0:
            raise ValueError(f"max_se_px must be > 0 pixels, got {max_se_px!r}")
        sure = np.asarray(features["se_px"], dtype=np.float64) <= max_se_px  # NaN: not sure
        n_uncertain = int((ok & ~sure).sum())
        ok = ok & sure
    x, y, coarse = measured_xy(task, features, ok)
    n, m = ok.size, x.size

    rng = np.random.default_rng(seed)
    p_hat = m / n

    def share(p):  # a mean of n Bernoulli flags: its exact (Clopper-Pearson) CI
        # the binomial resamples are still drawn, so that every other metric's resamples (and
        # CIs) stay those of the results computed before the shares' CIs were exact
        rng.binomial(n, p, n_boot)
        return {"value": float(p), "ci": share_ci(round(p * n), n, level) if n_boot else None}

    report = {
        "task": str(getattr(task, "name", "")),
        "k": k,
        "n": int(n),
        "n_measurable": int(m),
        "n_fit": 0,
        "trim": trim,
        "n_boot": int(n_boot),
        "seed": int(seed),
        "measurable_rate": share(p_hat),
    }
    se = features.get("se_px") if isinstance(features, Mapping) else None
    report["se_px_median"] = _num(np.median(np.asarray(se)[ok])) if se is not None and m else None
    report["n_uncertain"] = n_uncertain
    report["max_se_px"] = None if max_se_px is None else float(max_se_px)
    report["rejections"] = _rejections(reasons, n)
    # bounds over all images: unmeasurable counted as violating (low) and as conforming (high)
    for key, hits in (
        ("conforming_pct", conforming(x, y, k)),
        ("within_5pct", within(x, y, k, 0.05)),
    ):
        c = int(np.sum(hits))
        report[f"{key}_all_low"] = _pct(share(c / n))
        report[f"{key}_all_high"] = _pct(share((c + n - m) / n))
    if m == 0:  # nothing measurable: the other metrics are undefined, not an error
        report.update({name: {"value": None, "ci": None} for name in METRICS[1:]})
        return report

    point = _stats(x, y, coarse, k, trim)
    report["n_fit"] = int(_trim_mask(x[None], y[None], trim).sum())
    boot = {name: [] for name in point}
    rows_per_block = max(1, _BLOCK_ELEMENTS // m)
    for start in range(0, n_boot, rows_per_block):
        idx = rng.integers(0, m, size=(min(rows_per_block, n_boot - start), m))
        for name, v in _stats(x, y, coarse, k, trim, idx).items():
            boot[name].append(v)
    for name in METRICS[1:]:
        ci = _ci(np.concatenate(boot[name]), level) if n_boot else None
        value = _num(point[name][0])
        report[name] = {"value": value, "ci": ci if value is not None else None}
    # the shares of the m measurable images: exact binomial CIs, which the percentile bootstrap
    # is not at 0 and 100 % (0 of 32 gave [0, 0]; Clopper-Pearson: [0, 10.9] %)
    shares = [("coarse_rate", coarse, 1.0), ("conforming_pct", conforming(x, y, k), 100.0)]
    shares += [(f"within_{round(t * 100)}pct", within(x, y, k, t), 100.0) for t in WITHIN_TOLS]
    for name, hits, scale in shares:
        if n_boot and report.get(name, {}).get("value") is not None:
            report[name]["ci"] = [scale * v for v in share_ci(int(np.sum(hits)), m, level)]
    return report


def share_ci(k: int, n: int, level: float = 0.95) -> list[float]:
    """Exact (Clopper-Pearson) CI of a share of k hits in n trials (scipy.stats.binomtest); at
    k = 0 the upper end is 1 - (alpha / 2)^(1/n), e.g. 1.4 % for 0 of 256, not 0."""
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="exact")
    return [float(ci.low), float(ci.high)]


def _pct(entry: dict) -> dict:
    """A share entry {"value", "ci"} as percentages."""
    ci = entry["ci"]
    return {"value": 100 * entry["value"], "ci": None if ci is None else [100 * c for c in ci]}


def _rejections(reasons: Mapping | None, n: int) -> dict:
    """{check: number of images that failed it}, most frequent first (an image may fail several)."""
    if reasons is None:
        return {}
    if not isinstance(reasons, Mapping):
        raise ValueError(
            f"reasons must be a dict {{check: (n,) bool}}, got {type(reasons).__name__}"
        )
    counts = {}
    for label, failed in reasons.items():
        failed = np.asarray(failed)
        if failed.shape != (n,) or failed.dtype != np.bool_:
            raise ValueError(
                f"reasons[{label!r}] must be a bool array of shape ({n},), got dtype "
                f"{failed.dtype} shape {failed.shape}"
            )
        if failed.any():
            counts[str(label)] = int(failed.sum())
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def paired_difference(
    task,
    base: tuple[Mapping, np.ndarray],
    other: tuple[Mapping, np.ndarray],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    trim: str = "residuals",
    level: float = 0.95,
) -> dict:
    """Each rule metric of `other` minus that of `base`, with a paired-bootstrap CI.

    `base` and `other` are (features, ok) of the same n images drawn twice from the same noise, e.g.
    unguided and guided samples of the same seed (rulelib.mitigation.guidance.scale_sweep): image i
    of both
    sets starts from the same x_T.  The bootstrap therefore resamples image indices i (the same
    indices for both sets) and recomputes both sets' metrics on the measurable images among them;
    the shared noise cancels out of the difference, so its CI is narrower than the two separate
    CIs would suggest.  A CI that excludes 0 is a difference the guidance made, not a noise draw.

    Returns {"n", "n_boot", "seed", and for each name in METRICS {"value": other - base, "ci"}}.
    """
    _check_bootstrap(n_boot, level, trim)
    k = float(task.k)
    sets = []
    for features, ok in (base, other):
        x, y, coarse = measured_xy(task, features, ok)
        ok = _as_ok(ok, None)
        sets.append((ok, np.cumsum(ok) - 1, x, y, coarse))
    n = sets[0][0].size
    if sets[1][0].size != n:
        raise ValueError(
            f"paired sets must have the same number of images, got {n} and {sets[1][0].size}"
        )

    def metrics_of(idx):
        """{metric: other - base} on the images idx (indices into 0..n-1, repeats allowed)."""
        values = []
        for ok, pos, x, y, coarse in sets:
            sel = idx[ok[idx]]
            v = {"measurable_rate": np.array([ok[idx].mean()])}
            if sel.size:
                v |= _stats(x, y, coarse, k, trim, pos[sel][None])
            values.append(v)
        return {
            m: float(values[1][m][0] - values[0][m][0])
            if m in values[0] and m in values[1]
            else math.nan
            for m in METRICS
        }

    point = metrics_of(np.arange(n))
    rng = np.random.default_rng(seed)
    boot = [metrics_of(rng.integers(0, n, n)) for _ in range(n_boot)]
    out = {"n": int(n), "n_boot": int(n_boot), "seed": int(seed), "trim": trim}
    for m in METRICS:
        value = _num(point[m])
        ci = _ci(np.array([b[m] for b in boot]), level) if n_boot else None
        out[m] = {"value": value, "ci": ci if value is not None else None}
    return out
