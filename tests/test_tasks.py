"""Tests of rulelib.tasks and rulelib.tasks.render: the four rule tasks of docs/paper.md section 2.

Geometry and ranges, dataset sizes and task A's intervals, the rule holding exactly on the truth,
the redraw rule, dependent_scale, determinism, exact rasterisation, and bad input.
"""

import math
import re

import numpy as np
import pytest

from rulelib import tasks
from rulelib.tasks import base, geometric, render

NAMES = ["A", "B", "C", "D"]
PX = 1 / 32


@pytest.fixture(scope="module")
def samples():
    return {name: tasks.get(name).sample(3000, seed=5) for name in NAMES}


def test_registry_names_and_unknown_task():
    assert tasks.names()[:4] == NAMES
    assert [tasks.get(n).name for n in NAMES] == NAMES
    with pytest.raises(ValueError, match=re.escape(str(tasks.names()))):
        tasks.get("Z")


@pytest.mark.parametrize("name, k, size, epochs", [("A", 1, 4000, 400), ("B", 1, 2000, 800),
                                                   ("C", math.sqrt(2), 2000, 1600),
                                                   ("D", 1.5, 2000, 1000)])  # fmt: skip
def test_task_constants_match_the_paper(name, k, size, epochs):
    t = tasks.get(name)
    assert (t.k, t.train_size, t.paper_epochs) == (k, size, epochs)


@pytest.mark.parametrize("name", NAMES)
def test_images_truth_shapes_and_the_rule_holds_exactly_on_the_truth(samples, name):
    task = tasks.get(name)
    images, truth = samples[name]
    assert images.shape == (3000, 32, 32, 3) and images.dtype == np.uint8
    for key in task.feature_names:
        assert truth[key].shape == (3000,) and truth[key].dtype == np.float64
    x, y = task.rule_xy(truth)
    np.testing.assert_allclose(y, task.k * x, rtol=1e-12, atol=1e-15)
    assert task.coarse_ok(truth).all()
    # every image has some ink on a white background
    assert (images.min((1, 2, 3)) < 200).all()
    assert np.median(images.reshape(len(images), -1, 3).min(-1), axis=1).min() == 255


def test_task_a_geometry_and_intervals():
    task = tasks.get("A")
    images, t = task.dataset()
    assert len(images) == 4000
    counts = np.bincount(t["interval"].astype(int), minlength=4)
    assert counts.tolist() == [1000, 1000, 1000, 1000]
    lo, hi = task.INTERVALS[t["interval"].astype(int)].T
    assert ((t["sun_x"] >= lo) & (t["sun_x"] <= hi)).all()
    assert ((t["h2"] >= 0.2) & (t["h2"] <= 0.4)).all()
    np.testing.assert_array_equal(t["h1"], t["h2"])  # the paper: sun at twice the pole height
    np.testing.assert_allclose(t["sun_y"], 0.1 + 2 * t["h2"])
    np.testing.assert_allclose(t["l2"], t["l1"])  # so the shadow is as long as l1
    assert (t["sun_side"] == -t["shadow_side"]).all()
    assert (t["l2"] >= PX).all()  # sub-pixel shadows were redrawn
    # balanced for other n: cyclic assignment
    _, t2 = task.sample(10, seed=0)
    assert np.bincount(t2["interval"].astype(int), minlength=4).tolist() == [3, 3, 2, 2]


def test_task_a_independent_sun_height():
    task = geometric.LightShadow(independent_sun_height=True)
    _, t = task.sample(2000, seed=1)
    assert np.corrcoef(t["h1"], t["h2"])[0, 1] < 0.1
    assert np.mean(np.abs(t["l2"] - t["l1"]) > 0.01) > 0.5
    np.testing.assert_allclose(t["l1"] * t["h2"], t["l2"] * t["h1"], rtol=1e-12)
    assert (t["l2"] <= 0.5).all() and (t["sun_y"] + 0.1 <= 1.0 + 1e-12).all()


