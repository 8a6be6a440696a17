"""Closed-form denoisers (rulelib.analytic): each against an independent computation."""

import argparse
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rulelib import tasks
from rulelib.analytic import calibrate, command, draw
from rulelib.analytic import denoisers as dn
from rulelib.diffusion import sample as sampler
from rulelib.diffusion.schedule import Schedule
from rulelib.metrics import memorisation as mm
from rulelib.study import arms

SCHED = Schedule()


def _noisy(y, t, seed=0):
    """x_t of random training images at step t, and the schedule's sqrt(ab), 1 - ab."""
    g = torch.Generator().manual_seed(seed)
    ab = float(SCHED.alpha_bars_f64[t])
    i = torch.randint(0, len(y), (6,), generator=g)
    x = ab**0.5 * y[i] + (1 - ab) ** 0.5 * torch.randn(y[i].shape, generator=g)
    return x, ab**0.5, 1 - ab


def test_empirical_is_the_brute_force_posterior_mean():
    y = torch.rand(7, 3, 4, 4) * 2 - 1
    den = dn.EmpiricalDenoiser(y, SCHED)
    for t in (5, 300, 999):
        x, s, v = _noisy(y, t)
        xd, yd = x.double().flatten(1), y.double().flatten(1)
        logw = -((xd[:, None] - s * yd[None]) ** 2).sum(-1) / (2 * v)
        want = (torch.softmax(logw, 1) @ yd).reshape(x.shape)
        got = den.x0(x, torch.full((6,), t))
        torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
        eps = den(x, torch.full((6,), t))  # eps and x0 are tied by x_t = s x0 + sqrt(v) eps
        torch.testing.assert_close(s * got + v**0.5 * eps, x, atol=1e-4, rtol=1e-4)


def test_empirical_sampler_reproduces_training_images():
    train, _ = tasks.get("B").sample(8, 0)
    den = dn.EmpiricalDenoiser(train, SCHED)
    images = sampler.sample(None, SCHED, 32, seed=0, method="ddim", steps=50, eta=1.0,
                            eps_fn=den, clip_x0=True, progress=False)  # fmt: skip
    d, _ = mm.nearest(images, train, k=2)
    assert d[:, 0].max() < 0.1  # within rounding of a training image (fresh images: ~5)
    assert mm.copy_flags(d).mean() == 1.0


def test_gaussian_is_the_affine_dsm_optimum():
    # Monte Carlo: least-squares regression of x0 on (x_t, 1) over training images and noise is
    # the affine DSM optimum; it must match the closed form, not the one with the 1/(N-1)
    # covariance (the nearest alternative: 20 % larger S for N = 6)
    rng = np.random.default_rng(0)
    y = rng.uniform(-1, 1, (6, 3, 2, 2))
    t = 400
    ab = float(SCHED.alpha_bars_f64[t])
    m = 400_000
    i = rng.integers(0, 6, m)
    x0 = y.reshape(6, -1)[i]
    xt = ab**0.5 * x0 + (1 - ab) ** 0.5 * rng.standard_normal(x0.shape)
    design = np.hstack([xt, np.ones((m, 1))])
    coef, *_ = np.linalg.lstsq(design, x0, rcond=None)
    probe = rng.standard_normal((50, 12))
    want = np.hstack([probe, np.ones((50, 1))]) @ coef
    den = dn.GaussianDenoiser(torch.tensor(y, dtype=torch.float32), SCHED)
    got = den.x0(torch.tensor(probe, dtype=torch.float32).reshape(50, 3, 2, 2),
                 torch.full((50,), t)).reshape(50, -1).numpy()  # fmt: skip
    err = np.abs(got - want).max()
    yc = y.reshape(6, -1) - y.reshape(6, -1).mean(0)
    s_alt = yc.T @ yc / 5  # 1/(N-1)
    a_alt = ab**0.5 * s_alt @ np.linalg.inv(ab * s_alt + (1 - ab) * np.eye(12))
    alt = y.reshape(6, -1).mean(0) + (probe - ab**0.5 * y.reshape(6, -1).mean(0)) @ a_alt.T
    assert err < 0.02 < np.abs(alt - want).max()


@pytest.mark.parametrize("memory", [1e9, 0])  # the patch-table path and the box-filter path
def test_local_with_whole_image_patch_is_the_empirical_optimum(memory):
    y = torch.rand(10, 3, 8, 8) * 2 - 1
    emp = dn.EmpiricalDenoiser(y, SCHED)
    loc = dn.LocalDenoiser(y, SCHED, patch=15, memory=memory)  # 2 H - 1: every patch sees all
    small = dn.LocalDenoiser(y, SCHED, patch=3, memory=memory)
    for t in (20, 500):
        x, _, _ = _noisy(y, t, seed=t)
        tt = torch.full((6,), t)
        torch.testing.assert_close(loc.x0(x, tt), emp.x0(x, tt), atol=2e-5, rtol=1e-4)
    # a 3 x 3 patch is a different (local) denoiser: at high noise (where a small patch does not
    # single out its source image, as it does at t = 20) it must not agree with the global one
    assert (small.x0(x, tt) - emp.x0(x, tt)).abs().max() > 0.05


