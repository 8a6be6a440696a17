"""Contrastive rule data: the three classes the paper's classifiers and guidance are trained on.

docs/paper.md section 5.  For every task, images come in three classes
that differ *only* in the fine rule:

    class 1   rule-conforming, rendered exactly as the training set (dependent feature y = k x)
    class 0   the rule's dependent feature scaled by c ~ U(0.3, 0.8)   (too small)
    class 2   the rule's dependent feature scaled by c ~ U(1.25, 2)    (too large)

The dependent feature is the one the task's renderer exposes through ``dependent_scale`` (A: the
shadow length l2, B: the height h2, C: the radius r2, D: the side l2); the coarse rule (shadow side,
order of the sizes) is kept by the renderer.  Because the rule's scatter quantity y
(``task.rule_xy``) is linear in the dependent feature, the measured ratio y / (k x) of an image *is*
its scale c (after the renderer's clipping, see ``make_contrastive``), which is how a test (and
``ratio_class``) recovers the label from the pixels alone.
"""

from __future__ import annotations

import numpy as np

# The scale ranges of the two rule-violating classes (ours; the paper does not give them).
SMALL_RANGE = (0.3, 0.8)
LARGE_RANGE = (1.25, 2.0)
CLASS_NAMES = ("too small", "conforming", "too large")
CONFORMING = 1  # the class guidance pushes towards


def class_scales(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dependent-feature scale c per image: 1 for class 1, U(0.3, 0.8) for class 0, U(1.25, 2) for
    class 2."""
    labels = np.asarray(labels)
    if not np.isin(labels, (0, 1, 2)).all():
        bad = np.unique(labels[~np.isin(labels, (0, 1, 2))])
        raise ValueError(f"contrastive labels must be 0, 1 or 2, got {bad.tolist()}")
    scale = np.ones(labels.shape, dtype=np.float64)
    for cls, (lo, hi) in ((0, SMALL_RANGE), (2, LARGE_RANGE)):
        idx = labels == cls
        scale[idx] = rng.uniform(lo, hi, size=int(idx.sum()))
    return scale


def make_contrastive(task, n: int = 5000, seed: int = 0, max_rounds: int = 100):
    """Render a balanced, shuffled contrastive set of ``n`` images for ``task``.

    Returns ``(images, labels, truth)``: uint8 images (n, 32, 32, 3), int64 labels (n,) in
    {0, 1, 2}, and the renderer's truth features (dict of (n,) float arrays) plus ``truth["scale"]``
    (the c asked for) and ``truth["redraws"]`` (how often the image was redrawn, see below).
    Classes get n // 3 images each and the first n % 3 classes one more, so the set is balanced to
    one image.

    Honest labels: the renderer clips a scaled feature to keep the scene valid and the coarse rule
    (``task.dependent_bounds``; e.g. in C a disk 2 smaller than disk 1 is not allowed), so a clipped
    image may not show the violation its class asks for.  Every image whose *true* rule ratio is not
    in its class's band (``ratio_class``) is redrawn with a fresh scene and scale until it is.  The
    clipped but still violating images stay (in C and D every class-0 image sits at the coarse-rule
    bound, ratios about 0.83-0.9 in C and 0.74-0.87 in D).

    Deterministic for a given (task, n, seed).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 3:
        raise ValueError(f"n must be an integer >= 3 (one image per class at least), got {n!r}")
    rng = np.random.default_rng([int(seed), 0xC0DE])  # a stream separate from the renderer's
    counts = [n // 3 + (1 if c < n % 3 else 0) for c in range(3)]
    labels = np.concatenate([np.full(k, c, dtype=np.int64) for c, k in enumerate(counts)])
    labels = labels[rng.permutation(n)]
    scale = class_scales(labels, rng)
    images, truth = task.sample(int(n), int(seed), dependent_scale=scale)
    truth = {k: np.array(v, dtype=np.float64) for k, v in truth.items()}
    redraws = np.zeros(n)
    bad = ratio_class(rule_ratio(task, truth)) != labels
    for r in range(1, max_rounds + 1):
        idx = np.flatnonzero(bad)
        if len(idx) == 0:
            break
        sub_seed = int(np.random.SeedSequence([int(seed), r]).generate_state(1)[0])
        scale[idx] = class_scales(labels[idx], rng)
        img2, tr2 = task.sample(len(idx), sub_seed, dependent_scale=scale[idx])
        images[idx] = img2
        for k in truth:
            truth[k][idx] = tr2[k]
        redraws[idx] += 1
        bad[idx] = ratio_class(rule_ratio(task, tr2)) != labels[idx]
    else:
        raise RuntimeError(
            f"task {task.name}: {int(bad.sum())} contrastive images still off their class after "
            f"{max_rounds} redraws"
        )
    truth["scale"] = scale
    truth["redraws"] = redraws
    return images, labels, truth


def rule_ratio(task, features: dict) -> np.ndarray:
    """The measured ratio y / (k x) of the task's scatter quantities (1 on the rule line)."""
    x, y = task.rule_xy(features)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return y / (task.k * x)


def ratio_class(ratio: np.ndarray, *, low: float = 0.9, high: float = 1.12) -> np.ndarray:
    """Class of a measured rule ratio: 0 below ``low``, 2 above ``high``, 1 between; -1 if not
    finite.

    The default cuts lie halfway (geometrically) between the conforming ratio 1 and the nearest
    violating scales 0.8 and 1.25, so an exact measurement recovers every label.
    """
    ratio = np.asarray(ratio, dtype=np.float64)
    out = np.ones(ratio.shape, dtype=np.int64)
    out[ratio < low] = 0
    out[ratio > high] = 2
    out[~np.isfinite(ratio)] = -1
    return out


def split(n: int, seed: int = 0, test_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """The paper's 80:20 train/test split, as two index arrays of a seeded permutation."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    perm = np.random.default_rng([int(seed), 0x5917]).permutation(int(n))
    n_test = max(1, int(round(test_fraction * n)))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])
