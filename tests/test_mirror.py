"""Task "mirror": procedural scenes measured back, the rule, contrastive data, Syn Mirror files."""

import numpy as np
import pytest
from test_loaders import write_syn_mirror  # tests/test_loaders.py: the file writers

from rulelib import metrics, tasks
from rulelib.metrics import categorical
from rulelib.tasks import degrade, mirror, render


@pytest.fixture(scope="module")
def scenes():
    task = tasks.get("mirror")
    images, truth = task.sample(300, seed=3)
    why = {}
    feats, ok = task.measure(images, why)
    return task, images, truth, feats, ok, why


def test_registered_and_shaped(scenes):
    task, images, truth, *_ = scenes
    assert "mirror" in tasks.names() and task.k == 1.0 and task.dependent == "h2"
    assert images.shape == (300, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(truth["h2"], truth["h1"])  # drawn by the rule


def test_measurement_recovers_the_scene_to_a_tenth_of_a_pixel(scenes):
    _, _, truth, f, ok, _ = scenes
    assert ok.mean() >= 0.99
    for feat, key in (("h1", "h1"), ("h2", "h2"), ("y1", "y0"), ("y2", "y0"), ("d1", "d"),
                      ("d2", "d"), ("w1", "w")):  # fmt: skip
        err_px = np.abs(f[feat][ok] - truth[key][ok]) * 32
        assert err_px.max() < 0.1, (feat, err_px.max())
    assert np.nanmax(f["dcolor"]) < 0.02  # same colour, read from full pixels


def test_rule_report_of_training_images_is_on_the_rule(scenes):
    task, _, _, f, ok, _ = scenes
    rep = metrics.rule_report(task, f, ok, n_boot=100)
    assert rep["conforming_pct"]["value"] >= 99 and rep["within_5pct"]["value"] == 100
    assert abs(rep["slope"]["value"] - 1) < 1e-3 and rep["coarse_rate"]["value"] == 1
    shares = categorical.reflection_report(f, ok, n_boot=100)
    assert min(shares[k]["value"] for k in ("height", "alignment", "position", "colour")) == 1


def test_contrastive_scale_changes_only_the_reflection_height():
    task = tasks.get("mirror")
    scale = np.where(np.arange(200) % 2, 0.5, 1.6)
    images, truth = task.sample(200, seed=4, dependent_scale=scale)
    f, ok = task.measure(images)
    assert ok.mean() > 0.95
    unclipped = ok & (truth["clipped"] == 0)
    ratio = f["h2"][unclipped] / f["h1"][unclipped]
    np.testing.assert_allclose(ratio, scale[unclipped], rtol=0.02)  # 0.5 / 1.6, not 1
    assert task.coarse_ok({k: v[ok] for k, v in f.items()}).all()  # bottoms stay aligned


def test_missing_reflection_is_not_measurable_with_a_reason(scenes):
    task, images, *_ = scenes
    broken = images[:5].copy()
    broken[:, :, 19:] = 255  # erase the reflection, keep the mirror strip
    why = {}
    f, ok = task.measure(broken, why)
    assert not ok.any() and np.isnan(f["h2"]).all()
    assert why["reflection: not found"].all()


# ---- images as generated samples look: degraded, and what is not a mirror scene ---------------

# Several seeds: each draws its own scenes, colour shifts, channel gains and offsets and noise, so
# the targets are not met on one draw only (benchmarks/measure.py prints more).
DEGRADED_SEEDS = [101, 202, 303]


@pytest.mark.parametrize("seed", DEGRADED_SEEDS)
def test_degraded_scenes_measurable_within_0_3_px_and_covered_by_the_se(seed):
    """The mild degradations (rulelib.tasks.degrade): >= 99 % measurable, >= 95 % of h1 and of
    h2 within 0.3 px of the rendered truth, the error within 2 standard errors for >= 90 %."""
    task = tasks.get("mirror")
    params = task.scene(2000, seed=seed)
    images = degrade.perturb_scene(task, params, seed + 1)
    f, ok = task.measure(images)
    assert ok.mean() >= 0.99, f"seed {seed}: measurable {ok.mean():.4f}"
    err = np.stack([np.abs(f[k] - params[k])[ok] * 32 for k in ("h1", "h2")], 1)
    assert (err <= 0.3).mean(0).min() >= 0.95, (err <= 0.3).mean(0)
    se = np.stack([f[f"se_{k}"][ok] * 32 for k in ("h1", "h2")], 1)
    assert (err <= 2 * se).mean(0).min() >= 0.90, (err <= 2 * se).mean(0)
    assert np.median(se) < 0.2  # informative: well under the tolerance


@pytest.mark.parametrize("kind, level", sorted(degrade.LEVELS.items()))
def test_each_degradation_alone(kind, level):
    task = tasks.get("mirror")
    images, truth = task.sample(1000, seed=31)
    levels = {key: 0.0 for key in degrade.LEVELS} | {kind: level}
    f, ok = task.measure(degrade.degrade(images, seed=32, **levels))
    assert ok.mean() >= 0.99, f"{kind}={level}: measurable {ok.mean():.4f}"
    err = np.stack([np.abs(f[k] - truth[k])[ok] * 32 for k in ("h1", "h2")], 1)
    assert (err <= 0.3).mean(0).min() >= 0.95


@pytest.mark.parametrize("degraded", [False, True])
def test_junk_is_rejected_with_a_reason(degraded):
    task = tasks.get("mirror")
    for kind, images in degrade.junk(task, 300, seed=3).items():
        if degraded:
            images = degrade.degrade(images, seed=4)
        why = {}
        f, ok = task.measure(images, why)
        assert 1 - ok.mean() >= 0.99, f"{kind}: {int(ok.sum())} of {len(ok)} measured"
        assert all(np.isnan(v[~ok]).all() for v in f.values()), kind
        assert np.any(list(why.values()), 0)[~ok].all(), f"{kind}: rejected without a reason"


def test_other_shapes_and_misplaced_or_covered_mirrors_are_rejected_by_name():
    task = tasks.get("mirror")
    params = task.scene(200, seed=5)
    prims = task.primitives(params)
    # object and reflection drawn as disks of the same area (the strip kept)
    disks = degrade.swap_shapes(prims[1:])
    why = {}
    assert not task.measure(render.render([prims[0], *disks], 200), why)[1].any()
    clear = disks[0].cx + disks[0].r <= 13  # (a larger disk reaches the strip: other reasons)
    assert clear.sum() >= 50
    assert (why["object: other shape"] | why["reflection: other shape"])[clear].mean() >= 0.95
    # a strip 1 px wide at the centre line, and one that stops 4 px short of top and bottom
    for label, change in (("mirror: not at the strip", dict(x0=15.5, x1=16.5)),
                          ("mirror: not full height", dict(y0=4.0, y1=28.0))):  # fmt: skip
        edited = [
            render.Rect(**{**vars(p), **{k: np.full(200, v) for k, v in change.items()}})
            if p.name == "mirror" else p for p in prims
        ]  # fmt: skip
        why = {}
        assert not task.measure(render.render(edited, 200), why)[1].any(), label
        assert why[label].all(), label
    # a yellow bar across the strip (something drawn over the mirror)
    covered = task.render(params).copy()
    covered[:, 10:14, 14:18] = (250, 210, 30)
    why = {}
    assert not task.measure(covered, why)[1].any()
    assert why["mirror: not uniform"].all()


# ---- Syn Mirror ------------------------------------------------------------------------------


def _scene(obj_rows, ref_rows, *, ref_label=1, colour=(200, 40, 40), ref_colour=(180, 36, 36)):
    """A 64x64 render: mirror (label 1, grey) at cols 36-60 rows 4-60, an object (label 2) at
    cols 8-20, its reflection inside the mirror at cols 44-52."""
    colors = np.full((64, 64, 3), 230, np.uint8)
    seg = np.zeros((64, 64), np.int64)
    colors[4:60, 36:60] = 120
    seg[4:60, 36:60] = 1
    colors[obj_rows[0] : obj_rows[1], 8:20] = colour
    seg[obj_rows[0] : obj_rows[1], 8:20] = 2
    if ref_rows is not None:
        colors[ref_rows[0] : ref_rows[1], 44:52] = ref_colour
        seg[ref_rows[0] : ref_rows[1], 44:52] = ref_label
    return colors, seg


def test_reflection_consistency_known_answers():
    c1, s1 = _scene((20, 44), (26, 42))  # reflection 16 rows for an object of 24, labelled mirror
    c2, s2 = _scene((20, 44), (20, 44), ref_label=2, ref_colour=(200, 40, 40))  # labelled object
    c3, s3 = _scene((20, 44), None)
    f, ok, why = mirror.reflection_consistency([c1, c2, c3], [s1, s2, s3])
    assert ok.tolist() == [True, True, False] and why["no reflection"].tolist() == [0, 0, 1]
    np.testing.assert_allclose(f["h1"][:2], 24 / 64)
    np.testing.assert_allclose(f["h2"][:2], [16 / 64, 24 / 64])
    np.testing.assert_allclose(f["ratio"][:2], [16 / 24, 1.0])
    np.testing.assert_allclose(f["y2"][:2] - f["y1"][:2], [2 / 64, 0.0])  # bottoms 44 vs 42
    np.testing.assert_allclose(f["dcolor"][:2], [np.linalg.norm([20, 4, 4]) / 255, 0.0], atol=1e-12)
    flags = mirror.consistency_flags({k: v[:2] for k, v in f.items()})
    assert flags["height"].tolist() == [False, True] and flags["colour"].tolist() == [True, True]


def test_task_trains_on_syn_mirror_files_and_measures_its_own_images(tmp_path):
    for i, rows in enumerate([(20, 44), (10, 50), (30, 40)]):
        write_syn_mirror(tmp_path / f"view_{i}.hdf5", *_scene(rows, rows))
    task = mirror.Mirror().use_files(tmp_path)
    images, truth = task.sample(3, seed=0)
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
    f, ok = task.measure(images)
    assert ok.all()
    np.testing.assert_allclose(f["ratio"], 1.0)
    np.testing.assert_allclose(f["h1"], truth["h1"])
    why = {}
    f2, ok2 = task.measure(np.full((2, 32, 32, 3), 255, np.uint8), why)
    assert not ok2.any() and why["no segmentation (not a Syn Mirror training image)"].all()
    with pytest.raises(ValueError, match="dependent_scale"):
        task.sample(3, seed=0, dependent_scale=0.5)
