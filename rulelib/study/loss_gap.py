"""The DSM loss on training images against fresh images, with a CI: memorisation in the loss.

A model that has fitted its training set has a lower DSM loss (L_simple, Ho et al. eq. 14) on
those images than on fresh images of the task; the relative gap loss_fresh / loss_train - 1 is
the loss-side counterpart of the copy rate.  The loss of one image varies by orders of magnitude
with the draw of t, so with one draw per image the gap on 512 pairs moves by about 4 % (SD) from
the draw alone (length arm B at 512 000 images: -6.9 % to +5.7 % over ten draws) -- the size of
the gaps the study has to tell apart.  Here training image i and fresh image i are noised with
the same t and the same eps (common random numbers), ``draws`` times, which takes the draw's
largest effect, the level of t, out of the difference within each pair; a percentile bootstrap
over the pairs gives the gap's CI, with what is left of the draw noise in it.
"""

from __future__ import annotations

import numpy as np
import torch

from rulelib.diffusion.schedule import Schedule, images_to_tensor
from rulelib.metrics.memorisation import boot_ci


def _gap(pairs: np.ndarray, axis: int) -> np.ndarray:
    """loss_fresh / loss_train - 1 of (..., n, 2) arrays of (train, fresh) pair losses."""
    means = pairs.mean(axis)
    return means[..., 1] / means[..., 0] - 1.0


def per_image_losses(model, schedule: Schedule, x0: torch.Tensor, t: torch.Tensor,
                     noise: torch.Tensor, batch: int = 128) -> np.ndarray:  # fmt: skip
    """|| eps - eps_theta(sqrt(ab_t) x0 + sqrt(1 - ab_t) eps, t) ||^2 averaged over the pixels of
    each image (eq. 14 before the mean over images), for given t (N,) and eps (N, C, H, W)."""
    out = []
    with torch.no_grad():
        for i in range(0, len(x0), batch):
            sl = slice(i, i + batch)
            eps = model(schedule.q_sample(x0[sl], t[sl], noise[sl]), t[sl])
            out.append(((eps.float() - noise[sl].float()) ** 2).flatten(1).mean(1))
    return torch.cat(out).double().numpy()


def dsm_gap(
    model,
    schedule: Schedule,
    train_images: np.ndarray,
    fresh_images: np.ndarray,
    *,
    seed: int,
    draws: int = 2,
    n_boot: int = 2000,
    level: float = 0.95,
) -> dict:
    """The relative gap loss_fresh / loss_train - 1 on paired images, with a bootstrap CI.

    ``train_images`` and ``fresh_images`` are uint8 (N, H, W, C) batches of the same length N;
    pair i shares its t ~ U{0..T-1} and eps ~ N(0, I) in each of ``draws`` draws (seeded by
    ``seed``).  Returns the gap (value, ci), both mean losses, and how it was computed."""
    n_t, n_f = len(train_images), len(fresh_images)
    if n_t != n_f or n_t < 2:
        raise ValueError(f"need two batches of the same length >= 2 (pairs), got {n_t} training "
                         f"and {n_f} fresh images")  # fmt: skip
    if draws < 1 or n_boot < 1:
        raise ValueError(f"draws and n_boot must be >= 1, got draws={draws}, n_boot={n_boot}")
    xt, xf = images_to_tensor(train_images), images_to_tensor(fresh_images)
    g = torch.Generator().manual_seed(seed)
    lt = np.zeros(len(xt))
    lf = np.zeros(len(xt))
    for _ in range(draws):
        t = torch.randint(0, schedule.T, (len(xt),), generator=g)
        noise = torch.randn(xt.shape, generator=g)
        lt += per_image_losses(model, schedule, xt, t, noise) / draws
        lf += per_image_losses(model, schedule, xf, t, noise) / draws
    pairs = np.stack([lt, lf], axis=1)  # the bootstrap resamples pairs, keeping both members
    return {
        "value": float(_gap(pairs[None], axis=1)[0]),
        "ci": boot_ci(pairs, _gap, n_boot, np.random.default_rng(seed), level),
        "level": level,
        "loss_train": float(lt.mean()),
        "loss_fresh": float(lf.mean()),
        "n_pairs": len(lt),
        "draws": draws,
        "n_boot": n_boot,
        "seed": seed,
        "method": "pair i: training and fresh image noised with the same t and eps; "
        "percentile bootstrap over the pairs",
    }
