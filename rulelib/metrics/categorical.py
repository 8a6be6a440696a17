"""Shares of images that keep a categorical rule, with percentile-bootstrap CIs.

The geometric tasks' rule report (``rulelib.metrics.rule_report``) scores y = k x.  A categorical
rule is scored by shares of per-image flags instead:

    share_report(flags, ok)              any named flags: each share over the measurable images
    pairing_report(task, features, ok)   task "pairs": valid group (fine rule), two-by-two layout
                                         (coarse rule), complete group, + the tile classifier's
                                         held-out accuracy
    reflection_report(features, ok)      task "mirror" and Syn Mirror: height (5 %), alignment,
                                         position, colour agreement

Each share p is the mean of 0/1 flags over the m measurable images; its CI resamples those
images with replacement (B rows at once) and takes the percentiles of the resampled means, as
``rule_report`` does.  ``measurable_rate`` (over all n images) is resampled as Binomial(n, p) / n.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from rulelib.tasks import mirror as _mirror


def _ci(samples: np.ndarray, level: float) -> list[float]:
    a = 100 * (1 - level) / 2
    lo, hi = np.percentile(samples, (a, 100 - a))
    return [float(lo), float(hi)]


def share_report(
    flags: Mapping[str, np.ndarray], ok, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict:
    """{"n", "n_measurable", "n_boot", "measurable_rate", <flag>: {"value", "ci"}} (JSON-safe).

    flags: name -> (m,) bool array over the measurable images (ok True), in their order.
    Shares are None (with no CI) when no image is measurable.
    """
    ok = np.asarray(ok)
    if ok.ndim != 1 or ok.dtype != np.bool_ or ok.size == 0:
        raise ValueError(f"ok must be a non-empty 1-D bool array, got {ok.dtype} {ok.shape}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 0:
        raise ValueError(f"n_boot must be an int >= 0, got {n_boot!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    n, m = ok.size, int(ok.sum())
    rng = np.random.default_rng(seed)
    p = m / n
    out = {
        "n": int(n),
        "n_measurable": m,
        "n_boot": int(n_boot),
        "measurable_rate": {
            "value": p,
            "ci": _ci(rng.binomial(n, p, n_boot) / n, level) if n_boot else None,
        },
    }
    arrays = {}
    for name, v in flags.items():
        v = np.asarray(v)
        if v.shape != (m,):
            raise ValueError(
                f"flag {name!r} has shape {v.shape}; expected ({m},), one per measurable image"
            )
        arrays[name] = v.astype(bool)
    if m == 0:
        out.update({name: {"value": None, "ci": None} for name in arrays})
        return out
    idx = rng.integers(0, m, size=(n_boot, m)) if n_boot else None
    for name, v in arrays.items():
        ci = _ci(v[idx].mean(1), level) if n_boot else None
        out[name] = {"value": float(v.mean()), "ci": ci}
    return out


def _measured(features: Mapping, ok) -> dict:
    ok = np.asarray(ok, dtype=bool)
    return {k: np.asarray(v)[ok] for k, v in features.items() if np.ndim(v) == 1}


def pairing_report(task, features: Mapping, ok, **kw) -> dict:
    """Task "pairs": shares of valid group (fine), layout (coarse) and complete group (all four of
    the group's classes once), and the tile classifier's held-out accuracy ("tile_accuracy")."""
    f = _measured(features, ok)
    flags = {
        "valid_group": task.valid_group(f),
        "layout": task.coarse_ok(f),
        "complete": f["complete"] == 1,
    }
    out = share_report(flags, ok, **kw)
    out["tile_accuracy"] = getattr(task, "accuracy", None)
    return out


def reflection_report(features: Mapping, ok, **kw) -> dict:
    """Task "mirror" (or Syn Mirror measurements): shares of images whose reflection agrees with
    the object in height (5 %), alignment, position (procedural only) and colour."""
    return share_report(_mirror.consistency_flags(_measured(features, ok)), ok, **kw)
