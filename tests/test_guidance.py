"""Classifier guidance: an exactly solvable Gaussian problem, the weight schedules, bad input.

The toy problem: every pixel of x0 is N(0, s0^2), independent.  Its exact eps-prediction is
eps*(x_t, t) = sqrt(1 - abar_t) x_t / v_t with v_t = abar_t s0^2 + 1 - abar_t.  A "classifier" with
p(y = 1 | x0) proportional to exp(lam * sum x0) has the noisy posterior log p(y = 1 | x_t) = lam *
sum E[x0 | x_t] + const, E[x0 | x_t] = sqrt(abar_t) s0^2 x_t / v_t, and guidance with weight w
targets p(x0) p(y = 1 | x0)^w = N(w lam s0^2, s0^2) per pixel: the mean moves by exactly w lam s0^2
and the spread stays s0.
"""

import math

import numpy as np
import pytest
import torch

from rulelib.diffusion.sample import sample
from rulelib.diffusion.schedule import Schedule
from rulelib.mitigation import guidance as G

S0 = 0.2
LAM = 3.125  # lam * s0^2 = 0.125 per unit of guidance weight


class GaussEps(torch.nn.Module):
    """The exact eps-prediction of x0 ~ N(0, S0^2 I)."""

    def __init__(self, schedule):
        super().__init__()
        self.ab = schedule.alpha_bars_f64.float()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t):
        ab = self.ab[t].view(-1, 1, 1, 1)
        v = ab * S0**2 + 1 - ab
        return (1 - ab).sqrt() * x / v


class TiltClassifier(torch.nn.Module):
    """log p(y = 1 | x_t, t) = lam * sum E[x0 | x_t] + const, exactly (class 0's logit dominates, so
    log_softmax of class 1 is logit_1 - logit_0 up to exp(-1e6))."""

    def __init__(self, schedule):
        super().__init__()
        self.ab = schedule.alpha_bars_f64.float()

    def forward(self, x, t):
        ab = self.ab[t].view(-1, 1, 1, 1)
        m = ab.sqrt() * S0**2 * x / (ab * S0**2 + 1 - ab)
        l1 = LAM * m.flatten(1).sum(1)
        return torch.stack([torch.full_like(l1, 1e6), l1, torch.zeros_like(l1)], dim=1)


@pytest.fixture(scope="module")
def toy():
    sch = Schedule()
    return sch, GaussEps(sch), TiltClassifier(sch)


def _pixels(images):
    return images.astype(np.float64) / 127.5 - 1.0


@pytest.mark.parametrize("method,steps", [("ddpm", None), ("ddim", 100)])
def test_guidance_moves_gaussian_by_predicted_amount(toy, method, steps):
    sch, model, clf = toy
    n = 8  # 8 x 3072 = 24 576 pixel samples: the mean's standard error is 0.2 / 157 = 0.0013
    spread = None
    for w in (0.0, 2.0):
        g = G.Guidance(clf, sch, w, weight="constant", method=method)
        px = _pixels(G.guided_sample(model, sch, g, n, seed=1, steps=steps, progress=False))
        want = w * LAM * S0**2
        # 5 standard errors plus the 1/255 quantisation (measured: within 0.002 for both samplers)
        assert abs(px.mean() - want) < 0.008, (method, w, px.mean(), want)
        spread = px.std() if spread is None else spread
        # guidance shifts, it does not widen or narrow: the spread is the unguided sampler's
        assert abs(px.std() - spread) < 0.002, (method, w, px.std(), spread)
    if (
        method == "ddpm"
    ):  # 1000 ancestral steps reproduce the data law itself (DDIM-100 gives 0.188)
        assert abs(spread - S0) < 0.004


def test_grad_at_mu_uses_the_posterior_mean(toy):
    """grad_at="mu": the classifier gradient is taken at the unguided mean mu, at time t - 1.

    For this log-probability (linear in x) it is lam sqrt(abar_{t-1}) s0^2 / v_{t-1} in every pixel.
    """
    sch, model, clf = toy
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    t = 300
    tt = torch.full((2,), t, dtype=torch.long)
    eps = model(x, tt)
    g = G.Guidance(clf, sch, 2.0, weight="constant", grad_at="mu")
    d_eps = g.shift(x, tt, eps) - eps
    ab, ab1, beta = (
        float(v) for v in (sch.alpha_bars_f64[t], sch.alpha_bars_f64[t - 1], sch.betas_f64[t])
    )
    grad = LAM * math.sqrt(ab1) * S0**2 / (ab1 * S0**2 + 1 - ab1)
    want = -2.0 * math.sqrt(1 - beta) * math.sqrt(1 - ab) * grad
    torch.testing.assert_close(d_eps, torch.full_like(d_eps, want), rtol=1e-5, atol=1e-7)


