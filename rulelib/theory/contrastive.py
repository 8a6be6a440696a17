"""The weak-signal theory of the mitigation (paper section 5): a contrastive linear classifier on
the two-patch model, its alignment law, and what guidance with it does to the rule error R.

    contrastive_pairs        n rule-conforming samples and their negatives (b shifted by delta)
    mean_difference_direction  the classifier's direction (first GD step of any linear loss from 0)
    alignment_table          cos^2(w, v) simulated over a grid of (n, d, delta) beside the law
                             n SNR^2 / (n SNR^2 + 4) derived in `symbolic.alignment_law`
    lda_direction            the converged linear classifier (LDA)
    guided_rule_error        R of a rule-blind generator guided by either classifier, per scale

The noise here is isotropic in all D = 2d coordinates (std sigma_xi), which is what the SNR
|delta| / (sigma_xi sqrt d) of docs/paper.md section 6 counts.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rulelib.theory.sampling import rule_error
from rulelib.theory.twopatch import DTYPE, TwoPatchModel

__all__ = [
    "contrastive_pairs",
    "mean_difference_direction",
    "alignment_cos2",
    "alignment_law_value",
    "alignment_table",
    "lda_direction",
    "guided_rule_error",
]


def contrastive_pairs(model, n: int, delta: float, sigma_xi: float = 1.0, seed: int = 0):
    """(x_pos, x_neg), each (n, 2, d): x_pos = [a u ; f(a) v] + xi and
    x_neg = [a u ; (f(a) + delta) v] + xi', with the same a and independent xi, xi' ~
    N(0, sigma_xi^2 I).  Negatives have the dependent feature too large by delta, the coarse
    rule kept (the contrastive class 2 of the paper)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"number of pairs n={n!r} must be a positive integer")
    if not math.isfinite(delta) or delta == 0:
        raise ValueError(f"shift delta={delta!r} must be a finite non-zero number")
    if not (sigma_xi > 0 and math.isfinite(sigma_xi)):
        raise ValueError(f"sigma_xi={sigma_xi!r} must be a finite number > 0")
    g = torch.Generator().manual_seed(seed)
    a = model.sample_a(n, g)
    b = model.rule(a)
    noise = sigma_xi * torch.randn(2, n, 2, model.d, generator=g, dtype=DTYPE)
    return model.embed(a, b) + noise[0], model.embed(a, b + delta) + noise[1]


def mean_difference_direction(x_pos: torch.Tensor, x_neg: torch.Tensor) -> torch.Tensor:
    """w = mean(x_neg) - mean(x_pos), normalised, flattened to (2d,): the direction any linear
    classifier takes after its first GD step from zero (and the LDA direction for isotropic
    noise).  Its signal part is delta*v; the rest is noise of variance 2 sigma_xi^2 / n per axis."""
    w = (x_neg.mean(0) - x_pos.mean(0)).flatten()
    return w / w.norm()


def alignment_cos2(w: torch.Tensor, model) -> float:
    """cos^2 between w (2d,) and the rule direction: v placed in patch 2."""
    target = torch.cat([torch.zeros_like(model.v), model.v])
    return float((w @ target) ** 2 / (w @ w))


def alignment_law_value(n: int, d: int, delta: float, sigma_xi: float = 1.0) -> float:
    """n SNR^2 / (n SNR^2 + 4), SNR = |delta| / (sigma_xi sqrt d); see symbolic.alignment_law."""
    snr2 = delta**2 / (sigma_xi**2 * d)
    return n * snr2 / (n * snr2 + 4)


