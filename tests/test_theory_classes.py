"""Tests of the model classes of notebook 01 beyond the patch-local one: GD on the affine class in
closed form, the memorising empirical score, the width-limited whole-input network, and the
weak-signal sample sizes."""

import math

import pytest
import torch

from rulelib import theory as th


def test_affine_gd_in_closed_form_matches_iterated_gd_and_tends_to_the_optimum():
    model = th.TwoPatchModel(d=2, rule=th.Rule("quadratic", {"c2": 1.0}))
    x0 = model.sample(500, seed=0).x0
    times = [0.5, 0.05]
    flat = x0.reshape(500, -1)
    D = flat.shape[1]
    for t in times:
        s, sig = th.s_sigma(t)
        M = torch.eye(D + 1, dtype=th.DTYPE)
        M[:D, :D] = s**2 * flat.T @ flat / 500 + sig**2 * torch.eye(D, dtype=th.DTYPE)
        M[:D, D] = M[D, :D] = s * flat.mean(0)
        C = torch.cat([sig * torch.eye(D, dtype=th.DTYPE), torch.zeros(D, 1, dtype=th.DTYPE)], 1)
        eta = 1 / (2 * float(torch.linalg.eigvalsh(M)[-1]))
        W = torch.zeros(D, D + 1, dtype=th.DTYPE)
        for _ in range(7):  # seven explicit GD steps on the noise-averaged loss
            W = W - 2 * eta * (W @ M - C)
        xt = torch.randn(10, 2, 2, dtype=th.DTYPE)
        got = th.affine_gd_denoiser(x0, times, 7)(xt, t)
        want = (xt.reshape(10, -1) @ W[:, :-1].T + W[:, -1]).reshape(xt.shape)
        assert torch.allclose(got, want, atol=1e-10)
        far = th.affine_gd_denoiser(x0, times, 10**9)(xt, t)
        assert torch.allclose(far, th.GaussianDenoiser.fit(x0)(xt, t), atol=1e-8)
    with pytest.raises(ValueError, match="not on this denoiser's grid"):
        th.affine_gd_denoiser(x0, times, 3)(xt, 0.2)
    with pytest.raises(ValueError, match="steps=-1"):
        th.affine_gd_denoiser(x0, times, -1)


def test_empirical_score_is_exact_for_one_point_and_memorises():
    x1 = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]], dtype=th.DTYPE)
    den = th.EmpiricalDenoiser(x1)
    xt = torch.randn(5, 2, 2, dtype=th.DTYPE)
    s, sig = th.s_sigma(0.3)
    assert torch.allclose(den(xt, 0.3), (xt - s * x1) / sig, atol=1e-12)
    model = th.TwoPatchModel(d=2, rule=th.Rule("quadratic", {"c2": 1.0}))
    train = model.sample(32, seed=1).x0
    grid = th.time_grid(40, 1e-4)
    x = th.sample(th.EmpiricalDenoiser(train), 200, (2, 2), grid, method="heun", seed=2)
    dist = torch.cdist(x.reshape(200, -1), train.reshape(32, -1)).min(1).values
    # nearly every sample is a training point (a few sit between two close ones at t_min)
    assert float((dist < 0.01).double().mean()) > 0.9
    rep = th.rule_error(*model.read(x), model.rule, n_boot=10)
    assert rep["R"]["value"] < 1e-4


def test_whole_input_network_trains_and_learns_the_trend():
    """The loss falls and samples after 1500 steps have the data's positive trend and R well below
    2 Var f(a) (about 1.5 here), the R of independent patches with exact marginals."""
    model = th.TwoPatchModel(d=2, rule=th.Rule("quadratic", {"c2": 1.0}))
    net, hist = th.train_whole_input(model.sample(512, seed=0).x0, th.WholeInputConfig(steps=1500))
    assert hist[-1] < 0.9 * hist[0]  # the loss has a large irreducible part (the noise)
    with torch.no_grad():
        x = th.sample(net, 500, (2, 2), th.time_grid(20, 1e-3), method="heun", seed=1)
    rep = th.rule_error(*model.read(x), model.rule, n_boot=100)
    assert rep["corr"]["ci"][0] > 0.9
    assert rep["R"]["value"] < 0.05 * 2 * th.var_f(model)
    with pytest.raises(ValueError, match="width=0"):
        th.WholeInputConfig(width=0)


def test_coarse_rule_and_fine_rule_loss_gap():
    """g(a) is the best linear fit of a^2 on U[1, 2] (slope 3, residual variance 1/180); the fine
    gap is positive and below the whole-rule gap; the loss's sd, hence n_loss, grows with d while
    the fine gap does not."""
    model = th.TwoPatchModel(d=2, rule=th.Rule("quadratic", {"c2": 1.0}))
    g = th.coarse_rule(model)
    assert abs(g.p("gamma", 0) - 3.0) < 1e-6 and abs(g.p("c0", 0) + 13 / 6) < 1e-6
    nodes, logw = model.latent_grid(100_000)
    resid = float((logw.exp() * (model.rule(nodes) - g(nodes)) ** 2).sum())
    assert abs(resid * 180 - 1) < 1e-4
    times = th.time_grid(6, t_min=5e-3, t_max=3.0)
    small = th.fine_rule_loss_gap(model, times, n_mc=600, n_grid=300, seed=0)
    wide = th.TwoPatchModel(d=16, rule=model.rule, sigma_xi=1.0)
    big = th.fine_rule_loss_gap(wide, times, n_mc=600, n_grid=300, seed=0)
    for r in (small, big):
        assert r["gap_fine"] > 3 * r["gap_fine_se"] and r["gap_whole"] > r["gap_fine"]
    assert abs(big["gap_fine"] - small["gap_fine"]) < 4 * math.hypot(
        big["gap_fine_se"], small["gap_fine_se"]
    )
    assert big["n_loss"] > 10 * small["n_loss"]
    with pytest.raises(ValueError, match="n_mc=1"):
        th.fine_rule_loss_gap(model, times, n_mc=1)