def test_mean_shift_of_one_ddpm_step_is_w_sigma2_grad(toy):
    """The eps rewrite moves the posterior mean by exactly w_t * beta_t * grad (Dhariwal &
    Nichol)."""
    from rulelib.diffusion.sample import ddpm_step

    sch, model, clf = toy
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t = 500
    tt = torch.full((2,), t, dtype=torch.long)
    g = G.Guidance(clf, sch, 4.0, weight="linear")
    eps = model(x, tt)
    plain = ddpm_step(sch, x, t, eps, noise=torch.zeros_like(x))
    guided = ddpm_step(sch, x, t, g.shift(x, tt, eps), noise=torch.zeros_like(x))
    grad = G.log_prob_grad(clf, x, tt)
    w = 4.0 + 3.0 * (1 - t / 1000)
    expect = w * float(sch.betas_f64[t]) * grad
    torch.testing.assert_close(guided - plain, expect, rtol=1e-4, atol=1e-6)  # float32 cancellation


@pytest.mark.parametrize("method,steps", [("ddpm", None), ("ddim", 20)])
def test_scale_zero_equals_unguided_exactly(toy, method, steps):
    sch, model, clf = toy
    plain = sample(model, sch, 3, seed=7, method=method, steps=steps, progress=False)
    g = G.Guidance(clf, sch, 0.0, weight="constant", method=method)
    guided = G.guided_sample(model, sch, g, 3, seed=7, steps=steps, progress=False)
    np.testing.assert_array_equal(plain, guided)
    # the same with the quick profile's x0 clipping on both sides
    plain_c = sample(
        model, sch, 3, seed=7, method=method, steps=steps, progress=False, clip_x0=True
    )
    guided_c = G.guided_sample(model, sch, g, 3, seed=7, steps=steps, progress=False, clip_x0=True)
    np.testing.assert_array_equal(plain_c, guided_c)
    if method == "ddim":  # and a positive scale does change the images
        g = G.Guidance(clf, sch, 1.0, weight="constant", method=method)
        assert (
            G.guided_sample(model, sch, g, 3, seed=7, steps=steps, progress=False) != plain
        ).any()


def test_weight_schedules_values():
    w = G.weights("constant", 7, T=1000)
    assert w.shape == (1000,) and np.all(w == 7)
    w = G.weights("linear", 7, T=1000)
    # w_t = s + 3 (1 - t/T): s + 3 at t = 0 (clean end), s + 3/T at t = T-1, linear in between
    assert w[0] == pytest.approx(10.0)
    assert w[999] == pytest.approx(7.003)
    assert w[500] == pytest.approx(8.5)
    assert np.allclose(np.diff(w), -3 / 1000)
    w = G.weights("last_k", 3, T=1000, last_k=20)
    assert np.all(w[:20] == 3) and np.all(w[20:] == 0)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "x", None])
def test_bad_scale_is_refused(toy, bad):
    sch, _, clf = toy
    with pytest.raises(ValueError, match="scale"):
        G.Guidance(clf, sch, bad)
    with pytest.raises(ValueError, match="scale"):
        G.weights("linear", bad)


def test_bad_schedule_and_options_are_refused(toy):
    sch, _, clf = toy
    with pytest.raises(ValueError, match="cosine.*constant"):
        G.Guidance(clf, sch, 1.0, weight="cosine")
    with pytest.raises(ValueError, match="last_k"):
        G.weights("last_k", 1.0, last_k=0)
    with pytest.raises(ValueError, match="grad_at"):
        G.Guidance(clf, sch, 1.0, grad_at="x0")
    with pytest.raises(ValueError, match="DDPM"):
        G.Guidance(clf, sch, 1.0, method="ddim", grad_at="mu")
