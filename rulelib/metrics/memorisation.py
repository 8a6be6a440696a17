"""Memorisation: is a generated image a copy of a training image?

For each generated image we find its nearest and second-nearest training images in pixel space:
the Euclidean distance over the 3 x 32 x 32 values scaled to the model's range [-1, 1]
(x / 127.5 - 1, ``rulelib.diffusion.schedule.images_to_tensor``): one value changed from white
(1) to black (-1) moves an image by 2; two different Task B scenes lie about 4-6 apart.

Copy test (the memorisation literature's, e.g. Carlini et al. 2023 "Extracting training data from
diffusion models" and Somepalli et al. 2023 use ratio tests of this kind): an image is a **copy**
when

    d_1 / d_2 < COPY_RATIO = 1/3,

d_1, d_2 its distances to the nearest and second-nearest training image: much closer to one
training image than to any other.  A training image with small noise added has d_1 ~ the noise and
d_2 ~ the distance between training images, so it is a copy; a fresh image of the task has
d_1 ~ d_2 (it is no closer to one training image than to its neighbours).  With two identical
training images d_2 = d_1; a generated image at distance 0 from a training image counts as a copy
(0/0 := 0).

The copy rate alone misses a drift towards the training set that stops short of copying, so every
report also gives the distribution of d_1 against a **reference**: d_1 of fresh task images (drawn
from the task, never trained on) to the same training set.  Generated images closer to the
training set than fresh images are (a lower median d_1) are being pulled towards it.

``memorisation_report`` computes all of it; ``memorisation_columns`` is the one call the evaluate
stage makes to put the memorisation columns and the rule metrics of the novel (non-copied) images
into a metrics.json.
"""

from __future__ import annotations

import numpy as np
import torch

from rulelib import metrics
from rulelib.metrics.bootstrap import share_ci

COPY_RATIO = 1.0 / 3.0  # d_1 / d_2 below this: a copy (see the module docstring)
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
_BLOCK = 256  # query images per distance block: 256 x 16 384 float32 distances = 16 MB
_TRAIN_BLOCK = 16_384  # training images in floats at a time: 200 MB at 3 x 32 x 32


def _as_flat(images, name: str) -> torch.Tensor:
    """uint8 (n, H, W, C) -> float32 (n, H*W*C) in [-1, 1]; a float tensor/array passes through
    (already in [-1, 1], any shape (n, ...))."""
    if isinstance(images, torch.Tensor):
        x = images.detach().float().cpu()
    else:
        a = np.asarray(images)
        if a.dtype == np.uint8:
            x = torch.from_numpy(np.ascontiguousarray(a)).float().div_(127.5).sub_(1.0)
        elif np.issubdtype(a.dtype, np.floating):
            x = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
        else:
            raise ValueError(f"{name}: expected uint8 images or floats in [-1, 1], got {a.dtype}")
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"{name}: expected a non-empty batch of images, got {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1)


