"""Run profiles: how long to train, which network, how to sample -- as data, in one place.

A profile turns a task name into the two things a run needs:

    profile.train_config(task, seed, device)  ->  rulelib.diffusion.config.TrainConfig
    profile.sampling(task)                    ->  SamplingSettings (method, steps, eta, weights, n)

Three profiles (docs/paper.md section 4):

    smoke   CI: seconds per task.  The smallest U-Net, 64 training images, two epochs, DDIM
            with 5 steps, 32 samples.  Shows that the pipeline runs, nothing about rules.
    quick   the README's main job on a 2-core CPU: all four tasks in about 45 minutes.  The
            small U-Net, EMA weights, a larger learning rate, ancestral-like DDIM (eta = 1,
            100 steps), a few hundred samples; the choices follow the calibration notes
            below (QUICK_NOTES).
    paper   GPU: the paper's settings -- the 23 M "paper" U-Net, AdamW 3e-4 constant, batch 16,
            the paper's epochs (400/800/1600/1000), raw weights, DDPM ancestral 1000 steps,
            3000 (A) / 6000 (B-D) samples.

`auto` resolves to `paper` when CUDA is available and to `quick` otherwise (the README's
command).  A new profile is one more `Profile(...)` entry in PROFILES.

Any registered task works, a user's own included (`--tasks-from`): per-task tables fall back on
their "default" entry, and where a profile follows the paper (`epochs=None`, `train_size=None`) it
takes the task's own `paper_epochs` and `train_size`; a task without paper epochs gets the paper's
image budget (PAPER_IMAGE_BUDGET) spread over its training set.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from rulelib import tasks
from rulelib.diffusion import unet
from rulelib.diffusion.config import TrainConfig

# Training images seen by the paper's shortest schedules: Task A 400 epochs x 4000 images, Task B
# 800 x 2000 (docs/paper.md section 4).  A user task without `paper_epochs` trains this long
# under the
# paper profile.
PAPER_IMAGE_BUDGET = 1_600_000


@dataclass(frozen=True)
class SamplingSettings:
    """How to draw the generated images of one task (arguments of
    rulelib.diffusion.sample.sample)."""

    method: str  # "ddpm" (ancestral, Ho et al. eq. 11) or "ddim" (Song et al. eq. 12)
    steps: int | None  # None = all T steps (DDPM); DDIM sub-sequence length otherwise
    eta: float  # DDIM eta: 0 deterministic, 1 ancestral on the sub-sequence
    weights: str  # "raw" (the paper) or "ema"
    n: int  # samples for the metrics
    sweep_n: int  # samples per earlier checkpoint in the training-length sweep (0: no sweep)
    batch_size: int  # sampling batch (memory bound)
    clip_x0: bool = False  # clip each step's clean-image prediction to [-1, 1] (sample.clip_eps)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Profile:
    """One run profile.  Per-task values are dicts keyed by task name or "default"."""

    name: str
    description: str
    preset: str  # rulelib.diffusion.unet preset
    epochs: dict[str, int] | None  # training epochs per task; None: the paper's epochs
    batch_size: int
    lr: float
    ema_decay: float
    ema_start: int  # optimizer steps before the EMA starts averaging
    ckpt_count: int  # about this many evenly spaced checkpoints (the sweep evaluates them all)
    train_size: dict[str, int] | None  # None: the task's own size (4000 / 2000 / 2000 / 2000)
    sampling_method: str
    sampling_steps: int | None
    sampling_eta: float
    sampling_weights: str
    n_samples: dict[str, int]
    sweep_n: int
    sample_batch: int
    n_boot: int  # bootstrap resamples for the confidence intervals
    limits: str  # the honest paragraph of report.md: what this profile can and cannot show
    extra: dict = field(default_factory=dict)  # further TrainConfig fields (e.g. bf16)
    sampling_clip_x0: bool = False  # clip each step's clean-image prediction (sample.clip_eps)
    # the user's changes to the named profile (rulelib.run.overrides: --set, --config); empty for
    # the profile as defined here
    overrides: dict = field(default_factory=dict)

    def _per_task(self, table: dict[str, int], task: str) -> int:
        tasks.get(task)  # a registered task, or ValueError naming the valid ones
        return table[task] if task in table else table["default"]

    def train_size_for(self, task: str) -> int | None:
        """Training-set size for the task; None means the task's own `train_size`."""
        if self.train_size is None:
            tasks.get(task)
            return None
        return self._per_task(self.train_size, task)

    def training_set(self, task: str, seed: int = 0):
        """(uint8 images, truth features) this profile trains on: the task's dataset, or a
        smaller sample of the same task when `train_size` says so."""
        size = self.train_size_for(task)
        t = tasks.get(task)
        return t.dataset(seed) if size is None else t.sample(size, seed)

    def epochs_for(self, task: str) -> int:
        """Training epochs for the task: the profile's table, or (epochs=None) the task's
        `paper_epochs`, else PAPER_IMAGE_BUDGET over its training-set size."""
        if self.epochs is not None:
            return self._per_task(self.epochs, task)
        t = tasks.get(task)
        if t.paper_epochs:
            return int(t.paper_epochs)
        size = self.train_size_for(task) or t.train_size
        return max(1, round(PAPER_IMAGE_BUDGET / size))

    def ckpt_every_for(self, task: str) -> int:
        """Checkpoint period in epochs, for about `ckpt_count` evenly spaced checkpoints (the
        trainer also saves one at the last epoch)."""
        return max(1, self.epochs_for(task) // max(1, self.ckpt_count))

    def train_config(self, task: str, seed: int = 0, device="cpu") -> TrainConfig:
        """The rulelib.diffusion.config.TrainConfig of this profile for one task."""
        return TrainConfig(
            task=task,
            preset=self.preset,
            epochs=self.epochs_for(task),
            batch_size=self.batch_size,
            lr=self.lr,
            seed=seed,
            ema_decay=self.ema_decay,
            ema_start=self.ema_start,
            ckpt_every=self.ckpt_every_for(task),
            device=str(device),  # a name: the config is stored as JSON
            sample_weights=self.sampling_weights,
            **self.extra,
        )

    def sampling(self, task: str) -> SamplingSettings:
        """How this profile samples the task."""
        return SamplingSettings(
            method=self.sampling_method,
            steps=self.sampling_steps,
            eta=self.sampling_eta,
            weights=self.sampling_weights,
            n=self._per_task(self.n_samples, task),
            sweep_n=self.sweep_n,
            batch_size=self.sample_batch,
            clip_x0=self.sampling_clip_x0,
        )

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if not d["overrides"]:  # as recorded before overrides existed
            del d["overrides"]
        return d


# Calibration behind `quick`: a ~1 M-parameter diffusers UNet2DModel trained 15 min
# on Task A (1100 steps of batch 64, lr 1e-3, ~78 images/s on a 2-core CPU) drew sun, pole and
# shadow on the correct side, but 50-step deterministic DDIM from the raw weights gave grey,
# noisy backgrounds.  Hence: EMA weights (averaging removes the step-to-step jitter of a high
# learning rate), lr 1e-3, and ancestral-like sampling (DDIM eta = 1: fresh noise at each step
# corrects the drift of an under-trained eps) with 100 steps.  The training length is an image
# budget split into epochs by the task's training-set size, at batch 32: 64 000 images, ~2000
# optimizer steps, ~6.5 minutes at the ~165 images/s of the bf16 trainer on 2 cores.  Doubling it
# from 32 000 paid: on Task B, 4x the budget raised the measurable share of DDPM samples from
# 50 % to 97 % (128 samples each, 2026-11-28).
QUICK_IMAGE_BUDGET = 64_000
QUICK_NOTES = (
    "small U-Net preset, AdamW lr 1e-3 (paper 3e-4), batch 32 (paper 16), EMA 0.995 from "
    "step 200 and samples from the EMA weights (paper: raw), DDIM eta = 1 with 100 steps "
    f"(paper: DDPM 1000 steps), about {QUICK_IMAGE_BUDGET} training images seen per task "
    "(paper: 400-1600 epochs)"
)

PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        description="CI: seconds per task; shows that the pipeline runs, nothing about rules",
        # the smallest preset the trainer offers ("tiny", ~0.2 M parameters, when present)
        preset="tiny" if "tiny" in unet.PRESETS else "small",
        epochs={"default": 2},
        batch_size=32,
        lr=1e-3,
        ema_decay=0.9,
        ema_start=1,
        ckpt_count=2,
        train_size={"default": 64},
        sampling_method="ddim",
        sampling_steps=5,
        sampling_eta=1.0,
        sampling_weights="ema",
        n_samples={"default": 32},
        sweep_n=16,
        sample_batch=32,
        n_boot=200,
        limits=(
            "The smoke profile trains a tiny network for a few steps on 64 images: its samples "
            "are noise, few or none are measurable, and its metrics say nothing about rule "
            "learning. It exists so that CI exercises every stage (train, sample, measure, "
            "metrics, figures, report, resume) in seconds."
        ),
    ),
    "quick": Profile(
        name="quick",
        description="2-core CPU, ~10 minutes per task; " + QUICK_NOTES,
        preset="small",
        epochs={"A": QUICK_IMAGE_BUDGET // 4000, "default": QUICK_IMAGE_BUDGET // 2000},
        batch_size=32,  # twice the optimizer steps of batch 64 for the same images (~2000)
        lr=1e-3,
        ema_decay=0.995,
        ema_start=200,
        ckpt_count=4,
        train_size=None,
        sampling_method="ddim",
        sampling_steps=100,
        sampling_eta=1.0,
        sampling_weights="ema",
        # Clipping each step's x0 prediction to [-1, 1] roughly doubled the measurable share of
        # these samples (96 per task from the quick checkpoints: A 16 -> 26 %, B 26 -> 46 %,
        # C 13 -> 28 %, D 18 -> 41 %) at no cost; raw weights, eta = 0 and 50 or 200 steps were
        # no better (measured 2026-11-27 on the 2-core CPU).
        sampling_clip_x0=True,
        n_samples={"default": 256},
        sweep_n=48,
        sample_batch=128,
        n_boot=1000,
        limits=(
            "The quick profile trains a <1 M-parameter U-Net for about 2000 optimizer steps "
            f"(about {QUICK_IMAGE_BUDGET} images: 16 epochs of Task A and 32 of B-D instead of "
            "the paper's 400-1600), with a larger learning rate, EMA weights and 100-step "
            "ancestral DDIM, each step's clean-image prediction clipped to [-1, 1]. It can show "
            "whether a diffusion model picks up the coarse rule "
            "(objects in place, the shadow opposite the sun, the ordering of sizes) before it "
            "draws clean scenes, and it measures the fine-rule error with honest confidence "
            "intervals on a few hundred samples. It cannot say whether the fine-rule error "
            "stays constant with long training (the paper's central claim): the model is far "
            "from converged, many samples may not be measurable, and its fine-rule numbers mix "
            "under-training with the effect the paper studies. The paper profile on a GPU "
            "answers that."
        ),
    ),
    "paper": Profile(
        name="paper",
        description="GPU: the paper's settings (docs/paper.md section 4)",
        preset="paper",
        epochs=None,  # the paper's 400 / 800 / 1600 / 1000
        batch_size=16,
        lr=3e-4,
        ema_decay=0.995,
        ema_start=2000,
        ckpt_count=8,
        train_size=None,
        sampling_method="ddpm",
        sampling_steps=None,
        sampling_eta=1.0,
        sampling_weights="raw",
        n_samples={"A": 3000, "default": 6000},
        sweep_n=1000,
        sample_batch=1000,
        n_boot=1000,
        limits=(
            "The paper profile uses the paper's network, optimiser, epochs, sampler and sample "
            "counts, so its numbers can be read against the paper's table. Our measurement is "
            "sub-pixel at 32x32 rather than contour-based at 128 px, so training images conform "
            "~100 % (the paper's 95-99.5 % is its measurement error) and far fewer generated "
            "images are dropped; differences in rule-conforming % partly reflect that."
        ),
    ),
}


def names() -> list[str]:
    """Valid profile names, `auto` included."""
    return [*PROFILES, "auto"]


def resolve(name: str) -> str:
    """`auto` -> `paper` with CUDA, else `quick`; other names are checked and returned."""
    if name == "auto":
        return "paper" if torch.cuda.is_available() else "quick"
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; expected one of {names()}")
    return name


def get(name: str) -> Profile:
    """The Profile called `name` (or `auto`); ValueError listing the valid names otherwise."""
    return PROFILES[resolve(name)]
