"""The local machines' patch size per noise level, calibrated to a trained U-Net.

Kamb & Ganguli (2025) set the locality scale of their local score machines per noise level by
matching a trained network.  Here, at ``levels`` noise levels t of the sampler's own timesteps, for
held-out task images x0 (``task.sample(n, seed + FRESH_SEED)``, images the training set does not
hold) and seeded noise eps,

    x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps                              (Ho et al. 2020, eq. 4)

is denoised by the U-Net, x0_unet = (x_t - sqrt(1 - ab_t) eps_theta(x_t, t)) / sqrt(ab_t)
(eq. 15), and by the machine at every candidate patch size P; the calibrated size is

    P*(t) = argmax_P  r^2_P(t),   r^2_P(t) = 1 - sum ||x0_P - x0_unet||^2 / sum ||x0_unet - mean||^2

(sums over the n images and their pixels; the mean is each image's own).  The inputs are the
forward process's marginal q(x_t), the distribution the DSM loss averages over, rather than the
U-Net's own sampling trajectories (which would make the calibration depend on the sampler).
`PatchSchedule` holds the result: between calibrated levels the patch of the nearest level in t.
"""

from __future__ import annotations

import dataclasses
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from tqdm.auto import tqdm

from rulelib import atomic
from rulelib.analytic import denoisers
from rulelib.diffusion.schedule import Schedule, images_to_tensor

PATCHES = (3, 5, 7, 9, 11, 15)
FRESH_SEED = 104_729  # held-out images: a seed no training set or study arm uses


@dataclasses.dataclass(frozen=True)
class PatchSchedule:
    """Patch size per noise level: ``patches[i]`` at timestep ``ts[i]``, the nearest level's
    patch in between (ties to the lower t)."""

    ts: tuple[int, ...]
    patches: tuple[int, ...]

    def __post_init__(self):
        if not self.ts or len(self.ts) != len(self.patches):
            raise ValueError(f"need one patch per level, got ts={self.ts}, patches={self.patches}")
        if any(p < 1 or p % 2 == 0 for p in self.patches):
            raise ValueError(f"patch sizes must be odd integers >= 1, got {self.patches}")

    def __call__(self, t: int) -> int:
        i = min(range(len(self.ts)), key=lambda k: (abs(self.ts[k] - int(t)), self.ts[k]))
        return int(self.patches[i])

    def to_dict(self) -> dict:
        return {"ts": list(self.ts), "patches": list(self.patches)}

    @classmethod
    def from_dict(cls, d: dict) -> PatchSchedule:
        return cls(tuple(int(t) for t in d["ts"]), tuple(int(p) for p in d["patches"]))


def levels_of(sampler_ts, levels: int) -> list[int]:
    """``levels`` of the sampler's timesteps (highest first), evenly spread over its steps."""
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    idx = np.unique(np.round(np.linspace(0, len(sampler_ts) - 1, levels)).astype(int))
    return [int(sampler_ts[i]) for i in idx]


def r2(est: torch.Tensor, ref: torch.Tensor) -> float:
    """Pooled r^2 of est against ref over images and pixels (each image's own mean removed)."""
    ref = ref.double().flatten(1)
    res = ((est.double().flatten(1) - ref) ** 2).sum()
    tot = ((ref - ref.mean(1, keepdim=True)) ** 2).sum()
    return float(1.0 - res / tot) if tot > 0 else float("nan")


@torch.no_grad()
def calibrate(model, train, fresh, schedule: Schedule, ts, *, patches=PATCHES,
              equivariant: bool = False, pool: int = 16384, seed: int = 0,
              progress: bool = True) -> dict:  # fmt: skip
    """Score every patch size in ``patches`` against the U-Net ``model`` at the timesteps ``ts``
    on the held-out images ``fresh`` (uint8 (n, H, W, C)); returns {"schedule": PatchSchedule
    (the best P per level), "r2": {P: [r^2 per level]}, "ts", "n"} (see the module docstring)."""
    if not patches or any(p < 1 or p % 2 == 0 for p in patches):
        raise ValueError(f"patch sizes must be odd integers >= 1, got {patches}")
    x0 = images_to_tensor(np.asarray(fresh))
    gen = torch.Generator().manual_seed(seed)
    machines = {p: denoisers.LocalDenoiser(train, schedule, patch=p, equivariant=equivariant,
                                           pool=pool, seed=seed) for p in patches}  # fmt: skip
    model.eval()
    scores = {p: [] for p in patches}
    for t in tqdm(ts, desc="calibrating", disable=not progress):
        ab = float(schedule.alpha_bars_f64[t])
        tt = torch.full((len(x0),), t, dtype=torch.long)
        x_t = schedule.q_sample(x0, tt, torch.randn(x0.shape, generator=gen))
        ref = (x_t - math.sqrt(1 - ab) * model(x_t, tt).float()) / math.sqrt(ab)  # eq. 15
        for p, m in machines.items():
            scores[p].append(r2(m.x0(x_t, tt), ref))
    best = [max(patches, key=lambda p: (scores[p][i], -p)) for i in range(len(ts))]
    return {"schedule": PatchSchedule(tuple(ts), tuple(best)), "r2": scores, "ts": list(ts),
            "n": len(x0)}  # fmt: skip


def figure(result: dict, path, title: str = "") -> None:
    """r^2 against the U-Net per patch size and noise level, the chosen size marked."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ts = result["ts"]
    for p, vals in sorted(result["r2"].items(), key=lambda kv: int(kv[0])):
        ax.plot(ts, vals, marker=".", label=f"P = {p}")
    sched = result["schedule"]
    best = [result["r2"][p][i] for i, p in enumerate(sched.patches)]
    ax.plot(ts, best, "k*", ms=9, label="chosen")
    ax.set(
        xlabel="timestep t (noise level)",
        ylabel="r² against the U-Net's x0 estimate",
        ylim=(max(-1.0, min(min(v) for v in result["r2"].values())), 1.0),
        title=title,
    )
    ax.legend(fontsize=7, ncol=2)
    atomic.savefig(fig, path)