def alignment_table(
    ns=(10, 100, 1000),
    ds=(16, 64, 256),
    deltas=(0.25, 0.5, 1.0),
    *,
    sigma_xi: float = 1.0,
    reps: int = 20,
    seed: int = 0,
    rule=None,
) -> list[dict]:
    """Simulate the alignment law over a grid: for every (n, d, delta), ``reps`` independent
    contrastive data sets, the mean-difference direction, and its cos^2 with v.  Rows:
    {n, d, delta, snr, law, sim (mean), sim_lo, sim_hi (mean +- 1.96 s.e.)}."""
    rows = []
    for d in ds:
        model = TwoPatchModel(d=int(d), rule=rule)
        for n in ns:
            for delta in deltas:
                c = np.array(
                    [
                        alignment_cos2(
                            mean_difference_direction(
                                *contrastive_pairs(model, int(n), float(delta), sigma_xi, seed + r)
                            ),
                            model,
                        )
                        for r in range(reps)
                    ]
                )
                se = c.std(ddof=1) / math.sqrt(reps) if reps > 1 else float("nan")
                rows.append(
                    {
                        "n": int(n),
                        "d": int(d),
                        "delta": float(delta),
                        "snr": abs(delta) / (sigma_xi * math.sqrt(d)),
                        "law": alignment_law_value(n, d, delta, sigma_xi),
                        "sim": float(c.mean()),
                        "sim_lo": float(c.mean() - 1.96 * se),
                        "sim_hi": float(c.mean() + 1.96 * se),
                    }
                )
    return rows


def lda_direction(x_pos: torch.Tensor, x_neg: torch.Tensor, ridge: float = 1e-8):
    """The converged linear classifier (LDA, the Bayes rule for two Gaussian classes with a shared
    covariance): w = S^-1 (mean(x_pos) - mean(x_neg)), S the pooled within-class covariance, and
    the logit of "conforming" w . (x - (mean(x_pos) + mean(x_neg)) / 2).  Unlike the mean
    difference it whitens the coupled (a, b) spread of the positives, so w points along the
    residual b - beta a and has a u-component.  Returns (w (2d,), threshold)."""
    xp, xn = x_pos.flatten(1), x_neg.flatten(1)
    S = 0.5 * (torch.cov(xp.T) + torch.cov(xn.T))
    S = S + ridge * torch.eye(len(S), dtype=S.dtype)
    w = torch.linalg.solve(S, xp.mean(0) - xn.mean(0))
    return w, float(w @ (0.5 * (xp.mean(0) + xn.mean(0))))


def _linear_log_p(model, kind, n_pairs, delta, sigma_xi, seed):
    """(log p(conforming | x) as a function of x (n, 2, d), diagnostics) of a linear classifier."""
    x_pos, x_neg = contrastive_pairs(model, n_pairs, delta, sigma_xi, seed)
    if kind == "linear":
        w = mean_difference_direction(x_pos, x_neg)
        zp, zn = x_pos.flatten(1) @ w, x_neg.flatten(1) @ w
        tau2 = 0.5 * (zp.var() + zn.var())
        # LDA logit along the fixed direction w: (m_pos - m_neg)/tau^2 (z - (m_pos + m_neg)/2)
        slope, mid = (zp.mean() - zn.mean()) / tau2, 0.5 * (zp.mean() + zn.mean())
        w, thr = w * slope, float(slope * mid)
    else:
        w, thr = lda_direction(x_pos, x_neg)
    test_pos, test_neg = contrastive_pairs(model, 2000, delta, sigma_xi, seed + 2)
    acc = 0.5 * float(
        ((test_pos.flatten(1) @ w > thr).double().mean())
        + ((test_neg.flatten(1) @ w < thr).double().mean())
    )
    u_full = torch.cat([model.u, torch.zeros_like(model.u)])
    diag = {
        "cos2": alignment_cos2(w / w.norm(), model),
        "u_component": float(w @ u_full / w.norm()),
        "accuracy": acc,
    }
    return (lambda x: torch.nn.functional.logsigmoid(x.flatten(1) @ w - thr)), diag