def test_ranges_of_tasks_b_c_d(samples):
    _, b = samples["B"]
    assert ((b["l1"] >= 0) & (b["l1"] <= 0.3) & (b["h1"] >= 0.2) & (b["h1"] <= 0.6)).all()
    assert ((b["l2"] >= b["l1"] + 0.2) & (b["l2"] <= 0.8)).all()
    _, c = samples["C"]
    assert ((c["r1"] >= 0.05) & (c["r1"] <= 0.175)).all()
    gap = np.hypot(c["x1"] - c["x2"], c["y1"] - c["y2"]) - c["r1"] - c["r2"]
    assert (gap >= PX - 1e-12).all()  # not overlapping, a pixel of white between
    for i in "12":
        r = c["r" + i]
        assert ((c["x" + i] >= r) & (c["x" + i] <= 1 - r) & (c["y" + i] >= r)).all()
    _, d = samples["D"]
    assert ((d["l1"] >= 0.1) & (d["l1"] <= 0.28)).all()
    assert (d["y1"] >= d["y2"] + d["l2"] + PX - 1e-12).all()  # top square above the bottom one
    assert ((d["x1"] + d["l1"] <= 1) & (d["x2"] + d["l2"] <= 1) & (d["y1"] + d["l1"] <= 1)).all()


@pytest.mark.parametrize("name", NAMES)
def test_every_object_fully_covers_a_pixel_and_redraws_are_reported(name):
    task = tasks.get(name)
    params = task.scene(2000, seed=2)
    assert task.has_full_pixel(params).all()
    assert task.last_redraws == int(params["n_redraws"].sum())
    if name == "B":
        # the thin far rectangle: the paper's own detector missed ~40 % of training images
        assert task.last_redraws > 100
        assert (params["h2"] >= 2 * PX - 1e-12).all()  # centred on a pixel boundary: >= 2 px


@pytest.mark.parametrize("name", NAMES)
def test_determinism_for_a_seed(name):
    task = tasks.get(name)
    a, ta = task.sample(64, seed=7)
    b, tb = task.sample(64, seed=7)
    c, _ = task.sample(64, seed=8)
    np.testing.assert_array_equal(a, b)
    for key in ta:
        np.testing.assert_array_equal(ta[key], tb[key])
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("name", NAMES)
def test_dependent_scale_changes_the_rule_ratio_and_keeps_the_coarse_rule(name):
    task = tasks.get(name)
    rng = np.random.default_rng(0)
    scale = np.where(
        rng.random(2000) < 0.5, rng.uniform(0.3, 0.8, 2000), rng.uniform(1.25, 2, 2000)
    )
    images, t = task.sample(2000, seed=3, dependent_scale=scale)
    x, y = task.rule_xy(t)
    ratio = y / (task.k * x)
    free = t["clipped"] == 0
    # C, D: a factor below 1/k would break the coarse rule (object 2 larger), so it is clipped
    assert free.mean() > (0.3 if name in "CD" else 0.5)
    np.testing.assert_allclose(ratio[free], scale[free], rtol=1e-9)
    assert task.coarse_ok(t).all()
    assert task.has_full_pixel(task.scene(2000, seed=3, dependent_scale=scale)).all()
    # a scalar factor works too and equals the array form
    _, t1 = task.sample(50, seed=4, dependent_scale=1.5)
    _, t2 = task.sample(50, seed=4, dependent_scale=np.full(50, 1.5))
    np.testing.assert_array_equal(t1[task.dependent], t2[task.dependent])
    # the rule images of a contrastive set (scale 1) keep the rule exactly
    _, t3 = task.sample(50, seed=4, dependent_scale=np.ones(50))
    x3, y3 = task.rule_xy(t3)
    np.testing.assert_allclose(y3, task.k * x3, rtol=1e-12)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10", None])
def test_bad_n_raises(bad):
    with pytest.raises(ValueError, match="n must be a positive integer"):
        tasks.get("A").sample(bad, seed=0)


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan, np.inf])
def test_bad_dependent_scale_raises(bad):
    with pytest.raises(ValueError, match="dependent_scale"):
        tasks.get("C").sample(5, seed=0, dependent_scale=bad)


def test_register_needs_a_named_task():
    with pytest.raises(ValueError, match="RuleTask"):
        tasks.register(object())


def test_documented_user_task_example_runs():
    before = tasks.names()
    doc = tasks.__doc__
    code = doc[doc.index("    import numpy as np") : doc.index("The base class supplies")]
    code = "\n".join(line[4:] for line in code.splitlines())
    ns = {}
    try:
        exec(compile(code, "tasks-docstring-example", "exec"), ns)
        task = tasks.get("E")
        images, truth = ns["images"], ns["truth"]
        assert images.shape == (100, 32, 32, 3)
        x, y = task.rule_xy(truth)
        np.testing.assert_allclose(y, 2 * x)
        f, ok = task.measure(images)
        assert ok.all()
        np.testing.assert_allclose(f["h2"], truth["h2"], atol=0.1 / 32)
    finally:
        base._REGISTRY.pop("E", None)
    assert tasks.names() == before and "E" not in before


