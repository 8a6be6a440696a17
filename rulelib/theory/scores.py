"""Scores with a closed form: the affine DSM optimum (LMMSE), the exact score of the two-patch
data (or of the product of its marginals), and the exact score of n training points (the
unrestricted empirical DSM optimum, which memorises them).
"""

from __future__ import annotations

import torch

from rulelib.theory.twopatch import DTYPE, TwoPatchModel, q_sample, s_sigma

__all__ = [
    "GaussianDenoiser",
    "fit_affine_gd",
    "affine_gd_denoiser",
    "ExactTwoPatchDenoiser",
    "EmpiricalDenoiser",
]


class GaussianDenoiser:
    """The DSM optimum over affine denoisers eps(x_t) = A x_t + c at every t:

        A_t = sigma_t (s_t^2 Sigma + sigma_t^2 I)^{-1},   c_t = -A_t s_t mu       (LMMSE)

    since Cov(eps, x_t) = sigma_t I and Cov(x_t) = s_t^2 Sigma + sigma_t^2 I.  It depends on the
    data only through mean mu and covariance Sigma, and equals the exact denoiser of N(mu, Sigma): a
    sampler driven by it draws from N(mu, Sigma) as t_min -> 0.  Works on flattened inputs."""

    def __init__(self, mu: torch.Tensor, Sigma: torch.Tensor):
        self.mu, self.Sigma = mu.to(DTYPE).flatten(), Sigma.to(DTYPE)
        D = self.mu.numel()
        if self.Sigma.shape != (D, D):
            raise ValueError(f"Sigma shape {tuple(self.Sigma.shape)} must be ({D}, {D}) for mu")
        self.evals, self.evecs = torch.linalg.eigh((self.Sigma + self.Sigma.T) / 2)
        self.evals = self.evals.clamp_min(0.0)

    @classmethod
    def fit(cls, x0: torch.Tensor) -> GaussianDenoiser:
        """The affine DSM optimum for data x0 (n, ...): its empirical mean and covariance."""
        flat = x0.reshape(x0.shape[0], -1).to(DTYPE)
        return cls(flat.mean(0), torch.cov(flat.T, correction=0))

    def affine(self, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        s, sig = s_sigma(t)
        A = self.evecs @ torch.diag(sig / (s**2 * self.evals + sig**2)) @ self.evecs.T
        return A, -s * (A @ self.mu)

    def __call__(self, xt: torch.Tensor, t: float) -> torch.Tensor:
        A, c = self.affine(t)
        flat = xt.reshape(xt.shape[0], -1)
        return (flat @ A.T + c).reshape(xt.shape)


def fit_affine_gd(
    x0: torch.Tensor, t: float, noise: torch.Tensor, steps: int = 2000, lr: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-batch GD on the empirical DSM loss of eps(x_t) = A x_t + c at one t, from zero.
    The loss is a convex quadratic, so GD converges to the least-squares regression of eps on x_t,
    which tends to `GaussianDenoiser.affine(t)` as the sample grows.  lr=None takes 1/L, L = 2
    lambda_max(E[(x_t, 1)(x_t, 1)^T]) the gradient's Lipschitz constant."""
    flat0, eps = x0.reshape(x0.shape[0], -1), noise.reshape(noise.shape[0], -1)
    xt = q_sample(flat0, t, eps)
    D = xt.shape[1]
    if lr is None:
        X = torch.cat([xt, torch.ones(len(xt), 1, dtype=xt.dtype)], 1)
        lr = 1.0 / (2 * float(torch.linalg.eigvalsh(X.T @ X / len(X))[-1]))
    A = torch.zeros(D, D, dtype=DTYPE, requires_grad=True)
    c = torch.zeros(D, dtype=DTYPE, requires_grad=True)
    for _ in range(steps):
        loss = (xt @ A.T + c - eps).pow(2).sum(1).mean()
        gA, gc = torch.autograd.grad(loss, (A, c))
        with torch.no_grad():
            A -= lr * gA
            c -= lr * gc
    return A.detach(), c.detach()


def affine_gd_denoiser(x0: torch.Tensor, times, steps: int):
    """The affine denoiser after ``steps`` full-batch GD steps from zero at every time of ``times``
    on the empirical DSM loss of the n points x0 with the noise averaged out (exact: the loss is
    quadratic in eps).  With X = [x_t, 1] and W = [A, c] that loss is
        tr(W M W^T) - 2 tr(W C^T) + D,  M = E X X^T = [[s^2 S2 + sigma^2 I, s mu], [s mu^T, 1]],
        C = E eps X^T = [sigma I, 0]  (S2, mu the empirical second moment and mean of x0),
    so GD with the step eta = 1 / (2 lambda_max(M)) of `fit_affine_gd` is
    W <- W - 2 eta (W M - C), solved in the eigenbasis of M:  W_k = C M^-1 (I - (I - 2 eta M)^k).
    As k -> infinity it is `GaussianDenoiser.fit(x0)`.  Returns eps(x, t) for t on the grid."""
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps={steps!r} must be an integer >= 0")
    flat0 = x0.reshape(x0.shape[0], -1).to(DTYPE)
    n, D = flat0.shape
    mu, S2 = flat0.mean(0), flat0.T @ flat0 / n
    weights = {}
    for t in times:
        s, sig = s_sigma(float(t))
        M = torch.eye(D + 1, dtype=DTYPE)
        M[:D, :D] = s**2 * S2 + sig**2 * torch.eye(D, dtype=DTYPE)
        M[:D, D] = M[D, :D] = s * mu
        C = torch.cat([sig * torch.eye(D, dtype=DTYPE), torch.zeros(D, 1, dtype=DTYPE)], 1)
        lam, Q = torch.linalg.eigh(M)
        eta = 1.0 / (2 * float(lam[-1]))
        gain = -torch.expm1(steps * torch.log1p(-2 * eta * lam)) / lam  # (1 - (1 - 2 eta l)^k)/l
        weights[round(float(t), 12)] = C @ Q @ torch.diag(gain) @ Q.T

    def eps_fn(xt: torch.Tensor, t: float) -> torch.Tensor:
        key = round(float(t), 12)
        if key not in weights:
            raise ValueError(f"time t={t!r} is not on this denoiser's grid")
        W = weights[key]
        flat = xt.reshape(xt.shape[0], -1)
        return (flat @ W[:, :-1].T + W[:, -1]).reshape(xt.shape)

    return eps_fn


class EmpiricalDenoiser:
    """The exact score of the empirical law of n training points, the minimiser of the empirical
    DSM loss over all functions (with the noise averaged out):
        E[x_0 | x_t] = sum_i softmax_i(-|x_t - s_t x_i|^2 / (2 sigma_t^2)) x_i,
        eps(x_t) = (x_t - s_t E[x_0 | x_t]) / sigma_t.
    Its sampler returns the training points as t_min -> 0 (it memorises them), so its rule error is
    that of the training set: 0 for an exact rule."""

    def __init__(self, x0: torch.Tensor):
        if x0.dim() < 2 or x0.shape[0] < 1:
            raise ValueError(f"training points x0 must be (n >= 1, ...), got {tuple(x0.shape)}")
        self.x = x0.reshape(x0.shape[0], -1).to(DTYPE)
        self.sq = (self.x**2).sum(1)

    def __call__(self, xt: torch.Tensor, t: float) -> torch.Tensor:
        s, sig = s_sigma(t)
        flat = xt.reshape(xt.shape[0], -1)
        # -|x - s x_i|^2 / (2 sig^2) up to a term constant in i
        logits = (s * flat @ self.x.T - 0.5 * s**2 * self.sq) / sig**2
        x0_hat = torch.softmax(logits, 1) @ self.x
        return ((flat - s * x0_hat) / sig).reshape(xt.shape)


# ----------------------------------------------------------------------------------------------
# 4c. The exact denoiser of the two-patch data (coupled), or of the product of its marginals
# ----------------------------------------------------------------------------------------------


class ExactTwoPatchDenoiser:
    """eps*(x_t) = (x_t - s_t E[x_0 | x_t]) / sigma_t, i.e. -sigma_t * grad log p_t (Tweedie).

    E[x_0 | x_t] splits by coordinates: the background in the complement of span(u, v) is
    N(0, sigma_xi^2) (posterior mean s sigma_xi^2 / (s^2 sigma_xi^2 + sigma^2) y); patch 1 has 0
    along v and patch 2 has 0 along u; the latents are read from y1 = <x_t^(1), u> = s a + sigma e
    and y2 = <x_t^(2), v> = s b + sigma e'.  ``coupled=True``: the posterior over a uses both y1 and
    y2 (b = f(a)), the "perfect model".  ``coupled=False``: the exact score of the product of the
    true marginals (a and b independent): the DSM optimum among rule-blind models, whose samples
    reach R = 2 Var f(a).  (A rule-blind model with wrong marginals can have a smaller R, e.g. one
    that collapses both features to their means; see `symbolic.independent_rule_error_bound`.)
    The integral over a is a midpoint quadrature (``n_grid`` nodes)."""

    def __init__(self, model: TwoPatchModel, coupled: bool = True, n_grid: int = 4000):
        self.model, self.coupled = model, coupled
        self.nodes, self.logw = model.latent_grid(n_grid)
        self.bnodes = model.rule(self.nodes)

    def __call__(self, xt: torch.Tensor, t: float) -> torch.Tensor:
        m = self.model
        s, sig = s_sigma(t)
        y1, y2 = xt[:, 0] @ m.u, xt[:, 1] @ m.v
        ll_a = -((y1[:, None] - s * self.nodes) ** 2) / (2 * sig**2)
        ll_b = -((y2[:, None] - s * self.bnodes) ** 2) / (2 * sig**2)
        if self.coupled:
            w = torch.softmax(ll_a + ll_b + self.logw, dim=1)
            ea, eb = w @ self.nodes, w @ self.bnodes
        else:
            ea = torch.softmax(ll_a + self.logw, dim=1) @ self.nodes
            eb = torch.softmax(ll_b + self.logw, dim=1) @ self.bnodes
        shrink = s * m.sigma_xi**2 / (s**2 * m.sigma_xi**2 + sig**2)
        perp = xt - (xt @ m.u)[..., None] * m.u - (xt @ m.v)[..., None] * m.v
        x0_hat = m.embed(ea, eb) + shrink * perp
        return (xt - s * x0_hat) / sig