def test_local_paths_agree_and_match_a_loop():
    y = torch.rand(5, 3, 6, 6) * 2 - 1
    x, s, v = _noisy(y, 150)
    tt = torch.full((6,), 150)
    a = dn.LocalDenoiser(y, SCHED, patch=3, memory=1e9).x0(x, tt)
    b = dn.LocalDenoiser(y, SCHED, patch=3, memory=0).x0(x, tt)
    torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)
    # the box path's online softmax over chunks of 2 training images equals one chunk of all 5
    c = dn.LocalDenoiser(y, SCHED, patch=3, memory=0, box_chunk=2).x0(x, tt)
    torch.testing.assert_close(c, b, atol=2e-6, rtol=1e-5)
    # pixel (2, 4) by hand: distances over the 3 x 3 window to the same window of each image
    win = (slice(None), slice(None), slice(1, 4), slice(3, 6))
    d = ((x[0][None][win] - s * y[win]) ** 2).flatten(1).sum(1).double()
    want = (torch.softmax(-d / (2 * v), 0)[:, None] * y[:, :, 2, 4].double()).sum(0)
    torch.testing.assert_close(a[0, :, 2, 4].double(), want, atol=1e-5, rtol=1e-5)


def test_equivariant_matches_a_loop_over_all_patches():
    # two 4 x 4 images on a white background: many identical patches (merged with counts)
    y = torch.ones(2, 3, 4, 4)
    y[0, :, 1:3, 1:3] = -0.5
    y[1, 0, 0, 2] = 0.3
    x, s, v = _noisy(y, 100)
    den = dn.LocalDenoiser(y, SCHED, patch=3, equivariant=True, pool=10**6)
    got = den.x0(x, torch.full((6,), 100))
    ypad = F.pad(y, (1, 1, 1, 1), value=1.0)
    xpad = F.pad(x, (1, 1, 1, 1), value=s * 1.0)
    pool = [(ypad[n, :, i : i + 3, j : j + 3], y[n, :, i, j])
            for n in range(2) for i in range(4) for j in range(4)]  # fmt: skip
    q = xpad[3, :, 2:5, 1:4]  # query image 3, pixel (2, 1): padded rows 2-4, columns 1-3
    d = torch.stack([((q - s * p) ** 2).sum() for p, _ in pool]).double()
    w = torch.softmax(-d / (2 * v), 0)
    want = (w[:, None] * torch.stack([c for _, c in pool]).double()).sum(0)
    torch.testing.assert_close(got[3, :, 2, 1].double(), want, atol=1e-5, rtol=1e-5)


