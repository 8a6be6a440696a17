"""Tests of rulelib.theory: every closed form against Monte Carlo at a stated size and tolerance,
the decoupling identity to 1e-10, the affine optimum against gradient descent, the samplers on
Gaussians with a known answer, the alignment law against simulation, and bad input."""

import math

import numpy as np
import pytest
import sympy as sp
import torch

from rulelib import theory as th
from rulelib.theory import symbolic as ts

# --- symbolic: what a patch-local loss can see ------------------------------------------------


def test_patch_local_loss_has_no_mixed_ab_monomial_but_full_input_loss_does():
    r = ts.patch_local_loss_expr(m=1, degree=2)
    assert ts.mixed_ab_monomials(r["loss"]) == []
    expected = ts.gaussian_expectation(r["loss"], r["noise"])
    moments = ts.marginal_moment_form(expected)
    # after averaging the noise only marginal moments E a^k, E b^k are left
    names = {str(x) for x in moments.free_symbols}
    assert {"Ea^1", "Ea^2", "Eb^1", "Eb^2"} <= names
    assert not names & {"a", "b"}
    full = ts.full_input_loss_expr(degree=1)
    assert (1, 1) in ts.mixed_ab_monomials(full["loss"])
    with pytest.raises(ValueError, match="mixed"):
        ts.marginal_moment_form(full["loss"])


def test_gaussian_expectation_moments():
    e = sp.Symbol("e")
    assert ts.gaussian_expectation(e**4 + 3 * e**3 + e**2, (e,)) == 4


# --- closed forms against Monte Carlo --------------------------------------------------------


def test_blind_linear_rule_error_matches_monte_carlo():
    """2 Var f(a) = gamma^2 Delta^2 / 6; MC with 200 000 independent pairs, 2 % relative."""
    sym = ts.blind_rule_error()
    assert sp.simplify(sym["R_Delta"] - sp.Symbol("Delta", positive=True) ** 2
                       * sp.Symbol("gamma", real=True) ** 2 / 6) == 0  # fmt: skip
    gamma, a1, a2 = 1.5, 1.0, 2.5
    closed = gamma**2 * (a2 - a1) ** 2 / 6
    model = th.TwoPatchModel(
        d=2, rule=th.Rule("linear", {"gamma": gamma, "c0": 0.3}), a_range=(a1, a2)
    )
    data = model.sample(200_000, seed=1, coupled=False)
    a_hat, b_hat = model.read(data.x0)
    mc = float(((b_hat - model.rule(a_hat)) ** 2).mean())
    assert abs(mc - closed) / closed < 0.02
    assert abs(2 * th.var_f(model) - closed) / closed < 1e-6


def test_ratio_mean_error_matches_monte_carlo():
    """E|b_hat/a_hat - gamma| for independent patches: sympy equals the paper's formula, and MC
    with 200 000 pairs agrees within 2 %."""
    sym = ts.ratio_mean_error()
    assert sym["difference"] == 0
    gamma, a1, a2 = 2.0, 0.5, 2.0
    g, A1, A2 = sym["symbols"]
    closed = float(sym["paper"].subs({g: gamma, A1: a1, A2: a2}))
    model = th.TwoPatchModel(d=2, rule=th.Rule("ratio", {"gamma": gamma}), a_range=(a1, a2))
    data = model.sample(200_000, seed=2, coupled=False)
    rep = th.rule_error(*model.read(data.x0), model.rule, n_boot=50)
    assert abs(rep["mean_ratio_error"]["value"] - closed) / closed < 0.02


