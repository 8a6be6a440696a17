"""The two-patch model of a fine rule (docs/paper.md section 6): data, forward process, DSM loss.

    data      the rule-coupled two-patch model x = [a*u + xi1 ; b*v + xi2], b = f(a), and its
              shuffled-pairing twin (same marginals, no rule)
    forward   x_t = s_t*x_0 + sigma_t*eps (variance preserving, s_t = exp(-t))
    loss      the eps-prediction DSM loss at one t

The denoisers live in `patchlocal` (the patch-local network), `scores` (affine, exact and
empirical scores), `network` (a width-limited network on the whole input); the samplers and the
rule-error metrics in `sampling`.  Everything numeric is torch float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = [
    "DTYPE",
    "RULE_KINDS",
    "Rule",
    "TwoPatchData",
    "TwoPatchModel",
    "shuffle_pairs",
    "s_sigma",
    "q_sample",
    "time_grid",
    "EpsFn",
    "draw_noise",
    "dsm_loss",
]

DTYPE = torch.float64


# ----------------------------------------------------------------------------------------------
# 1. Data: the rule-coupled two-patch model
# ----------------------------------------------------------------------------------------------

RULE_KINDS = ("linear", "ratio", "inverse", "quadratic")


@dataclass(frozen=True)
class Rule:
    """A hidden rule b = f(a).

    kinds and parameters (``params``):
      linear     b = gamma*a + c0                 (task D: l2 = 1.5 l1; task C: r2 = sqrt(2) r1)
      ratio      b = gamma*a, read as b/a = gamma (the same curve; scored by the ratio error)
      inverse    b = c/a                          (task B: h2 = l1*h1/l2 at fixed l1*h1 = c)
      quadratic  b = c0 + c1*a + c2*a^2           (a curved fine rule)
    Works on numpy arrays, torch tensors and sympy symbols (plain arithmetic only).
    """

    kind: str = "linear"
    params: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in RULE_KINDS:
            raise ValueError(f"rule kind {self.kind!r} is unknown; expected one of {RULE_KINDS}")
        allowed = {
            "linear": {"gamma", "c0"},
            "ratio": {"gamma"},
            "inverse": {"c"},
            "quadratic": {"c0", "c1", "c2"},
        }[self.kind]
        bad = set(self.params) - allowed
        if bad:
            raise ValueError(
                f"rule {self.kind!r} got unknown parameters {sorted(bad)}; "
                f"expected {sorted(allowed)}"
            )

    def p(self, name: str, default: float) -> float:
        return self.params.get(name, default)

    def __call__(self, a):
        if self.kind == "linear":
            return self.p("gamma", 1.0) * a + self.p("c0", 0.0)
        if self.kind == "ratio":
            return self.p("gamma", 1.0) * a
        if self.kind == "inverse":
            return self.p("c", 1.0) / a
        return self.p("c0", 0.0) + self.p("c1", 0.0) * a + self.p("c2", 1.0) * a * a


@dataclass
class TwoPatchData:
    """n samples of the two-patch model: x0 (n, 2, d) float64 and the latents a, b (n,)."""

    x0: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor


class TwoPatchModel:
    """x = [a*u + xi1 ; b*v + xi2] with orthonormal u, v in R^d and b = f(a) (docs/paper.md s. 6).

    a ~ U[a1, a2] (``law="uniform"``) or N(mean, std^2) with (mean, std) = a_range
    (``law="gaussian"``).
    xi_p is optional background noise of std ``sigma_xi`` per coordinate, restricted to the
    orthogonal complement of span(u, v) in each patch (2d - 4 coordinates in
    all) so that the features read back by projection are exact.
    ``basis_seed=None`` takes u = e1, v = e2; an integer draws a random orthonormal pair.
    """

    def __init__(
        self,
        d: int = 4,
        rule: Rule | None = None,
        a_range: tuple[float, float] = (1.0, 2.0),
        sigma_xi: float = 0.0,
        law: str = "uniform",
        basis_seed: int | None = None,
    ):
        if not isinstance(d, int) or d < 2:
            raise ValueError(f"patch dimension d={d!r} must be an integer >= 2 (u and v)")
        if law not in ("uniform", "gaussian"):
            raise ValueError(f"latent law {law!r} is unknown; expected 'uniform' or 'gaussian'")
        a1, a2 = map(float, a_range)
        if law == "uniform" and not a1 < a2:
            raise ValueError(f"a_range={a_range!r} must satisfy a1 < a2 for a uniform law")
        if law == "gaussian" and a2 <= 0:
            raise ValueError(
                f"a_range={a_range!r} is (mean, std) for a Gaussian law; std must be > 0"
            )
        if not (sigma_xi >= 0 and math.isfinite(sigma_xi)):
            raise ValueError(f"sigma_xi={sigma_xi!r} must be a finite number >= 0")
        self.d, self.rule, self.a_range = d, rule or Rule("linear"), (a1, a2)
        self.sigma_xi, self.law = float(sigma_xi), law
        if basis_seed is None:
            basis = torch.eye(d, dtype=DTYPE)[:2]
        else:
            g = torch.Generator().manual_seed(basis_seed)
            q, _ = torch.linalg.qr(torch.randn(d, 2, generator=g, dtype=DTYPE))
            basis = q.T.contiguous()
        self.u, self.v = basis[0], basis[1]

    # the law of a ------------------------------------------------------------------------------
    def sample_a(self, n: int, generator: torch.Generator) -> torch.Tensor:
        a1, a2 = self.a_range
        if self.law == "uniform":
            return a1 + (a2 - a1) * torch.rand(n, generator=generator, dtype=DTYPE)
        return a1 + a2 * torch.randn(n, generator=generator, dtype=DTYPE)

    def latent_grid(self, n_grid: int = 4000) -> tuple[torch.Tensor, torch.Tensor]:
        """Quadrature nodes and log-weights of the law of a (midpoint rule; fine enough that the
        posterior over a stays resolved down to sigma_t / s_t of about 100 node spacings)."""
        a1, a2 = self.a_range
        if self.law == "uniform":
            nodes = a1 + (a2 - a1) * (torch.arange(n_grid, dtype=DTYPE) + 0.5) / n_grid
            logw = torch.full((n_grid,), -math.log(n_grid), dtype=DTYPE)
        else:
            nodes = a1 + a2 * torch.linspace(-8, 8, n_grid, dtype=DTYPE)
            logw = -0.5 * ((nodes - a1) / a2) ** 2
            logw = logw - torch.logsumexp(logw, 0)
        return nodes, logw

    def background(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, 2, d) Gaussian noise of std sigma_xi in the complement of span(u, v) within each
        patch: d - 2 coordinates per patch, 2d - 4 in all (patch 1 is 0 along v, patch 2 along
        u)."""
        xi = self.sigma_xi * torch.randn(n, 2, self.d, generator=generator, dtype=DTYPE)
        for e in (self.u, self.v):
            xi = xi - (xi @ e)[..., None] * e
        return xi

    def embed(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(n, 2, d): patch 1 = a*u, patch 2 = b*v."""
        return torch.stack([a[:, None] * self.u, b[:, None] * self.v], dim=1)

    def sample(self, n: int, seed: int = 0, *, coupled: bool = True) -> TwoPatchData:
        """n samples with b = f(a) (``coupled``) or b = f(a') with a' an independent copy
        (the product of the marginals: the law the exact rule-blind score generates)."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"sample size n={n!r} must be a positive integer")
        g = torch.Generator().manual_seed(seed)
        a = self.sample_a(n, g)
        b = self.rule(a if coupled else self.sample_a(n, g))
        return TwoPatchData(self.embed(a, b) + self.background(n, g), a, b)

    def read(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features read back by projection: a_hat = <x^(1), u>, b_hat = <x^(2), v>."""
        return x[:, 0] @ self.u, x[:, 1] @ self.v


def shuffle_pairs(
    data: TwoPatchData, seed: int = 0, noise: torch.Tensor | None = None
) -> tuple[TwoPatchData, torch.Tensor | None]:
    """The shuffled-pairing twin: patch 2 (with its b and, if given, its noise draws along axis -3)
    permuted across samples, so each patch keeps its marginal law but the pairing - the rule - is
    destroyed.  Because the noise travels with its patch, any patch-local loss is the same sum of
    the same terms in another order (the decoupling identity)."""
    n = data.x0.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    x0 = data.x0.clone()
    x0[:, 1] = data.x0[perm, 1]
    twin = TwoPatchData(x0, data.a.clone(), data.b[perm])
    if noise is None:
        return twin, None
    if noise.shape[-3:] != data.x0.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} must end with {tuple(data.x0.shape)}")
    noise_t = noise.clone()
    noise_t[..., :, 1, :] = noise[..., perm, 1, :]
    return twin, noise_t


# ----------------------------------------------------------------------------------------------
# 2. Forward process (variance preserving, continuous time)
# ----------------------------------------------------------------------------------------------


def s_sigma(t) -> tuple[float, float]:
    """s_t = exp(-t), sigma_t = sqrt(1 - exp(-2t)): the OU / VP-SDE dx = -x dt + sqrt(2) dW."""
    t = float(t)
    if not (t > 0 and math.isfinite(t)):
        raise ValueError(f"diffusion time t={t!r} must be a finite number > 0")
    return math.exp(-t), math.sqrt(-math.expm1(-2 * t))


def q_sample(x0: torch.Tensor, t: float, noise: torch.Tensor) -> torch.Tensor:
    """x_t = s_t*x_0 + sigma_t*eps."""
    s, sig = s_sigma(t)
    return s * x0 + sig * noise


def time_grid(steps: int, t_min: float = 1e-2, t_max: float = 6.0) -> np.ndarray:
    """Decreasing times t_max = t_0 > ... > t_steps = t_min, uniform in log(sigma_t / s_t)
    (the log noise-to-signal ratio; the grid of EDM-style samplers)."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} must be a positive integer")
    if not 0 < t_min < t_max:
        raise ValueError(f"need 0 < t_min < t_max, got t_min={t_min!r}, t_max={t_max!r}")
    lam = np.linspace(np.log(np.expm1(2 * t_max)), np.log(np.expm1(2 * t_min)), steps + 1) / 2
    return 0.5 * np.log1p(np.exp(2 * lam))  # invert lambda = log(sigma/s) = 0.5*log(e^{2t} - 1)


# ----------------------------------------------------------------------------------------------
# 3. The eps-prediction DSM loss
# ----------------------------------------------------------------------------------------------

EpsFn = Callable[[torch.Tensor, float], torch.Tensor]


def draw_noise(n: int, d: int, times, n_noise: int = 1, seed: int = 0) -> torch.Tensor:
    """Fixed DSM noise draws, shape (K, n_noise, n, 2, d) for K = len(times)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(len(times), n_noise, n, 2, d, generator=g, dtype=DTYPE)


def dsm_loss(eps_fn: EpsFn, x0: torch.Tensor, t: float, noise: torch.Tensor) -> torch.Tensor:
    """L(t) = E ||eps_theta(s_t x_0 + sigma_t eps, t) - eps||^2 (Ho et al. 2020 eq. 14), the squared
    norm summed over all coordinates, the mean over samples (and over noise draws: noise may
    carry extra leading axes)."""
    xt = q_sample(x0, t, noise)
    shape = xt.shape
    err = eps_fn(xt.reshape(-1, *x0.shape[1:]), t).reshape(shape) - noise
    return err.pow(2).sum(dim=tuple(range(-x0.dim() + 1, 0))).mean()
