"""Checkpoint folders of a training run: written atomically, listed, loaded, cleaned.

Every `ckpt_every` epochs (and at the end) a folder `checkpoints/epoch_XXXXXX/` with
`model.safetensors` (raw weights), `ema.safetensors`, `state.pt` (optimizer, RNG states of torch
CPU, CUDA, numpy and the data generator, epoch, step, a hash of the training data) and
`config.json`. The folder is written under a temporary name and renamed into place (atomic), then
the pointer file `checkpoints/latest` is replaced atomically. Every checkpoint is kept unless its
caller removes it with `remove` (the study's arms write resume points between the checkpoints they
score and remove them once the next scored one exists).

Faults.  A save that fails (a full disk, a read-only folder) removes its temporary folder and
raises the OSError with the checkpoint file it was writing; the earlier checkpoints are untouched.
A temporary folder left by a killed run (`.tmp-epoch_*`) is never read, and `clean` removes it at
the next start.  A checkpoint folder missing one of its files (deleted by hand, say) is not a
checkpoint: `clean` moves it aside to `epoch_XXXXXX.incomplete` and names it, and a save of the
same epoch replaces it the same way instead of refusing after the work is done.

Mid-epoch resume points.  A run whose epoch is long (a large or fresh training set: one epoch of
128 000 images is over an hour on one CPU core) can also write `checkpoints/midepoch_SSSSSSSSS/`
every `resume_steps` steps (S: the global step): the same files, and in `state.pt` the epoch's
data order, so a run killed mid-epoch resumes there to the bit.  They are not checkpoints (not
listed, not loaded for sampling, `latest` never names them); the trainer removes them once the
epoch's checkpoint (or a newer resume point) exists.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from rulelib import atomic
from rulelib.diffusion import unet
from rulelib.diffusion.config import TrainConfig

_CKPT_RE = re.compile(r"^epoch_(\d{6})$")
_MID_RE = re.compile(r"^midepoch_(\d{9})$")
CHECKPOINT_FILES = ("model.safetensors", "ema.safetensors", "state.pt", "config.json")


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or belongs to a different configuration or dataset."""


def _cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    # safetensors wants contiguous CPU tensors; channels_last weights are made contiguous here.
    return {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}


