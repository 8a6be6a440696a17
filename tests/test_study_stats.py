"""The study's statistics: plateau shapes with profile CIs and a likelihood-ratio test, the
ruler's floor, the fit's power, CIs over training seeds, and exact share intervals; each test
checks that the statistic can come out either way."""

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chi2

from rulelib import tasks
from rulelib.metrics import memorisation, rule_report
from rulelib.metrics.bootstrap import share_ci
from rulelib.study import command, paired, plateau, seeds, summary
from rulelib.study.fit import se_from_ci
from rulelib.tasks import rulers

STUDY_JSON = Path(__file__).resolve().parents[1] / "results" / "study" / "study.json"


def _design():
    """Task B's committed length arm from 46 000 images (>= 80 % measurable): its images, the
    residual std of the novel images and their standard errors."""
    rows = json.loads(STUDY_JSON.read_text())["rows"]
    rs = sorted((r for r in rows if r["run"] == "length_B" and r["sampling"] == "ema ddim"
                 and r["measurable_rate"] >= 0.8), key=lambda r: r["images"])  # fmt: skip
    x = np.array([r["images"] for r in rs], dtype=float)
    y = np.array([r["novel_resid_std"] for r in rs])
    se = np.array([se_from_ci([r["novel_resid_std_lo"], r["novel_resid_std_hi"]]) for r in rs])
    return x, y, se


def test_exact_share_intervals_are_not_degenerate_at_zero():
    lo, hi = share_ci(0, 256)
    assert lo == 0 and hi == pytest.approx(1 - 0.025 ** (1 / 256), rel=1e-6)  # 1.43 %
    assert share_ci(0, 32)[1] == pytest.approx(0.1089, abs=1e-4)
    lo, hi = share_ci(32, 32)
    assert hi == 1 and lo == pytest.approx(0.025 ** (1 / 32), rel=1e-6)
    lo, hi = share_ci(50, 100)
    assert lo < 0.5 < hi and hi - lo == pytest.approx(0.2, abs=0.01)
    with pytest.raises(ValueError, match="k=5, n=3"):
        share_ci(5, 3)
    # the copy rate of a set with no copies: 0 with an upper bound above 0 (was [0, 0])
    t = tasks.get("B")
    rep = memorisation.memorisation_report(t.sample(64, 1)[0], t.sample(256, 2)[0], n_boot=100)
    assert rep["copy_rate"]["value"] == 0 and rep["copy_rate"]["ci"][1] == pytest.approx(
        share_ci(0, 64)[1]
    )
    train = t.sample(256, 2)[0]
    rep = memorisation.memorisation_report(train[:32], train)
    assert rep["copy_rate"]["value"] == 1 and rep["copy_rate"]["ci"][0] > 0.85  # all copies


def test_committed_b_curve_under_each_shape():
    """The saturation on the committed curve (seed 0 to 1 024 000 images, the ten checkpoints
    >= 80 % measurable): the saturating exponential fits better than the power law and both put
    a plateau above zero, the exponential's near 0.002.  (On the first study's seed 0, to
    512 000 images, the power law still decayed to zero: chi2 0.85 against 5.2.)"""
    x, y, se = _design()
    out = plateau.fit_all(x, y, se)
    pw, ex = out["shapes"]["power"], out["shapes"]["exponential"]
    assert ex["chi2"] < pw["chi2"] - 2 and chi2.sf(ex["chi2"], ex["dof"]) > 0.05  # a fair fit
    assert pw["c_ci"][0] > 0 and pw["lrt_p"] < 0.01  # the power law levels off too ...
    assert 0.0018 < ex["c_ci"][0] < ex["c"] < ex["c_ci"][1] < 0.0028  # ... near 0.002
    assert ex["lrt_p"] < 1e-3 and out["aic_best"] == "exponential plateau"


def test_lrt_detects_a_plateau_of_0_005_but_not_one_of_0():
    """Power for the real design (B's eight points and relative errors; the data's decay lifted
    onto the plateau): a plateau of 0 is "found" at about the 5 % level; one of 0.005 mostly
    once each point's error is a third of the committed one (9x the samples), and the
    committed errors detect it less often than that (a design with little power)."""
    x, y, se = _design()
    tmpl = {"shape": "exponential", "floor": 0.0, "points": (x, y, se)}
    null = plateau.power(x, se, tmpl, 0.0, reps=40, seed=2)
    assert null["detected"] <= 0.15
    assert null["detected_ci"][0] <= 0.05 <= null["detected_ci"][1]  # about its 5 % level
    sharp = plateau.power(x, se / 3, tmpl, 0.005, reps=40, seed=1)
    real = plateau.power(x, se, tmpl, 0.005, reps=40, seed=1)
    assert sharp["detected"] >= 0.7 and real["detected"] < sharp["detected"]


