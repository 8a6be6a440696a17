"""Checkpoint folders of a training run: written atomically, listed, loaded, cleaned.

Every `ckpt_every` epochs (and at the end) a folder `checkpoints/epoch_XXXXXX/` with
`model.safetensors` (raw weights), `ema.safetensors`, `state.pt` (optimizer, RNG states of torch
CPU, CUDA, numpy and the data generator, epoch, step, a hash of the training data) and
`config.json`. The folder is written under a temporary name and renamed into place (atomic), then
the pointer file `checkpoints/latest` is replaced atomically. Every checkpoint is kept: the
training-length sweep evaluates them all.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from rulelib import atomic
from rulelib.diffusion import unet
from rulelib.diffusion.config import TrainConfig

_CKPT_RE = re.compile(r"^epoch_(\d{6})$")
_CKPT_FILES = ("model.safetensors", "ema.safetensors", "state.pt", "config.json")


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or belongs to a different configuration or dataset."""


def _cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    # safetensors wants contiguous CPU tensors; channels_last weights are made contiguous here.
    return {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}


def _rng_state(gen: torch.Generator) -> dict:
    np_state = np.random.get_state()  # noqa: NPY002 (the global state users seed)
    return {
        "torch_cpu": torch.get_rng_state(),
        "torch_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_gauss": [int(np_state[3]), float(np_state[4])],
        "data_generator": gen.get_state(),
    }


def _set_rng_state(state: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch_cpu"])
    if torch.cuda.is_available() and state["torch_cuda"]:
        torch.cuda.set_rng_state_all(state["torch_cuda"])
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    has_gauss, gauss = state["numpy_gauss"]
    np_state = ("MT19937", keys, state["numpy_pos"], has_gauss, gauss)
    np.random.set_state(np_state)  # noqa: NPY002
    gen.set_state(state["data_generator"])


def list_checkpoints(run_dir) -> list[tuple[int, Path]]:
    """[(epoch, checkpoint folder)] of every complete checkpoint of a run, oldest first."""
    ckdir = Path(run_dir) / "checkpoints"
    if not ckdir.is_dir():
        return []
    out = []
    for p in ckdir.iterdir():
        m = _CKPT_RE.match(p.name)
        if m and p.is_dir() and all((p / f).exists() for f in _CKPT_FILES):
            out.append((int(m.group(1)), p))
    return sorted(out)


def _save_checkpoint(run_dir: Path, cfg: TrainConfig, model, ema, opt, gen, epoch, step, extra):
    ckdir = run_dir / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    final = ckdir / f"epoch_{epoch:06d}"
    if final.exists():
        raise CheckpointError(f"refusing to overwrite existing checkpoint {final}")
    tmp = Path(tempfile.mkdtemp(dir=ckdir, prefix=f".tmp-{final.name}-"))
    meta = {"epoch": str(epoch), "step": str(step), "preset": cfg.preset}
    save_file(_cpu_state(model), tmp / "model.safetensors", metadata=meta)
    save_file(_cpu_state(ema), tmp / "ema.safetensors", metadata=meta)
    torch.save(
        {"optimizer": opt.state_dict(), "rng": _rng_state(gen), "epoch": epoch, "step": step,
         **extra},
        tmp / "state.pt",
    )  # fmt: skip
    (tmp / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    for f in tmp.iterdir():
        os.chmod(f, 0o644)
    os.chmod(tmp, 0o755)  # mkdtemp creates 0700
    os.replace(tmp, final)  # atomic: the folder appears complete or not at all
    atomic.write_text(ckdir / "latest", final.name + "\n")
    return final


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise CheckpointError(f"missing checkpoint file {path}")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"corrupt checkpoint file {path} ({e}); delete its folder to fall back to the "
            "previous checkpoint"
        ) from e


def _load_state(path: Path) -> dict:
    if not path.exists():
        raise CheckpointError(f"missing checkpoint file {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types on truncated or garbled files
        raise CheckpointError(
            f"corrupt checkpoint file {path} ({type(e).__name__}: {e}); delete its folder to "
            "fall back to the previous checkpoint"
        ) from e


def _resolve_checkpoint(run_dir_or_ckpt) -> Path:
    p = Path(run_dir_or_ckpt)
    if (p / "model.safetensors").exists() or _CKPT_RE.match(p.name):
        if not p.is_dir():
            raise CheckpointError(f"missing checkpoint folder {p}")
        return p
    if not p.exists():
        raise CheckpointError(f"missing run folder or checkpoint {p}")
    ckpts = list_checkpoints(p)
    if not ckpts:
        raise CheckpointError(f"no checkpoint in {p / 'checkpoints'}")
    return ckpts[-1][1]


def load_model(run_dir_or_ckpt, *, weights: str = "raw", device="cpu"):
    """Load a trained denoiser: (model in eval mode, TrainConfig, epoch).

    run_dir_or_ckpt: a run folder (its newest checkpoint is used) or one checkpoint folder.
    weights: "raw" (the paper's choice for sampling) or "ema".
    """
    if weights not in ("raw", "ema"):
        raise ValueError(f"weights must be 'raw' or 'ema', got {weights!r}")
    ck = _resolve_checkpoint(run_dir_or_ckpt)
    cfg_path = ck / "config.json"
    if not cfg_path.exists():
        raise CheckpointError(f"missing checkpoint file {cfg_path}")
    try:
        cfg = TrainConfig.from_dict(json.loads(cfg_path.read_text()))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"corrupt checkpoint file {cfg_path} ({e})") from e
    model = unet.build(cfg.preset)
    model.load_state_dict(
        _load_weights(ck / f"{'model' if weights == 'raw' else 'ema'}.safetensors")
    )
    m = _CKPT_RE.match(ck.name)
    epoch = int(m.group(1)) if m else int(_load_state(ck / "state.pt")["epoch"])
    return model.to(device).eval(), cfg, epoch


def remove_partial(run_dir) -> None:
    """Delete temporary checkpoint folders left by a killed run (never complete checkpoints)."""
    for p in (Path(run_dir) / "checkpoints").glob(".tmp-*"):
        shutil.rmtree(p, ignore_errors=True)