def nearest(query, train, k: int = 2, *, exclude_self: bool = False) -> tuple[np.ndarray, ...]:
    """Distances (n, k) and indices (n, k) of the k nearest training images of each query image.

    Candidates come from ||q||^2 + ||t||^2 - 2 q.t in float32 blocks (one matrix product per
    block); the k + 2 best are then re-measured exactly in float64, which removes the cancellation
    error of the expansion for near-duplicates.  exclude_self: query and train are the same set;
    skip each image's own index (leave-one-out), for the distances within a set.

    The training set is read _TRAIN_BLOCK images at a time, each block turned into floats only
    while it is compared: a fresh-data run's 512 000 uint8 images (1.6 GB) would otherwise become
    6.3 GB of float32, twice over with its squared norms.
    """
    q = _as_flat(query, "query")
    n_t = len(train)
    m = n_t - int(exclude_self)
    if not 1 <= k <= m:
        raise ValueError(f"k must be in 1..{m} (the training images available), got {k}")
    kc = min(k + 2, m)
    qn = (q * q).sum(1, keepdim=True)
    best_d2 = torch.full((q.shape[0], kc), float("inf"))
    best_i = torch.zeros((q.shape[0], kc), dtype=torch.long)
    for ts in range(0, n_t, _TRAIN_BLOCK):
        t = _as_flat(train[ts : ts + _TRAIN_BLOCK], "train")
        if q.shape[1] != t.shape[1]:
            raise ValueError(f"query images have {q.shape[1]} values, training images {t.shape[1]}")
        tn = (t * t).sum(1)
        for s in range(0, q.shape[0], _BLOCK):
            d2 = qn[s : s + _BLOCK] + tn[None] - 2.0 * (q[s : s + _BLOCK] @ t.T)
            if exclude_self:  # query s + r is training image ts + c where the two agree
                r = torch.arange(d2.shape[0])
                c = r + s - ts
                inside = (c >= 0) & (c < d2.shape[1])
                d2[r[inside], c[inside]] = float("inf")
            both_d = torch.cat([best_d2[s : s + _BLOCK], d2], dim=1)
            here = torch.arange(ts, ts + t.shape[0]).expand_as(d2)
            both_i = torch.cat([best_i[s : s + _BLOCK], here], dim=1)
            top = both_d.topk(kc, dim=1, largest=False).indices
            best_d2[s : s + _BLOCK] = both_d.gather(1, top)
            best_i[s : s + _BLOCK] = both_i.gather(1, top)
    dist, idx = [], []
    for s in range(0, q.shape[0], _BLOCK):
        cand = best_i[s : s + _BLOCK]
        rows = _as_flat(_take(train, cand.reshape(-1)), "train").double()
        exact = q[s : s + _BLOCK].double()[:, None, :] - rows.reshape(*cand.shape, -1)
        exact = exact.pow(2).sum(-1).sqrt()
        order = exact.argsort(dim=1)[:, :k]
        dist.append(exact.gather(1, order))
        idx.append(cand.gather(1, order))
    return torch.cat(dist).numpy(), torch.cat(idx).numpy()


def _take(images, index: torch.Tensor):
    """images[index] for a numpy array or a torch tensor of images."""
    return images[index] if isinstance(images, torch.Tensor) else np.asarray(images)[index.numpy()]


def copy_flags(d: np.ndarray, ratio: float = COPY_RATIO) -> np.ndarray:
    """Bool (n,): d_1 / d_2 < ratio for distances d (n, >= 2) (0 / 0 counts as a copy)."""
    d = np.asarray(d, dtype=np.float64)
    if d.ndim != 2 or d.shape[1] < 2:
        raise ValueError(f"need distances of shape (n, >= 2), got {d.shape}")
    if not 0 < ratio < 1:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(d[:, 0] == 0, 0.0, d[:, 0] / d[:, 1])
    return r < ratio


def _quantiles(d: np.ndarray) -> dict:
    return {f"q{int(round(100 * q)):02d}": float(np.quantile(d, q)) for q in QUANTILES}


def boot_ci(values: np.ndarray, stat, n_boot: int, rng, level: float = 0.95):
    """Percentile-bootstrap CI of stat(values, axis=1) over resampled rows of ``values``."""
    if n_boot == 0 or len(values) < 2:
        return None
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    s = stat(values[idx], axis=1)
    a = (1 - level) / 2
    return [float(np.quantile(s, a)), float(np.quantile(s, 1 - a))]