def test_the_rulers_floor_is_not_taken_for_a_plateau():
    """A model that decays to zero, read through a ruler with floor f: fitted without the floor
    the data show a plateau near f; with the floor entered, decay to zero is not rejected.  A
    real plateau above the floor is still found with it."""
    x = np.geomspace(46_000, 512_000, 8)
    f = 0.0025
    for shape, model in (("power", 0.012 * (x / x[0]) ** -0.9),
                         ("exponential", 0.012 * np.exp(-(x / x[0] - 1) / 2.0))):  # fmt: skip
        se = 0.05 * np.sqrt(model**2 + f**2)
        y = np.sqrt(model**2 + f**2)  # noise-free: the expected data
        bare = plateau.fit_shape(shape, x, y, se)
        assert bare["lrt_p"] < 0.01 and bare["c"] > 0.5 * f
        floored = plateau.fit_shape(shape, x, y, se, floor=f)
        assert floored["lrt_p"] > 0.2 and floored["c_ci"][0] == 0
        y2 = np.sqrt((model + 0.004) ** 2 + f**2)
        withc = plateau.fit_shape(shape, x, y2, se, floor=f)
        assert withc["lrt_p"] < 0.01 and withc["c_ci"][0] < 0.004 < withc["c_ci"][1]


def test_each_checkpoints_own_floor_is_entered_point_by_point():
    """A floor that differs between checkpoints (each set of samples its own measurement noise)
    enters point by point: a model decaying to zero under floors that fall and rise is not taken
    for a plateau, where one fixed floor (their mean) is; a constant per-point floor equals the
    scalar fit; a floor of the wrong length or a negative one is refused by name."""
    x = np.geomspace(182_000, 1_024_000, 6)
    own = np.array([0.0020, 0.0017, 0.0016, 0.0022, 0.0025, 0.0016])
    model = 0.004 * (x / x[0]) ** -1.2
    y = np.sqrt(model**2 + own**2)
    se = 0.05 * y
    per_point = plateau.fit_shape("power", x, y, se, floor=own)
    assert per_point["lrt_p"] > 0.2 and per_point["c_ci"][0] == 0 and per_point["chi2"] < 0.1
    assert per_point["floor"] == pytest.approx(own.tolist())
    fixed = plateau.fit_shape("power", x, y, se, floor=float(own.mean()))
    assert fixed["chi2"] > 5 * max(per_point["chi2"], 0.1)  # one floor cannot follow them
    # the floor's own uncertainty widens each point's error: se² + (f se_f / y)²
    loose = plateau.fit_shape("power", x, y, se, floor=float(own.mean()), floor_se=0.0004)
    assert loose["chi2"] < 0.5 * fixed["chi2"] and loose["floor_se"] == 0.0004
    same = plateau.fit_shape("power", x, y, se, floor=np.full(6, 0.002))
    scalar = plateau.fit_shape("power", x, y, se, floor=0.002)
    assert same["c"] == pytest.approx(scalar["c"], abs=1e-9) and same["floor"] == [0.002] * 6
    with pytest.raises(ValueError, match=r"per-point floor.*\(5,\)"):
        plateau.fit_shape("power", x, y, se, floor=own[:5])
    with pytest.raises(ValueError, match="finite and >= 0"):
        plateau.fit_shape("power", x, y, se, floor=-own)
    pts = [(i, v, s, 1.0, f) for i, v, s, f in zip(x, y, se, own)]
    fits = plateau.curve_fits(pts, task="B", power_reps=2)["fits"]
    assert fits["floor per checkpoint"]["shapes"]["power"]["lrt_p"] > 0.2
    pts[2] = (*pts[2][:4], None)  # one checkpoint whose samples are gone: no per-point fit
    assert "floor per checkpoint" not in plateau.curve_fits(pts, task="B", power_reps=2)["fits"]


