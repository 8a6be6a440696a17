"""Tests of rulelib.tasks.measure against its targets.

* clean rendered images, 5000 per task: 100 % measurable, every length within 0.1 px of the truth
  for at least 99 % of the images;
* degraded images (the mild set: per-channel gain 1 +- 0.05 and offset +- 0.03, 0.5 px blur, noise
  std 0.05 on 0-1, per-object colour shifts within the colour boxes): at least 99 % measurable,
  95 % of every feature within 0.3 px; each degradation alone at its stated level likewise;
* the per-image standard error covers the true error: within 2 SE for >= 90 % of degraded images;
* junk (blank, uniform noise, another task's shapes, an object removed or duplicated): >= 99 %
  rejected per kind, each with a reason, features NaN;
* bad input raises ValueError.
"""

import platform
import subprocess
import sys

import numpy as np
import pytest

from rulelib import tasks
from rulelib.tasks import degrade, estimate, explain, fit, measure, render, segment, uncertainty

NAMES = ["A", "B", "C", "D"]
W = render.SIZE


def length_errors_px(task, features, truth):
    """(n, n_features) absolute errors in pixels of the task's rule features."""
    return np.stack([np.abs(features[k] - truth[k]) * W for k in task.feature_names], 1)


@pytest.fixture(scope="module", params=NAMES)
def clean(request):
    task = tasks.get(request.param)
    images, truth = task.sample(5000, seed=11)
    features, ok = task.measure(images)
    return task, images, truth, features, ok


def test_clean_images_are_all_measurable_within_a_tenth_of_a_pixel(clean):
    task, _, truth, features, ok = clean
    assert ok.all(), f"task {task.name}: {int((~ok).sum())} of 5000 clean images not measurable"
    err = length_errors_px(task, features, truth)
    share = (err.max(1) <= 0.1).mean()
    assert share >= 0.99, f"task {task.name}: only {share:.4f} of images within 0.1 px"
    # and the typical error is far below the target (sub-pixel exact measurement)
    assert np.median(err) < 0.02


def test_clean_measurement_recovers_the_rule_and_the_coarse_rule(clean):
    task, _, truth, features, ok = clean
    x, y = task.rule_xy(features)
    ratio = y / (task.k * x)
    # 0.1 px on lengths of several pixels: the rule holds to a few per cent on nearly every image
    assert np.mean(np.abs(ratio - 1) < 0.05) >= 0.99
    assert task.coarse_ok(features).mean() == 1.0


# Several draws: each seed draws its own scenes, colour shifts, channel gains and offsets and
# noise, so the targets hold beyond one draw (benchmarks/measure.py --seed prints others).
DEGRADED_SEEDS = [21, 47, 83]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", DEGRADED_SEEDS)
def test_degraded_images_measurable_and_within_0_3_px(name, seed):
    task = tasks.get(name)
    params = task.scene(3000, seed=seed)
    truth = {k: v for k, v in params.items() if np.ndim(v) == 1}
    images = degrade.perturb_scene(task, params, seed=seed + 1)
    assert not np.array_equal(images, task.render(params))
    features, ok = task.measure(images)
    assert ok.mean() >= 0.99, f"task {name}, seed {seed}: measurable {ok.mean():.4f}"
    err = length_errors_px(task, features, truth)[ok]
    share = (err <= 0.3).mean(0)  # per feature
    assert share.min() >= 0.95, f"task {name}, seed {seed}: within 0.3 px {share.round(4)}"
    # the uncertainty: the true error inside +-2 standard errors for >= 90 % of images, and the
    # standard error is informative (well under the 0.3 px tolerance on most images)
    se = np.stack([features[f"se_{k}"] * W for k in task.feature_names], 1)[ok]
    covered = (err <= 2 * se).mean(0)
    assert covered.min() >= 0.90, f"task {name}: coverage of 2 SE {covered.round(3)}"
    assert np.median(features["se_px"][ok]) < 0.2
    assert np.isnan(features["se_px"][~ok]).all()


