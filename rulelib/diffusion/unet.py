"""Denoiser networks eps_theta(x_t, t), all with the signature `model(x, t) -> eps`.

x: (B, 3, 32, 32) float in about [-1, 1]; t: int64 (B,) time indices 0 .. T-1; eps: same shape as x.

Presets (`build(name)`):

- "paper": the widely copied "64-128-256-256" DDPM U-Net the paper trained (docs/paper.md s. 4),
  about 23 M parameters: a double-conv stem to 64 channels, three down stages (max-pool, two
  double convs) to 128, 256, 256 channels each followed by 4-head self-attention at 16^2, 8^2,
  4^2, a bottleneck of double convs 256 -> 512 -> 512 -> 256, three up stages (bilinear
  upsampling, skip concatenation, two double convs) to 128, 64, 64 with self-attention at 8^2,
  16^2, 32^2, and a 256-d sinusoidal time embedding projected and added in every stage.
  diffusers' `UNet2DModel` cannot express this network: its down-sampling is a strided conv (not
  max-pool), its up-sampling is nearest + conv (not bilinear), its attention block has no
  feed-forward part and sits inside the resolution level rather than after it, and its ResNet
  blocks add the time embedding between the two convs of a residual block, so it is written here.
- "small": diffusers' `UNet2DModel`, channels 32-48-64, one ResNet block per level, attention at
  the lowest level (8^2) and in the mid block, about 0.95 M parameters: the CPU preset.
- "tiny": diffusers' `UNet2DModel`, channels 16-32, for unit tests only (about 0.18 M).
- "narrow" and "wide": "small" at half and twice its channels (16-24-32, about 0.24 M; 64-96-128,
  about 3.8 M parameters), for the study's width arm.
- "dit": a DiT (Peebles & Xie 2023) from diffusers (`DiTTransformer2DModel`): 4x4 patches (64
  tokens), 4 blocks of width 128 with 4 heads and adaLN-zero time conditioning, about 1.4 M
  parameters; the study's transformer denoiser.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def timestep_embedding(t: torch.Tensor, dim: int = 256) -> torch.Tensor:
    """Sinusoidal embedding of the time index (Vaswani et al. 2017 section 3.5, as used by Ho et al.
    appendix B): [sin(t * w_i), cos(t * w_i)] with w_i = 10000^(-2i / dim), i < dim / 2."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class DoubleConv(nn.Module):
    """conv3x3 -> GroupNorm(1) -> GELU -> conv3x3 -> GroupNorm(1), optionally residual (GELU of
    x + f(x)), as in the widely copied implementation (GroupNorm with one group is LayerNorm over
    channels and space)."""

    def __init__(self, c_in: int, c_out: int, c_mid: int | None = None, residual: bool = False):
        super().__init__()
        c_mid = c_mid or c_out
        self.residual = residual
        self.net = nn.Sequential(
            nn.Conv2d(c_in, c_mid, 3, padding=1, bias=False),
            nn.GroupNorm(1, c_mid),
            nn.GELU(),
            nn.Conv2d(c_mid, c_out, 3, padding=1, bias=False),
            nn.GroupNorm(1, c_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x + self.net(x)) if self.residual else self.net(x)


class Down(nn.Module):
    """max-pool 2 -> residual double conv -> double conv to c_out; then + Linear(SiLU(emb))."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int = 256):
        super().__init__()
        self.conv = nn.Sequential(
            nn.MaxPool2d(2), DoubleConv(c_in, c_in, residual=True), DoubleConv(c_in, c_out)
        )
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, c_out))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.emb(emb)[:, :, None, None]


class Up(nn.Module):
    """bilinear upsample 2 -> concat skip -> residual double conv -> double conv to c_out (through
    c_in / 2); then + Linear(SiLU(emb))."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int = 256):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv = nn.Sequential(
            DoubleConv(c_in, c_in, residual=True), DoubleConv(c_in, c_out, c_in // 2)
        )
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, c_out))

    def forward(self, x: torch.Tensor, skip: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = torch.cat([skip, self.up(x)], dim=1)
        return self.conv(x) + self.emb(emb)[:, :, None, None]


class SelfAttention(nn.Module):
    """Pre-LayerNorm multi-head self-attention over the H*W positions plus a feed-forward block,
    both residual (a transformer encoder layer on the pixel grid). The projections have exactly
    the parameters of `nn.MultiheadAttention`; the attention itself goes through
    `F.scaled_dot_product_attention`, which picks the fused kernel on each device."""

    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels {channels} must be divisible by heads {heads}")
        self.heads = heads
        self.ln = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.ff = nn.Sequential(
            nn.LayerNorm(channels),
            nn.Linear(channels, channels),
            nn.GELU(),
            nn.Linear(channels, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        q, k, v = self.qkv(self.ln(s)).chunk(3, dim=-1)
        q, k, v = (
            z.reshape(b, h * w, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v)
        )
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, h * w, c)
        s = s + self.proj(a)
        s = s + self.ff(s)
        return s.transpose(1, 2).reshape(b, c, h, w)


class PaperUNet(nn.Module):
    """The paper's 64-128-256-256 U-Net (about 23 M parameters at 32x32, 3 channels).

    Written by hand because diffusers' `UNet2DModel` has no configuration with max-pool
    down-sampling, bilinear up-sampling and post-stage attention with a feed-forward block (see
    the module docstring)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, emb_dim: int = 256):
        super().__init__()
        self.emb_dim = emb_dim
        self.inc = DoubleConv(in_channels, 64)
        self.down1, self.sa1 = Down(64, 128, emb_dim), SelfAttention(128)  # 16^2
        self.down2, self.sa2 = Down(128, 256, emb_dim), SelfAttention(256)  # 8^2
        self.down3, self.sa3 = Down(256, 256, emb_dim), SelfAttention(256)  # 4^2
        self.bot1 = DoubleConv(256, 512)
        self.bot2 = DoubleConv(512, 512)
        self.bot3 = DoubleConv(512, 256)
        self.up1, self.sa4 = Up(512, 128, emb_dim), SelfAttention(128)  # 8^2
        self.up2, self.sa5 = Up(256, 64, emb_dim), SelfAttention(64)  # 16^2
        self.up3, self.sa6 = Up(128, 64, emb_dim), SelfAttention(64)  # 32^2
        self.outc = nn.Conv2d(64, out_channels, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(t, self.emb_dim).to(x.dtype)
        x1 = self.inc(x)
        x2 = self.sa1(self.down1(x1, emb))
        x3 = self.sa2(self.down2(x2, emb))
        x4 = self.sa3(self.down3(x3, emb))
        x4 = self.bot3(self.bot2(self.bot1(x4)))
        x = self.sa4(self.up1(x4, x3, emb))
        x = self.sa5(self.up2(x, x2, emb))
        x = self.sa6(self.up3(x, x1, emb))
        return self.outc(x)


class DiffusersEps(nn.Module):
    """Adapts a diffusers `UNet2DModel` to the common signature model(x, t) -> eps."""

    def __init__(self, **unet_kwargs):
        super().__init__()
        from diffusers import UNet2DModel  # imported here: diffusers is slow to import

        self.net = UNet2DModel(**unet_kwargs)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x, t, return_dict=False)[0]


_DIFFUSERS_COMMON = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    layers_per_block=1,
    norm_num_groups=8,
    attention_head_dim=16,
)


class DiTEps(nn.Module):
    """Adapts diffusers' `DiTTransformer2DModel` to model(x, t) -> eps, unconditionally: every
    image gets class 0 of a one-class label table and the label dropout (classifier-free
    guidance's null class) is switched off, so the label embedding is a learned constant."""

    def __init__(self, **dit_kwargs):
        super().__init__()
        from diffusers import DiTTransformer2DModel  # imported here: diffusers is slow to import
        from diffusers.models.embeddings import LabelEmbedding

        self.net = DiTTransformer2DModel(**dit_kwargs)
        for m in self.net.modules():
            if isinstance(m, LabelEmbedding):
                m.dropout_prob = 0.0

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        labels = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return self.net(x, timestep=t, class_labels=labels, return_dict=False)[0]


_SMALL_BLOCKS = {
    "down_block_types": ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
}

PRESETS: dict[str, dict] = {
    "paper": {"kind": "paper"},
    "small": {
        "kind": "diffusers",
        **_DIFFUSERS_COMMON,
        "block_out_channels": (32, 48, 64),
        "down_block_types": ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    },
    "tiny": {
        "kind": "diffusers",
        **_DIFFUSERS_COMMON,
        "block_out_channels": (16, 32),
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "UpBlock2D"),
    },
    "narrow": {
        "kind": "diffusers",
        **_DIFFUSERS_COMMON,
        "block_out_channels": (16, 24, 32),
        **_SMALL_BLOCKS,
    },
    "wide": {
        "kind": "diffusers",
        **_DIFFUSERS_COMMON,
        "block_out_channels": (64, 96, 128),
        **_SMALL_BLOCKS,
    },
    "dit": {
        "kind": "dit",
        "sample_size": 32,
        "in_channels": 3,
        "out_channels": 3,
        "patch_size": 4,
        "num_layers": 4,
        "num_attention_heads": 4,
        "attention_head_dim": 32,
        "num_embeds_ada_norm": 1,
    },
}


def build(preset: str) -> nn.Module:
    """Build the denoiser named `preset` (one of PRESETS), freshly initialised with torch's
    default initialisation (seed torch before calling for reproducible weights)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    spec = dict(PRESETS[preset])
    kind = spec.pop("kind")
    if kind == "paper":
        return PaperUNet()
    if kind == "dit":
        return DiTEps(**spec)
    return DiffusersEps(**spec)


def n_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
