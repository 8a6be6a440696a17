"""The patch-local, weight-shared two-layer denoiser of the feature-learning analyses.

eps_W(x_t)^(p) = (1/m) sum_r sigma(<w_r, x_t^(p)> + c_r) w_r, the same w_r for both patches, one
set of weights per time of a grid, trained by full-batch GD or Adam on the empirical DSM loss.
Its output on patch p reads patch p only, so its loss is a sum of per-patch terms: it trains
identically on the rule data and on their shuffled twin (`twopatch.shuffle_pairs`), and its
samples have independent patches (the premise of `symbolic.independent_rule_error_bound`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from rulelib.theory.twopatch import DTYPE, TwoPatchData, s_sigma

__all__ = [
    "ACTIVATIONS",
    "PatchLocalConfig",
    "PatchLocalDenoiser",
    "patch_local_losses",
    "train_patch_local",
]


ACTIVATIONS = ("poly", "relu_power")


@dataclass
class PatchLocalConfig:
    """width m, activation sigma(z) = z + c3*z^3 ("poly") or max(z, 0)^q ("relu_power"), a bias per
    neuron (keeps the network patch-local; lets sigma produce the patch mean), initial weight std
    ``init_std`` (small Gaussian initialisation), full-batch GD with step ``lr`` for ``steps``.

    parametrization "x0" (default): eps_W(x_t) = (x_t - s_t N_W(x_t)) / sigma_t with N_W the
    two-layer network, the usual skip connection of eps-predictors (its DSM loss is
    (s_t/sigma_t)^2 ||N_W - x_0||^2, and GD uses the step lr * sigma_t^2 / s_t^2 per time, i.e.
    GD on the x0 loss); "eps": eps_W = N_W, the bare parametrisation, which must represent
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
