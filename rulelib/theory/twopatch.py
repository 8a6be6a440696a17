"""The small models of the theory (paper.md section 6): why DSM keeps a constant rule error.

Read top to bottom; each block is one step of notebook 01:

    1. data       the rule-coupled two-patch model x = [a*u + xi1 ; b*v + xi2], b = f(a), and its
                  shuffled-pairing twin (same marginals, no rule)
    2. forward    x_t = s_t*x_0 + sigma_t*eps (variance preserving, s_t = exp(-t))
    3. loss       the eps-prediction DSM loss at one t and integrated over a grid of t
    4. denoisers  (1) the patch-local weight-shared two-layer network, trained by full-batch GD;
                  (2) the affine denoiser and its closed-form DSM optimum (the LMMSE estimator);
                  (3) the exact denoiser of the data (coupled) or of the product of its marginals
    5. samplers   reverse SDE (ancestral), probability-flow ODE (DDIM or Heun), final Tweedie step
    6. metrics    rule error R = E(b_hat - f(a_hat))^2, its decomposition, ratio error, coarse
                  trend, each with a bootstrap 95 % interval

The symbolic derivations (sympy) live in `rulelib.theory.symbolic`, the contrastive classifier of
issue 4 in `rulelib.theory.contrastive`; both are re-exported here so `rulelib.theory` is the one
entry point.  Everything numeric is torch float64 (the decoupling identity is checked to 1e-10).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

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
    """x = [a*u + xi1 ; b*v + xi2] with orthonormal u, v in R^d and b = f(a)  (paper.md section 6).

    a ~ U[a1, a2] (``law="uniform"``) or N(mean, std^2) with (mean, std) = a_range
    (``law="gaussian"``).
    xi_p is optional background noise of std ``sigma_xi`` per coordinate, restricted to the
    orthogonal complement of span(u, v) so that the features read back by projection are exact.
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
        """(n, 2, d) Gaussian noise of std sigma_xi in the complement of span(u, v)."""
        xi = self.sigma_xi * torch.randn(n, 2, self.d, generator=generator, dtype=DTYPE)
        for e in (self.u, self.v):
            xi = xi - (xi @ e)[..., None] * e
        return xi

    def embed(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(n, 2, d): patch 1 = a*u, patch 2 = b*v."""
        return torch.stack([a[:, None] * self.u, b[:, None] * self.v], dim=1)

    def sample(self, n: int, seed: int = 0, *, coupled: bool = True) -> TwoPatchData:
        """n samples with b = f(a) (``coupled``) or b = f(a') with a' an independent copy
        (the product of the marginals: what a rule-blind model generates at best)."""
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


def dsm_loss_integrated(eps_fn: EpsFn, x0: torch.Tensor, times, noise: torch.Tensor):
    """The DSM loss integrated over t: the mean of L(t_k) over the grid (noise[k] for time k)."""
    return torch.stack(
        [dsm_loss(eps_fn, x0, float(t), noise[k]) for k, t in enumerate(times)]
    ).mean()


# ----------------------------------------------------------------------------------------------
# 4a. The patch-local, weight-shared two-layer denoiser
# ----------------------------------------------------------------------------------------------

ACTIVATIONS = ("poly", "relu_power")


@dataclass
class PatchLocalConfig:
    """width m, activation sigma(z) = z + c3*z^3 ("poly") or max(z, 0)^q ("relu_power"), a bias per
    neuron (keeps the network patch-local; lets sigma produce the patch mean), initial weight std
    ``init_std`` (small Gaussian initialisation), full-batch GD with step ``lr`` for ``steps``.

    parametrization "x0" (default): eps_W(x_t) = (x_t - s_t N_W(x_t)) / sigma_t with N_W the
    two-layer network, the usual skip connection of eps-predictors (its DSM loss is
    (s_t/sigma_t)^2 ||N_W - x_0||^2, and GD uses the step lr * sigma_t^2 / s_t^2 per time, i.e.
    GD on the x0 loss); "eps": eps_W = N_W, the bare formula of issue 5, which must represent
    x_t / sigma_t in the noise-only directions and trains poorly at small t.  Both are patch-local
    and weight-shared, which is all the decoupling results use.

    center=True subtracts each patch's mean mu_p (a marginal statistic, like the pixel
    normalisation of image pipelines) from the input (times s_t) and adds it to the x0 output: at
    high noise a weight-shared network cannot tell the patches apart, so without it it would have
    to output one common mean for both (measured: the x0 loss then stalls at 15x its optimum for
    t > 1).  Note the tied weights make N_W the gradient of a convex potential (a monotone map)
    for a monotone activation; centring input and output together keeps the target monotone."""

    m: int = 16
    activation: str = "relu_power"
    parametrization: str = "x0"
    center: bool = True
    optimizer: str = "adam"
    c3: float = 0.1
    q: int = 1
    bias: bool = True
    init_std: float = 0.1
    lr: float = 0.5
    steps: int = 500
    seed: int = 0

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation {self.activation!r} unknown; expected one of {ACTIVATIONS}"
            )
        if self.optimizer not in ("gd", "adam"):
            raise ValueError(f"optimizer {self.optimizer!r} unknown; expected 'gd' or 'adam'")
        if self.parametrization not in ("x0", "eps"):
            raise ValueError(
                f"parametrization {self.parametrization!r} unknown; expected 'x0' or 'eps'"
            )
        if not isinstance(self.m, int) or self.m < 1:
            raise ValueError(f"width m={self.m!r} must be a positive integer")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"learning rate lr={self.lr!r} must be a finite number > 0")
        if not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"steps={self.steps!r} must be an integer >= 0")


class PatchLocalDenoiser(torch.nn.Module):
    """eps_W(x_t)^(p) = (1/m) sum_r sigma(<w_r, x_t^(p)> + c_r) w_r, the same w_r for both patches.

    One set of weights per time of the grid ``times`` (shape (K, m, d)): the network has no time
    input, as in the feature-learning analyses, so each noise level gets its own.  Calling it at a
    time that is not on the grid is an error.  The output of patch p depends on patch p only, so
    its DSM loss is a sum of a term in (a, xi1, eps1) and a term in (b, xi2, eps2).
    """

    def __init__(self, d: int, times, cfg: PatchLocalConfig):
        super().__init__()
        self.cfg, self.times = cfg, np.asarray(times, dtype=np.float64)
        g = torch.Generator().manual_seed(cfg.seed)
        k = len(self.times)
        self.W = torch.nn.Parameter(
            cfg.init_std * torch.randn(k, cfg.m, d, generator=g, dtype=DTYPE)
        )
        self.c = torch.nn.Parameter(torch.zeros(k, cfg.m, dtype=DTYPE), requires_grad=cfg.bias)
        self.register_buffer("offset", torch.zeros(2, d, dtype=DTYPE))  # per-patch mean
        ss = np.array([s_sigma(t) for t in self.times])
        self.s = torch.tensor(ss[:, 0], dtype=DTYPE)
        self.sig = torch.tensor(ss[:, 1], dtype=DTYPE)

    def act(self, z: torch.Tensor) -> torch.Tensor:
        if self.cfg.activation == "poly":
            return z + self.cfg.c3 * z**3
        return torch.relu(z) ** self.cfg.q

    def forward_all(self, xt: torch.Tensor) -> torch.Tensor:
        """xt (K, ..., 2, d) -> eps (K, ..., 2, d), network k applied to xt[k]."""
        k, shape = xt.shape[0], (-1,) + (1,) * (xt.dim() - 1)
        s, sig = self.s.view(shape), self.sig.view(shape)
        flat = (xt - s * self.offset).reshape(k, -1, xt.shape[-1])
        pre = torch.einsum("kmd,knd->knm", self.W, flat) + self.c[:, None, :]
        out = torch.einsum("knm,kmd->knd", self.act(pre), self.W) / self.cfg.m
        out = out.reshape(xt.shape)
        if self.cfg.parametrization == "eps":
            return out  # centred data x_t - s mu has the same eps
        return (xt - s * (self.offset + out)) / sig

    def index(self, t: float) -> int:
        k = int(np.argmin(np.abs(self.times - t)))
        if abs(self.times[k] - t) > 1e-9 * max(1.0, t):
            raise ValueError(f"time t={t!r} is not on this denoiser's grid {self.times.round(4)}")
        return k

    def forward(self, xt: torch.Tensor, t: float) -> torch.Tensor:
        """eps for xt (N, 2, d) at a time t of the grid."""
        k = self.index(t)
        s, sig = self.s[k], self.sig[k]
        out = self.act((xt - s * self.offset) @ self.W[k].T + self.c[k]) @ self.W[k] / self.cfg.m
        if self.cfg.parametrization == "eps":
            return out  # centred data x_t - s mu has the same eps
        return (xt - s * (self.offset + out)) / sig


def patch_local_losses(net: PatchLocalDenoiser, x0: torch.Tensor, noise: torch.Tensor):
    """Per-time DSM losses (K,) of the patch-local net, all times at once; noise (K, J, n, 2, d)."""
    shape = (-1,) + (1,) * (noise.dim() - 1)
    xt = net.s.view(shape) * x0 + net.sig.view(shape) * noise
    err = net.forward_all(xt) - noise
    return err.pow(2).sum(dim=(-2, -1)).flatten(1).mean(1)


def train_patch_local(
    data: TwoPatchData,
    times,
    cfg: PatchLocalConfig,
    noise: torch.Tensor,
    *,
    record_every: int = 0,
) -> tuple[PatchLocalDenoiser, dict]:
    """Full-batch gradient descent on the sum over the grid of the per-time DSM losses (the weights
    of different times are separate, so this is K independent GD runs, one per noise level).

    ``noise`` (K, J, n, 2, d) is fixed: the empirical DSM loss with J noise draws per sample.
    Returns the net and a history {"step", "loss"} (integrated loss = mean over the grid), plus
    the weights every ``record_every`` steps (for trajectory comparisons)."""
    d = data.x0.shape[-1]
    if noise.shape[0] != len(times) or noise.shape[-3:] != data.x0.shape:
        raise ValueError(
            f"noise shape {tuple(noise.shape)} does not match (K={len(times)}, J, "
            f"{', '.join(map(str, data.x0.shape))})"
        )
    net = PatchLocalDenoiser(d, times, cfg)
    if cfg.center:
        net.offset.copy_(data.x0.mean(0))
    params = [p for p in net.parameters() if p.requires_grad]
    # per-time step: lr for "eps"; lr * sigma^2/s^2 for "x0", i.e. plain GD on ||N_W - x_0||^2
    lr_k = cfg.lr * (
        net.sig**2 / net.s**2 if cfg.parametrization == "x0" else torch.ones_like(net.s)
    )
    opt = torch.optim.Adam(params, lr=cfg.lr) if cfg.optimizer == "adam" else None
    hist = {"step": [], "loss": [], "W": []}
    for step in range(cfg.steps + 1):
        losses = patch_local_losses(net, data.x0, noise)
        if record_every and (step % record_every == 0 or step == cfg.steps):
            hist["step"].append(step)
            hist["loss"].append(float(losses.detach().mean()))
            hist["W"].append(net.W.detach().clone())
        if step == cfg.steps:
            break
        grads = torch.autograd.grad(losses.sum(), params)
        if opt is not None:  # full-batch Adam: elementwise, so the per-time scale drops out
            for p, gr in zip(params, grads):
                p.grad = gr
            opt.step()
            continue
        with torch.no_grad():
            for p, gr in zip(params, grads):
                p -= lr_k.view((-1,) + (1,) * (p.dim() - 1)) * gr
    return net, hist


# ----------------------------------------------------------------------------------------------
# 4b. The affine denoiser and its closed-form DSM optimum (LMMSE)
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# 4c. The exact denoiser of the two-patch data (coupled), or of the product of its marginals
# ----------------------------------------------------------------------------------------------


class ExactTwoPatchDenoiser:
    """eps*(x_t) = (x_t - s_t E[x_0 | x_t]) / sigma_t, i.e. -sigma_t * grad log p_t (Tweedie).

    E[x_0 | x_t] splits by coordinates: the background in the complement of span(u, v) is
    N(0, sigma_xi^2) (posterior mean s sigma_xi^2 / (s^2 sigma_xi^2 + sigma^2) y); patch 1 has 0
    along v and patch 2 has 0 along u; the latents are read from y1 = <x_t^(1), u> = s a + sigma e
    and y2 = <x_t^(2), v> = s b + sigma e'.  ``coupled=True``: the posterior over a uses both y1 and
    y2 (b = f(a)), the "perfect model".  ``coupled=False``: a and b independent with the true
    marginals, the best any rule-blind (e.g. patch-local) model can do.  The integral over a is a
    midpoint quadrature (``n_grid`` nodes)."""

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


# ----------------------------------------------------------------------------------------------
# 5. Samplers: reverse SDE (ancestral) and probability-flow ODE (DDIM), final Tweedie step
# ----------------------------------------------------------------------------------------------


def _check_times(times) -> np.ndarray:
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or len(times) < 2 or not np.all(np.diff(times) < 0) or times[-1] <= 0:
        raise ValueError(f"times must be a decreasing 1-D grid of positive numbers, got {times!r}")
    return times


@torch.no_grad()
def sample(
    eps_fn: EpsFn,
    n: int,
    shape: tuple[int, ...],
    times,
    *,
    method: str = "ode",
    seed: int = 0,
    device: str = "cpu",
) -> torch.Tensor:
    """Draw n samples of the given shape by integrating from t_max = times[0] to t_min = times[-1]
    and finishing with a Tweedie step x_0 = (x_t - sigma_t eps(x_t)) / s_t.

    method "ode": probability-flow ODE in its exponential-integrator (DDIM, eta = 0) form,
        x_{t'} = s_{t'} x0_hat + sigma_{t'} eps_hat,  x0_hat = (x_t - sigma_t eps_hat)/s_t
        (Song et al. 2021, DDIM eq. 12 -- exact Euler in (x/s, sigma/s)).
    method "heun": the same ODE, dy/dnu = eps(x) in y = x/s, nu = sigma/s, by Heun's second-order
        rule (two denoiser calls a step; EDM, Karras et al. 2022, Alg. 1): the first-order DDIM
        step converges slowly when a covariance eigenvalue is small (a sharp fine rule).
    method "sde": reverse SDE by ancestral steps, drawing x_{t'} from the forward posterior
        q(x_{t'} | x_t, x_0 = x0_hat) (Ho et al. 2020 eqs. 6-7, generalised to any grid).
    x_{t_max} ~ N(0, I) (the prior; s_{t_max} ~ e^{-t_max} is the approximation)."""
    if method not in ("ode", "heun", "sde"):
        raise ValueError(f"sampler method {method!r} is unknown; expected 'ode', 'heun' or 'sde'")
    times = _check_times(times)
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(n, *shape, generator=g, dtype=DTYPE, device=device)
    for t, t_next in zip(times[:-1], times[1:]):
        s, sig = s_sigma(t)
        s2, sig2 = s_sigma(t_next)
        eps = eps_fn(x, float(t))
        x0_hat = (x - sig * eps) / s
        if method == "ode":
            x = s2 * x0_hat + sig2 * eps
        elif method == "heun":
            y_pred = x / s + (sig2 / s2 - sig / s) * eps  # Euler predictor in (y, nu)
            eps2 = eps_fn(s2 * y_pred, float(t_next))
            x = s2 * (x / s + (sig2 / s2 - sig / s) * 0.5 * (eps + eps2))
        else:
            a_ts = s / s2  # s_{t|t'}
            var_ts = sig**2 - a_ts**2 * sig2**2  # sigma^2_{t|t'}
            mean = (a_ts * sig2**2 / sig**2) * x + (s2 * var_ts / sig**2) * x0_hat
            std = math.sqrt(max(var_ts * sig2**2 / sig**2, 0.0))
            x = mean + std * torch.randn(x.shape, generator=g, dtype=DTYPE, device=device)
    s, sig = s_sigma(times[-1])
    return (x - sig * eps_fn(x, float(times[-1]))) / s


# ----------------------------------------------------------------------------------------------
# 6. Rule-error metrics with bootstrap confidence intervals
# ----------------------------------------------------------------------------------------------


def _as_np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)


def rule_error(
    a_hat,
    b_hat,
    rule: Rule,
    *,
    var_b: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """R = E(b_hat - f(a_hat))^2 and its decomposition, each {"value", "ci": [lo, hi]} (bootstrap
    95 %, percentile).  R = Var b_hat + Var f(a_hat) + (E b_hat - E f(a_hat))^2 - 2 Cov(b_hat,
    f(a_hat)), so for independent patches (cov = 0) R is the sum of the first three.

    Keys: R, R_over_var_b (if ``var_b``, the variance of b in the training law, is given),
    var_b_hat, var_f_a_hat, bias2, cov (Cov(b_hat, f(a_hat))), corr (corr(a_hat, b_hat), whose
    sign is the coarse trend), mean_ratio_error (E|b_hat/a_hat - gamma|, ratio rules only), n,
    and coarse_trend: +1 or -1 when the CI of corr excludes 0 (the sign of the trend), else 0."""
    a, b = _as_np(a_hat), _as_np(b_hat)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(
            f"a_hat and b_hat must be 1-D of equal length >= 2, got {a.shape}, {b.shape}"
        )
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("a_hat and b_hat must be finite (a sampler diverged?)")
    fa = np.asarray(rule(a), dtype=np.float64)

    def stats(idx):
        aa, bb, ff = a[idx], b[idx], fa[idx]
        out = {
            "R": ((bb - ff) ** 2).mean(-1),
            "var_b_hat": bb.var(-1),
            "var_f_a_hat": ff.var(-1),
            "bias2": (bb.mean(-1) - ff.mean(-1)) ** 2,
            "cov": ((bb - bb.mean(-1, keepdims=True)) * (ff - ff.mean(-1, keepdims=True))).mean(-1),
            "corr": _corr(aa, bb),
        }
        if var_b is not None:
            out["R_over_var_b"] = out["R"] / var_b
        if rule.kind == "ratio":
            out["mean_ratio_error"] = np.abs(bb / aa - rule.p("gamma", 1.0)).mean(-1)
        return out

    point = stats(np.arange(len(a)))
    rng = np.random.default_rng(seed)
    boot = stats(rng.integers(0, len(a), size=(n_boot, len(a))))
    res = {
        k: {"value": float(v), "ci": [float(x) for x in np.percentile(boot[k], [2.5, 97.5])]}
        for k, v in point.items()
    }
    res["n"] = len(a)
    lo, hi = res["corr"]["ci"]
    res["coarse_trend"] = 1 if lo > 0 else (-1 if hi < 0 else 0)
    return res


def _corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ac = a - a.mean(-1, keepdims=True)
    bc = b - b.mean(-1, keepdims=True)
    return (ac * bc).mean(-1) / np.sqrt((ac**2).mean(-1) * (bc**2).mean(-1))


def var_f(model: TwoPatchModel, n_grid: int = 100000) -> float:
    """Var f(a) under the model's law of a (quadrature; 2 Var f(a) is the rule-blind floor of R)."""
    nodes, logw = model.latent_grid(n_grid)
    w = logw.exp()
    fb = model.rule(nodes)
    m = (w * fb).sum()
    return float((w * (fb - m) ** 2).sum())