def test_box_sum_is_a_zero_padded_window_sum():
    d = torch.randn(2, 3, 9, 7)
    for p in (1, 3, 7):
        want = F.avg_pool2d(d, p, 1, p // 2, count_include_pad=True) * p * p
        torch.testing.assert_close(dn.box_sum(d, p), want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="odd"):
        dn.box_sum(d, 4)


def test_pixel_r2_and_bad_input():
    a = np.random.default_rng(0).integers(0, 255, (3, 4, 4, 3))
    np.testing.assert_allclose(dn.pixel_r2(a, a), 1.0)
    assert (dn.pixel_r2(255 - a, a) < 0).all()  # worse than predicting each image's mean
    with pytest.raises(ValueError, match="shape"):
        dn.pixel_r2(a[:2], a)
    y = torch.zeros(3, 3, 4, 4)
    with pytest.raises(ValueError, match="unknown denoiser"):
        dn.make("nearest", y)
    with pytest.raises(ValueError, match="odd"):
        dn.LocalDenoiser(y, patch=4).x0(y, torch.full((3,), 3))
    with pytest.raises(ValueError, match="one noise level"):
        dn.EmpiricalDenoiser(y)(y, torch.tensor([1, 2, 3]))


def test_draw_writes_metrics_with_copy_rate(tmp_path):
    e = draw.draw("B", "empirical", 16, tmp_path, steps=10, n_boot=50, progress=False,
                  command="test")  # fmt: skip
    tdir = tmp_path / "B" / "empirical"
    saved = json.loads((tdir / "metrics.json").read_text())
    assert saved["memorisation"]["copy_rate"]["value"] == 1.0  # the memorising end
    assert saved["generated_novel"] is None  # no novel image to score
    assert saved["memorisation"]["copy_ratio"] == pytest.approx(1 / 3)
    assert (tdir / "report.md").exists() and (tdir / "samples.png").exists()
    assert e["settings"]["steps"] == 10
    rows = draw.summarise(tmp_path)
    assert [r["images"] for r in rows] == ["all", "novel"]
    assert "copy_rate" in (tmp_path / "table.md").read_text()


def test_table_labels_tell_patch_settings_apart():
    def label(denoiser, **settings):
        return draw._label({"denoiser": denoiser, "settings": settings})

    assert label("empirical") == "empirical"
    assert label("local", patch=draw.DEFAULT_PATCH) == "local"
    assert label("local", patch=9) == "local-p9"
    assert label("equivariant", patch=3) == "equivariant-p3"
    assert label("local", patch={"ts": [1, 500], "patches": [3, 11]}) == "local-calibrated"


def test_agreement_with_samples_from_the_same_noise(tmp_path):
    first = tmp_path / "a"
    draw.draw("B", "empirical", 16, first, steps=10, n_boot=0, progress=False, command="t")
    ref = first / "B" / "empirical" / "samples.npz"
    e = draw.draw("B", "empirical", 16, tmp_path / "b", steps=10, n_boot=0, progress=False,
                  command="t", unet=ref)  # fmt: skip
    assert e["unet_agreement"]["r2_median"] == pytest.approx(1.0)  # same noise, same denoiser
    with pytest.raises(ValueError, match="other settings"):
        draw.draw("B", "empirical", 16, tmp_path / "c", steps=12, n_boot=0, progress=False,
                  command="t", unet=ref)  # fmt: skip


def test_command_line_refuses_bad_values():
    p = argparse.ArgumentParser()
    command.add_arguments(p)
    with pytest.raises(SystemExit):
        p.parse_args(["--denoiser", "nearest"])
    with pytest.raises(SystemExit) as e:  # refused when parsed, before anything is written
        p.parse_args(["--n", "0"])
    assert e.value.code == 2


class _MachineAsUnet(torch.nn.Module):
    """A local machine with a known patch schedule, called like a U-Net: eps(x_t, t)."""

    def __init__(self, machine):
        super().__init__()
        self.machine = machine

    def forward(self, x, t):
        return self.machine(x, t)


def test_calibration_recovers_the_patch_schedule_of_a_known_machine():
    task = tasks.get("B")
    train, fresh = task.sample(64, 3)[0], task.sample(6, 4)[0]
    truth = calibrate.PatchSchedule((900, 500, 100), (9, 5, 3))
    unet = _MachineAsUnet(dn.LocalDenoiser(train, SCHED, patch=truth))
    res = calibrate.calibrate(unet, train, fresh, SCHED, [900, 500, 100], patches=(3, 5, 9),
                              progress=False)  # fmt: skip
    assert res["schedule"] == truth
    for i, p in enumerate(truth.patches):  # the true size agrees exactly, the others do not
        assert res["r2"][p][i] == pytest.approx(1.0, abs=1e-9)
        assert max(res["r2"][q][i] for q in (3, 5, 9) if q != p) < 1 - 1e-4


def test_patch_schedule_takes_the_nearest_level_and_refuses_bad_sizes():
    s = calibrate.PatchSchedule((900, 500, 100), (9, 5, 3))
    assert [s(t) for t in (999, 701, 699, 300, 0)] == [9, 9, 5, 3, 3]  # 300: tie -> lower t
    assert calibrate.PatchSchedule.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError, match="odd"):
        calibrate.PatchSchedule((10,), (4,))
    with pytest.raises(ValueError, match="one patch per level"):
        calibrate.PatchSchedule((10, 5), (3,))
    assert calibrate.levels_of(list(range(99, -1, -1)), 3) == [99, 49, 0]  # steps 0, 50, 99


def test_draw_calibrated_writes_the_schedule(tmp_path, monkeypatch):
    monkeypatch.setattr(calibrate, "PATCHES", (3, 5))
    run = arms.size_run("B", 16, images=16)
    arms.train_run(tmp_path / "study", run, progress=False)
    ckpt = arms.run_dir(tmp_path / "study", run)
    e = draw.draw("B", "local", 8, tmp_path / "a", steps=5, n_boot=0, progress=False,
                  command="t", calibrate_to=ckpt, levels=3, n_calibrate=4)  # fmt: skip
    tdir = tmp_path / "a" / "B" / "local-calibrated"
    cal = json.loads((tdir / "calibration.json").read_text())
    assert e["settings"]["patch"] == cal["schedule"] and len(cal["schedule"]["ts"]) == 3
    assert set(cal["schedule"]["patches"]) <= {3, 5} and (tdir / "calibration.png").exists()
    assert draw.summarise(tmp_path / "a")[0]["class"] == "local-calibrated"
    with pytest.raises(ValueError, match="only the local machines"):
        draw.draw("B", "gaussian", 8, tmp_path / "b", calibrate_to=ckpt, progress=False)
