"""A width-limited network on the whole input, trained by DSM: the class between the affine
denoiser (sees both patches, cannot bend) and the exact score (sees everything).

The network reads both patches at once, so unlike the patch-local one its loss has mixed
monomials in (a, b) (`symbolic.full_input_loss_expr`) and it can learn the rule; how much of the
fine rule it learns from n points in a given number of steps is what notebook 01 measures.

Parametrisation (EDM preconditioning, Karras et al. 2022 eqs. 7 and table 1, in y = x_t / s_t,
nu = sigma_t / s_t, data centred by its mean mu and of scalar std sigma_d):
    x0_hat = mu + c_skip (y - mu) + c_out N(c_in (y - mu), log nu),
    c_skip = sigma_d^2 / (nu^2 + sigma_d^2),  c_out = nu sigma_d / sqrt(nu^2 + sigma_d^2),
    c_in = 1 / sqrt(nu^2 + sigma_d^2),
and eps_hat = (x_t - s_t x0_hat) / sigma_t.  Training minimises E ||N - target||^2 with log nu
uniform on the sampler's range: the eps-DSM loss with the weight (c_out s / sigma)^-2 per noise
level, whose minimiser at every noise level is the same conditional mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rulelib.theory.twopatch import DTYPE, s_sigma

__all__ = ["WholeInputConfig", "WholeInputDenoiser", "train_whole_input"]


@dataclass
class WholeInputConfig:
    """width and depth of the MLP (SiLU), Adam with step ``lr`` for ``steps`` minibatches of
    ``batch`` training points (fresh noise each step), noise levels log-uniform in
    [nu(t_min), nu(t_max)]."""

    width: int = 32
    depth: int = 2
    steps: int = 2000
    batch: int = 256
    lr: float = 3e-3
    t_min: float = 1e-3
    t_max: float = 6.0
    seed: int = 0

    def __post_init__(self):
        for name in ("width", "depth", "batch"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r} must be a positive integer")
        if not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"steps={self.steps!r} must be an integer >= 0")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"learning rate lr={self.lr!r} must be a finite number > 0")
        if not 0 < self.t_min < self.t_max:
            raise ValueError(f"need 0 < t_min < t_max, got {self.t_min!r}, {self.t_max!r}")


class WholeInputDenoiser(torch.nn.Module):
    """eps_hat(x_t, t) of an MLP reading the flattened input (both patches) and log nu."""

    def __init__(self, dim: int, mu: torch.Tensor, sigma_d: float, cfg: WholeInputConfig):
        super().__init__()
        self.cfg, self.sigma_d = cfg, float(sigma_d)
        self.register_buffer("mu", mu.to(DTYPE).flatten())
        torch.manual_seed(cfg.seed)  # the initialisation of the layers
        layers, width_in = [], dim + 1
        for _ in range(cfg.depth):
            layers += [torch.nn.Linear(width_in, cfg.width, dtype=DTYPE), torch.nn.SiLU()]
            width_in = cfg.width
        layers.append(torch.nn.Linear(width_in, dim, dtype=DTYPE))
        self.net = torch.nn.Sequential(*layers)

    def coefficients(self, nu: torch.Tensor):
        sd2 = self.sigma_d**2
        root = torch.sqrt(nu**2 + sd2)
        return sd2 / (nu**2 + sd2), nu * self.sigma_d / root, 1 / root

    def raw(self, y: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
        """N(c_in (y - mu), log nu) for y (N, dim), nu (N, 1)."""
        _, _, c_in = self.coefficients(nu)
        return self.net(torch.cat([c_in * (y - self.mu), torch.log(nu) / 4], 1))

    def x0_hat(self, y: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
        c_skip, c_out, _ = self.coefficients(nu)
        return self.mu + c_skip * (y - self.mu) + c_out * self.raw(y, nu)

    def forward(self, xt: torch.Tensor, t: float) -> torch.Tensor:
        s, sig = s_sigma(t)
        flat = xt.reshape(xt.shape[0], -1)
        nu = torch.full((len(flat), 1), sig / s, dtype=DTYPE)
        return ((flat - s * self.x0_hat(flat / s, nu)) / sig).reshape(xt.shape)


def train_whole_input(x0: torch.Tensor, cfg: WholeInputConfig) -> tuple[WholeInputDenoiser, list]:
    """Adam on the preconditioned DSM loss over the n training points x0 (n, ...); returns the
    network and the loss every 100 steps (mean over those steps)."""
    flat = x0.reshape(x0.shape[0], -1).to(DTYPE)
    n, dim = flat.shape
    mu = flat.mean(0)
    sigma_d = float((flat - mu).std()) if n > 1 else 1.0
    net = WholeInputDenoiser(dim, mu, sigma_d, cfg)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    lo, hi = (math.log(s_sigma(t)[1] / s_sigma(t)[0]) for t in (cfg.t_min, cfg.t_max))
    history, running = [], 0.0
    for step in range(cfg.steps):
        idx = torch.randint(0, n, (cfg.batch,), generator=g)
        x = flat[idx]
        nu = torch.exp(lo + (hi - lo) * torch.rand(cfg.batch, 1, generator=g, dtype=DTYPE))
        y = x + nu * torch.randn(x.shape, generator=g, dtype=DTYPE)  # y = x_t / s_t
        c_skip, c_out, _ = net.coefficients(nu)
        target = (x - mu - c_skip * (y - mu)) / c_out
        loss = (net.raw(y, nu) - target).pow(2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        running += float(loss.detach())
        if (step + 1) % 100 == 0:
            history.append(running / 100)
            running = 0.0
    return net, history