def test_profile_ci_covers_the_true_plateau_and_excludes_zero_for_an_exponential():
    x = np.geomspace(46_000, 512_000, 8)
    u = x / x[0]
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(6):
        mean = 0.003 + 0.01 * np.exp(-(u - 1) / 2.0)
        se = 0.05 * mean
        f = plateau.fit_shape("exponential", x, mean + rng.normal(0, se), se, grid_points=40)
        covered += f["c_ci"][0] <= 0.003 <= f["c_ci"][1]
        assert f["c_ci"][0] > 0.002  # zero, and a plateau of 0.002, excluded
    assert covered >= 5


def test_hierarchical_bootstrap_widens_with_the_seed_to_seed_spread():
    rng = np.random.default_rng(0)
    alike = [rng.normal(1.0, 1.0, 200) for _ in range(3)]
    apart = [rng.normal(m, 1.0, 200) for m in (0.0, 1.0, 2.0)]
    a = seeds.hierarchical_bootstrap(alike, n_boot=500)
    b = seeds.hierarchical_bootstrap(apart, n_boot=500)
    wa, wb = np.diff(a["ci"])[0], np.diff(b["ci"])[0]
    pooled = np.concatenate(apart)
    naive = 2 * 1.96 * pooled.std() / np.sqrt(pooled.size)  # samples as if independent
    assert wb > 5 * naive and wb > 3 * wa  # seeds that differ widen the CI; alike ones do not
    assert wa < 3 * 2 * 1.96 / np.sqrt(600)
    s = seeds.seed_mean_ci([0.003, 0.004, 0.0035], [1e-4, 1e-4, 1e-4])
    assert s["ci"][0] < 0.0035 < s["ci"][1] and s["seed_sd"] == pytest.approx(0.0005)
    assert seeds.group_name("length_B_seed2") == ("length_B", 2)
    assert seeds.group_name("length_B_wide") == ("length_B_wide", 0)


def test_the_seed_mean_ci_covers_when_seeds_differ_more_than_their_samples():
    """Three seeds whose spread is twice their sampling se: the bootstrap over seeds alone
    covers the true mean too rarely (~86 %); the reported CI (its union with Student's t) keeps
    95 %.  Where seeds agree by chance the bootstrap's side is the one that holds."""
    rng = np.random.default_rng(3)
    boot = union = 0
    reps = 500
    for i in range(reps):
        v = rng.normal(0.0, 2.0, 3) + rng.normal(0.0, 1.0, 3)
        s = seeds.seed_mean_ci(v, [1.0] * 3, n_boot=1000, seed=i)
        assert s["ci"][0] <= min(s["ci_bootstrap"][0], s["ci_t"][0])
        boot += s["ci_bootstrap"][0] <= 0 <= s["ci_bootstrap"][1]
        union += s["ci"][0] <= 0 <= s["ci"][1]
    assert boot / reps < 0.91 and union / reps > 0.93, (boot / reps, union / reps)
    same = seeds.seed_mean_ci([1.0, 1.0, 1.0], [0.1] * 3)
    assert same["ci_t"] == [1.0, 1.0] and same["ci"] == same["ci_bootstrap"]
    assert same["ci"][1] - same["ci"][0] > 0.1  # the samples' own error is still in it
    assert seeds.seed_mean_ci([1.0], [0.1])["ci_t"] is None  # one seed: the bootstrap alone


def test_smallest_detectable_difference():
    md = plateau.min_detectable_difference(1.0, 1.0)
    assert md == pytest.approx((1.959964 + 0.841621) * np.sqrt(2), rel=1e-5)
    assert plateau.min_detectable_difference(1.0, 1.0, paired_corr=0.75) == pytest.approx(md / 2)


