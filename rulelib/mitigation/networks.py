"""The classifier networks: the paper's three pixel classifiers and two noise-aware ones.

* pixel classifiers p(y | x0): ``mlp`` (3072 -> 512 -> 128 -> 3), ``resnet8`` (16, 32, 64 channels,
  one basic block per stage), ``smallconv`` (3 -> 64 -> 128 -> 64 -> 3 convolutions, global average
  pool) (docs/paper.md section 5);
* noise-aware classifiers p(y | x_t, t) for classifier guidance (Dhariwal & Nichol 2021, sec. 4):
  ``unet``, the encoder half of a diffusers U-Net, and ``cheap``, three strided convolutions with an
  additive time embedding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PIXEL_ARCHS = ("mlp", "resnet8", "smallconv")
NOISY_ARCHS = ("cheap", "unet")
IMAGE_SIZE = 32


class MLP(nn.Module):
    """The paper's MLP: flatten 3 x 32 x 32 = 3072 -> 512 -> 128 -> classes, ReLU between."""

    def __init__(self, num_classes: int = 3, image_size: int = IMAGE_SIZE):
        super().__init__()
        d = 3 * image_size * image_size
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(d, 512),
            nn.ReLU(),
            nn.Linear(512, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicBlock(nn.Module):
    """He et al. (2016) basic block: two 3x3 conv-BN layers plus an identity or 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.short = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.short = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.short(x))


class ResNet8(nn.Module):
    """CIFAR ResNet-8: 3x3 stem, one basic block per stage (16, 32, 64 ch.), pool, linear."""

    def __init__(self, num_classes: int = 3, widths: tuple[int, int, int] = (16, 32, 64)):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        self.stages = nn.Sequential(
            BasicBlock(widths[0], widths[0], 1),
            BasicBlock(widths[0], widths[1], 2),
            BasicBlock(widths[1], widths[2], 2),
        )
        self.fc = nn.Linear(widths[2], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.stages(self.stem(x)).mean(dim=(2, 3)))


class SmallConv(nn.Module):
    """The paper's small conv net: 3x3 convs 3 -> 64 -> 128 -> 64 -> classes, global avg pool."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 64, 3, 1, 1),
            nn.ReLU(),
            nn.Conv2d(64, 128, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(128, 64, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(64, num_classes, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).mean(dim=(2, 3))


# --------------------------------------------------------------------------------------------------
# Noise-aware classifiers p(y | x_t, t)
# --------------------------------------------------------------------------------------------------


def _time_embedding(dim: int):
    """Sinusoidal embedding of t (as in the DDPM U-Net) followed by a two-layer MLP."""
    from diffusers.models.embeddings import TimestepEmbedding, Timesteps

    return nn.ModuleDict({"sin": Timesteps(dim, True, 0.0), "mlp": TimestepEmbedding(dim, 4 * dim)})


class CheapNoisyClassifier(nn.Module):
    """Cheap p(y | x_t, t): three stride-2 3x3 convolutions (32, 64, 64 ch.), each plus a
    projection of the
    time embedding, GroupNorm and SiLU, then global average pool and a linear head.

    About 2 M multiply-adds per image, some 1-5 % of a small U-Net's forward pass, so one gradient
    per sampling step adds little (benchmarks/guidance.py measures it).
    """

    def __init__(
        self, num_classes: int = 3, widths: tuple[int, ...] = (32, 64, 64), t_dim: int = 32
    ):
        super().__init__()
        self.temb = _time_embedding(t_dim)
        self.convs = nn.ModuleList()
        self.tproj = nn.ModuleList()
        self.norms = nn.ModuleList()
        c_in = 3
        for c in widths:
            self.convs.append(nn.Conv2d(c_in, c, 3, 2, 1))
            self.tproj.append(nn.Linear(4 * t_dim, c))
            self.norms.append(nn.GroupNorm(8, c))
            c_in = c
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = F.silu(self.temb["mlp"](self.temb["sin"](t).to(x.dtype)))
        h = x
        for conv, proj, norm in zip(self.convs, self.tproj, self.norms):
            h = F.silu(norm(conv(h) + proj(emb)[:, :, None, None]))
        return self.head(h.mean(dim=(2, 3)))


class UNetEncoderClassifier(nn.Module):
    """The paper's guidance classifier: the encoder half of a DDPM U-Net (Dhariwal & Nichol's
    ``EncoderUNetModel``), built from diffusers' blocks.

    conv_in -> down blocks at width * (1, 2, 3) (ResNet blocks with the time embedding added,
    self-attention in the two lower blocks) -> a mid block with attention -> GroupNorm, SiLU, global
    average pool, linear. With width 128 (the paper) it has about 12 M parameters; ``width=32``
    gives a CPU-sized version.
    """

    def __init__(
        self,
        num_classes: int = 3,
        width: int = 128,
        mult: tuple[int, ...] = (1, 2, 3),
        layers_per_block: int = 1,
        attention: tuple[bool, ...] = (False, True, True),
        head_dim: int = 32,
    ):
        super().__init__()
        from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D, get_down_block

        t_dim = width
        self.temb = _time_embedding(t_dim)
        self.conv_in = nn.Conv2d(3, width, 3, 1, 1)
        groups = min(32, width // 4)
        blocks, c_in = [], width
        for i, (m, attn) in enumerate(zip(mult, attention)):
            c_out = width * m
            blocks.append(
                get_down_block(
                    "AttnDownBlock2D" if attn else "DownBlock2D",
                    num_layers=layers_per_block,
                    in_channels=c_in,
                    out_channels=c_out,
                    temb_channels=4 * t_dim,
                    add_downsample=i < len(mult) - 1,
                    resnet_eps=1e-5,
                    resnet_act_fn="silu",
                    resnet_groups=groups,
                    attention_head_dim=head_dim,
                    downsample_padding=1,
                )
            )
            c_in = c_out
        self.down = nn.ModuleList(blocks)
        self.mid = UNetMidBlock2D(
            c_in, 4 * t_dim, resnet_eps=1e-5, resnet_groups=groups, attention_head_dim=head_dim
        )
        self.norm = nn.GroupNorm(groups, c_in)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.temb["mlp"](self.temb["sin"](t).to(x.dtype))
        h = self.conv_in(x)
        for block in self.down:
            h, _ = block(h, emb)
        h = self.mid(h, emb)
        return self.head(F.silu(self.norm(h)).mean(dim=(2, 3)))


def build(arch: str, num_classes: int = 3, **kwargs) -> nn.Module:
    """A classifier by name: pixel mlp / resnet8 / smallconv, or noise-aware cheap / unet."""
    makers = {
        "mlp": MLP,
        "resnet8": ResNet8,
        "smallconv": SmallConv,
        "cheap": CheapNoisyClassifier,
        "unet": UNetEncoderClassifier,
    }
    if arch not in makers:
        raise ValueError(f"unknown classifier {arch!r}; expected one of {sorted(makers)}")
    return makers[arch](num_classes=num_classes, **kwargs)


def is_noisy(model: nn.Module) -> bool:
    """True for a noise-aware classifier, called as model(x_t, t)."""
    return isinstance(model, (CheapNoisyClassifier, UNetEncoderClassifier))
