"""The noise schedule, forward process, loss and denoiser presets."""

import numpy as np
import pytest
import torch

from rulelib.diffusion import unet
from rulelib.diffusion.schedule import Schedule, images_to_tensor, tensor_to_images


def test_schedule_matches_diffusers_ddpm_scheduler():
    from diffusers import DDPMScheduler

    ref = DDPMScheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=2e-2, beta_schedule="linear"
    )
    s = Schedule()
    assert s.T == 1000
    torch.testing.assert_close(s.betas, ref.betas, rtol=1e-6, atol=1e-9)
    # diffusers accumulates the product in float32; ours is float64 rounded once.
    torch.testing.assert_close(s.alpha_bars, ref.alphas_cumprod, rtol=2e-5, atol=1e-7)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(8, 3, 32, 32, generator=g) * 2 - 1
    noise = torch.randn(8, 3, 32, 32, generator=g)
    t = torch.tensor([0, 1, 10, 100, 500, 900, 998, 999])
    torch.testing.assert_close(
        s.q_sample(x0, t, noise), ref.add_noise(x0, noise, t), atol=2e-5, rtol=0
    )


def test_q_sample_moments_match_eq4():
    # q(x_t | x_0) = N(sqrt(ab_t) x_0, (1 - ab_t) I): check mean and variance by Monte Carlo.
    s = Schedule()
    g = torch.Generator().manual_seed(1)
    x0 = torch.full((200_000, 1, 1, 1), 0.7)
    t = torch.full((200_000,), 300)
    xt = s.q_sample(x0, t, torch.randn(x0.shape, generator=g))
    ab = float(s.alpha_bars_f64[300])
    assert abs(xt.mean().item() - ab**0.5 * 0.7) < 0.01
    assert abs(xt.var().item() - (1 - ab)) < 0.01


def test_loss_is_zero_for_the_oracle_of_a_single_image():
    # For data = one image x*, eps is recoverable exactly:
    # eps = (x_t - sqrt(ab_t) x*) / sqrt(1 - ab_t), so L_simple (Ho et al. eq. 14) of that
    # oracle is 0 and of a zero predictor about 1.
    s = Schedule()
    x_star = torch.rand(1, 3, 32, 32) * 2 - 1

    def oracle(x, t):
        return (x - s.sqrt_alpha_bars[t].view(-1, 1, 1, 1) * x_star) / s.sqrt_one_minus_alpha_bars[
            t
        ].view(-1, 1, 1, 1)

    g = torch.Generator().manual_seed(0)
    x0 = x_star.expand(64, -1, -1, -1)
    assert s.loss(oracle, x0, g).item() < 1e-6
    zero = s.loss(lambda x, t: torch.zeros_like(x), x0, torch.Generator().manual_seed(0))
    assert abs(zero.item() - 1.0) < 0.02
    # Seeded: the same generator seed gives the same loss.
    m = unet.build("tiny")
    l1 = s.loss(m, x0, torch.Generator().manual_seed(3))
    l2 = s.loss(m, x0, torch.Generator().manual_seed(3))
    assert torch.equal(l1, l2)


def test_paper_preset_has_about_23M_parameters_and_runs():
    torch.manual_seed(0)
    m = unet.build("paper")
    assert abs(unet.n_params(m) - 23e6) / 23e6 < 0.10
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        y = m(x, torch.tensor([0, 999]))
    assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.parametrize("preset", ["small", "tiny"])
def test_small_presets_are_under_1M_and_time_dependent(preset):
    torch.manual_seed(0)
    m = unet.build(preset)
    assert unet.n_params(m) < 1_000_000
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        y0, y1 = m(x, torch.tensor([5, 5])), m(x, torch.tensor([800, 800]))
    assert y0.shape == x.shape
    assert (y0 - y1).abs().max() > 1e-4  # the time embedding reaches the output


def test_unknown_preset_lists_presets():
    with pytest.raises(ValueError, match="unknown preset 'huge'.*paper.*small"):
        unet.build("huge")


def test_bad_schedule_values():
    with pytest.raises(ValueError, match="T must be a positive integer"):
        Schedule(T=0)
    with pytest.raises(ValueError, match="beta_start"):
        Schedule(beta_start=0.1, beta_end=0.01)


def test_uint8_round_trip_is_exact():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    x = images_to_tensor(imgs)
    assert x.shape == (5, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(tensor_to_images(x), imgs)
    with pytest.raises(ValueError, match="uint8"):
        images_to_tensor(imgs.astype(np.float32))
