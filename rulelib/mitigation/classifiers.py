"""Rule classifiers on pixels: the paper's three, a noise-aware one for guidance, and filtering.

Paper section 5 (our ../shared/paper.md section 5).  Two families, both predicting the contrastive
class (0 too small, 1 conforming, 2 too large; ``rulelib.mitigation.contrastive``):

* pixel classifiers p(y | x0): ``mlp`` (3072 -> 512 -> 128 -> 3), ``resnet8`` (16, 32, 64 channels,
  one basic block per stage), ``smallconv`` (3 -> 64 -> 128 -> 64 -> 3 convolutions, global average
  pool).  Trained as the paper did: 80:20 split, Adam lr 3e-4, batch 16, 100 epochs, inputs lightly
  noised by one forward diffusion step, x = sqrt(abar_1) x0 + sqrt(1 - abar_1) eps (Ho et al. eq. 4
  at t = 1, std 0.01). Used for *filtering*: keep the generated images called class 1 and measure
  again.
* noise-aware classifiers p(y | x_t, t) for classifier guidance (Dhariwal & Nichol 2021, sec. 4):
  ``unet``, the encoder half of a diffusers U-Net (the paper's width 128, channel multipliers 1-2-3,
  self-attention), and ``cheap``, three strided convolutions with an additive time embedding, a few
  MFLOPs, so guided sampling on a CPU costs little more than unguided.  Trained on x_t = q(x_t | x0)
  with t uniform, AdamW lr 3e-4.

Checkpoints are one safetensors file whose metadata records the kind, architecture, task and image
size; ``load_classifier`` refuses one that does not match what the caller needs
(``CheckpointMismatchError``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rulelib import atomic

PIXEL_ARCHS = ("mlp", "resnet8", "smallconv")
NOISY_ARCHS = ("cheap", "unet")
IMAGE_SIZE = 32

# Paper section 5: test accuracy (%) of the three pixel classifiers on the contrastive data.
PAPER_ACCURACY = {
    "mlp": {"A": 67.47, "B": 77.58, "C": 45.83, "D": 81.17},
    "resnet8": {"A": 62.74, "B": 66.50, "C": 80.17, "D": 75.83},
    "smallconv": {"A": 64.25, "B": 75.13, "C": 82.37, "D": 81.17},
}


class CheckpointMismatchError(ValueError):
    """A classifier checkpoint was made for another task, image size, kind or architecture."""


# --------------------------------------------------------------------------------------------------
# Pixel classifiers p(y | x0)
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def to_tensor(images: np.ndarray, device="cpu") -> torch.Tensor:
    """uint8 (n, H, W, 3) images -> float32 (n, 3, H, W) in [-1, 1], the diffusion model's scale."""
    from rulelib.diffusion.schedule import images_to_tensor

    if np.ndim(images) == 4 and np.shape(images)[-1] != 3:
        raise ValueError(f"expected RGB images (n, H, W, 3), got shape {np.shape(images)}")
    return images_to_tensor(images, device)


def linear_alpha_bars() -> torch.Tensor:
    """abar_t of the paper's schedule (T = 1000, beta linear 1e-4 .. 2e-2;
    rulelib.diffusion.schedule)."""
    from rulelib.diffusion.schedule import Schedule

    return Schedule().alpha_bars


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


@dataclass
class ClassifierConfig:
    """How a classifier is trained; the defaults are the paper's (section 5)."""

    arch: str = "smallconv"
    epochs: int = 100
    batch_size: int = 16
    lr: float = 3e-4
    seed: int = 0
    test_fraction: float = 0.2
    noise_t: int = (
        1  # pixel classifiers: inputs noised by this many forward steps (paper: one; 0 = off)
    )
    weight_decay: float = (
        0.01  # noise-aware classifiers only (AdamW); pixel ones use Adam as the paper
    )
    arch_kwargs: dict = field(default_factory=dict)
    device: str = "cpu"

    def __post_init__(self):
        if self.arch not in PIXEL_ARCHS + NOISY_ARCHS:
            raise ValueError(
                f"unknown classifier {self.arch!r}; expected one of {PIXEL_ARCHS + NOISY_ARCHS}"
            )
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")

    @property
    def kind(self) -> str:
        return "noisy" if self.arch in NOISY_ARCHS else "pixel"