def test_quadratic_rule_error_of_fitted_gaussian_matches_monte_carlo():
    """R = 7 c2^2 Delta^4 / 360 for N(mu, Sigma) fitted to (a, f(a)); 400 000 draws, inside the
    95 % interval (+1 %), and not 1/48 (the exact Gaussian moments agree with the draws).  The
    linear rule is learned exactly (R = 0); the correlation (coarse trend) is that of the data."""
    sym = ts.gaussian_rule_error("quadratic")
    D, c2 = sp.Symbol("Delta", positive=True), sp.Symbol("c2", real=True)
    assert sp.simplify(sym["R"] - 7 * c2**2 * D**4 / 360) == 0
    assert ts.gaussian_rule_error("linear")["R"] == 0
    rule = th.Rule("quadratic", {"c0": 0.2, "c1": -0.5, "c2": 1.2})
    a1, a2 = 0.5, 1.5
    closed = 7 * 1.2**2 * (a2 - a1) ** 4 / 360
    g = torch.Generator().manual_seed(3)
    a = a1 + (a2 - a1) * torch.rand(400_000, generator=g, dtype=th.DTYPE)
    ab = torch.stack([a, rule(a)], 1)
    gen = torch.distributions.MultivariateNormal(ab.mean(0), torch.cov(ab.T))
    torch.manual_seed(4)
    s = gen.sample((400_000,))
    sq = (s[:, 1] - rule(s[:, 0])) ** 2
    mc, half = float(sq.mean()), 1.96 * float(sq.std()) / math.sqrt(len(sq))
    # the interval (about +-0.6 %) holds the closed form, widened 1 % for the fitted moments,
    # and excludes the nearest simple alternative 1/48 (7 % away for this c2, Delta)
    assert abs(mc - closed) < half + 0.01 * closed
    assert abs(mc - 1.2**2 / 48) > half + 0.01 * closed
    exact = th.gaussian_law_rule_error(ab.mean(0), torch.cov(ab.T), rule)
    assert abs(exact - mc) < 2 * half
    corr_gen = float(torch.corrcoef(s.T)[0, 1])
    assert abs(corr_gen - float(torch.corrcoef(ab.T)[0, 1])) < 0.01


def test_fisher_gap_matches_monte_carlo_and_is_at_most_one():
    """The DSM loss gap of the product-of-marginals (rule-blind) Gaussian denoiser over the joint
    one equals the closed form; 400 000 draws at t = 0.3, 3 %.  The gap is <= 1 on a grid of t
    and tends to 1 as t -> 0."""
    sym = ts.fisher_gap_gaussian_linear()
    assert sym["limit_t0"] == 1
    V, gamma, t = 1.0, 1.5, 0.3
    s, sig = th.s_sigma(t)
    gap_fn = sp.lambdify(sp.symbols("s sigma V gamma", positive=True), sym["gap"])
    closed = gap_fn(s, sig, V, gamma)
    C = torch.tensor([[V, gamma * V], [gamma * V, gamma**2 * V]], dtype=th.DTYPE)
    joint = th.GaussianDenoiser(torch.zeros(2, dtype=th.DTYPE), C)
    blind = th.GaussianDenoiser(torch.zeros(2, dtype=th.DTYPE), torch.diag(torch.diag(C)))
    g = torch.Generator().manual_seed(5)
    a = math.sqrt(V) * torch.randn(400_000, generator=g, dtype=th.DTYPE)
    x0 = torch.stack([a, gamma * a], 1)
    eps = torch.randn(x0.shape, generator=g, dtype=th.DTYPE)
    mc = float(th.dsm_loss(blind, x0, t, eps) - th.dsm_loss(joint, x0, t, eps))
    assert abs(mc - closed) / closed < 0.03
    ts_ = np.geomspace(1e-4, 5, 50)
    gaps = [gap_fn(*th.s_sigma(x), V, gamma) for x in ts_]
    assert max(gaps) <= 1 + 1e-12 and gaps[0] > 0.99


def test_alignment_law_matches_simulation():
    """cos^2 of the mean-difference classifier with v against n SNR^2/(n SNR^2 + 4): 40 repetitions
    per point, within 0.05 where n SNR^2 >= 1 (the law is leading order in 1/d)."""
    assert ts.alignment_law()["difference"] == 0
    rows = th.alignment_table(ns=(100, 1000), ds=(64,), deltas=(0.5, 1.0, 2.0), reps=40)
    checked = 0
    for r in rows:
        if r["n"] * r["snr"] ** 2 >= 1:
            assert abs(r["sim"] - r["law"]) < 0.05, r
            checked += 1
    assert checked == 5