LEVELS = [("gain", 0.05), ("offset", 0.03), ("blur", 0.5), ("noise", 0.05)]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind, level", LEVELS)
def test_each_degradation_alone(name, kind, level):
    """One degradation at its stated level: >= 99 % measurable, 95 % within 0.3 px."""
    task = tasks.get(name)
    images, truth = task.sample(1000, seed=31)
    levels = {key: 0.0 for key, _ in LEVELS} | {kind: level}
    features, ok = task.measure(degrade.degrade(images, seed=32, **levels))
    assert ok.mean() >= 0.99, f"task {name}, {kind}={level}: measurable {ok.mean():.4f}"
    err = length_errors_px(task, features, truth)[ok]
    assert (err <= 0.3).mean(0).min() >= 0.95


def test_degradation_changes_colours_within_their_boxes():
    rng = np.random.default_rng(0)
    rgb = render.sample_colors("blue", 500, rng)
    shifted = degrade.shift_colors(rgb, "blue", rng)
    assert np.abs(shifted - rgb).max() > 0.02
    from matplotlib.colors import rgb_to_hsv

    hsv = rgb_to_hsv(shifted)
    assert (hsv[:, 0] * 360 >= 180 - 1e-6).all() and (hsv[:, 0] * 360 <= 300 + 1e-6).all()
    assert (hsv[:, 1] >= 0.4 - 1e-9).all() and (hsv[:, 2] >= 0.4 - 1e-9).all()


# ---- images that do not contain the scene ------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("degraded", [False, True])
def test_junk_is_rejected_with_a_reason(name, degraded):
    task = tasks.get(name)
    for kind, images in degrade.junk(task, 300, seed=3).items():
        if degraded:
            images = degrade.degrade(images, seed=4)
        reasons = {}
        features, ok = task.measure(images, reasons)
        assert 1 - ok.mean() >= 0.99, f"task {name}, {kind}: {int(ok.sum())} of {len(ok)} measured"
        assert all(np.isnan(v[~ok]).all() for v in features.values()), f"{name} {kind}: not NaN"
        why = np.any([v for v in reasons.values()], 0)
        assert why[~ok].all(), f"task {name}, {kind}: rejected without a reason"


def test_other_task_shapes_are_rejected_as_other_shape():
    """C's disks drawn as squares, D's squares as disks: the shape check names the reason."""
    for name, label in (("C", "disk2: other shape"), ("D", "bottom: other shape")):
        task = tasks.get(name)
        params = task.scene(200, seed=5)
        images = render.render(degrade.swap_shapes(task.primitives(params)), 200)
        reasons = {}
        _, ok = task.measure(images, reasons)
        assert not ok.any()
        assert reasons[label].mean() >= 0.95, f"{name}: {reasons[label].mean():.3f} by {label}"


# ---- input checking ----------------------------------------------------------------------------


def test_float_input_in_0_1_measures_like_uint8():
    task = tasks.get("D")
    images, truth = task.sample(50, seed=1)
    f8, ok8 = task.measure(images)
    ff, okf = task.measure(images.astype(np.float32) / 255.0)
    assert ok8.all() and okf.all()
    np.testing.assert_allclose(ff["l1"], f8["l1"], atol=1e-5)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((4, 32, 32), np.uint8), "shape"),
        (np.zeros((4, 16, 16, 3), np.uint8), "shape"),
        (np.zeros((0, 32, 32, 3), np.uint8), "shape"),
        (np.zeros((4, 32, 32, 3), np.int64), "dtype"),
        (np.zeros((4, 32, 32, 3), bool), "dtype"),
        (np.full((4, 32, 32, 3), 2.0), r"\[0, 1\]"),
        (np.full((4, 32, 32, 3), -0.5), r"\[0, 1\]"),
        (np.full((4, 32, 32, 3), np.nan), "NaN"),
    ],
)
def test_bad_images_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        tasks.get("A").measure(bad)


def test_unknown_shape_in_spec_raises():
    images, _ = tasks.get("C").sample(2, seed=0)
    with pytest.raises(ValueError, match="triangle"):
        measure.extract(images, [("disk1", "yellow", "triangle")])


# ---- the fitting primitives --------------------------------------------------------------------


