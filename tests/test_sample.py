"""Samplers: closed-form checks with oracle denoisers, DDIM/DDPM agreement, seeding, resumption."""

import json

import numpy as np
import pytest
import torch

from rulelib.diffusion.sample import (
    clip_eps,
    ddim_step,
    ddim_timesteps,
    ddpm_step,
    load_samples,
    sample,
)
from rulelib.diffusion.schedule import Schedule, images_to_tensor

S = Schedule()
M, SD = 0.1, 0.3  # the Gaussian "dataset": every pixel i.i.d. N(M, SD^2)


def gaussian_oracle(x, t):
    # Exact E[eps | x_t] for x_0 ~ N(M, SD^2): x_t ~ N(sqrt(ab) M, ab SD^2 + 1 - ab) and
    # eps is Gaussian-correlated with x_t: E[eps | x_t] = sqrt(1 - ab)(x_t - sqrt(ab) M) / Var x_t.
    ab = S.alpha_bars[t].view(-1, 1, 1, 1)
    return (1 - ab).sqrt() * (x - ab.sqrt() * M) / (ab * SD**2 + 1 - ab)


def single_image_oracle(x_star):
    def eps(x, t):
        a = S.sqrt_alpha_bars[t].view(-1, 1, 1, 1)
        s = S.sqrt_one_minus_alpha_bars[t].view(-1, 1, 1, 1)
        return (x - a * x_star) / s

    return eps


def test_ddpm_and_ddim_recover_a_single_training_image_exactly():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    eps = single_image_oracle(images_to_tensor(img))
    for method, steps in [("ddpm", None), ("ddim", 20)]:
        out = sample(None, S, 16, seed=1, method=method, steps=steps, eps_fn=eps, progress=False)
        assert out.shape == (16, 32, 32, 3) and out.dtype == np.uint8
        assert np.abs(out.astype(int) - img.astype(int)).max() <= 1, method


def test_ddpm_samples_the_gaussian_law_and_ddim_T_eta1_agrees():
    # 32 images x 3072 pixels: the standard error of the std estimate is about 0.0007.
    kw = dict(seed=0, eps_fn=gaussian_oracle, progress=False, batch_size=32)
    ddpm = images_to_tensor(sample(None, S, 32, method="ddpm", **kw))
    ddim = images_to_tensor(sample(None, S, 32, method="ddim", steps=S.T, eta=1.0, **kw))
    for x in (ddpm, ddim):
        assert abs(x.mean().item() - M) < 0.005
        assert abs(x.std().item() - SD) < 0.006


def test_ddim_T_steps_eta1_is_ddpm_with_posterior_variance_pathwise():
    # Song et al. section 4.1: eta = 1 on the full sequence is DDPM with sigma_t^2 = beta-tilde_t.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 8, 8, generator=g)
    y = x.clone()
    for t in range(S.T - 1, -1, -1):
        tt = torch.full((4,), t)
        z = torch.randn(x.shape, generator=g)
        x = ddpm_step(S, x, t, gaussian_oracle(x, tt), noise=z, variance="beta_tilde")
        y = ddim_step(S, y, t, t - 1, gaussian_oracle(y, tt), eta=1.0, noise=z)
    torch.testing.assert_close(x, y, atol=1e-4, rtol=0)


def test_ddpm_step_adds_no_noise_at_t0_and_beta_noise_before():
    x = torch.zeros(20_000)
    eps = torch.zeros(20_000)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(ddpm_step(S, x, 0, eps, g), x)
    std = ddpm_step(S, x, 500, eps, g).std().item()
    assert abs(std - float(S.betas_f64[500]) ** 0.5) < 0.01 * std + 1e-4


def test_ddim_timesteps():
    assert ddim_timesteps(1000, 1000) == list(range(999, -1, -1))
    ts = ddim_timesteps(1000, 50)
    assert len(ts) == 50 and ts[0] == 999 and ts[-1] == 0 and ts == sorted(ts, reverse=True)
    with pytest.raises(ValueError, match="DDIM steps"):
        ddim_timesteps(1000, 0)