# --- the decoupling identity ------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["gd", "adam"])
def test_patch_local_training_is_identical_on_shuffled_data(optimizer):
    """Losses, gradients and the whole GD trajectory on the rule data and on its shuffled twin
    agree to 1e-10 (float64), because the patch-local loss is a sum of per-patch terms."""
    model = th.TwoPatchModel(d=4, rule=th.Rule("quadratic", {"c2": 1.0}), sigma_xi=0.1)
    data = model.sample(64, seed=0)
    times = th.time_grid(3, t_min=0.05, t_max=2.0)
    noise = th.draw_noise(64, 4, times, n_noise=2, seed=1)
    twin, noise_t = th.shuffle_pairs(data, seed=2, noise=noise)
    assert not torch.allclose(twin.b, data.b)  # the pairing did change
    lr = 0.05 if optimizer == "adam" else 0.2
    cfg = th.PatchLocalConfig(m=8, steps=0, optimizer=optimizer, lr=lr)
    net = th.PatchLocalDenoiser(4, times, cfg)
    l1 = th.patch_local_losses(net, data.x0, noise)
    l2 = th.patch_local_losses(net, twin.x0, noise_t)
    assert torch.allclose(l1, l2, rtol=0, atol=1e-10)
    g1 = torch.autograd.grad(l1.sum(), net.W)[0]
    g2 = torch.autograd.grad(l2.sum(), net.W)[0]
    assert torch.allclose(g1, g2, rtol=0, atol=1e-10)
    cfg.steps = 40
    n1, h1 = th.train_patch_local(data, times, cfg, noise, record_every=10)
    n2, h2 = th.train_patch_local(twin, times, cfg, noise_t, record_every=10)
    assert h1["loss"][-1] < h1["loss"][0]  # it did train
    for w1, w2 in zip(h1["W"], h2["W"]):
        assert torch.allclose(w1, w2, rtol=0, atol=1e-10)
    assert np.allclose(h1["loss"], h2["loss"], rtol=0, atol=1e-10)


def test_trained_patch_local_samples_respect_the_bound_and_r_decomposes():
    """A briefly trained patch-local model: patch 1 of its output does not move when patch 2 of its
    input does (the premise of the bound); R - (Var b_hat + Var f(a_hat) + bias^2) is exactly
    -2 Cov(b_hat, f(a_hat)); the product R is at least the marginal bound; the paired R is within
    4 standard errors of the product R (independent patches)."""
    model = th.TwoPatchModel(d=4, rule=th.Rule("linear", {"gamma": 1.0}))
    data = model.sample(200, seed=0)
    times = th.time_grid(8, t_min=0.02, t_max=3.0)
    noise = th.draw_noise(200, 4, times, n_noise=2, seed=1)
    net, _ = th.train_patch_local(data, times, th.PatchLocalConfig(m=8, steps=60, lr=0.03), noise)
    x_all = noise[:, 0, :5]  # (K, 5, 2, d): the all-times path equals the one-time path
    for k, t in enumerate(times):
        assert torch.allclose(net.forward_all(x_all)[k], net(x_all[k], float(t)), atol=1e-12)
    x, t = noise[0, 0, :50].clone(), float(times[0])
    x2 = x.clone()
    x2[:, 1] += 1.0  # move patch 2 only
    out, out2 = net(x, t), net(x2, t)
    assert torch.equal(out[:, 0], out2[:, 0]) and not torch.allclose(out[:, 1], out2[:, 1])
    n = 3000
    x = th.sample(net, n, (2, 4), times, method="sde", seed=2)
    rep = th.rule_error(*model.read(x), model.rule, n_boot=100)
    parts = rep["var_b_hat"]["value"] + rep["var_f_a_hat"]["value"] + rep["bias2"]["value"]
    assert abs(rep["R"]["value"] - parts + 2 * rep["cov"]["value"]) < 1e-12
    bound = th.marginal_bound(*model.read(x), model)
    assert bound["R_product"] >= bound["bound"] > 0
    assert abs(bound["R_product"] - parts) < 1e-12
    se = math.sqrt(rep["var_b_hat"]["value"] * rep["var_f_a_hat"]["value"] / n)
    assert abs(rep["R"]["value"] - bound["R_product"]) < 8 * se


# --- affine optimum ---------------------------------------------------------------------------


