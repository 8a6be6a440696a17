"""The DDPM trainer: the paper's settings, fast on the device it runs on, resumable to the bit.

Paper settings (docs/paper.md section 4): AdamW at lr 3e-4 constant, batch 16, seed 0, fp32, epochs
400 / 800 / 1600 / 1000 for tasks A-D; an EMA of the weights (decay 0.995, starting after 2000
steps) is kept beside the raw weights, and samples come from the raw weights. (The paper trained
in fp32; pass bf16=False for that; by default bf16 is used only where it pays, see below.)

Speed (what the loop does and why):
- the whole training set lives on the device as one float tensor: 4000 images of 32x32x3 are
  49 MB, so a DataLoader (worker processes, per-item collation) would only add overhead;
- each epoch's order is a `torch.randperm` from a seeded generator on the device, and t and eps
  are drawn from the same generator, so a checkpoint of that generator's state resumes exactly;
- AdamW is `fused` on CUDA and CPU (one kernel for all parameters, `levers.adamw_kernel`); the EMA
  update is one `torch._foreach_lerp_`;
- the levers (bf16 or fp32, channels_last, compiled regions, threads; rulelib.diffusion.levers)
  are chosen per machine: a long run times a few steps of each candidate on the machine at hand
  and keeps the fastest (cached per machine and network, so paid once), a short run takes a rule
  (bf16 on CUDA and on CPUs with AMX, channels_last on CUDA and CPUs without AMX, compiled on
  CUDA and for CPU runs of 10 000+ steps); levers set in the TrainConfig are kept. The choice,
  how it was made and its figures are in the summary (`levers`, `levers_how`,
  `levers_figures`), and every checkpoint records the levers: a resumed run keeps them, so it
  computes the same bits as an uninterrupted one;
- the loss is accumulated on the device; the host reads it (a synchronisation) only every
  `log_every` steps, for the progress bar and the NaN check.

Checkpoints: every `ckpt_every` epochs (and at the end) a folder `checkpoints/epoch_XXXXXX/` with
`model.safetensors` (raw weights), `ema.safetensors`, `state.pt` (optimizer, RNG states of torch
CPU, CUDA, numpy and the data generator, epoch, step, a hash of the training data) and
`config.json`. The folder is written under a temporary name and renamed into place (atomic), then
the pointer file `checkpoints/latest` is replaced atomically. Every checkpoint is kept: the
training-length sweep evaluates them all. Nothing written is overwritten: a run folder is only
ever continued. With `resume_steps` > 0 the loop also writes a mid-epoch resume point every that
many steps (with the epoch's data order; rulelib.diffusion.checkpoint), and a resumed run starts
from the newest of the two, at the step it holds. With `stop_step` the loop stops at that global
step, writing such a resume point there (a run can so be scored part way through a long epoch).
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from rulelib import allocator, atomic
from rulelib.device import resolve_device
from rulelib.diffusion import levers, unet
from rulelib.diffusion.checkpoint import (
    CheckpointError,
    _load_state,
    _save_checkpoint,
    _set_rng_state,
    list_checkpoints,
    load_weights_into,
    midepoch_points,
    remove_midepoch,
)
from rulelib.diffusion.config import RESUME_FREE_KEYS, TrainConfig
from rulelib.diffusion.schedule import Schedule, images_to_tensor

# torch.OutOfMemoryError appeared in torch 2.5; before it CUDA raised torch.cuda.OutOfMemoryError.
_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


class TrainingError(RuntimeError):
    """Training stopped for a reason named in the message (NaN loss, out of memory)."""


def _data_hash(images: np.ndarray) -> str:
    h = hashlib.sha256(str(images.shape).encode())
    h.update(np.ascontiguousarray(images).tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Training


def _check_config(run_dir: Path, cfg: TrainConfig, resume: bool) -> None:
    """Refuse to mix runs: an existing run folder must have been made by a config that differs
    from `cfg` only in RESUME_FREE_KEYS, and is only continued when resume=True."""
    path = run_dir / "config.json"
    has_ckpt = bool(list_checkpoints(run_dir))
    if not path.exists():
        if has_ckpt:
            raise CheckpointError(
                f"{run_dir} has checkpoints but no config.json; refusing to resume"
            )
        return
    if not resume and has_ckpt:
        raise CheckpointError(
            f"{run_dir} already holds a trained run; pass resume=True to continue it or choose "
            "another output folder (nothing is overwritten)"
        )
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"corrupt {path} ({e})") from e
    new = cfg.to_dict()
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    strict = [k for k in diff if k not in RESUME_FREE_KEYS]
    if strict:
        pairs = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in strict)
        raise CheckpointError(
            f"{run_dir} was trained with a different config ({pairs}); refusing to resume. "
            "Use another output folder or the original settings."
        )


def train(
    cfg: TrainConfig,
    images_uint8: np.ndarray,
    out_dir,
    *,
    resume: bool = True,
    progress: bool = True,
    time_limit_s: float | None = None,
) -> dict:
    """Train a denoiser on uint8 images (N, 32, 32, 3) into `out_dir`; returns a summary dict.

    resume: continue from the newest checkpoint in out_dir/checkpoints (after checking the config
    and the data); with resume=False an existing trained run is an error, never overwritten.
    time_limit_s: stop (with a checkpoint) after the first epoch that ends past this many seconds,
    so that a run can be spread over time-limited sessions; the summary then has finished=False.
    """
    cfg.validate()
    allocator.warm()  # keep the steps' freed memory: 3-7 % more images/s on CPU (its docstring)
    images_uint8 = np.asarray(images_uint8)
    if images_uint8.dtype != np.uint8 or images_uint8.ndim != 4 or len(images_uint8) == 0:
        raise ValueError(
            f"images must be a non-empty uint8 array (N, H, W, C), got dtype "
            f"{images_uint8.dtype}, shape {images_uint8.shape}"
        )
    run_dir = Path(out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_config(run_dir, cfg, resume)
    r = _prepare(cfg, images_uint8, run_dir, resume, progress)
    if r.epoch >= cfg.epochs:
        return {**r.summary, "epochs": r.epoch, "steps": r.step, "finished": True, "loss": None,
                "images_per_s": None, "seconds": 0.0}  # fmt: skip
    return _loop(r, cfg, run_dir, progress, time_limit_s)


@dataclass
class _Run:
    """What the training loop works on (made by `_prepare`)."""

    device: torch.device
    model: torch.nn.Module  # the fp32 raw weights (the master weights of a bf16 copy)
    ema: torch.nn.Module
    opt: torch.optim.Optimizer
    gen: torch.Generator  # data order, t and eps
    step_fn: levers.Step
    schedule: Schedule
    data: torch.Tensor
    data_hash: str
    lev: levers.Levers
    epoch: int
    step: int
    summary: dict
    perm: torch.Tensor | None = None  # the epoch's data order when resuming mid-epoch


def _recorded_levers(state: dict | None, device: torch.device) -> levers.Levers | None:
    """The levers a checkpoint's state records, when they were chosen for this kind of device
    (a run moved from CPU to GPU chooses anew; checkpoints older than the record: None)."""
    rec = (state or {}).get("levers")
    if not rec or rec.get("device") != device.type:
        return None
    lev = levers.Levers.from_dict({k: v for k, v in rec.items() if k != "device"})
    if lev.threads != torch.get_num_threads():
        warnings.warn(
            f"this run was trained with {lev.threads} torch threads, now {torch.get_num_threads()}"
            ": reductions may be ordered differently, so the bits may differ from an "
            "uninterrupted run (torch.set_num_threads to match)",
            RuntimeWarning,
            stacklevel=3,
        )
    return lev.with_(threads=torch.get_num_threads())


def _prepare(cfg: TrainConfig, images_uint8, run_dir: Path, resume: bool, progress: bool) -> _Run:
    """The model, its EMA, the optimizer and the data generator (from the newest checkpoint when
    resuming), the levers (`levers.choose`) and the step under them."""
    device = resolve_device(cfg.device)
    data_hash = _data_hash(images_uint8)
    torch.manual_seed(cfg.seed)  # the initial weights
    # numpy's global state is stored in each checkpoint (and restored on resume); seeded here so
    # that identical runs store identical states, and so write byte-identical checkpoints
    np.random.seed(cfg.seed % 2**32)  # noqa: NPY002
    model = unet.build(cfg.preset).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    schedule = cfg.schedule().to(device)
    data = images_to_tensor(images_uint8, device)
    epoch, step, state, perm = 0, 0, None, None
    steps_per_epoch = _steps_per_epoch(len(data), cfg.batch_size)
    ck = _resume_point(run_dir, steps_per_epoch) if resume else None
    if ck is not None:
        state = _load_state(ck / "state.pt")
        if state.get("data_hash") != data_hash:
            raise CheckpointError(
                f"{ck} was trained on different data (hash {state.get('data_hash')} != "
                f"{data_hash}); refusing to resume"
            )
        load_weights_into(cfg, ck / "model.safetensors", model)  # CheckpointError if it misfits
        load_weights_into(cfg, ck / "ema.safetensors", ema)
        _set_rng_state(state["rng"], gen)
        epoch, step = int(state["epoch"]), int(state["step"])
        perm = state.get("perm")  # a mid-epoch point: the rest of this epoch's order
        perm = None if perm is None else perm.to(device)

    # Written only now that every check has passed; it may differ from the old one only in
    # RESUME_FREE_KEYS (e.g. a longer run). Each checkpoint keeps its own copy.
    atomic.write_text(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=1))
    steps_left = max(cfg.epochs * steps_per_epoch - step, 0)
    fixed = {"bf16": cfg.bf16, "channels_last": cfg.channels_last, "compile": cfg.compile}
    lev, how = levers.choose(
        model, schedule, data[: cfg.batch_size], device, steps_left,
        cfg.preset, fixed, _recorded_levers(state, device), progress,
    )  # fmt: skip
    model.train()
    step_fn = levers.Step(model, lev, device)  # puts the model in the levers' memory format
    ema.to(memory_format=step_fn.fmt)
    data = data.contiguous(memory_format=step_fn.fmt)
    opt = torch.optim.AdamW(
        step_fn.params, lr=cfg.lr, weight_decay=cfg.weight_decay, **levers.adamw_kernel(device)
    )
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        _match_layout(opt, step_fn.params)
    rejected = None
    if lev.compile and epoch < cfg.epochs:
        rejected = step_fn.compile(schedule, data[: cfg.batch_size])
        if rejected:
            warnings.warn(
                f"torch.compile rejected on {device}: {rejected}; training eagerly",
                RuntimeWarning,
                stacklevel=3,
            )
            lev = lev.with_(compile=False)
    summary = {
        "run_dir": str(run_dir), "preset": cfg.preset, "params": unet.n_params(model),
        "device": str(device), "bf16": lev.bf16, "precision": step_fn.precision,
        "compile": lev.compile, "compile_rejected": rejected, "channels_last": lev.channels_last,
        "threads": lev.threads, "levers": lev.name, "levers_how": how["how"],
        "levers_figures": how["figures"], "levers_seconds": how["seconds"],
        "levers_why": how.get("why"),
        "start_epoch": epoch, "start_step": step,
    }  # fmt: skip
    return _Run(device, model, ema, opt, gen, step_fn, schedule, data, data_hash, lev, epoch,
                step, summary, perm)  # fmt: skip


def _steps_per_epoch(n: int, batch_size: int) -> int:
    """Steps of one epoch over n images: ceil(n / batch_size) (the last batch may be short)."""
    return -(-n // batch_size)


def _resume_point(run_dir: Path, steps_per_epoch: int) -> Path | None:
    """The newest checkpoint, or a newer mid-epoch resume point: its step is past the
    checkpoint's, which (checkpoints end epochs) is the checkpoint's epoch times steps_per_epoch."""
    ckpts, mids = list_checkpoints(run_dir), midepoch_points(run_dir)
    ck = ckpts[-1][1] if ckpts else None
    if mids and (ck is None or mids[-1][0] > ckpts[-1][0] * steps_per_epoch):
        return mids[-1][1]
    return ck


def _match_layout(opt: torch.optim.Optimizer, params: list[torch.Tensor]) -> None:
    """Give the loaded optimizer state (exp_avg, exp_avg_sq: saved contiguous) the memory format
    of its parameters, as a run that never stopped has it (torch.zeros_like keeps the format)."""
    for p in params:
        st = opt.state.get(p, {})
        for k, v in st.items():
            if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                st[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)


def _save(r: _Run, cfg: TrainConfig, run_dir: Path, epoch: int, step: int, perm=None) -> None:
    """The checkpoint of a finished epoch, or (with the epoch's data order ``perm``) a mid-epoch
    resume point; either way the older resume points go."""
    if step <= cfg.ema_start:  # the EMA is still the raw weights (see `_loop`)
        torch._foreach_copy_(list(r.ema.parameters()), r.step_fn.params)
    # The levers go into every checkpoint: a resumed run keeps them (same bits).
    extra = {"data_hash": r.data_hash, "levers": {"device": r.device.type, **r.lev.to_dict()}}
    if perm is not None:
        extra["perm"] = perm.to("cpu")
    _save_checkpoint(run_dir, cfg, r.model, r.ema, r.opt, r.gen, epoch, step, extra,
                     midepoch=perm is not None)  # fmt: skip
    remove_midepoch(run_dir, before_step=step if perm is not None else None)


def _loop(r: _Run, cfg: TrainConfig, run_dir: Path, progress: bool, time_limit_s) -> dict:
    """The epochs from r.epoch to cfg.epochs (or the time limit), with checkpoints; the summary."""
    device, n = r.device, r.data.shape[0]
    steps_per_epoch = _steps_per_epoch(n, cfg.batch_size)
    params, ema_params = r.step_fn.params, list(r.ema.parameters())
    epoch, step = r.epoch, r.step
    bar = tqdm(
        total=cfg.epochs * steps_per_epoch, initial=step, disable=not progress, unit="step",
        desc=f"train {cfg.task} {cfg.preset}",
    )  # fmt: skip
    loss_sum = torch.zeros((), device=device)  # accumulated on the device: no sync per step
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    logged_loss, n_logged, t_log, seen = float("nan"), 0, time.perf_counter(), 0
    t_start, seen_total = time.perf_counter(), 0
    # Steady-state speed: from the first log point (after warm-up and any compilation) to the
    # end of the last epoch's steps (before its checkpoint is written).
    t_steady, t_end, seen_steady = None, None, 0
    finished = True

    def check_finite():
        bad = int(first_bad)  # host read: only at log points and epoch ends
        if bad >= 0:
            raise TrainingError(
                f"loss became NaN/inf at step {bad} (epoch {bad // steps_per_epoch + 1}); "
                f"training stopped, the last checkpoint is kept. Lower lr (now {cfg.lr}) "
                f"or turn off bf16 (now {r.lev.bf16})."
            )

    try:
        while epoch < cfg.epochs:
            if r.perm is None:
                perm, first = torch.randperm(n, device=device, generator=r.gen), 0  # data order
            else:  # resumed mid-epoch: the order drawn at the epoch's start, from where it was
                perm, first = r.perm, (step - epoch * steps_per_epoch) * cfg.batch_size
                r.perm = None
            for i in range(first, n, cfg.batch_size):
                x0 = r.data[perm[i : i + cfg.batch_size]]
                loss = r.step_fn.step(r.schedule, x0, r.gen, r.opt)
                # EMA: the raw weights until ema_start steps, then ema <- ema + (1-decay)(w - ema).
                # Before ema_start the copy is made only when needed (here at the last step before
                # the averaging starts, and before each checkpoint): a foreach copy of every
                # parameter costs 2 ms a step on a 2-core CPU, 2 % of the small preset's step.
                if step >= cfg.ema_start:
                    torch._foreach_lerp_(ema_params, params, 1.0 - cfg.ema_decay)
                elif step == cfg.ema_start - 1:
                    torch._foreach_copy_(ema_params, params)
                ld = loss.detach()
                first_bad = torch.where(
                    (first_bad < 0) & ~torch.isfinite(ld), torch.full_like(first_bad, step),
                    first_bad,
                )  # fmt: skip
                loss_sum += ld
                step += 1
                seen += x0.shape[0]
                n_logged += 1
                bar.update(1)
                if t_steady is not None:
                    seen_steady += x0.shape[0]
                if step % cfg.log_every == 0:
                    check_finite()
                    logged_loss = float(loss_sum) / n_logged
                    now = time.perf_counter()
                    t_steady = now if t_steady is None else t_steady
                    bar.set_postfix(loss=f"{logged_loss:.4f}", img_s=f"{seen / (now - t_log):.0f}")
                    seen_total += seen
                    loss_sum.zero_()
                    n_logged, seen, t_log = 0, 0, now
                stop = step == cfg.stop_step  # a mid-epoch stop, with its resume point
                if (stop or cfg.resume_steps and step % cfg.resume_steps == 0) and \
                        i + cfg.batch_size < n:  # fmt: skip
                    check_finite()
                    t_end = time.perf_counter()
                    _save(r, cfg, run_dir, epoch, step, perm)
                    if stop:
                        finished = False
                        break
            if not finished:
                break
            epoch += 1
            check_finite()
            t_end = time.perf_counter()
            out_of_time = time_limit_s is not None and time.perf_counter() - t_start > time_limit_s
            if epoch % cfg.ckpt_every == 0 or epoch == cfg.epochs or out_of_time:
                _save(r, cfg, run_dir, epoch, step)
            if out_of_time and epoch < cfg.epochs:
                finished = False
                break
    except _OOM as e:
        raise TrainingError(
            f"out of memory on {device} at batch size {cfg.batch_size} ({cfg.preset} preset); "
            "lower batch_size (or turn on bf16 on CUDA). The last checkpoint is kept."
        ) from e
    finally:
        bar.close()
    if n_logged:
        logged_loss = float(loss_sum) / n_logged
    seconds = time.perf_counter() - t_start
    seen_total += seen
    return {
        **r.summary, "epochs": epoch, "steps": step, "finished": finished, "loss": logged_loss,
        "seconds": seconds, "images_per_s": seen_total / seconds if seconds > 0 else None,
        "images_per_s_steady": seen_steady / (t_end - t_steady)
        if t_steady is not None and seen_steady and t_end > t_steady else None,
    }  # fmt: skip
