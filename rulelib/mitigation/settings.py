"""How much work the mitigation does under each run profile (docs/paper.md section 5 for paper)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rulelib.mitigation.networks import PIXEL_ARCHS


@dataclass(frozen=True)
class MitigationSettings:
    """How much mitigation work a profile does (the paper's values under ``paper``)."""

    n_contrastive: int  # contrastive images per task (paper: about 5000)
    clf_archs: tuple[str, ...]  # pixel classifiers trained
    clf_epochs: int  # paper: 100
    clf_batch: int  # paper: 16
    noisy_arch: str  # "unet" (the paper's encoder) or "cheap"
    noisy_kwargs: dict = field(default_factory=dict)
    noisy_epochs: int = 100
    noisy_batch: int = 64
    extra_scales: tuple[float, ...] = (1.0, 3.0)  # swept besides 0 and the paper's s for the task
    weight: str = "linear"  # the paper's w_t = s + 3 (1 - t/T)
    sweep_n: int | None = None  # guided samples per scale; None: the profile's sample count
    method: str | None = None  # None: the profile's sampler (paper: DDPM ancestral)
    steps: int | None = None
    eta: float | None = None
    n_boot: int = 1000
    filter_threshold: float | None = None


SETTINGS = {
    "smoke": MitigationSettings(
        n_contrastive=150,
        clf_archs=PIXEL_ARCHS,
        clf_epochs=1,
        clf_batch=16,
        noisy_arch="cheap",
        noisy_epochs=1,
        noisy_batch=32,
        extra_scales=(),
        sweep_n=16,
        n_boot=100,
    ),
    "quick": MitigationSettings(
        n_contrastive=3000,
        clf_archs=PIXEL_ARCHS,
        clf_epochs=8,
        clf_batch=16,
        noisy_arch="cheap",
        noisy_epochs=30,
        noisy_batch=64,
        extra_scales=(1.0, 3.0),
        sweep_n=None,  # the run's 256: scale 0 is then exactly the run's own samples
        n_boot=1000,
    ),
    "paper": MitigationSettings(
        n_contrastive=5000,
        clf_archs=PIXEL_ARCHS,
        clf_epochs=100,
        clf_batch=16,
        noisy_arch="unet",
        noisy_kwargs={"width": 128},
        noisy_epochs=100,
        noisy_batch=64,
        extra_scales=(1.0, 3.0, 15.0),
        sweep_n=1000,
        n_boot=1000,
    ),
}


def settings_for(profile) -> MitigationSettings:
    """The MitigationSettings of a profile (a rulelib.run.profiles.Profile or its name)."""
    name = getattr(profile, "name", profile)
    if name not in SETTINGS:
        raise ValueError(
            f"no mitigation settings for profile {name!r}; expected one of {list(SETTINGS)}"
        )
    return SETTINGS[name]
