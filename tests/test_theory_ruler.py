"""Tests of the ruler in the theory: observed^2 = model^2 + floor^2 (derived), the trimming of
the reported residual std, the meaning of a plateau, and the simulation on rendered images."""

import numpy as np
import pytest
import sympy as sp

from rulelib import tasks
from rulelib.metrics.rules import fit_line
from rulelib.theory import ruler as ru


def test_decomposition_has_the_cross_term_and_adds_in_squares_without_it():
    d = ru.decomposition()
    sM, sD, rho = (d["symbols"][k] for k in ("sigma_M", "sigma_D", "rho"))
    obs, floor = d["symbols"]["observed"], d["symbols"]["floor"]
    assert sp.simplify(d["var_sum"] - (sM**2 + sD**2 + 2 * rho * sM * sD)) == 0
    assert sp.simplify(d["independent"] - (sM**2 + sD**2)) == 0
    assert sp.simplify(d["sensitivity"] - obs / sp.sqrt(obs**2 - floor**2)) == 0
    # Monte Carlo: an independent and a correlated ruler error
    g = np.random.default_rng(0)
    m, e = g.normal(0, 2.0, 400_000), g.normal(0, 1.0, 400_000)
    assert abs(np.var(m + e) / 5.0 - 1) < 0.01
    dc = 0.6 * m / 2.0 + 0.8 * e  # sd 1, corr 0.6 with m
    closed = float(d["var_sum"].subs({sM: 2.0, sD: 1.0, rho: 0.6}))
    assert abs(np.var(m + dc) / closed - 1) < 0.01 and abs(closed - 7.4) < 1e-12


def test_trim_factors_match_the_reported_statistic():
    """fit_line's residual trim on normal noise keeps 0.871 of its sd, on uniform noise 0.95:
    the closed forms, and a sum of two normals is trimmed like one normal (adds in squares)."""
    t = ru.trim_factors()
    assert abs(t["normal_c"] - 0.87112) < 1e-4 and t["uniform_c"] == pytest.approx(0.95)
    g = np.random.default_rng(1)
    x = g.uniform(0, 1, 200_000)
    cases = [(g.normal(0, 0.01, x.size), t["normal_c"])]
    cases.append((g.uniform(-0.01, 0.01, x.size), t["uniform_c"]))
    for noise, c in cases:
        sd = float(np.std(noise))
        r = fit_line(x, 2 * x + noise)["resid_std"] / sd
        assert abs(r / c - 1) < 0.01, (r, c)
    a, b = g.normal(0, 0.01, x.size), g.normal(0, 0.02, x.size)
    trimmed = [fit_line(x, x + v)["resid_std"] for v in (a, b, a + b)]
    assert abs(trimmed[2] / np.hypot(trimmed[0], trimmed[1]) - 1) < 0.01


def test_plateau_meaning_series_and_second_order_lift():
    p = ru.plateau_meaning()
    m, f, A, u = (p["symbols"][k] for k in ("m_inf", "f", "A", "u"))
    c = sp.sqrt(m**2 + f**2)
    assert sp.simplify(p["series_n"] - (c + A * u / (2 * c))) == 0
    assert sp.simplify(p["lift_small"] - m**2 / (2 * f)) == 0
    # numerically: a constant of 0.46 floor lifts the plateau by about 10 %
    assert abs(np.hypot(0.458, 1.0) - 1.1) < 1e-3


def test_model_error_scale_puts_the_error_into_y():
    for name in ("C", "D", "B"):
        task = tasks.get(name)
        base = task.scene(300, 3)
        e = np.random.default_rng(4).normal(0, 0.002, 300)
        p = task.scene(300, 3, dependent_scale=ru.model_error_scale(task, base, e))
        x, y = task.rule_xy(p)
        x0, _ = task.rule_xy(base)
        keep = (np.asarray(p["clipped"]) == 0) & np.isclose(x, x0, rtol=0, atol=1e-15)
        assert keep.mean() > 0.5
        assert np.allclose((y - task.k * x)[keep], e[keep], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="one error per scene"):
        ru.model_error_scale(tasks.get("C"), tasks.get("C").scene(5, 0), np.zeros(4))


def _cell(rows, sigma, trim):
    return next(r for r in rows if r["sigma"] == sigma and r["trim"] == trim)


@pytest.mark.parametrize("ruler", ["exact", "paper"])
def test_simulation_follows_root_sum_of_squares_not_the_linear_sum(ruler):
    """Task C: sigma near each ruler's floor, where sqrt(m^2 + f^2) and m + f differ by ~30 %."""
    sigma = 5e-5 if ruler == "exact" else 6e-3
    rows = ru.simulate(tasks.get("C"), [0, sigma, 0.02], n=400, ruler=ruler, n_boot=200)
    assert {r["trim"] for r in rows} == {"none", "residuals" if ruler == "exact" else "xy"}
    for r in rows:
        if r["sigma"] > 0:
            assert 0.93 < r["ratio"]["value"] < 1.07, r
    near = _cell(rows, sigma, "none")
    assert 0.5 < near["model"]["value"] / near["floor"]["value"] < 2  # near the floor
    assert near["ratio_sum"]["ci"][1] < 0.85  # the linear sum is rejected
    assert abs(near["corr_cross"]["value"]) < 0.2
    far = _cell(rows, 0.02, "none")  # far above the floor the observed std is the model's
    assert abs(far["observed"]["value"] / far["model"]["value"] - 1) < 0.06


def test_simulation_detects_a_ruler_correlated_with_the_model(monkeypatch):
    """A ruler that reads y halfway back towards the rule (error -M/2, rho = -1) must fail the
    check: observed = model/2, far from sqrt(model^2 + floor^2)."""
    task = tasks.get("D")
    exact = ru.rulers.measure

    def shrinking(task_, images, ruler="exact", **kw):
        f, ok = exact(task_, images, "exact")
        f = dict(f)
        f["l2"] = task_.k * f["l1"] + 0.5 * (f["l2"] - task_.k * f["l1"])
        return f, ok

    monkeypatch.setattr(ru.rulers, "measure", shrinking)
    rows = ru.simulate(task, [0, 0.01], n=300, n_boot=100)
    r = _cell(rows, 0.01, "none")
    assert r["ratio"]["ci"][1] < 0.6 and r["corr_cross"]["value"] < -0.9


def test_simulation_bad_input():
    task = tasks.get("C")
    with pytest.raises(ValueError, match="sigmas"):
        ru.simulate(task, [0, -0.1], n=50)
    with pytest.raises(ValueError, match="ruler"):
        ru.simulate(task, [0], n=50, ruler="calipers")
    with pytest.raises(ValueError, match="trims"):
        ru.simulate(task, [0], n=50, trims=("median",))
    with pytest.raises(ValueError, match="n=5"):
        ru.simulate(task, [0], n=5)
    assert ru.available_rulers(task) == ("exact", "paper")
