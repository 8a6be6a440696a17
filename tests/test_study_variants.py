"""A variant of the training recipe against the recipe over training seeds (rulelib.study.variants):
the t interval's coverage and power, the rows it compares, and the figure."""

import json

import numpy as np
import pytest
from scipy import stats

from rulelib.study import figures, summary, variants


def _simulate(n_v, n_b, shift, reps=3000, seed=0):
    """Share of replicates whose interval covers the true difference, and share excluding 0."""
    rng = np.random.default_rng(seed)
    cover = reject = 0
    for _ in range(reps):
        v, b = rng.normal(shift, 1.0, n_v), rng.normal(0.0, 1.0, n_b)
        d = variants.seed_difference(v, b, *variants.pooled([list(v), list(b)]))
        cover += d["ci"][0] <= shift <= d["ci"][1]
        reject += d["ci"][0] > 0 or d["ci"][1] < 0
    return cover / reps, reject / reps


@pytest.mark.parametrize("n_v", [1, 2])
def test_the_seed_interval_covers_at_its_level_and_detects_its_detectable_difference(n_v):
    """Three base seeds against one or two of a variant: the interval covers the true difference
    95 % of the time (a z interval on the pooled sd, the nearest wrong form, covers 81-86 % with
    two or three degrees of freedom), and a true difference equal to ``detectable`` is found
    about 80 % of the time (with z quantiles it would be ~40 %)."""
    df = n_v - 1 + 2
    det = float(variants.seed_difference([0.0] * n_v, [0.0, 1.0, 2.0], 1.0, df)["detectable"])
    cover, _ = _simulate(n_v, 3, 0.0)
    half = 3 * np.sqrt(0.95 * 0.05 / 3000)
    assert abs(cover - 0.95) < half, cover
    _, power = _simulate(n_v, 3, det, seed=1)
    assert 0.7 < power < 0.87, power
    z_det = (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * np.sqrt(1 / n_v + 1 / 3)
    assert z_det < 0.7 * det  # the t form is what makes the figure honest with few seeds


def test_the_seed_interval_refuses_what_it_cannot_compute():
    with pytest.raises(ValueError, match="df=0"):
        variants.seed_difference([1.0], [2.0], None, 0)
    with pytest.raises(ValueError, match="got 0 and 1"):
        variants.seed_difference([], [2.0], 1.0, 1)


def _row(run, images, value, task="B", arm="length", measurable=1.0):
    return {"run": run, "arm": arm, "task": task, "images": images, "sampling": "ema ddim",
            "novel_resid_std": value, "novel_resid_std_lo": value - 0.0002,
            "novel_resid_std_hi": value + 0.0002, "measurable_rate": measurable}  # fmt: skip


def test_variants_are_compared_with_their_tasks_base_at_shared_images_only():
    base = [_row(f"length_B{s}", 512000, v) for s, v in (("", 0.003), ("_seed1", 0.004),
                                                          ("_seed2", 0.005))]  # fmt: skip
    rows = base + [
        _row("fresh_B", 512000, 0.006, arm="fresh"),
        _row("fresh_B", 2048000, 0.002, arm="fresh"),  # no base point there: not compared
        _row("length_B", 1024000, 0.0021),
        _row("length_B_wide", 1024000, 0.0031),  # one seed each: sampling only
        _row("length_C", 512000, 0.004, task="C"),  # C has no variant: nothing
    ]
    got = {(c["variant"], c["images"]): c for c in variants.compare(rows)}
    assert set(got) == {("fresh_B", 512000), ("length_B_wide", 1024000)}
    fresh = got["fresh_B", 512000]
    assert fresh["base_seeds"] == [0, 1, 2] and fresh["variant_seeds"] == [0]
    assert fresh["value"] == pytest.approx(0.006 - 0.004)
    assert fresh["pooled_seed_sd"] == pytest.approx(0.001) and fresh["df"] == 2
    half = stats.t.ppf(0.975, 2) * 0.001 * np.sqrt(1 + 1 / 3)
    assert fresh["ci"] == pytest.approx([0.002 - half, 0.002 + half]) and fresh["seed_level"]
    wide = got["length_B_wide", 1024000]
    assert wide["seed_level"] is False and wide["df"] is None
    se = np.hypot(0.0002 / 1.96, 0.0002 / 1.96)
    assert wide["ci"] == pytest.approx([0.001 - 1.96 * se, 0.001 + 1.96 * se], rel=1e-3)


def test_the_summary_writes_the_comparisons_and_their_figure(tmp_path):
    rows = [_row(f"length_B{s}", i, v * 1e5 / i) for s, v in (("", 0.003), ("_seed1", 0.0031))
            for i in (128000, 256000)]  # fmt: skip
    rows += [_row("length_B_narrow", i, 0.009 * 1e5 / i) for i in (128000, 256000)]
    rows += [_row("length_B_narrow", 64000, 0.02, measurable=0.5)]  # below the 80 % gate
    comparisons = variants.compare(rows)
    assert [c["images"] for c in comparisons] == [128000, 256000]
    assert all(c["ci"][0] > 0 for c in comparisons)  # 0.004 apart, seed sd < 0.0001
    path = figures.variants_figure(rows, comparisons, "B", tmp_path / "variants_B.png")
    assert path.exists() and path.stat().st_size > 10_000
    assert figures.variants_figure(rows[:4], [], "B", tmp_path / "none.png") is None  # one group
    out = tmp_path / "empty"
    summary.summarise(out, out)  # no runs: the file still says what it holds
    doc = json.loads((out / "variants.json").read_text())
    assert doc["comparisons"] == [] and doc["metric"] == "novel_resid_std"
