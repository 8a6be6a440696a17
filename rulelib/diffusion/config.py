"""TrainConfig: everything that determines a training run (the paper's settings by default)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from rulelib import paper
from rulelib.device import resolve_device
from rulelib.diffusion import unet
from rulelib.diffusion.schedule import Schedule

# Keys that may change between a run and its resumption: they do not change what is computed
# (epochs only extends the run; the rest are logging, placement and kernel choices). A resumed
# run keeps the levers its checkpoint records unless they are set here (rulelib.diffusion.train).
RESUME_FREE_KEYS = frozenset(
    {"epochs", "device", "compile", "bf16", "channels_last", "ckpt_every", "log_every",
     "sample_weights", "resume_steps", "stop_step"}
)  # fmt: skip


@dataclass
class TrainConfig:
    """Everything that determines a training run. Defaults are the paper's (section 4)."""

    task: str = "A"
    preset: str = "paper"
    epochs: int | None = None  # None: the paper's epochs for `task`
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 0.01  # torch's AdamW default, which the paper's code kept
    seed: int = 0
    ema_decay: float = 0.995
    ema_start: int = 2000  # steps; before it the EMA copies the raw weights
    ckpt_every: int = 50  # epochs
    # steps between mid-epoch resume points (0: none); for runs whose one epoch is long
    resume_steps: int = 0
    # stop once the global step reaches this, with a mid-epoch resume point there (None: run to
    # `epochs`); a run whose one epoch is long can so be scored part way (the study's fresh arm)
    stop_step: int | None = None
    T: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 2e-2
    device: str = "auto"  # "auto": cuda if available, else cpu
    # The speed levers; None: chosen per machine (rulelib.diffusion.levers.choose: timed on the
    # machine for a long run, the rule for a short one); a value given here is kept.
    bf16: bool | None = None
    compile: bool | None = None
    channels_last: bool | None = None
    log_every: int = 50  # steps between host reads of the loss
    sample_weights: str = "raw"  # which weights sampling uses by default: "raw" (paper) or "ema"

    def __post_init__(self):
        if self.epochs is None:
            if self.task not in paper.EPOCHS:
                raise ValueError(
                    f"task {self.task!r} has no paper epochs ({sorted(paper.EPOCHS)}); "
                    "give epochs explicitly"
                )
            self.epochs = paper.EPOCHS[self.task]
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad value."""
        for key in ("epochs", "batch_size", "ckpt_every", "log_every", "T"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{key} must be a positive integer, got {v!r}")
        if isinstance(self.resume_steps, bool) or not isinstance(self.resume_steps, int) or \
                self.resume_steps < 0:  # fmt: skip
            raise ValueError(f"resume_steps must be an integer >= 0, got {self.resume_steps!r}")
        s = self.stop_step
        if s is not None and (isinstance(s, bool) or not isinstance(s, int) or s < 1):
            raise ValueError(f"stop_step must be None or a positive integer, got {s!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if self.ema_start < 0:
            raise ValueError(f"ema_start must be >= 0 steps, got {self.ema_start!r}")
        if self.preset not in unet.PRESETS:
            raise ValueError(
                f"unknown preset {self.preset!r}; expected one of {sorted(unet.PRESETS)}"
            )
        if self.sample_weights not in ("raw", "ema"):
            raise ValueError(f"sample_weights must be 'raw' or 'ema', got {self.sample_weights!r}")
        resolve_device(self.device)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(
                f"unknown TrainConfig keys {unknown}; expected some of {sorted(names)}"
            )
        return cls(**d)

    def schedule(self) -> Schedule:
        return Schedule(self.T, self.beta_start, self.beta_end)