def test_box_profile_is_exact_overlap_for_small_blur_and_conserves_mass():
    rng = np.random.default_rng(0)
    a = rng.uniform(2, 10, 200)
    b = a + rng.uniform(0.5, 12, 200)
    # blurring by sigma changes a pixel's value by at most sigma * phi(0) = 0.4 sigma
    val, *_ = measure.box_profile(a, b, np.full(200, 1e-4))
    np.testing.assert_allclose(val, render.interval_overlap(a, b), atol=4e-5)
    blurred, *_ = measure.box_profile(a, b, np.full(200, 0.7))
    np.testing.assert_allclose(blurred.sum(1), b - a, atol=1e-6)  # far from the canvas edges


def test_disk_profiles_are_the_row_and_column_sums_of_the_coverage():
    rng = np.random.default_rng(1)
    cx, cy, r = rng.uniform(-2, 34, 100), rng.uniform(-2, 34, 100), rng.uniform(1, 9, 100)
    cov = render.disk_coverage(cx, cy, r)[:, ::-1, :]  # y up
    px, qy = measure.disk_profiles(cx, cy, r)
    np.testing.assert_allclose(px, cov.sum(1), atol=1e-9)
    np.testing.assert_allclose(qy, cov.sum(2), atol=1e-9)


def test_disk_fit_recovers_a_disk_cut_by_the_canvas():
    # task A's sun near x = 0: half of it outside the image
    n = 50
    rng = np.random.default_rng(2)
    cx, cy, r = rng.uniform(-1.5, 2.0, n), rng.uniform(8, 24, n), rng.uniform(2.5, 4.0, n)
    cov = render.disk_coverage(cx, cy, r)[:, ::-1, :]
    fit = measure.fit_disk(cov.sum(1), cov.sum(2))
    np.testing.assert_allclose(fit["cx"], cx, atol=1e-3)
    np.testing.assert_allclose(fit["r"], r, atol=1e-3)
    # the centroid of the visible part would be biased by up to a pixel or more
    centroid = (cov.sum(1) * (np.arange(W) + 0.5)).sum(1) / cov.sum((1, 2))
    assert np.abs(centroid - cx).max() > 0.5


# ---- the fast paths give the numbers of the direct computations ------------------------------


def test_uint8_middle_values_are_numpy_order_statistics():
    rng = np.random.default_rng(4)
    v = rng.integers(0, 256, (300, 342), dtype=np.uint8)
    v[:100, :200] = 255  # over half white: the fast path
    v[100:150, :171] = 255  # exactly half white: not the fast path
    v[150:200] = rng.integers(250, 256, (50, 342), dtype=np.uint8)  # near white, ties
    lo, hi = segment._u8_middle(v, 255)
    srt = np.sort(v, axis=1)
    np.testing.assert_array_equal(lo, srt[:, 170])
    np.testing.assert_array_equal(hi, srt[:, 171])


@pytest.mark.parametrize("degraded", [False, True])
def test_background_from_uint8_matches_the_float_path(degraded):
    """The histogram medians and the per-plane tables of uint8 input (clean: mostly white,
    degraded: noisy planes corrected by table lookup) give the float path's numbers."""
    task = tasks.get("A")
    images, _ = task.sample(300, seed=6)
    if degraded:
        images = degrade.degrade(images, seed=7)
    ink, u8 = segment.ink_planes(images)
    assert u8 is not None
    fast = segment.background(ink.copy(), u8)
    slow = segment.background(ink.copy())
    for a, b in zip(fast, slow):
        np.testing.assert_allclose(a, b, atol=2e-6)
    # the cases differ: noise std 0.05 found in degraded images, none in clean renders
    assert (fast[2] > 0.02).mean() > 0.9 if degraded else (fast[2] < 0.01).mean() > 0.9


def test_fast_disk_profiles_and_jacobian_match_the_corner_areas():
    rng = np.random.default_rng(7)
    cx, cy, r = rng.uniform(-2, 34, 400), rng.uniform(-2, 34, 400), rng.uniform(0.3, 12, 400)
    px, qy, J = fit.disk_profiles(cx, cy, r, grad=True)
    ref, J_ref = fit._disk_profiles_general(cx, cy, r, W, True)
    inside = (cx - r >= 0) & (cx + r <= W) & (cy - r >= 0) & (cy + r <= W)
    assert 0.2 < inside.mean() < 0.8  # both paths exercised
    np.testing.assert_allclose(np.concatenate([px, qy], 1), ref, atol=1e-9)
    np.testing.assert_allclose(J, J_ref, atol=1e-9)


