"""The DDPM forward process and its training loss (Ho, Jain & Abbeel 2020, "Denoising Diffusion
Probabilistic Models"; equation numbers below are theirs).

Paper settings (docs/paper.md section 4): T = 1000 steps, beta linear from 1e-4 to 2e-2, epsilon
prediction, MSE loss, t uniform. Time indices run 0 .. T-1 as in diffusers' `DDPMScheduler`: index t
here is step t + 1 of Ho et al., so `alpha_bars[0] = 1 - beta_1` and index 0 is the last reverse
step, the one that adds no noise.

The schedule is computed in float64 (cumulative products of 1000 factors lose about 1e-5 relative
accuracy in float32) and kept in float32 for the network-side arithmetic (`q_sample`, the loss)
and in float64 for the samplers' scalar coefficients.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


class Schedule:
    """Linear beta schedule and the quantities derived from it.

    Attributes (float32 tensors of length T on `device`): `betas` (beta_t), `alphas`
    (alpha_t = 1 - beta_t), `alpha_bars` (alpha-bar_t = prod_{s <= t} alpha_s), `sqrt_alpha_bars`,
    `sqrt_one_minus_alpha_bars`. The float64 copies `*_f64` live on the CPU for the samplers.
    """

    def __init__(
        self,
        T: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 2e-2,
        device: str | torch.device = "cpu",
    ):
        if not isinstance(T, int) or T < 1:
            raise ValueError(f"T must be a positive integer number of steps, got {T!r}")
        if not 0.0 < beta_start <= beta_end < 1.0:
            raise ValueError(
                f"need 0 < beta_start <= beta_end < 1, got beta_start={beta_start}, "
                f"beta_end={beta_end}"
            )
        self.T, self.beta_start, self.beta_end = T, float(beta_start), float(beta_end)
        # Ho et al. section 4: beta_t linear from beta_1 = 1e-4 to beta_T = 0.02.
        self.betas_f64 = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
        self.alphas_f64 = 1.0 - self.betas_f64
        # alpha-bar_t = prod_{s=1}^t alpha_s (text above eq. 4).
        self.alpha_bars_f64 = torch.cumprod(self.alphas_f64, dim=0)
        self.device = torch.device("cpu")
        self._make_device_tensors(device)

    def _make_device_tensors(self, device) -> None:
        self.device = torch.device(device)
        f32 = dict(dtype=torch.float32, device=self.device)
        self.betas = self.betas_f64.to(**f32)
        self.alphas = self.alphas_f64.to(**f32)
        self.alpha_bars = self.alpha_bars_f64.to(**f32)
        self.sqrt_alpha_bars = self.alpha_bars_f64.sqrt().to(**f32)
        self.sqrt_one_minus_alpha_bars = (1.0 - self.alpha_bars_f64).sqrt().to(**f32)

    def to(self, device) -> Schedule:
        """Move the float32 tensors to `device` (in place; returns self)."""
        self._make_device_tensors(device)
        return self

    def __repr__(self) -> str:
        return f"Schedule(T={self.T}, beta_start={self.beta_start}, beta_end={self.beta_end})"

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x_0) (Ho et al. eq. 4), reparameterised as in eq. 14:
        x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps.

        x0, noise: (B, C, H, W); t: int64 (B,) with values in 0 .. T-1.
        """
        a = self.sqrt_alpha_bars[t].view(-1, *([1] * (x0.dim() - 1)))
        s = self.sqrt_one_minus_alpha_bars[t].view(-1, *([1] * (x0.dim() - 1)))
        return a.to(x0.dtype) * x0 + s.to(x0.dtype) * noise

    def loss(
        self,
        model: torch.nn.Module,
        x0: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The simplified DSM objective L_simple (Ho et al. eq. 14):
        E_{t ~ U{1..T}, eps ~ N(0, I)} || eps - eps_theta(sqrt(ab_t) x0 + sqrt(1 - ab_t) eps, t) ||²
        (ab = alpha-bar), averaged over pixels (torch's mean-reduced MSE, as the paper's code).

        Draws t and eps from `generator` (which must live on x0's device), so a seeded generator
        makes the loss reproducible. Returns a 0-d tensor; nothing here synchronises with the host.
        """
        b = x0.shape[0]
        t = torch.randint(0, self.T, (b,), device=x0.device, generator=generator)
        noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        x_t = self.q_sample(x0, t, noise)
        eps = model(x_t, t)
        return F.mse_loss(eps.float(), noise.float())


def images_to_tensor(images: np.ndarray, device="cpu") -> torch.Tensor:
    """uint8 images (N, H, W, C) -> float32 tensor (N, C, H, W) in [-1, 1] (x / 127.5 - 1)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(
            f"expected uint8 images of shape (N, H, W, C), got dtype {images.dtype} and shape "
            f"{images.shape}"
        )
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0).contiguous()


def tensor_to_images(x: torch.Tensor) -> np.ndarray:
    """float tensor (N, C, H, W), clipped to [-1, 1] -> uint8 images (N, H, W, C), rounded."""
    x = ((x.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round()
    return x.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