def train_classifier(
    cfg: ClassifierConfig,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    task: str,
    alpha_bars: torch.Tensor | None = None,
    progress: bool = False,
) -> tuple[nn.Module, dict]:
    """Train one classifier on a contrastive set; returns ``(model, info)``.

    ``info`` holds the config, the task, the image size, the train/test index split and the test
    accuracy (on clean images for pixel classifiers; on x_t at uniform t, and on clean x0 at t = 0,
    for noise-aware ones).  The whole set lives on the device; batches are slices of a seeded
    permutation (no DataLoader: 32x32 tensors fit in memory).  Pixel loss: cross entropy of x =
    sqrt(abar_s) x0 + sqrt(1 - abar_s) eps with s = noise_t.  Noise-aware loss: cross entropy of x_t
    with t ~ U{0..T-1} (Ho et al. eq. 4).
    """
    from rulelib.mitigation.contrastive import split

    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    device = torch.device(cfg.device)
    # All random numbers drawn on the device from one seeded generator: no host round trips.
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # parameter initialisation
    model = build(cfg.arch, **cfg.arch_kwargs).to(device)
    x_all = to_tensor(images, device)
    y_all = torch.from_numpy(labels).to(device)
    tr, te = split(len(labels), cfg.seed, cfg.test_fraction)
    tr_t = torch.from_numpy(tr).to(device)
    abar = (alpha_bars if alpha_bars is not None else linear_alpha_bars()).to(device)
    T = len(abar)
    noisy = cfg.kind == "noisy"
    if noisy:
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)

    from tqdm.auto import tqdm

    history = []
    bar = tqdm(range(cfg.epochs), desc=f"{task}/{cfg.arch}", disable=not progress, leave=False)
    for _ in bar:
        model.train()
        perm = tr_t[torch.randperm(len(tr_t), generator=gen, device=device)]
        total, count = torch.zeros((), device=device), 0
        for i in range(0, len(perm), cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            if len(idx) < 2 and i > 0:  # BatchNorm cannot train on one image
                continue
            x0, y = x_all[idx], y_all[idx]
            eps = torch.randn(x0.shape, generator=gen, device=device)
            if noisy:
                t = torch.randint(0, T, (len(idx),), generator=gen, device=device)
                a = abar[t].view(-1, 1, 1, 1)
                logits = model(a.sqrt() * x0 + (1 - a).sqrt() * eps, t)
            else:
                if cfg.noise_t > 0:
                    a = abar[cfg.noise_t - 1]
                    x0 = a.sqrt() * x0 + (1 - a).sqrt() * eps
                logits = model(x0)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
            count += len(idx)
        history.append(float(total) / max(count, 1))
        bar.set_postfix(loss=f"{history[-1]:.4f}")

    info = {
        "kind": cfg.kind,
        "arch": cfg.arch,
        "task": str(task),
        "image_size": int(images.shape[1]),
        "num_classes": 3,
        "config": asdict(cfg),
        "n_train": len(tr),
        "n_test": len(te),
        "loss_history": history,
    }
    te_x, te_y = images[te], labels[te]
    if noisy:
        info["test_accuracy_clean"] = accuracy(model, te_x, te_y, t=0, device=device)
        info["test_accuracy"] = accuracy(
            model, te_x, te_y, t="uniform", alpha_bars=abar, seed=cfg.seed, device=device
        )
    else:
        info["test_accuracy"] = accuracy(model, te_x, te_y, device=device)
    info["confusion"] = confusion(model, te_x, te_y, device=device).tolist()
    model.eval()
    return model, info


@torch.no_grad()
def logits_of(
    model: nn.Module,
    images: np.ndarray,
    *,
    t=0,
    alpha_bars: torch.Tensor | None = None,
    seed: int = 0,
    batch_size: int = 512,
    device=None,
) -> torch.Tensor:
    """Class logits (n, 3) of uint8 images.

    Noise-aware models see x_t: ``t`` an int, or ``"uniform"`` to draw t ~ U{0..T-1} per image
    (seeded); t = 0 means the (almost) clean image.
    """
    device = device or next(model.parameters()).device
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    abar = (alpha_bars if alpha_bars is not None else linear_alpha_bars()).to(device)
    out = []
    for i in range(0, len(images), batch_size):
        x = to_tensor(images[i : i + batch_size], device)
        if is_noisy(model):
            if t == "uniform":
                tt = torch.randint(0, len(abar), (len(x),), generator=gen, device=device)
                a = abar[tt].view(-1, 1, 1, 1)
                noise = torch.randn(x.shape, generator=gen, device=device)
                x = a.sqrt() * x + (1 - a).sqrt() * noise
            else:
                tt = torch.full((len(x),), int(t), device=device, dtype=torch.long)
            out.append(model(x, tt).float().cpu())
        else:
            out.append(model(x).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 3)


def predict_proba(model: nn.Module, images: np.ndarray, **kwargs) -> np.ndarray:
    """Class probabilities (n, 3) of uint8 images (clean images; see ``logits_of`` for x_t)."""
    return torch.softmax(logits_of(model, images, **kwargs), dim=1).numpy()


def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray, **kwargs) -> float:
    """Share of images whose arg-max class equals the label."""
    pred = logits_of(model, images, **kwargs).argmax(1).numpy()
    return float((pred == np.asarray(labels)).mean())