def guided_rule_error(
    model,
    scales=(0.0, 1.0, 3.0, 10.0),
    *,
    n_pairs: int = 100,
    delta: float = 0.5,
    sigma_xi: float = 0.1,
    classifier: str = "linear",
    n_samples: int = 20000,
    seed: int = 0,
) -> list[dict]:
    """What classifier guidance does to R for a rule-blind generator.

    The generator: a_hat, b_hat independent with the true marginals, plus N(0, sigma_xi^2) noise on
    every coordinate.  Guidance at scale lambda targets the tilted law
    p(x) p(conforming | x)^lambda, drawn here exactly by importance resampling (what an ideal
    guided sampler converges to).
    Classifiers:
      "linear"  the mean-difference direction w of ``n_pairs`` contrastive pairs (the first GD step
                of any linear loss; its cos^2 with v follows the alignment law), slope and
                threshold from the projected class means and variance.  Its tilt
                sigmoid(<w, x> - thr)^lambda does NOT factorise over the patches (only
                exp(lambda <w, x>) would), but w is v plus noise, so the tilt reads b_hat almost
                alone and the guided patches stay nearly independent.
      "lda"     the converged linear classifier (`lda_direction`): w along the residual b - beta a,
                with a u-component; its sigmoid tilt couples the patches (corr(a_hat, b_hat) > 0)
                and lowers R.
      "oracle"  the Bayes classifier of conforming against too-small / too-large data (b shifted
                by -delta or +delta), a function of the residual b - f(a): its tilt couples the
                patches and R falls with lambda (at the price of a falling effective sample size).
    Rows: {scale, R, R_ci, var_b_hat, var_f_a_hat, bias2, corr, ess (effective sample size), cos2,
    u_component, accuracy (the linear classifiers' on 2000 fresh pairs)}."""
    if classifier not in ("linear", "lda", "oracle"):
        raise ValueError(f"classifier {classifier!r} unknown; expected 'linear', 'lda' or 'oracle'")
    scales = [float(x) for x in scales]
    if any(not (math.isfinite(x) and x >= 0) for x in scales):
        raise ValueError(f"guidance scales {scales!r} must be finite numbers >= 0")
    if classifier == "oracle":
        diag = dict.fromkeys(("cos2", "u_component", "accuracy"), math.nan)
    else:
        log_p_fn, diag = _linear_log_p(model, classifier, n_pairs, delta, sigma_xi, seed)
    g = torch.Generator().manual_seed(seed + 1)
    a = model.sample_a(n_samples, g)
    b = model.rule(model.sample_a(n_samples, g))  # rule-blind: an independent copy of a
    x = model.embed(a, b) + sigma_xi * torch.randn(n_samples, 2, model.d, generator=g, dtype=DTYPE)
    a_hat, b_hat = model.read(x)
    if classifier == "oracle":
        # Bayes classifier of the paper's three classes on the residual r = b_hat - f(a_hat):
        # conforming r ~ N(0, tau^2) against too small / too large r ~ N(-+delta, tau^2), tau^2 the
        # noise variance of r (sigma_xi^2 on each read-out, to first order in the slope of f)
        r = b_hat - model.rule(a_hat)
        t2 = 2 * sigma_xi**2
        ll = torch.stack([-((r - c) ** 2) / (2 * t2) for c in (0.0, -delta, delta)])
        logit_terms = ll + torch.log(torch.tensor([1.0, 0.5, 0.5], dtype=DTYPE))[:, None]
        log_p = ll[0] - torch.logsumexp(logit_terms, 0)
    else:
        log_p = log_p_fn(x)
    rows = []
    for lam in scales:
        wts = torch.softmax(lam * log_p, 0)
        idx = torch.multinomial(wts, n_samples, replacement=True, generator=g)
        rep = rule_error(a_hat[idx], b_hat[idx], model.rule, n_boot=200, seed=seed)
        rows.append(
            {"scale": lam, "R": rep["R"]["value"], "R_ci": rep["R"]["ci"]}
            | {"ess": float(1.0 / (wts**2).sum())}
            | {k: rep[k]["value"] for k in ("var_b_hat", "var_f_a_hat", "bias2", "corr")}
            | diag
        )
    return rows
