"""Filtering (docs/paper.md section 5): keep the generated images a classifier calls conforming,
and measure every rule metric before and after, with bootstrap CIs."""

from __future__ import annotations

import math

import numpy as np
from torch import nn

from rulelib.metrics import rule_report
from rulelib.mitigation.classifiers import predict_proba


def filter_mask(
    model: nn.Module, images: np.ndarray, *, threshold: float | None = None, **kwargs
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the images the classifier calls conforming: arg-max class 1 and, if given, p(1) >=
    threshold.

    Returns ``(keep, p1)``: a bool mask (n,) and the class-1 probabilities.
    """
    if threshold is not None and not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise ValueError(f"threshold must be a probability in [0, 1] or None, got {threshold!r}")
    proba = predict_proba(model, images, **kwargs)
    keep = proba.argmax(1) == 1
    if threshold is not None:
        keep &= proba[:, 1] >= threshold
    return keep, proba[:, 1]


def _subset(features: dict, mask: np.ndarray) -> dict:
    return {k: np.asarray(v)[mask] for k, v in features.items()}


def filter_report(
    task,
    images: np.ndarray,
    model: nn.Module,
    *,
    threshold: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    features: dict | None = None,
    ok: np.ndarray | None = None,
) -> dict:
    """Every rule metric of generated images before and after filtering, with bootstrap CIs.

    ``features, ok`` may be passed when the images were measured already.  Returns a
    JSON-serialisable dict: ``before`` and ``after`` (``rulelib.metrics.rule_report``), ``n``,
    ``kept``, ``kept_share``, ``threshold``.
    """
    if features is None or ok is None:
        features, ok = task.measure(images)
    keep, _ = filter_mask(model, images, threshold=threshold)
    ok = np.asarray(ok, dtype=bool)
    before = rule_report(task, features, ok, n_boot=n_boot, seed=seed)
    after = None
    if keep.sum() > 0:
        after = rule_report(task, _subset(features, keep), ok[keep], n_boot=n_boot, seed=seed)
    return {
        "n": len(images),
        "kept": int(keep.sum()),
        "kept_share": float(keep.mean()) if len(keep) else 0.0,
        "threshold": threshold,
        "before": before,
        "after": after,
    }