class MicroEps(torch.nn.Module):
    """A two-layer conv denoiser with a time input: enough network for the sampler's batching,
    seeding and resumption tests, and fast (the U-Net presets are tested in test_diffusion)."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x, t):
        h = torch.nn.functional.silu(self.c1(x) * (1 + t.float().view(-1, 1, 1, 1) / 30))
        return self.c2(h)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return MicroEps().eval()


SHORT = Schedule(T=30)  # a short chain keeps the network tests fast


def test_same_seed_same_images_for_any_batch_size(tiny):
    kw = dict(seed=3, method="ddpm", progress=False)
    a = sample(tiny, SHORT, 40, batch_size=16, **kw)
    b = sample(tiny, SHORT, 40, batch_size=48, **kw)
    c = sample(tiny, SHORT, 40, batch_size=16, **kw)
    np.testing.assert_array_equal(a, c)  # bitwise on the same batch size
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert (a != b).mean() < 1e-3
    d = sample(tiny, SHORT, 40, batch_size=16, seed=4, method="ddpm", progress=False)
    assert (a != d).mean() > 0.5  # another seed, other images


class Interrupt(Exception):
    pass


def test_resumed_sampling_equals_uninterrupted(tiny, tmp_path):
    kw = dict(seed=5, method="ddim", steps=10, eta=0.5, batch_size=16, progress=False)
    full = sample(tiny, SHORT, 40, **kw)
    out = tmp_path / "samples.npz"
    calls = {"n": 0}

    def dying(x, t):  # dies in the middle of the second batch
        calls["n"] += 1
        if calls["n"] == 15:
            raise Interrupt
        return tiny(x, t)

    with pytest.raises(Interrupt):
        sample(tiny, SHORT, 40, eps_fn=dying, out_path=out, **kw)
    parts = tmp_path / "samples.parts"
    assert sorted(p.name for p in parts.glob("chunk_*.npy")) == ["chunk_000000.npy"]
    calls["n"] = 0

    def counting(x, t):
        calls["n"] += 1
        return tiny(x, t)

    resumed = sample(tiny, SHORT, 40, eps_fn=counting, out_path=out, **kw)
    assert calls["n"] == 20  # only the two unfinished chunks (one batch each) were sampled
    np.testing.assert_array_equal(resumed, full)
    assert out.exists() and not parts.exists()
    images, settings = load_samples(out)
    np.testing.assert_array_equal(images, full)
    assert settings["seed"] == 5 and settings["steps"] == 10
    # A finished file is returned as is, and never silently replaced by other settings.
    np.testing.assert_array_equal(sample(tiny, SHORT, 40, out_path=out, **kw), full)
    with pytest.raises(ValueError, match=r"different settings.*seed"):
        sample(tiny, SHORT, 40, out_path=out, **{**kw, "seed": 6})


def test_bad_sampler_input(tiny):
    with pytest.raises(ValueError, match="method"):
        sample(tiny, SHORT, 4, seed=0, method="euler", progress=False)
    with pytest.raises(ValueError, match="DDPM runs all T=30 steps"):
        sample(tiny, SHORT, 4, seed=0, method="ddpm", steps=10, progress=False)
    with pytest.raises(ValueError, match="batch_size must be at least noise_chunk=16"):
        sample(tiny, SHORT, 4, seed=0, batch_size=8, progress=False)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        sample(tiny, SHORT, 0, seed=0, progress=False)


def test_clip_eps_clamps_the_implied_clean_image_and_keeps_in_range_predictions():
    g = torch.Generator().manual_seed(0)
    t = 500
    ab = float(S.alpha_bars_f64[t])
    x0 = 3.0 * torch.randn((4, 3, 32, 32), generator=g)  # partly outside [-1, 1]
    eps = torch.randn((4, 3, 32, 32), generator=g)
    x_t = ab**0.5 * x0 + (1 - ab) ** 0.5 * eps
    eps_c = clip_eps(S, x_t, t, eps)
    x0_c = (x_t - (1 - ab) ** 0.5 * eps_c) / ab**0.5
    torch.testing.assert_close(x0_c, x0.clamp(-1, 1), atol=1e-4, rtol=0)
    inside = x0.abs() <= 1
    torch.testing.assert_close(eps_c[inside], eps[inside], atol=1e-4, rtol=0)


def test_more_samples_keep_the_first_draws_and_draw_only_the_rest(tiny, tmp_path):
    kw = dict(seed=5, method="ddim", steps=10, eta=1.0, batch_size=16, progress=False)
    full = sample(tiny, SHORT, 56, **kw)  # 3.5 chunks of 16
    out = tmp_path / "samples.npz"
    first = sample(tiny, SHORT, 40, out_path=out, **kw)  # 2.5 chunks: the half chunk is redrawn
    np.testing.assert_array_equal(first[:32], full[:32])
    calls = {"n": 0}

    def counting(x, t):
        calls["n"] += 1
        return tiny(x, t)

    more = sample(tiny, SHORT, 56, eps_fn=counting, out_path=out, **kw)
    assert calls["n"] == 20  # chunks 2 and 3 (two batches of one chunk, 10 steps each)
    np.testing.assert_array_equal(more, full)
    images, settings = load_samples(out)
    assert settings["n"] == 56 and np.array_equal(images, full)
    assert not out.with_name("samples.parts").exists()
    with pytest.raises(ValueError, match=r"different settings.*\['n'\]"):  # fewer: refused
        sample(tiny, SHORT, 24, out_path=out, **kw)
    with pytest.raises(ValueError, match=r"different settings.*eta"):  # more, but other draws
        sample(tiny, SHORT, 64, out_path=out, **{**kw, "eta": 0.5})


def test_clip_x0_is_recorded_and_resumable_output_is_never_mixed(tmp_path):
    eps = single_image_oracle(torch.full((1, 3, 32, 32), 0.5))
    kw = dict(seed=0, method="ddim", steps=5, eta=1.0, eps_fn=eps, progress=False)
    out = tmp_path / "s.npz"
    sample(None, S, 16, out_path=out, clip_x0=True, **kw)
    assert load_samples(out)[1]["clip_x0"] is True
    with pytest.raises(ValueError, match="clip_x0"):
        sample(None, S, 16, out_path=out, clip_x0=False, **kw)


def _partial(tiny, out, kw):
    """out as an interrupted run leaves it: a .parts folder with its settings and chunk 0 (16 of
    40 images); returns (the chunk file, the uninterrupted images)."""
    sample(tiny, SHORT, 40, out_path=out, **kw)
    images, settings = load_samples(out)
    parts = out.with_name(out.stem + ".parts")
    parts.mkdir()
    (parts / "settings.json").write_text(json.dumps(settings))
    np.save(parts / "chunk_000000.npy", images[:16])
    out.unlink()
    return parts / "chunk_000000.npy", images


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda f, im: f.write_bytes(b"garbage, not numpy"), "not a readable sample chunk"),
        (lambda f, im: f.write_bytes(f.read_bytes()[:300]), "not a readable sample chunk"),
        (lambda f, im: np.save(f, im[:8]), "chunk holds uint8 (8, 32, 32, 3), expected uint8 (16,"),
        (lambda f, im: np.save(f, im[:16, :16]), "chunk holds uint8 (16, 16, 32, 3), expected"),
        (lambda f, im: np.save(f, im[:16].astype(float)), "chunk holds float64 (16, 32, 32, 3)"),
        (lambda f, im: np.save(f, np.array([{"x": 1}])), "not a readable sample chunk"),  # pickle
    ],
)
def test_damaged_chunks_are_refused_by_name(tiny, tmp_path, damage, problem):
    """A truncated, garbage, short, wrong-shaped or wrong-dtype chunk is never scored: the
    resumed draw refuses it, naming the file; a sound chunk resumes to the uninterrupted images."""
    kw = dict(seed=5, method="ddim", steps=4, eta=0.5, batch_size=16, progress=False)
    out = tmp_path / "samples.npz"
    chunk, full = _partial(tiny, out, kw)
    np.testing.assert_array_equal(np.load(chunk), full[:16])
    damage(chunk, full)
    with pytest.raises(ValueError, match="delete it and run the same command") as e:
        sample(tiny, SHORT, 40, out_path=out, **kw)
    assert str(chunk) in str(e.value) and problem in str(e.value)
    assert not out.exists()
    np.save(chunk, full[:16])  # repaired: the run resumes to the uninterrupted result
    np.testing.assert_array_equal(sample(tiny, SHORT, 40, out_path=out, **kw), full)


def test_finished_samples_are_checked_against_their_recorded_count(tiny, tmp_path):
    kw = dict(seed=5, method="ddim", steps=4, eta=0.5, batch_size=16, progress=False)
    out = tmp_path / "samples.npz"
    images = sample(tiny, SHORT, 40, out_path=out, **kw)
    settings = load_samples(out)[1]
    short = tmp_path / "short.npz"
    np.savez(short, images=images[:30], meta=np.array(json.dumps(settings)))
    with pytest.raises(ValueError, match=r"short\.npz: the samples file holds uint8 \(30, 32"):
        load_samples(short)
    (tmp_path / "garbage.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ValueError, match=r"garbage\.npz: not a readable samples file"):
        load_samples(tmp_path / "garbage.npz")
