"""The weak-signal argument as a sample-size statement: how much DSM loss the fine rule is worth,
against how much the empirical DSM loss over n training points fluctuates.

    coarse_rule             the rule's best linear approximation g(a) = E b + beta (a - E a)
    fine_rule_loss_gap      per-sample integrated DSM losses of the exact score, of the score that
                            knows only the coarse rule, and of the rule-blind score; their gaps,
                            standard deviations and the n at which a gap clears 2 standard errors

A score is judged by the integrated eps-DSM loss L = mean over a grid of t of
||eps_hat(x_t, t) - eps||^2 (one noise draw per sample and time).  Its excess over the exact score
eps* is E||eps_hat - eps*||^2, a Fisher divergence (`symbolic.fisher_gap_gaussian_linear`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rulelib.theory.scores import ExactTwoPatchDenoiser
from rulelib.theory.twopatch import DTYPE, Rule, TwoPatchModel, q_sample

__all__ = ["coarse_rule", "fine_rule_loss_gap"]


def coarse_rule(model: TwoPatchModel, n_grid: int = 100000) -> Rule:
    """g(a) = E b + beta (a - E a), beta = Cov(a, b) / Var a under the model's law of a: the linear
    part of the rule (its trend), what the affine class learns exactly.  For the quadratic rule
    E(f - g)^2 = c2^2 Delta^4 / 180 (`symbolic.fine_rule_eigenvalue`'s r)."""
    nodes, logw = model.latent_grid(n_grid)
    w, fb = logw.exp(), model.rule(nodes)
    ma, mb = float((w * nodes).sum()), float((w * fb).sum())
    beta = float((w * (nodes - ma) * (fb - mb)).sum() / (w * (nodes - ma) ** 2).sum())
    return Rule("linear", {"gamma": beta, "c0": mb - beta * ma})


def _per_sample_losses(eps_fn, x0, times, noise):
    """(n,) integrated DSM loss of each sample: mean over times of ||eps_fn(x_t) - eps||^2."""
    out = torch.zeros(x0.shape[0], dtype=DTYPE)
    for k, t in enumerate(times):
        err = eps_fn(q_sample(x0, float(t), noise[k]), float(t)) - noise[k]
        out += err.pow(2).flatten(1).sum(1)
    return out / len(times)


def fine_rule_loss_gap(
    model: TwoPatchModel, times, n_mc: int = 4000, n_grid: int = 1000, seed: int = 0, z=2.0
) -> dict:
    """The DSM loss the fine rule is worth, and the training-set size that resolves it.

    Three scores on the same n_mc samples and noise draws: the exact score of the data (knows the
    rule), the exact score of the coarse-rule model (same law of a, b = g(a): knows the trend, not
    the curvature) and the exact score of the product of the marginals (rule-blind).  Returns
    gap_fine = E L_coarse - E L_exact and gap_whole = E L_blind - E L_exact (each with its standard
    error), sd_loss = sd of one sample's L under the exact score, sd_diff = sd of the paired
    per-sample difference L_coarse - L_exact, and the sizes at which the fine gap clears z
    standard errors of the n-sample mean: n_loss = (z sd_loss / gap_fine)^2 (the loss value a model
    sees) and n_paired = (z sd_diff / gap_fine)^2 (two scores compared on the same draws)."""
    if not isinstance(n_mc, int) or n_mc < 2:
        raise ValueError(f"n_mc={n_mc!r} must be an integer >= 2")
    data = model.sample(n_mc, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    noise = torch.randn(len(times), *data.x0.shape, generator=g, dtype=DTYPE)
    coarse = TwoPatchModel(
        model.d, coarse_rule(model), model.a_range, model.sigma_xi, model.law, None
    )
    coarse.u, coarse.v = model.u, model.v
    losses = {
        "exact": _per_sample_losses(
            ExactTwoPatchDenoiser(model, True, n_grid), data.x0, times, noise
        ),
        "coarse": _per_sample_losses(
            ExactTwoPatchDenoiser(coarse, True, n_grid), data.x0, times, noise
        ),
        "blind": _per_sample_losses(
            ExactTwoPatchDenoiser(model, False, n_grid), data.x0, times, noise
        ),
    }
    diff = (losses["coarse"] - losses["exact"]).numpy()
    diff_w = (losses["blind"] - losses["exact"]).numpy()
    gap = float(diff.mean())
    sd_loss, sd_diff = float(losses["exact"].std()), float(diff.std())
    return {
        "d": model.d,
        "loss_exact": float(losses["exact"].mean()),
        "gap_fine": gap,
        "gap_fine_se": float(diff.std() / math.sqrt(n_mc)),
        "gap_whole": float(diff_w.mean()),
        "gap_whole_se": float(diff_w.std() / math.sqrt(n_mc)),
        "sd_loss": sd_loss,
        "sd_diff": sd_diff,
        "n_loss": float((z * sd_loss / gap) ** 2) if gap > 0 else math.inf,
        "n_paired": float((z * sd_diff / gap) ** 2) if gap > 0 else math.inf,
        "z": float(z),
        "n_mc": n_mc,
        "frac_positive": float(np.mean(diff > 0)),
    }
