"""Rule classifiers: training, prediction and checkpoints (the networks are in ``networks``).

docs/paper.md section 5.  Two families, both predicting the contrastive
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
from rulelib.diffusion.schedule import Schedule, images_to_tensor
from rulelib.mitigation.contrastive import split
from rulelib.mitigation.networks import IMAGE_SIZE, NOISY_ARCHS, PIXEL_ARCHS, build, is_noisy


class CheckpointMismatchError(ValueError):
    """A classifier checkpoint was made for another task, image size, kind or architecture."""


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def to_tensor(images: np.ndarray, device="cpu") -> torch.Tensor:
    """uint8 (n, H, W, 3) images -> float32 (n, 3, H, W) in [-1, 1], the diffusion model's scale."""
    if np.ndim(images) == 4 and np.shape(images)[-1] != 3:
        raise ValueError(f"expected RGB images (n, H, W, 3), got shape {np.shape(images)}")
    return images_to_tensor(images, device)


def linear_alpha_bars() -> torch.Tensor:
    """abar_t of the paper's schedule (T = 1000, beta linear 1e-4 .. 2e-2;
    rulelib.diffusion.schedule)."""
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