def test_affine_dsm_optimum_symbolic_and_against_gradient_descent():
    sym = ts.affine_dsm_optimum(2)
    assert sym["A_difference"] == sp.zeros(2, 2) and sym["c_difference"] == sp.zeros(2, 1)
    model = th.TwoPatchModel(d=2, rule=th.Rule("quadratic", {"c1": 0.5, "c2": 1.0}))
    data = model.sample(20_000, seed=0)
    t = 0.5
    eps = torch.randn(data.x0.shape, generator=torch.Generator().manual_seed(1), dtype=th.DTYPE)
    A_gd, c_gd = th.fit_affine_gd(data.x0, t, eps, steps=3000)
    # GD converges to the least-squares regression of eps on x_t ...
    xt = th.q_sample(data.x0, t, eps).reshape(len(eps), -1)
    X = torch.cat([xt, torch.ones(len(xt), 1, dtype=th.DTYPE)], 1)
    sol = torch.linalg.lstsq(X, eps.reshape(len(eps), -1)).solution
    assert torch.allclose(A_gd, sol[:-1].T, atol=1e-6) and torch.allclose(c_gd, sol[-1], atol=1e-6)
    # ... which is the closed form with the population moments, up to MC error (n = 20 000)
    big = model.sample(400_000, seed=9).x0.reshape(400_000, -1)
    A, c = th.GaussianDenoiser(big.mean(0), torch.cov(big.T, correction=0)).affine(t)
    assert (A_gd - A).abs().max() < 0.03 and (c_gd - c).abs().max() < 0.03


# --- samplers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method,steps", [("ode", 100), ("sde", 300)])
def test_samplers_draw_the_gaussian_they_are_given(method, steps):
    """Driven by the exact denoiser of N(mu, Sigma), both samplers return mean mu and covariance
    Sigma - (Sigma^-1 + s^2/sigma^2 I)^-1 (the Tweedie posterior-mean law at t_min); 20 000 draws,
    tolerance 0.05 (about 5 standard errors)."""
    mu = torch.tensor([1.0, -0.5, 0.2], dtype=th.DTYPE)
    L = torch.tensor([[1.0, 0, 0], [0.6, 0.5, 0], [-0.3, 0.2, 0.3]], dtype=th.DTYPE)
    Sigma = L @ L.T
    den = th.GaussianDenoiser(mu, Sigma)
    times = th.time_grid(steps, t_min=1e-3, t_max=8.0)
    x = th.sample(lambda x, t: den(x, t), 20_000, (3,), times, method=method, seed=0)
    s, sig = th.s_sigma(times[-1])
    expect = Sigma - torch.linalg.inv(torch.linalg.inv(Sigma) + s**2 / sig**2 * torch.eye(3))
    assert (x.mean(0) - mu).abs().max() < 0.05
    assert (torch.cov(x.T) - expect).abs().max() < 0.05


def test_exact_scores_give_zero_and_twice_var_f_rule_error():
    """The exact (coupled) score learns the rule (R ~ 0); the exact product-of-marginals score gives
    R = 2 Var f(a) (inside its bootstrap CI widened by 3 % for the sampler's discretisation and the
    Tweedie shrinkage at t_min = 1e-4); 1000 draws, PF-ODE (Heun), 30 steps."""
    model = th.TwoPatchModel(d=3, rule=th.Rule("linear", {"gamma": 1.0}))
    times = th.time_grid(30, t_min=1e-4, t_max=6.0)
    floor = 2 * th.var_f(model)
    joint = th.ExactTwoPatchDenoiser(model, True, 1000)
    x = th.sample(joint, 1000, (2, 3), times, method="heun", seed=1)
    rep = th.rule_error(*model.read(x), model.rule, n_boot=200)
    assert rep["R"]["value"] < 0.02 * floor
    blind = th.ExactTwoPatchDenoiser(model, False, 1000)
    x = th.sample(blind, 1000, (2, 3), times, method="heun", seed=2)
    rep = th.rule_error(*model.read(x), model.rule, n_boot=200)
    lo, hi = rep["R"]["ci"]
    assert 0.97 * lo < floor < 1.03 * hi