def test_psi_evaluated_near_the_edges_only_matches_the_full_evaluation():
    from scipy.special import ndtr

    rng = np.random.default_rng(8)
    for scale in (3.0, 30.0):  # mostly near (full evaluation) / mostly far (masked)
        t = rng.normal(0, scale, (200, 33))
        psi, cdf, pdf = fit._psi(t)
        ref_cdf, ref_pdf = ndtr(t), np.exp(-0.5 * t * t) / np.sqrt(2 * np.pi)
        np.testing.assert_allclose(cdf, ref_cdf, rtol=0, atol=1e-15)
        np.testing.assert_allclose(pdf, ref_pdf, rtol=0, atol=1e-15)
        np.testing.assert_allclose(psi, t * ref_cdf + ref_pdf, rtol=1e-15, atol=1e-15)


def test_dilate_is_a_square_maximum_filter():
    from scipy import ndimage

    # (shifts of the flat pixels: none may wrap from one row's end to the next row, nor image)
    for shape in ((50, W, W), (20, 5, 9)):
        mask = np.random.default_rng(9).random(shape) < 0.03
        for it in (1, 2, 3):
            ref = ndimage.maximum_filter(mask.view(np.uint8), size=(1, 2 * it + 1, 2 * it + 1))
            np.testing.assert_array_equal(segment.dilate(mask, it), ref > 0)


def test_blocks_of_any_size_give_the_same_answers(monkeypatch):
    task = tasks.get("B")
    images = degrade.perturb_scene(task, task.scene(300, seed=12), seed=13)
    f1, ok1 = task.measure(images)
    monkeypatch.setattr(measure, "CHUNK", 64)
    f2, ok2 = task.measure(images)
    np.testing.assert_array_equal(ok1, ok2)
    for k in f1:
        np.testing.assert_array_equal(f1[k], f2[k])


def _rect_profiles(n, seed, sigma, noise):
    """Column / row profiles (y up) of random rectangles of depth 1.1, blurred and noisy."""
    rng = np.random.default_rng(seed)
    x0, y0 = rng.uniform(3, 12, n), rng.uniform(3, 12, n)
    x1, y1 = x0 + rng.uniform(1.5, 12, n), y0 + rng.uniform(1.5, 12, n)
    ox = fit.box_profile(x0, x1, np.full(n, sigma))[0]
    oy = fit.box_profile(y0, y1, np.full(n, sigma))[0]
    P = 1.1 * oy.sum(1)[:, None] * ox + noise * rng.normal(size=(n, W))
    Q = 1.1 * ox.sum(1)[:, None] * oy + noise * rng.normal(size=(n, W))
    return P, Q, np.stack([x0, x1, y0, y1], 1)


def _count_evaluations(monkeypatch):
    """Count the images passed through fit._settled (one per image and model evaluation)."""
    got, settled = [0], fit._settled

    def counted(*args):
        out = settled(*args)
        got[0] += len(out)
        return out

    monkeypatch.setattr(fit, "_settled", counted)
    return got


def test_sharp_boxes_start_sharp_and_stop_after_one_step_at_the_full_fits_answer(monkeypatch):
    P, Q, truth = _rect_profiles(300, 14, sigma=1e-4, noise=0.0)
    np.testing.assert_array_equal(estimate.sigma_start(P, Q), estimate.SIGMA_MIN)
    # blurred (and noisy) boxes start near their blur, from the profiles' second moments
    Pb, Qb, _ = _rect_profiles(300, 14, sigma=0.4, noise=0.02)
    assert (np.abs(estimate.sigma_start(Pb, Qb) - 0.4) < 0.1).mean() > 0.9
    evals = _count_evaluations(monkeypatch)
    fast = fit.fit_rect(P, Q)
    assert evals[0] == len(P)  # one model evaluation per image
    monkeypatch.setattr(fit, "FAST_STEP", -1.0)  # the one-step stop off: iterate to STEP_TOL
    full = fit.fit_rect(P, Q)
    assert evals[0] > 1.5 * len(P)
    # the one-step answer: within 0.02 px of the iterated one (edges on a pixel boundary, where
    # the sharp model has a kink, converge slower), within 0.01 px of the truth for 99 %
    for i, k in enumerate(("x0", "x1", "y0", "y1")):
        np.testing.assert_allclose(fast[k], full[k], atol=0.02)
        assert np.quantile(np.abs(fast[k] - truth[:, i]), 0.99) < 0.01