def memorisation_report(
    generated, train, fresh=None, *, ratio: float = COPY_RATIO, n_boot: int = 1000, seed: int = 0
) -> dict:
    """Nearest-training-image distances and the copy rate of ``generated``, beside ``fresh``.

    Returns a JSON-serialisable dict: "copy_ratio" (the threshold), "n", "copy_rate" {value, ci}
    (bootstrap over images), "n_copies", "nearest" (quantiles of d_1 and its median with a
    bootstrap CI), "ratio_median" (median d_1 / d_2); with ``fresh``: "reference" (the same for the
    fresh images), "median_shift" (median d_1 generated minus fresh, with a bootstrap CI over both
    sets) and "closer_than_fresh_median" (share of generated images with d_1 below the fresh
    images' median; 0.5 when they are alike).  Also the per-image arrays under "_d1", "_copy"
    (dropped by ``memorisation_columns`` before writing).
    """
    rng = np.random.default_rng(seed)
    d, _ = nearest(generated, train, k=2)
    copy = copy_flags(d, ratio)
    d1 = d[:, 0]

    def copy_ci(copy):
        # exact binomial CI (0 copies of 256: [0, 1.4 %], where the bootstrap gave [0, 0]); the
        # bootstrap is still drawn so that the later CIs keep the resamples they had
        boot_ci(copy.astype(float), np.mean, n_boot, rng)
        return share_ci(int(copy.sum()), len(copy)) if n_boot and len(copy) else None

    def block(d1, copy):
        return {
            "n": int(len(d1)),
            "copy_rate": {"value": float(copy.mean()), "ci": copy_ci(copy)},
            "n_copies": int(copy.sum()),
            "nearest": {**_quantiles(d1), "median": float(np.median(d1)),
                        "median_ci": boot_ci(d1, np.median, n_boot, rng)},
        }  # fmt: skip

    with np.errstate(invalid="ignore", divide="ignore"):
        ratio_median = float(np.nanmedian(np.where(d1 == 0, 0.0, d1 / d[:, 1])))
    out = {"copy_ratio": ratio, "distance": "L2 over 3x32x32 values in [-1, 1]",
           **block(d1, copy), "ratio_median": ratio_median, "n_train": int(len(train))}  # fmt: skip
    if fresh is not None:
        df, _ = nearest(fresh, train, k=2)
        f1 = df[:, 0]
        out["reference"] = {"what": "fresh task images (never trained on) to the same training set",
                            **block(f1, copy_flags(df, ratio))}  # fmt: skip
        shift = float(np.median(d1) - np.median(f1))
        ci = None
        if n_boot:
            a = np.median(d1[rng.integers(0, len(d1), (n_boot, len(d1)))], axis=1)
            b = np.median(f1[rng.integers(0, len(f1), (n_boot, len(f1)))], axis=1)
            ci = [float(np.quantile(a - b, 0.025)), float(np.quantile(a - b, 0.975))]
        out["median_shift"] = {"value": shift, "ci": ci}
        out["closer_than_fresh_median"] = float((d1 < np.median(f1)).mean())
    out["_d1"], out["_copy"] = d1, copy
    return out


def _subset(features: dict, mask: np.ndarray) -> dict:
    n = len(mask)
    return {k: (np.asarray(v)[mask] if np.ndim(v) == 1 and len(v) == n else v)
            for k, v in features.items()}  # fmt: skip


def novel_rule_report(task, features: dict, ok, copy, *, n_boot: int = 1000, seed: int = 0):
    """rule_report of the images that are not copies (None when every image is a copy)."""
    novel = ~np.asarray(copy, dtype=bool)
    ok = np.asarray(ok, dtype=bool)
    if len(novel) != len(ok):
        raise ValueError(f"copy flags ({len(novel)}) and ok ({len(ok)}) differ in length")
    if not novel.any():
        return None
    return metrics.rule_report(task, _subset(features, novel), ok[novel], n_boot=n_boot, seed=seed)


def memorisation_columns(
    task,
    images,
    train_images,
    features: dict,
    ok,
    *,
    fresh_images=None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """What the evaluate stage adds to a metrics.json: {"memorisation": memorisation_report(...)
    without its per-image arrays, "generated_novel": rule_report of the non-copies}.

    images: the generated uint8 images; train_images: the set the model was trained on;
    features, ok: ``task.measure(images)``; fresh_images: task images never trained on (default:
    ``task.sample(len(images), seed + 7919)``, a seed the training sets do not use).
    """
    if fresh_images is None:
        fresh_images = task.sample(len(images), seed + 7919)[0]
    rep = memorisation_report(images, train_images, fresh_images, n_boot=n_boot, seed=seed)
    copy = rep.pop("_copy")
    rep.pop("_d1")
    novel = novel_rule_report(task, features, ok, copy, n_boot=n_boot, seed=seed)
    return {"memorisation": rep, "generated_novel": novel}