# ---- rasterisation -----------------------------------------------------------------------------


def test_rect_coverage_is_exact_area():
    rng = np.random.default_rng(0)
    x0, y0 = rng.uniform(-3, 30, 500), rng.uniform(-3, 30, 500)
    x1, y1 = x0 + rng.uniform(0.1, 12, 500), y0 + rng.uniform(0.1, 12, 500)
    cov = render.rect_coverage(x0, x1, y0, y1)
    inside = (np.clip(x1, 0, 32) - np.clip(x0, 0, 32)) * (np.clip(y1, 0, 32) - np.clip(y0, 0, 32))
    np.testing.assert_allclose(cov.sum((1, 2)), inside, atol=1e-9)
    # row 0 is the top: a rectangle at the bottom of the canvas inks the last rows
    bottom = render.rect_coverage(
        np.array([4.0]), np.array([8.0]), np.array([0.0]), np.array([2.0])
    )
    assert bottom[0, 30:, 4:8].min() == 1.0 and bottom[0, :30].max() == 0.0


def test_disk_coverage_matches_area_and_monte_carlo():
    rng = np.random.default_rng(1)
    n = 200
    cx, cy, r = rng.uniform(-2, 34, n), rng.uniform(-2, 34, n), rng.uniform(0.5, 9, n)
    cov = render.disk_coverage(cx, cy, r)
    inner = (cx - r >= 0) & (cx + r <= 32) & (cy - r >= 0) & (cy + r <= 32)
    np.testing.assert_allclose(cov.sum((1, 2))[inner], np.pi * r[inner] ** 2, rtol=1e-9)
    # Monte Carlo on one pixel row per disk (sampled uniformly inside each pixel)
    m = 4000
    u = rng.random((m, 2))
    for i in range(8):
        row = 31 - int(np.clip(np.floor(cy[i]), 0, 31))  # the image row through the centre
        ys = (31 - row) + u[:, 1]
        for col in range(32):
            xs = col + u[:, 0]
            mc = np.mean((xs - cx[i]) ** 2 + (ys - cy[i]) ** 2 <= r[i] ** 2)
            assert abs(cov[i, row, col] - mc) < 4 * math.sqrt(0.25 / m) + 1e-9


def test_composite_is_area_weighted_colour_for_touching_objects():
    # two rects sharing the pixel column [3, 4]: 0.4 + 0.6 of it
    red, blue = np.array([[1.0, 0, 0]]), np.array([[0, 0, 1.0]])
    one = np.ones(1)
    a = render.Rect(one * 0, one * 3.4, one * 0, one * 32, red)
    b = render.Rect(one * 3.4, one * 8, one * 0, one * 32, blue)
    img = render.composite([a, b], 1)
    np.testing.assert_allclose(img[0, 5, 3], 0.4 * red[0] + 0.6 * blue[0])


def test_colour_boxes():
    rng = np.random.default_rng(0)
    from matplotlib.colors import rgb_to_hsv

    for box, b in render.COLOR_BOXES.items():
        hsv = rgb_to_hsv(render.sample_colors(box, 2000, rng))
        s, v = hsv[:, 1], hsv[:, 2]
        assert (s >= b["s"][0] - 1e-9).all() and (s <= b["s"][1] + 1e-9).all()
        assert (v >= b["v"][0] - 1e-9).all() and (v <= b["v"][1] + 1e-9).all()
        if box != "grey":
            h = hsv[:, 0] * 360
            assert (h >= b["h"][0] - 1e-6).all() and (h <= b["h"][1] + 1e-6).all()
    with pytest.raises(ValueError, match="purple"):
        render.sample_colors("purple", 3, rng)


def test_closed_form_full_pixel_check_matches_the_coverage():
    rng = np.random.default_rng(3)
    n = 3000
    d = render.Disk(rng.uniform(-3, 35, n), rng.uniform(-3, 35, n), rng.uniform(0.3, 4.5, n), None)
    x0, y0 = rng.uniform(-2, 31, n), rng.uniform(-2, 31, n)
    r = render.Rect(x0, x0 + rng.uniform(0.5, 3, n), y0, y0 + rng.uniform(0.5, 3, n), None)
    for prim in (d, r):
        by_coverage = prim.coverage().reshape(n, -1).max(1) >= 1 - 1e-9
        np.testing.assert_array_equal(prim.has_full_pixel(), by_coverage)
        assert 0.05 < by_coverage.mean() < 0.95