def test_disk_fit_from_the_moments_stops_after_one_step(monkeypatch):
    rng = np.random.default_rng(15)
    cx, cy, r = rng.uniform(8, 24, 300), rng.uniform(8, 24, 300), rng.uniform(1.5, 7, 300)
    px, qy = fit.disk_profiles(cx, cy, r)
    evals = _count_evaluations(monkeypatch)
    got = fit.fit_disk(1.03 * px, 1.03 * qy)  # depth 1.03: the area alone overstates r
    assert evals[0] < 1.1 * len(px)
    np.testing.assert_allclose(got["r"], r, atol=1e-3)
    np.testing.assert_allclose(got["m"], 1.03, atol=1e-3)


@pytest.mark.parametrize("shape", ["rect", "disk"])
def test_covariance_from_the_fits_last_jacobian_matches_the_direct_one(shape):
    P, Q, _ = _rect_profiles(300, 16, sigma=0.4, noise=0.02)
    if shape == "disk":
        rng = np.random.default_rng(16)
        cx, cy, r = rng.uniform(8, 24, 300), rng.uniform(8, 24, 300), rng.uniform(1.5, 7, 300)
        P, Q = fit.disk_profiles(cx, cy, r)
        P, Q = P + 0.02 * rng.normal(size=P.shape), Q + 0.02 * rng.normal(size=Q.shape)
    state = {}
    if shape == "rect":
        f = fit.fit_rect(P, Q, state=state)
        th = np.stack([f[k] for k in ("x0", "x1", "y0", "y1", "m", "sigma")], 1)[:, None]
        reused, direct = (uncertainty.rect_covariance(P, Q, th, state=s) for s in (state, None))
    else:
        f = fit.fit_disk(P, Q, state=state)
        reused, direct = (uncertainty.disk_covariance(P, Q, f, state=s) for s in (state, None))
    sd = [np.sqrt(np.einsum("npp->np", c[0])[:, :4]) for c in (reused, direct)]
    # the Jacobian one step (< 1e-3 px) from the optimum: the same standard errors, to 0.5 %
    # in the median and 5 % for 99 % of them
    rel = np.abs(sd[0] / sd[1] - 1)
    assert np.median(rel) < 0.005 and np.quantile(rel, 0.99) < 0.05 and rel.max() < 0.15
    np.testing.assert_allclose(reused[1], direct[1], rtol=0.03)  # the residual's RMS
    assert np.median(sd[1]) > 0.002  # noisy enough for the comparison to mean something


def test_blur_at_its_floor_is_held_fixed_in_the_covariance():
    P, Q, _ = _rect_profiles(200, 17, sigma=1e-4, noise=0.0)
    P = P + 0.004 * np.random.default_rng(17).normal(size=P.shape)  # quantisation-like
    f = fit.fit_rect(P, Q)
    th = np.stack([f[k] for k in ("x0", "x1", "y0", "y1", "m", "sigma")], 1)[:, None]
    floor = f["sigma"] <= estimate.SIGMA_MIN * (1 + 1e-9)
    assert floor.mean() > 0.5
    free, _ = uncertainty.rect_covariance(P, Q, th)
    fixed, _ = uncertainty.rect_covariance(P, Q, th, fix_sigma=True)
    # the same but for the degrees of freedom of s^2 (R - 6 against R - 5 profile elements)
    np.testing.assert_allclose(free[floor], fixed[floor], rtol=0.1, atol=1e-15)
    assert np.sqrt(free[floor][:, [0, 1, 2, 3], [0, 1, 2, 3]]).max() < 0.05