def canonical_safetensors(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> bytes:
    """safetensors bytes with the JSON header's keys sorted, so that equal tensors and metadata
    give equal bytes: safetensors keeps the metadata in a hash map, whose order changes from one
    process to the next.  The header is the 8-byte little-endian length, the JSON, and spaces up
    to a multiple of 8 bytes (the format's alignment); the tensor bytes follow unchanged, their
    offsets relative to the end of the header."""
    raw = safetensors_bytes(tensors, meta)
    n = int.from_bytes(raw[:8], "little")
    header = json.dumps(json.loads(raw[8 : 8 + n]), sort_keys=True, separators=(",", ":"))
    text = header.encode() + b" " * (-len(header.encode()) % 8)
    return len(text).to_bytes(8, "little") + text + raw[8 + n :]


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


def _is_complete(folder: Path) -> bool:
    return all((folder / f).exists() for f in CHECKPOINT_FILES)


def list_checkpoints(run_dir) -> list[tuple[int, Path]]:
    """[(epoch, checkpoint folder)] of every complete checkpoint of a run, oldest first."""
    ckdir = Path(run_dir) / "checkpoints"
    if not ckdir.is_dir():
        return []
    out = []
    for p in ckdir.iterdir():
        m = _CKPT_RE.match(p.name)
        if m and p.is_dir() and _is_complete(p):
            out.append((int(m.group(1)), p))
    return sorted(out)


def _write_file(path: Path, name_in_errors: Path, write) -> None:
    """write(f) into a new file at `path`, flushed to disk.  Written through a Python file object,
    so that a full disk raises OSError (errno 28) rather than torch.save's RuntimeError; an OSError
    without a file name gets `name_in_errors` (the checkpoint file, not its temporary name)."""
    try:
        with open(path, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        if e.filename is None:
            raise type(e)(e.errno, e.strerror or str(e), str(name_in_errors)) from e
        raise


def _set_aside_incomplete(folder: Path) -> Path:
    """Move an incomplete checkpoint folder to `<name>.incomplete` (or `.incomplete_2`, ...)."""
    dst, i = folder.with_name(folder.name + ".incomplete"), 1
    while dst.exists():
        i += 1
        dst = folder.with_name(f"{folder.name}.incomplete_{i}")
    os.replace(folder, dst)
    return dst


def _save_checkpoint(run_dir: Path, cfg: TrainConfig, model, ema, opt, gen, epoch, step, extra,
                     *, midepoch: bool = False):  # fmt: skip
    """Write `epoch_XXXXXX/` (and point `latest` at it), or with ``midepoch`` a resume point
    `midepoch_SSSSSSSSS/` (``extra`` then holds the epoch's data order); atomically."""
    ckdir = run_dir / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    final = ckdir / (f"midepoch_{step:09d}" if midepoch else f"epoch_{epoch:06d}")
    if final.exists():
        if _is_complete(final):
            raise CheckpointError(f"refusing to overwrite existing checkpoint {final}")
        aside = _set_aside_incomplete(final)  # replaced by this one, kept for inspection
        warnings.warn(
            f"incomplete checkpoint {final} moved to {aside.name}", RuntimeWarning, stacklevel=2
        )
    tmp = Path(tempfile.mkdtemp(dir=ckdir, prefix=f".tmp-{final.name}-"))
    meta = {"epoch": str(epoch), "step": str(step), "preset": cfg.preset}
    state = {"optimizer": opt.state_dict(), "rng": _rng_state(gen), "epoch": epoch, "step": step,
             **extra}  # fmt: skip
    files = {
        "model.safetensors": lambda f: f.write(canonical_safetensors(_cpu_state(model), meta)),
        "ema.safetensors": lambda f: f.write(canonical_safetensors(_cpu_state(ema), meta)),
        "state.pt": lambda f: torch.save(state, f),
        "config.json": lambda f: f.write(json.dumps(cfg.to_dict(), indent=1).encode()),
    }
    try:
        for name, write in files.items():
            _write_file(tmp / name, final / name, write)
            os.chmod(tmp / name, 0o644)
        os.chmod(tmp, 0o755)  # mkdtemp creates 0700
        os.replace(tmp, final)  # atomic: the folder appears complete or not at all
    except BaseException:  # a full disk, a read-only folder, Ctrl-C: leave no temporary folder
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not midepoch:
        atomic.write_text(ckdir / "latest", final.name + "\n")
    return final


def midepoch_points(run_dir) -> list[tuple[int, Path]]:
    """[(step, folder)] of the complete mid-epoch resume points of a run, oldest first."""
    ckdir = Path(run_dir) / "checkpoints"
    if not ckdir.is_dir():
        return []
    found = ((_MID_RE.match(p.name), p) for p in ckdir.iterdir())
    return sorted((int(m.group(1)), p) for m, p in found if m and p.is_dir() and _is_complete(p))


def remove_midepoch(run_dir, *, before_step: int | None = None) -> None:
    """Delete the mid-epoch resume points (only those before ``before_step`` when given)."""
    for step, folder in midepoch_points(run_dir):
        if before_step is None or step < before_step:
            _discard(folder)


def _discard(folder: Path) -> None:
    """Rename a folder to `.tmp-removed-<name>`, then delete it: a process killed midway leaves a
    `.tmp-*` folder that `clean` removes, never a half-deleted checkpoint."""
    doomed = folder.with_name(f".tmp-removed-{folder.name}")
    os.replace(folder, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def clean(run_dir) -> dict[str, list[Path]]:
    """Tidy a run's checkpoints before it is used: remove temporary folders left by a killed or
    failed save, and move incomplete checkpoint folders aside (`_set_aside_incomplete`).

    Returns {"removed": [temporary folders], "set_aside": [(new names of) incomplete folders]};
    call it only while no other process writes to the run (rulelib.run.lock)."""
    ckdir = Path(run_dir) / "checkpoints"
    done = {"removed": [], "set_aside": []}
    if not ckdir.is_dir():
        return done
    for p in sorted(ckdir.glob(".tmp-*")):
        shutil.rmtree(p, ignore_errors=True)
        done["removed"].append(p)
    for p in sorted(ckdir.iterdir()):
        if _CKPT_RE.match(p.name) and p.is_dir() and not _is_complete(p):
            done["set_aside"].append(_set_aside_incomplete(p))
    ckpts = list_checkpoints(run_dir)
    if done["set_aside"] and ckpts:  # the pointer names the newest complete checkpoint
        atomic.write_text(ckdir / "latest", ckpts[-1][1].name + "\n")
    return done


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


def load_weights_into(cfg: TrainConfig, path: Path, model: torch.nn.Module | None = None):
    """The weights file `path` loaded into `model` (default: a new network of cfg.preset);
    CheckpointError naming the file when the preset is unknown or its tensors do not fit the
    network its config.json names (a file copied from another run, say)."""
    try:
        model = unet.build(cfg.preset) if model is None else model
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path.parent / 'config.json'}: unknown network {cfg.preset!r} "
                              f"({e})") from e  # fmt: skip
    try:
        model.load_state_dict(_load_weights(path))
    except RuntimeError as e:  # missing, unexpected or differently shaped tensors
        first = str(e).strip().splitlines()
        raise CheckpointError(
            f"{path} does not fit the {cfg.preset!r} network of its config.json "
            f"({first[1].strip() if len(first) > 1 else first[0]}); it belongs to another run"
        ) from e
    return model


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
    model = load_weights_into(cfg, ck / f"{'model' if weights == 'raw' else 'ema'}.safetensors")
    m = _CKPT_RE.match(ck.name)
    epoch = int(m.group(1)) if m else int(_load_state(ck / "state.pt")["epoch"])
    return model.to(device).eval(), cfg, epoch


def remove(run_dir, epochs) -> list[int]:
    """Delete the complete checkpoints of ``epochs`` (never the newest one, which `latest` names
    and a resumed run starts from). Each folder is first renamed to a temporary name, so a run
    killed midway leaves a `.tmp-*` folder that `clean` removes, never a half-deleted checkpoint.
    Returns the epochs removed."""
    ckpts, doomed_epochs = list_checkpoints(run_dir), set(epochs)
    if not ckpts:
        return []
    newest = ckpts[-1][0]
    if newest in doomed_epochs:
        raise ValueError(f"refusing to remove the newest checkpoint (epoch {newest}) of {run_dir}")
    removed = []
    for epoch, folder in ckpts:
        if epoch in doomed_epochs:
            _discard(folder)
            removed.append(epoch)
    return removed


def remove_partial(run_dir) -> None:
    """Delete temporary checkpoint folders left by a killed run (never complete checkpoints)."""
    for p in (Path(run_dir) / "checkpoints").glob(".tmp-*"):
        shutil.rmtree(p, ignore_errors=True)