def test_exact_denoiser_beats_the_affine_optimum_with_background_noise():
    """The exact denoiser is the DSM optimum: on 10 000 draws (background noise sigma_xi = 0.3 in
    the complement of span(u, v)) its loss is below the affine optimum's at every t checked, and
    both are below the trivial eps_hat = 0 (loss = 2d)."""
    model = th.TwoPatchModel(
        d=4, rule=th.Rule("quadratic", {"c2": 1.0}), sigma_xi=0.3, basis_seed=3
    )
    data = model.sample(10_000, seed=0)
    exact = th.ExactTwoPatchDenoiser(model, True, 1000)
    gauss = th.GaussianDenoiser.fit(data.x0)
    eps = torch.randn(data.x0.shape, generator=torch.Generator().manual_seed(1), dtype=th.DTYPE)
    for t in (0.05, 0.3, 1.0):
        l_exact, l_aff = th.dsm_loss(exact, data.x0, t, eps), th.dsm_loss(gauss, data.x0, t, eps)
        assert l_exact < l_aff < 2 * model.d


# --- guidance --------------------------------------------------------------------------------


def test_converged_linear_guidance_couples_the_patches_the_first_step_barely():
    """The mean-difference direction (first GD step) is v plus noise: its sigmoid tilt leaves
    |corr(a_hat, b_hat)| < 0.05.  The converged linear classifier (LDA) has a u-component and
    accuracy > 0.9; its tilt (sigma(linear)^lambda does not factorise) couples the patches
    (corr > 0.25) and lowers R beyond its interval.  The oracle couples them more."""
    model = th.TwoPatchModel(d=8, rule=th.Rule("linear", {"gamma": 1.0}))
    lin = th.guided_rule_error(model, scales=(0, 3, 10), classifier="linear", n_samples=20000)
    assert all(abs(r["corr"]) < 0.05 for r in lin)
    lda = th.guided_rule_error(model, scales=(0, 1, 3), classifier="lda", n_samples=20000)
    assert abs(lda[0]["u_component"]) > 0.3 and lda[0]["accuracy"] > 0.9
    assert min(r["corr"] for r in lda[1:]) > 0.25
    assert lda[1]["R_ci"][1] < lda[0]["R_ci"][0]
    orc = th.guided_rule_error(model, scales=(0, 3, 10), classifier="oracle", n_samples=20000)
    assert orc[-1]["R"] < 0.2 * orc[0]["R"] and orc[-1]["corr"] > 0.8


# --- bad input --------------------------------------------------------------------------------


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="rule kind 'cubic'"):
        th.Rule("cubic")
    with pytest.raises(ValueError, match="unknown parameters"):
        th.Rule("linear", {"slope": 1.0})
    with pytest.raises(ValueError, match="d=1"):
        th.TwoPatchModel(d=1)
    with pytest.raises(ValueError, match="a1 < a2"):
        th.TwoPatchModel(a_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="t=0"):
        th.s_sigma(0)
    with pytest.raises(ValueError, match="t_min"):
        th.time_grid(10, t_min=1.0, t_max=0.5)
    with pytest.raises(ValueError, match="method 'euler'"):
        th.sample(lambda x, t: x, 2, (1,), [1.0, 0.1], method="euler")
    with pytest.raises(ValueError, match="decreasing"):
        th.sample(lambda x, t: x, 2, (1,), [0.1, 1.0])
    net = th.PatchLocalDenoiser(2, [1.0, 0.1], th.PatchLocalConfig(m=2))
    with pytest.raises(ValueError, match="not on this denoiser's grid"):
        net(torch.zeros(1, 2, 2, dtype=th.DTYPE), 0.5)
    with pytest.raises(ValueError, match="activation 'tanh'"):
        th.PatchLocalConfig(activation="tanh")
    with pytest.raises(ValueError, match="delta=0"):
        th.contrastive_pairs(th.TwoPatchModel(), 10, 0.0)
    with pytest.raises(ValueError, match="scales"):
        th.guided_rule_error(th.TwoPatchModel(), scales=(-1.0,))
    with pytest.raises(ValueError, match="equal length"):
        th.rule_error(np.zeros(3), np.zeros(4), th.Rule())
    with pytest.raises(ValueError, match="noise shape"):
        th.train_patch_local(
            th.TwoPatchModel().sample(4), [1.0], th.PatchLocalConfig(), torch.zeros(1, 1, 3, 2, 4)
        )