def test_explained_by_separable_rectangles_is_the_full_models():
    rng = np.random.default_rng(18)
    n = 300
    alpha = rng.random((n, W, W)).astype(np.float32)
    rects = [
        [rng.uniform(0, 10, n), rng.uniform(11, 30, n), rng.uniform(0, 10, n),
         rng.uniform(11, 30, n), rng.uniform(0.5, 2, n)]
        for _ in range(2)
    ]  # fmt: skip
    for k in (1, 2):
        model = sum(r[4][:, None, None] * render.rect_coverage(*r[:4]) for r in rects[:k])
        np.testing.assert_allclose(
            explain.explained_rects(alpha, rects[:k]), explain.explained(alpha, model), atol=1e-12
        )


def test_other_shape_fit_stopped_on_its_residual_explains_as_much(monkeypatch):
    # a disk fitted to blurred noisy rectangles (the other-shape check of measure): stopped once
    # a small step lowers the residual by < ALT_COST_TOL, it leaves the same residual (median
    # within 0.5 %, 99 % within 5 %; the ALT_ITERS cap itself leaves up to 5 % at the 99th
    # percentile against a converged fit) as when iterated to its 1e-3 px step, in fewer steps
    P, Q, _ = _rect_profiles(300, 19, sigma=0.4, noise=0.02)
    evals = _count_evaluations(monkeypatch)
    quick = fit.fit_disk(P, Q, iters=measure.ALT_ITERS, cost_tol=measure.ALT_COST_TOL)
    n_quick, evals[0] = evals[0], 0
    slow = fit.fit_disk(P, Q, iters=measure.ALT_ITERS)
    assert n_quick < 0.8 * evals[0]
    unexplained = []
    for f in (quick, slow):
        px, qy = fit.disk_profiles(f["cx"], f["cy"], f["r"])
        model = f["m"][:, None] * np.concatenate([px, qy], 1)
        unexplained.append(((model - np.concatenate([P, Q], 1)) ** 2).sum(1))
    rel = unexplained[0] / unexplained[1] - 1
    assert np.median(np.abs(rel)) < 0.005 and np.quantile(rel, 0.99) < 0.05 and rel.max() < 0.15


def test_disk_windows_are_the_renderers_coverage_and_explain_as_much():
    rng = np.random.default_rng(20)
    n = 300
    cx, cy, r = rng.uniform(-2, 34, n), rng.uniform(-2, 34, n), rng.uniform(0.5, 12, n)
    ref = render.disk_coverage(cx, cy, r)
    canvas = np.zeros((n, W, W))
    for idx, win, rows, cols in explain.disk_window_groups(cx, cy, r):
        canvas[idx[:, None, None], rows[:, :, None], cols[:, None, :]] += win
    np.testing.assert_allclose(canvas, ref, rtol=0, atol=1e-12)  # every pixel, once
    alpha = (rng.random((n, W, W)) * ref + 0.1 * rng.random((n, W, W))).astype(np.float32)
    m = rng.uniform(0.5, 2, n)
    np.testing.assert_allclose(
        explain.explained_disks(alpha, cx, cy, r, m),
        explain.explained(alpha, m[:, None, None] * ref),
        atol=1e-12,
    )


@pytest.mark.parametrize("kind", ["clean", "degraded", "noisy"])
def test_window_mean_from_uint8_values_is_the_float_computation(kind):
    """The background's window mean from the pixel values' interval (two uint8 comparisons per
    pixel) gives the float test's numbers exactly, for windows that hold every value, some, none."""
    images, _ = tasks.get("A").sample(200, seed=21)
    if kind != "clean":
        images = degrade.degrade(images, seed=22, noise=0.05 if kind == "degraded" else 0.12)
    ink, u8 = segment.ink_planes(images)
    rng = np.random.default_rng(23)
    med = np.median(ink.reshape(3, len(images), -1), axis=2).astype(np.float32)
    for win in (np.full(len(images), 0.15), rng.uniform(0.0, 0.4, len(images)), np.zeros(200)):
        win = win.astype(np.float32)
        fast = segment._window_mean_u8(ink, u8, med, win)
        slow = segment._window_mean(ink, med, win)
        for a, b in zip(fast, slow):
            np.testing.assert_array_equal(a, b)
    assert (fast[0] == 0).all() and (slow[1] == 0).all()  # the empty windows: nothing inside