def confusion(model: nn.Module, images: np.ndarray, labels: np.ndarray, **kwargs) -> np.ndarray:
    """3x3 confusion counts, rows = true class, columns = predicted class."""
    pred = logits_of(model, images, **kwargs).argmax(1).numpy()
    cm = np.zeros((3, 3), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels), pred), 1)
    return cm


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------


def save_classifier(path, model: nn.Module, info: dict) -> str:
    """Write weights and ``info`` (kind, arch, task, image_size, ...) to one safetensors file,
    atomically."""
    from safetensors.torch import save_file

    for key in ("kind", "arch", "task", "image_size"):
        if key not in info:
            raise ValueError(
                f"classifier info lacks {key!r}; it must record {key} to be checked on load"
            )
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic.atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"rulelib_classifier": json.dumps(info)})
    return path


def read_info(path) -> dict:
    """The metadata of a classifier checkpoint, without loading the weights."""
    from safetensors import safe_open

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no classifier checkpoint at {path}")
    try:
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise ValueError(
            f"{path} is not a readable safetensors classifier checkpoint: {err}"
        ) from err
    if "rulelib_classifier" not in meta:
        raise ValueError(f"{path} is a safetensors file but not a rulelib classifier checkpoint")
    return json.loads(meta["rulelib_classifier"])


def load_classifier(
    path, *, task=None, image_size: int | None = IMAGE_SIZE, kind: str | None = None, device="cpu"
) -> tuple[nn.Module, dict]:
    """Load a classifier checkpoint, refusing one made for another task, image size or kind.

    ``task`` may be a task name or a RuleTask; ``kind`` is ``"pixel"`` (filtering) or ``"noisy"``
    (guidance).
    """
    from safetensors.torch import load_file

    info = read_info(path)
    want_task = getattr(task, "name", task)
    if want_task is not None and info["task"] != str(want_task):
        raise CheckpointMismatchError(
            f"classifier {path} was trained on task {info['task']!r}, not on task {want_task!r}"
        )
    if image_size is not None and int(info["image_size"]) != int(image_size):
        raise CheckpointMismatchError(
            f"classifier {path} expects {info['image_size']}x{info['image_size']} images, "
            f"not {image_size}x{image_size}"
        )
    if kind is not None and info["kind"] != kind:
        need = "a noise-aware p(y | x_t, t)" if kind == "noisy" else "a pixel p(y | x0)"
        raise CheckpointMismatchError(
            f"classifier {path} is a {info['kind']} classifier ({info['arch']}); "
            f"{need} one is needed"
        )
    model = build(info["arch"], info.get("num_classes", 3), **info["config"].get("arch_kwargs", {}))
    model.load_state_dict(load_file(os.fspath(path)))
    return model.to(device).eval(), info


# --------------------------------------------------------------------------------------------------
# Filtering
# --------------------------------------------------------------------------------------------------


def filter_mask(
    model: nn.Module, images: np.ndarray, *, threshold: float | None = None, **kwargs
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the images the classifier calls conforming: arg-max class 1 and, if given, p(1) >=
    threshold.

    Returns ``(keep, p1)``: a bool mask (n,) and the class-1 probabilities.
    """
    if threshold is not None and not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise ValueError(f"threshold must be a probability in [0, 1] or None, got {threshold!r}")
    proba = predict_proba(model, images, **kwargs)
    keep = proba.argmax(1) == 1
    if threshold is not None:
        keep &= proba[:, 1] >= threshold
    return keep, proba[:, 1]


def _subset(features: dict, mask: np.ndarray) -> dict:
    return {k: np.asarray(v)[mask] for k, v in features.items()}


def filter_report(
    task,
    images: np.ndarray,
    model: nn.Module,
    *,
    threshold: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    features: dict | None = None,
    ok: np.ndarray | None = None,
) -> dict:
    """Every rule metric of generated images before and after filtering, with bootstrap CIs.

    ``features, ok`` may be passed when the images were measured already.  Returns a
    JSON-serialisable dict: ``before`` and ``after`` (``rulelib.metrics.rule_report``), ``n``,
    ``kept``, ``kept_share``, ``threshold``.
    """
    from rulelib.metrics import rule_report

    if features is None or ok is None:
        features, ok = task.measure(images)
    keep, _ = filter_mask(model, images, threshold=threshold)
    ok = np.asarray(ok, dtype=bool)
    before = rule_report(task, features, ok, n_boot=n_boot, seed=seed)
    after = None
    if keep.sum() > 0:
        after = rule_report(task, _subset(features, keep), ok[keep], n_boot=n_boot, seed=seed)
    return {
        "n": len(images),
        "kept": int(keep.sum()),
        "kept_share": float(keep.mean()) if len(keep) else 0.0,
        "threshold": threshold,
        "before": before,
        "after": after,
    }
