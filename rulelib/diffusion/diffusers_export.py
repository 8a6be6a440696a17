"""A trained run as a diffusers pipeline:

    python -m rulelib export-diffusers --task B --out runs/reproduce --to models/B

Our checkpoints (rulelib.diffusion.checkpoint) hold the weights of the adapter around diffusers'
`UNet2DModel` (`unet.DiffusersEps`, keys prefixed `net.`) with our own TrainConfig, which
diffusers cannot read.  `export_diffusers` writes the layout diffusers loads:

    DEST/model_index.json                              DDPMPipeline
    DEST/unet/config.json, diffusion_pytorch_model.safetensors     UNet2DModel.save_pretrained
    DEST/scheduler/scheduler_config.json               DDPMScheduler: our schedule and sampler
    DEST/rulelib.json                                  where it came from (run, epoch, weights)

so that `DDPMPipeline.from_pretrained(DEST)` samples the model, and
`UNet2DModel.from_pretrained(DEST, subfolder="unet")` gives the network.  The scheduler is ours
in diffusers' terms: T steps, beta linear from beta_start to beta_end (Ho et al. section 4),
epsilon prediction, sigma_t^2 = beta_t ("fixed_large", our DDPM sampler's and the paper's
choice, rulelib.diffusion.sample.ddpm_step), and x0 clipping as the run's profile sampled.

Only the presets built on `UNet2DModel` export ("small", "tiny", "narrow", "wide").  The
"paper" preset is the paper's own U-Net, which UNet2DModel cannot express (max-pool down-sampling,
bilinear up-sampling, attention with a feed-forward part after each level, the time embedding
added after the double convs: rulelib.diffusion.unet), and "dit" is a DiT transformer, which
DDPMPipeline does not drive; both are refused with that reason.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from rulelib import atomic
from rulelib.diffusion import checkpoint, unet

EXPORTABLE = tuple(name for name, spec in unet.PRESETS.items() if spec["kind"] == "diffusers")
_WHY_NOT = {
    "paper": "the paper's U-Net is not a diffusers UNet2DModel (max-pool down-sampling, bilinear "
    "up-sampling, attention with a feed-forward part after each level, the time embedding added "
    "after the double convs), so diffusers cannot load it; use rulelib.diffusion.checkpoint."
    "load_model",
    "dit": "the dit preset is a DiTTransformer2DModel, which DDPMPipeline does not drive; use "
    "rulelib.diffusion.checkpoint.load_model",
}


def scheduler_config(cfg, clip_x0: bool) -> dict:
    """DDPMScheduler arguments of a run's schedule (TrainConfig T, beta_start, beta_end) and our
    DDPM sampler (sigma_t^2 = beta_t: diffusers' "fixed_large")."""
    return {
        "num_train_timesteps": cfg.T,
        "beta_start": cfg.beta_start,
        "beta_end": cfg.beta_end,
        "beta_schedule": "linear",
        "prediction_type": "epsilon",
        "variance_type": "fixed_large",
        "clip_sample": bool(clip_x0),
        "clip_sample_range": 1.0,
    }


def _profile_clip(run_dir: Path) -> bool:
    """Whether the run's profile clips each step's x0 prediction (profile.json of the task
    folder); False where the folder has none (the paper's sampler does not clip)."""
    for folder in (run_dir, *run_dir.parents[:3]):
        path = folder / "profile.json"
        if path.exists():
            return bool(atomic.read_json(path).get("settings", {}).get("sampling_clip_x0", False))
    return False


def export_diffusers(run_dir_or_ckpt, dest, *, weights: str = "ema") -> Path:
    """Write the checkpoint (a run folder's newest, or one checkpoint folder) as a diffusers
    DDPMPipeline into `dest` (a new folder, written whole or not at all); returns `dest`.

    weights: "ema" or "raw" (the profile's sampling weights: quick samples the EMA, paper the
    raw weights).  ValueError for a preset diffusers cannot load (saying why) or an existing
    `dest`."""
    from diffusers import DDPMPipeline, DDPMScheduler  # imported here: slow to import

    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise ValueError(f"{dest} exists and is not empty; choose another --to or delete it")
    model, cfg, epoch = checkpoint.load_model(run_dir_or_ckpt, weights=weights)
    if cfg.preset not in EXPORTABLE:
        why = _WHY_NOT.get(cfg.preset, "not built on diffusers' UNet2DModel")
        raise ValueError(
            f"preset {cfg.preset!r} cannot be exported to diffusers: {why} "
            f"(exportable presets: {', '.join(EXPORTABLE)})"
        )
    source = Path(run_dir_or_ckpt)
    clip = _profile_clip(source if source.is_dir() else source.parent)
    pipe = DDPMPipeline(unet=model.net, scheduler=DDPMScheduler(**scheduler_config(cfg, clip)))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp"))
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        info = {
            "source": str(source), "epoch": epoch, "weights": weights, "task": cfg.task,
            "preset": cfg.preset, "train_config": cfg.to_dict(),
        }  # fmt: skip
        atomic.write_json(tmp / "rulelib.json", info)
        os.chmod(tmp, 0o755)  # mkdtemp creates 0700; this is an ordinary folder
        if dest.exists():
            dest.rmdir()  # empty (checked above)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return dest


# --------------------------------------------------------------------------------------------------
# The subcommand (rulelib.cli's table of commands)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, help="the task whose model to export, e.g. B")
    p.add_argument("--out", default="runs/reproduce", help="the run folder (default: %(default)s)")
    p.add_argument(
        "--checkpoint",
        default=None,
        metavar="DIR",
        help="one checkpoint folder (default: the task's newest, OUT/TASK/checkpoints/...)",
    )
    p.add_argument("--to", required=True, help="the new folder of the diffusers pipeline")
    p.add_argument(
        "--weights", default="ema", choices=("ema", "raw"),
        help="EMA (the quick profile samples these) or raw weights (the paper's)",
    )  # fmt: skip


def run(args, command: str) -> int:
    source = args.checkpoint or Path(args.out) / args.task
    dest = export_diffusers(source, args.to, weights=args.weights)
    print(
        f"wrote a diffusers DDPMPipeline to {dest}: DDPMPipeline.from_pretrained({str(dest)!r}) "
        f'or UNet2DModel.from_pretrained({str(dest)!r}, subfolder="unet")'
    )
    return 0