@pytest.mark.parametrize("kind", ["clean", "degraded"])
def test_per_plane_tables_correct_the_ink_as_subtraction_and_unclip(kind):
    """``segment._correct_u8`` (tables on the planes that change: few in clean renders, most in
    degraded images) gives exactly the subtraction of the level and ``_unclip``'s correction."""
    images, _ = tasks.get("A").sample(200, seed=24)
    if kind == "degraded":
        images = degrade.degrade(images, seed=25)
    ink, u8 = segment.ink_planes(images)
    rng = np.random.default_rng(26)
    # clean: most planes at white with a level below the noise floor (unchanged), a few not
    level = rng.uniform(0.0, 0.002 if kind == "clean" else 0.03, (3, len(images)))
    clipped = rng.random((3, len(images))) < (0.95 if kind == "clean" else 0.8)
    lev = np.where(clipped, 0.0, level).astype(np.float32)
    bg = np.where(clipped, level, 0.0)
    sel, sn = segment._noisy_planes(bg)
    changed = np.union1d(np.flatnonzero(lev.ravel()), sel)
    assert 0 < len(changed) and (len(changed) > lev.size // 2) == (kind == "degraded")
    fast = segment._correct_u8(ink.copy(), u8, lev, sel, sn)
    slow = ink.reshape(3, len(images), -1) - lev[:, :, None]
    slow = segment._unclip(slow.reshape(ink.shape), bg)
    np.testing.assert_array_equal(fast, slow)


def _copying_keep_state(state, n, active, settled, J, model):
    """The reference of ``fit._keep_state``: every settled image's rows copied into new arrays."""
    for key, value in (("J", J), ("model", model)):
        state.setdefault(key, np.full((n,) + value.shape[1:], np.nan))
        state[key][active[settled]] = value[settled]


@pytest.mark.parametrize("shape", ["rect", "disk"])
def test_fit_state_taken_from_the_first_evaluation_is_the_row_by_row_copy(shape, monkeypatch):
    """Sharp and noisy profiles together (some fits stop after one step, some iterate): the
    state whose first arrays are taken without a copy holds each image's last store."""
    P, Q, _ = _rect_profiles(200, 28, sigma=1e-4, noise=0.0)
    Pn, Qn, _ = _rect_profiles(200, 29, sigma=0.4, noise=0.02)
    P, Q = np.concatenate([P, Pn]), np.concatenate([Q, Qn])
    run = fit.fit_rect if shape == "rect" else fit.fit_disk
    evals = _count_evaluations(monkeypatch)
    fast = {}
    run(P, Q, state=fast)
    assert len(P) < evals[0] < 8 * len(P)  # some images settled first, others iterated
    monkeypatch.setattr(fit, "_keep_state", _copying_keep_state)
    ref = {}
    run(P, Q, state=ref)
    for key in ("J", "model"):
        np.testing.assert_array_equal(fast[key], ref[key])


_FAULTS = """
import resource, sys
import numpy as np
from rulelib import allocator, tasks
if sys.argv[2] == "off":
    allocator._warmed = True  # as if already warmed: glibc keeps its start-up thresholds
images = np.load(sys.argv[1])  # loaded, not rendered: no large array freed before measuring
task = tasks.get("A")
task.measure(images)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
task.measure(images)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc",
    reason="glibc's dynamic mmap threshold",
)
def test_warmed_allocator_keeps_the_blocks_memory(tmp_path):
    """In a fresh process, the second measurement of 1024 images faults no pages in again; with
    the warm-up skipped, every block faults its temporaries in again (~10 faults per image on
    the 2-core EPYC; where it does not, the test cannot tell and is skipped)."""
    path = tmp_path / "images.npy"
    np.save(path, tasks.get("A").sample(1024, seed=3)[0])
    faults = {}
    for mode in ("on", "off"):
        out = subprocess.run(
            [sys.executable, "-c", _FAULTS, str(path), mode], capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        faults[mode] = int(out.stdout.split()[-1]) / 1024
    assert faults["on"] < 0.5, faults
    if faults["off"] < 3:  # e.g. transparent huge pages for every mapping: nothing to prevent
        pytest.skip(f"no re-faulting here even without the warm-up: {faults}")