def test_summary_fits_seed_bands_and_every_shape(monkeypatch):
    """fits() gives each run every shape on the points >= 95 % measurable with a power table,
    and runs that differ only in their seed a mean curve with its seed-level CI."""
    monkeypatch.setattr(plateau, "POWER_REPS", 4)
    monkeypatch.setattr(plateau, "PROFILE_POINTS", 15)
    x, y, se = _design()
    rows = []
    for sd, shift in ((0, 0.0), (1, 0.0004), (2, -0.0004)):
        for xi, yi, si in zip(x, y, se):
            v = yi + shift
            rows.append({"run": "length_B" + (f"_seed{sd}" if sd else ""), "arm": "length",
                         "task": "B", "sampling": "ema ddim", "images": int(xi),
                         "measurable_rate": 0.97, "novel_resid_std": v,
                         "novel_resid_std_lo": v - 1.96 * si, "novel_resid_std_hi": v + 1.96 * si,
                         "novel_within_5pct": None, "novel_conforming_pct": None})  # fmt: skip
    fitd = summary.fits(rows)
    p = fitd["length_B"]["plateau"]
    assert set(p["fits"]["floor 0"]["shapes"]) == {"power", "exponential"}
    assert len(p["power"]) == len(plateau.SHAPES) * len(plateau.POWER_C)
    over = fitd["length_B"]["over_seeds"]
    assert over["seeds"] == [0, 1, 2] and over["images"] == [int(v) for v in x]
    for m, (lo, hi), v in zip(over["mean"], over["ci"], y):
        assert m == pytest.approx(v) and lo < v - 0.0003 and hi > v + 0.0003  # the seed spread
    assert "fits" in over["plateau"]
    rows_low = [{**r, "measurable_rate": 0.9} for r in rows if r["run"] == "length_B"]
    note = summary.fits(rows_low)["length_B"]["plateau"]
    assert "fits" not in note and note["n_left_out"] == len(x)


def test_paired_checkpoints_resolve_a_change_the_separate_cis_cannot(tmp_path):
    """Two 'checkpoints' drawing the same scenes (the same noise), the second with a smaller error
    on the dependent feature: the paired CI of the residual-std difference excludes zero and is
    narrower than the two separate CIs; equal sets give exactly zero; the other order flips the
    sign.  run_pairs finds the committed samples files and pairs the last points."""
    task = tasks.get("B")
    z = np.random.default_rng(3).standard_normal(256)
    a = task.sample(256, 11, dependent_scale=np.clip(1 + 0.05 * z, 0.8, 1.2))[0]
    b = task.sample(256, 11, dependent_scale=np.clip(1 + 0.04 * z, 0.8, 1.2))[0]
    d = paired.compare(task, a, b, n_boot=400)
    lo, hi = d["resid_std"]["ci"]
    assert d["n"] == 256 and d["resid_std"]["value"] < 0 and hi < 0, d
    sep = [rule_report(task, *rulers.measure(task, im, "exact"), n_boot=400)["resid_std"]["ci"]
           for im in (a, b)]  # fmt: skip
    assert hi - lo < min(s[1] - s[0] for s in sep)  # the shared noise cancels
    assert sep[0][0] < sep[1][1]  # the separate CIs overlap: they cannot tell
    same = paired.compare(task, a, a, n_boot=50)["resid_std"]
    assert same["value"] == 0 and same["ci"] == [0, 0]
    assert paired.compare(task, b, a, n_boot=400)["resid_std"]["ci"][0] > 0
    with pytest.raises(ValueError, match="at least 2 images"):
        paired.compare(task, a[:1], b, n_boot=10)
    # the committed layout: samples_<images>.npz, a larger set holding the smaller one's draws
    folder = tmp_path / "runs" / "length_B_seed9"
    folder.mkdir(parents=True)
    for images, arr in ((256_000, a[:128]), (362_000, a), (512_000, b)):
        np.savez_compressed(folder / f"samples_{images:07d}.npz", images=arr,
                            meta=np.array(json.dumps({"n": len(arr)})))  # fmt: skip
    np.savez_compressed(folder / "samples_0512000_raw_ddpm.npz", images=a, meta=np.array("{}"))
    rows = paired.run_pairs(task, folder, n_boot=100)
    assert [(r["from_images"], r["to_images"], r["n"]) for r in rows] == [
        (256_000, 512_000, 128), (362_000, 512_000, 256)]  # fmt: skip
    assert rows[1]["resid_std"]["value"] == d["resid_std"]["value"]
    # `study summary --to`: paired.json for the length arm's runs, with each ruler
    row = {"run": "length_B_seed9", "task": "B", "arm": "length"}
    (tmp_path / "study.json").write_text(json.dumps({"rows": [row, {**row, "run": "gone"}]}))
    doc = command.write_paired(tmp_path, "study summary")
    assert set(doc["pairs"]) == {"length_B_seed9"}  # a run without samples here is skipped
    assert set(doc["pairs"]["length_B_seed9"]) == {"exact", "paper"}
    assert json.loads((tmp_path / "paired.json").read_text())["pairs"] == json.loads(
        json.dumps(doc["pairs"]))  # fmt: skip
