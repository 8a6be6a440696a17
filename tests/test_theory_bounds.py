"""Tests of the lower bound on the rule error for generators with independent patches, the W2
distance it is stated in, the fine rule's eigenvalue, and R of a Gaussian law."""

import math

import numpy as np
import pytest
import sympy as sp
import torch

from rulelib import theory as th
from rulelib.theory import symbolic as ts


def test_bound_derivation_is_the_independent_decomposition_gelbrich_and_sharp():
    r = ts.independent_rule_error_bound()
    mx, my, vx, vy = sp.symbols("m_X m_Y v_X v_Y", real=True)
    assert sp.expand(r["R_independent"] - (vx + vy + (mx - my) ** 2)) == 0
    # (ii) Cauchy-Schwarz: the minimum of Var(X - lam B) is v_X - c^2 / v_B
    vb, c = sp.symbols("v_B c", real=True)
    assert sp.simplify(r["cauchy_schwarz"] - (vx - c**2 / vb)) == 0
    sx, sb = sp.symbols("sigma_X sigma_B", real=True)
    assert sp.expand(r["gelbrich_slack"] - 2 * (sx * sb - c)) == 0
    # (iii), (iv): the dropped terms are non-negative by sympy's sign rules, and they are not
    # trivially so: with rho > 1 (r < 0) the slack would be negative
    assert r["slack_nonnegative"] and r["positive_part_nonnegative"]
    rr = sp.Symbol("r", positive=True)
    assert r["slack_rho"].subs(rr, -0.5).subs({s_: 1 for s_ in r["slack_rho"].free_symbols}) < 0
    # sharpness from the construction: W2 of the scaled law is (1 - k) sigma_f, R is the bound
    sf, k = r["symbols"]["sigma_f"], r["symbols"]["k"]
    assert sp.simplify(r["w2_scaled"] - (1 - k) ** 2 * sf**2) == 0
    assert r["attained"] == 0
    assert sp.simplify(r["limit"] - 2 * sf**2) == 0


def test_w2_1d_exact_cases_and_gaussians():
    x = np.array([0.0, 1.0, 3.0])
    assert th.w2_1d(x, x) == 0
    assert abs(th.w2_1d(x, x + 0.7) - 0.7) < 1e-12
    # two-point law against one point: W2^2 = mean of squared distances
    assert abs(th.w2_1d([0.0, 2.0], [1.0]) - 1.0) < 1e-12
    # weights: (0 w.p. 3/4, 4 w.p. 1/4) against uniform {0, 4}: mass 1/4 moves by 4 -> W2 = 2
    assert abs(th.w2_1d([0.0, 4.0], [0.0, 4.0], [0.75, 0.25]) - 2.0) < 1e-12
    # N(0, 1) against N(0.5, 1.5^2): W2^2 = 0.5^2 + 0.5^2; 200 000 draws each, 2 %
    g = np.random.default_rng(0)
    w = th.w2_1d(g.standard_normal(200_000), 0.5 + 1.5 * g.standard_normal(200_000))
    assert abs(w - math.sqrt(0.5)) / math.sqrt(0.5) < 0.02
    with pytest.raises(ValueError, match="weights"):
        th.w2_1d([0.0, 1.0], [0.0], [1.0])


def test_marginal_bound_holds_for_any_independent_generator_and_is_sharp():
    """Scaled copies of the data's marginals, X = m + k (b - m) and f(a_hat) likewise: the bound is
    attained (to the quadrature's accuracy), and holds for shrunk, inflated and shifted ones."""
    model = th.TwoPatchModel(d=2, rule=th.Rule("quadratic", {"c2": 1.0}))
    n = 100_000
    g = torch.Generator().manual_seed(0)
    a = model.sample_a(n, g)
    b = model.rule(model.sample_a(n, g))
    sd = math.sqrt(th.var_f(model))
    for k_b, shift in ((1.0, 0.0), (0.5, 0.0), (0.8, 0.3), (1.3, 0.0)):
        mb = b.mean()
        b_hat = mb + k_b * (b - mb) + shift
        r = th.marginal_bound(a, b_hat, model)
        assert r["R_product"] >= r["bound"] - 1e-12
        assert abs(r["sigma_f"] - sd) / sd < 1e-3
        if shift == 0.0 and k_b <= 1.0:  # sharp: eps_b = (1 - k) sigma_f, R = bound + MC error
            assert abs(r["eps_b"] - (1 - k_b) * sd) < 0.01 * sd
            assert abs(r["R_product"] - r["bound"]) < 0.02 * r["R_product"]
    # collapsed: all mass at the means; eps = sigma_f, bound 0, R = (E b - f(E a))^2 small
    r = th.marginal_bound(torch.full((100,), 1.5), torch.full((100,), float(b.mean())), model)
    assert abs(r["eps_b"] - sd) < 1e-3 and r["bound"] < 1e-6


def test_fine_rule_eigenvalue_symbolic_and_numeric():
    r = ts.fine_rule_eigenvalue()
    D, c2 = sp.Symbol("Delta", positive=True), sp.Symbol("c2", real=True)
    assert sp.simplify(r["r"] - c2**2 * D**4 / 180) == 0
    V, beta, rr = r["symbols"]
    assert sp.simplify(r["leading"] - rr / (1 + beta**2)) == 0
    # numeric: f = a^2 on U[1, 2]: beta = 3, r = 1/180; the smallest eigenvalue of Cov(a, b)
    model = th.TwoPatchModel(d=2, rule=th.Rule("quadratic", {"c2": 1.0}))
    nodes, logw = model.latent_grid(200_000)
    w = logw.exp()
    ab = torch.stack([nodes, model.rule(nodes)])
    m = (w * ab).sum(1, keepdim=True)
    cov = ((ab - m) * w) @ (ab - m).T
    lam = float(torch.linalg.eigvalsh(cov)[0])
    exact = float(r["lambda_min"].subs({V: 1 / 12, beta: 3, rr: sp.Rational(1, 180)}))
    assert abs(lam / exact - 1) < 1e-4
    assert abs(lam * 180 * 10 - 1) < 0.01  # r / (1 + beta^2), 1 % (the O(r^2) term)
    assert lam < 0.2 / 180  # and not r itself


def test_gaussian_law_rule_error_against_draws():
    rule = th.Rule("quadratic", {"c0": 0.1, "c1": -0.4, "c2": 0.8})
    mean = torch.tensor([1.2, 0.9], dtype=th.DTYPE)
    cov = torch.tensor([[0.3, 0.2], [0.2, 0.5]], dtype=th.DTYPE)
    x = torch.distributions.MultivariateNormal(mean, cov).sample((1_000_000,))
    sq = (x[:, 1] - rule(x[:, 0])) ** 2
    half = 1.96 * float(sq.std()) / 1000
    assert abs(th.gaussian_law_rule_error(mean, cov, rule) - float(sq.mean())) < 1.5 * half
    lin = th.Rule("linear", {"gamma": 2.0, "c0": 1.0})
    exact = th.gaussian_law_rule_error(mean, cov, lin)
    closed = (0.9 - 2.0 * 1.2 - 1.0) ** 2 + 0.5 - 4 * 0.2 + 4 * 0.3
    assert abs(exact - closed) < 1e-12
    with pytest.raises(ValueError, match="'inverse'"):
        th.gaussian_law_rule_error(mean, cov, th.Rule("inverse"))
