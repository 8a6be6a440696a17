"""A trained run exported to diffusers' layout loads in diffusers and samples what our sampler
draws from the same weights; the presets diffusers cannot express are refused with the reason."""

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from rulelib import cli, tasks
from rulelib.diffusion import checkpoint, diffusers_export
from rulelib.diffusion import sample as sampler
from rulelib.diffusion.config import TrainConfig
from rulelib.diffusion.schedule import Schedule
from rulelib.diffusion.train import train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "B"
    images, _ = tasks.get("B").sample(32, seed=0)
    cfg = TrainConfig(task="B", preset="tiny", epochs=2, batch_size=16, ckpt_every=1, seed=0,
                      ema_start=1, device="cpu", bf16=False, compile=False,
                      channels_last=False)  # fmt: skip
    train(cfg, images, out, progress=False)
    return out


def test_export_loads_in_diffusers_with_our_weights_and_schedule(run_dir, tmp_path):
    dest = diffusers_export.export_diffusers(run_dir, tmp_path / "pipe", weights="ema")
    ours, cfg, _ = checkpoint.load_model(run_dir, weights="ema")
    net = UNet2DModel.from_pretrained(dest, subfolder="unet")
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([0, 999])
    with torch.no_grad():
        assert torch.equal(net(x, t).sample, ours(x, t))  # the same network, the same weights
    sched = DDPMScheduler.from_pretrained(dest, subfolder="scheduler")
    mine = Schedule(cfg.T, cfg.beta_start, cfg.beta_end)
    assert torch.allclose(sched.alphas_cumprod.double(), mine.alpha_bars_f64, rtol=1e-6)
    assert sched.config.variance_type == "fixed_large"  # sigma_t^2 = beta_t, our DDPM's


def test_diffusers_ddpm_step_is_ours(run_dir, tmp_path):
    """One reverse step of the exported pipeline's scheduler equals rulelib's ddpm_step given the
    same eps and the same noise (Ho et al. eq. 11, sigma_t^2 = beta_t)."""
    dest = diffusers_export.export_diffusers(run_dir, tmp_path / "pipe", weights="raw")
    sched = DDPMScheduler.from_pretrained(dest, subfolder="scheduler")
    sched.set_timesteps(1000)
    mine = Schedule()
    x, eps = (torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(i))
              for i in range(2))  # fmt: skip
    for t in (500, 1, 0):
        # diffusers draws z with torch.randn from the generator it is given; ours from the same.
        # Its coefficients are float32 (1 - alpha-bar_1 = 2.2e-4 keeps ~3 digits): 1e-3 apart at
        # most, where the other variance (beta-tilde, "fixed_small") is 1e-2 apart at t = 1.
        theirs = sched.step(eps, t, x, generator=torch.Generator().manual_seed(7)).prev_sample
        ours = sampler.ddpm_step(mine, x, t, eps, torch.Generator().manual_seed(7))
        assert torch.allclose(theirs, ours, atol=1e-3), t
        if t == 1:
            other = sampler.ddpm_step(mine, x, t, eps, torch.Generator().manual_seed(7),
                                      variance="beta_tilde")  # fmt: skip
            assert not torch.allclose(theirs, other, atol=1e-3)


def test_ddpm_pipeline_samples_a_few_steps(run_dir, tmp_path):
    out = tmp_path / "pipe"
    argv = ["export-diffusers", "--task", "B", "--out", str(run_dir.parent), "--to", str(out)]
    assert cli.main(argv) == 0
    pipe = DDPMPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, num_inference_steps=4, generator=torch.manual_seed(0),
                  output_type="np").images  # fmt: skip
    assert images.shape == (2, 32, 32, 3) and np.isfinite(images).all()
    assert 0.0 <= images.min() and images.max() <= 1.0


def test_export_refuses_an_existing_folder_and_leaves_it(run_dir, tmp_path):
    dest = tmp_path / "taken"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep")
    with pytest.raises(ValueError, match="not empty"):
        diffusers_export.export_diffusers(run_dir, dest)
    assert [p.name for p in dest.iterdir()] == ["mine.txt"]


@pytest.mark.parametrize("preset, reason", [("paper", "max-pool"), ("dit", "DiT")])
def test_presets_diffusers_cannot_load_are_refused_with_the_reason(
    tmp_path, monkeypatch, preset, reason
):
    cfg = TrainConfig(task="B", preset=preset, epochs=1)
    monkeypatch.setattr(checkpoint, "load_model", lambda *a, **k: (None, cfg, 1))
    with pytest.raises(ValueError, match=reason):
        diffusers_export.export_diffusers(tmp_path / "run", tmp_path / "pipe")
    assert not (tmp_path / "pipe").exists()
