"""The DDPM trainer: the paper's settings, fast on the device it runs on, resumable to the bit.

Paper settings (paper.md section 4): AdamW at lr 3e-4 constant, batch 16, seed 0, fp32, epochs
400 / 800 / 1600 / 1000 for tasks A-D; an EMA of the weights (decay 0.995, starting after 2000
steps) is kept beside the raw weights, and samples come from the raw weights. (The paper trained
in fp32; pass bf16=False for that, the default autocasts to bf16 where that pays, see below.)

Speed (what the loop does and why):
- the whole training set lives on the device as one float tensor: 4000 images of 32x32x3 are
  49 MB, so a DataLoader (worker processes, per-item collation) would only add overhead;
- each epoch's order is a `torch.randperm` from a seeded generator on the device, and t and eps
  are drawn from the same generator, so a checkpoint of that generator's state resumes exactly;
- AdamW is `fused` on CUDA and CPU (one kernel for all parameters, `_adamw_kernel`); the EMA
  update is one `torch._foreach_lerp_`;
- bf16 is on by default where it pays (CUDA; CPUs with AMX, `bf16_pays`). On CUDA it is autocast.
  On CPU the step runs a bf16 copy of the network (`Bf16Copy`) against fp32 master weights: the
  same arithmetic as CPU autocast (the gradients are bitwise those of autocast, a test checks it)
  without autocast's per-step weight casts (eager 1.43x the diffusers-example loop at batch 16 on
  2 cores, 1.51-1.53x with its regions compiled, `benchmarks/train.py`); the attention uses
  PyTorch's math kernel there (`_attention_backend`);
- torch.compile (static shapes) is on by default on CUDA, and on CPU for long runs
  (`compile_pays`), there region by region (`CompiledRegions`: compiled whole, inductor
  miscompiled the small preset's backward on CPU); every compiled run first checks that it gives
  the eager gradients on one batch, and trains eagerly if not (`check_compiled`); channels_last:
  on by default only on CUDA (no gain on a 2-core CPU);
- the loss is accumulated on the device; the host reads it (a synchronisation) only every
  `log_every` steps, for the progress bar and the NaN check.

Checkpoints: every `ckpt_every` epochs (and at the end) a folder `checkpoints/epoch_XXXXXX/` with
`model.safetensors` (raw weights), `ema.safetensors`, `state.pt` (optimizer, RNG states of torch
CPU, CUDA, numpy and the data generator, epoch, step, a hash of the training data) and
`config.json`. The folder is written under a temporary name and renamed into place (atomic), then
the pointer file `checkpoints/latest` is replaced atomically. Every checkpoint is kept: the
training-length sweep evaluates them all. Nothing written is overwritten: a run folder is only
ever continued.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from rulelib import atomic
from rulelib.device import resolve_device
from rulelib.diffusion import unet
from rulelib.diffusion.checkpoint import (
    CheckpointError,
    _load_state,
    _load_weights,
    _save_checkpoint,
    _set_rng_state,
    list_checkpoints,
)
from rulelib.diffusion.config import RESUME_FREE_KEYS, TrainConfig
from rulelib.diffusion.schedule import Schedule, images_to_tensor

# torch.OutOfMemoryError appeared in torch 2.5; before it CUDA raised torch.cuda.OutOfMemoryError.
_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


class TrainingError(RuntimeError):
    """Training stopped for a reason named in the message (NaN loss, out of memory)."""


def bf16_pays(device: torch.device) -> bool:
    """Whether bf16 autocast speeds training up on `device`: on CUDA, and on CPUs with AMX tiles
    (Intel Sapphire Rapids and later), where a forward and backward pass of the small preset at
    batch 16 takes 94 ms against 131 ms in fp32 (2 cores, with `_attention_backend`); on other
    CPUs bf16 is emulated and slower."""
    if device.type == "cuda":
        return True
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return device.type == "cpu" and amx is not None and bool(amx())


def _adamw_kernel(device: torch.device) -> dict:
    """AdamW's implementation: `fused` (one kernel over all parameters) on CUDA and CPU, where
    torch >= 2.4 has it (on this 2-core CPU 1.4 ms a step against 4.6 ms foreach and 6.2 ms for
    the per-tensor loop, small preset); `foreach` on other devices."""
    return {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}


def _attention_backend(device: torch.device, bf16: bool):
    """A context for the training step's attention kernel.  On CPU in bf16, PyTorch's fused
    flash-attention backward is about 12x slower than its math path for the small preset's
    8x8-token attention (19 ms against 1.6 ms a step of batch 16, torch.profiler on this 2-core
    CPU), so the math backend (matmul + softmax, the same function) is chosen there."""
    if device.type == "cpu" and bf16:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return lambda: sdpa_kernel([SDPBackend.MATH])
    return contextlib.nullcontext


class Bf16Copy(torch.nn.Module):
    """A bf16 copy of `model` for the CPU training step, called like it: `(x_t, t) -> eps`.

    CPU autocast runs convolutions, linear layers and attention in bf16 and, on this network,
    everything else on their bf16 outputs, except that GroupNorm keeps its fp32 affine
    parameters. This copy does the same arithmetic with the weights stored in bf16 once (GroupNorm
    kept in fp32, the input cast to bf16 here), so each step skips autocast's casts of every weight
    and of every weight's gradient, and torch.compile sees a graph without casts, which it fuses
    far better (small preset, batch 16, one step on 2 cores: autocast ~112 images/s, this copy
    ~115; compiled whole ~124 and ~170, but with wrong gradients, see CPU_COMPILE_REGIONS). Its
    gradients equal autocast's to the bit (tested), so a run with this copy is the autocast run.

    The trainer keeps the fp32 `model` as the master weights (optimizer, EMA, checkpoints):
    `grads_to(master)` after the backward pass, `load_from(master)` after the optimizer step."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.net = copy.deepcopy(model).to(torch.bfloat16)
        for m in self.net.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.float()  # as autocast leaves them: fp32 affine parameters on bf16 activations
        self._params = list(self.net.parameters())
        self.load_from(list(model.parameters()))  # GroupNorm's exact fp32 values, not rounded

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(torch.bfloat16), t)

    @torch.no_grad()
    def grads_to(self, master: list[torch.Tensor]) -> None:
        """Copy this copy's gradients into the fp32 master parameters' .grad, then drop them here
        (set to None, as zero_grad does). A parameter the step did not use gets None, so AdamW
        skips it, as it would under autocast."""
        grads = [p.grad for p in self._params]
        if any(g is None for g in grads) or any(p.grad is None for p in master):
            for p, g in zip(master, grads, strict=True):  # first step, or an unused parameter
                p.grad = None if g is None else g.float().clone()
        else:
            torch._foreach_copy_([p.grad for p in master], grads)
        for p in self._params:
            p.grad = None

    @torch.no_grad()
    def load_from(self, master: list[torch.Tensor]) -> None:
        """Round the fp32 master parameters into this copy (after each optimizer step)."""
        torch._foreach_copy_(self._params, master)


# On CPU the network is compiled region by region: each residual block and attention layer on
# its own (diffusers' ResnetBlock2D and Attention; the paper preset's DoubleConv and
# SelfAttention). Compiling the whole small preset, inductor (torch 2.13, CPU) returned zero
# gradients for 138 of its 184 parameters (every block below the first upsampler; aot_eager was
# right), while the regions compiled one by one give the eager gradients (within 0.5 %, bf16) and
# make the bf16 copy's step ~8 % faster at batch 16 on 2 cores (163 -> 173 images/s).
CPU_COMPILE_REGIONS = ("ResnetBlock2D", "Attention", "DoubleConv", "SelfAttention")
# A cold compilation of those regions took ~55 s on 2 cores for ~8 ms saved a step (batch 16):
# it repays after ~7000 steps (inductor's on-disk cache makes later compilations take seconds).
# The quick profile's ~2000-step runs stay eager; a paper-length run (100 000+ steps) compiles.
CPU_COMPILE_MIN_STEPS = 10_000


def compile_pays(device: torch.device, steps_left: int) -> bool:
    """Whether torch.compile is on by default: on CUDA (the whole network); on CPU (by regions,
    `CompiledRegions`) for a run with at least CPU_COMPILE_MIN_STEPS steps left, when the C++
    compiler inductor calls (`$CXX`, else g++) is installed. `check_compiled` guards every
    compiled run against a miscompilation."""
    if device.type == "cuda":
        return True
    if device.type != "cpu" or steps_left < CPU_COMPILE_MIN_STEPS:
        return False
    return shutil.which(os.environ.get("CXX", "g++")) is not None


class CompiledRegions:
    """torch.compile applied to the forward of each module of `net` whose class is named in
    `names` (in place: `net` itself then runs them compiled). `eager()` is a context in which they
    run eagerly again (for `check_compiled`); `remove()` undoes the compilation for good."""

    def __init__(self, net: torch.nn.Module, names=CPU_COMPILE_REGIONS):
        self.modules = [m for m in net.modules() if type(m).__name__ in names]
        # Instances of one class share one code object, and dynamo keeps at most
        # `recompile_limit` (8) graphs per code object before running the rest eagerly: one per
        # region and batch shape is needed here.
        limit = 2 * len(self.modules) + 8
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, limit)
        for m in self.modules:
            m.forward = torch.compile(m.forward, dynamic=False)  # an instance attribute

    def remove(self) -> None:
        for m in self.modules:
            m.__dict__.pop("forward", None)  # back to the class's forward

    @contextlib.contextmanager
    def eager(self):
        compiled = [m.__dict__.get("forward") for m in self.modules]
        self.remove()
        try:
            yield
        finally:
            for m, f in zip(self.modules, compiled, strict=True):
                if f is not None:
                    m.forward = f


def check_compiled(
    net, fwd, schedule: Schedule, x0: torch.Tensor, autocast: bool, attention, eager=None
):
    """None if the compiled `fwd` gives the gradients of the eager `net` (run inside the context
    `eager()` when given, for `CompiledRegions`) on x0 (the training loss, Schedule.loss, with t
    and noise from a fixed seed for both), else the reason it does not. Tolerances: the whole
    gradient within 5 % (bf16 rounding differences between fused and unfused kernels are
    ~0.5 %), and no parameter whose eager gradient is nonzero with an all-zero compiled one.
    Gradients are cleared afterwards; the training generator is not touched."""
    params = [p for p in net.parameters() if p.requires_grad]
    grads = []
    for f, mode in ((net, eager or contextlib.nullcontext), (fwd, contextlib.nullcontext)):
        g = torch.Generator(device=x0.device).manual_seed(20251128)  # the same t and noise
        with torch.autocast(x0.device.type, torch.bfloat16, enabled=autocast), attention(), mode():
            loss = schedule.loss(f, x0, g)
        loss.backward()
        grads.append([torch.zeros_like(p, dtype=torch.float32) if p.grad is None
                      else p.grad.float() for p in params])  # fmt: skip
        for p in params:
            p.grad = None
    eager, compiled = grads
    dead = sum(bool(e.any()) and not c.any() for e, c in zip(eager, compiled, strict=True))
    e, c = torch.cat([v.flatten() for v in eager]), torch.cat([v.flatten() for v in compiled])
    rel = float((c - e).norm() / e.norm().clamp_min(1e-30))
    if dead or rel > 0.05:
        return (f"its gradient differs from eager's by {rel:.1%} and is all zero for {dead} of "
                f"{len(params)} parameters")  # fmt: skip
    return None


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
    images_uint8 = np.asarray(images_uint8)
    if images_uint8.dtype != np.uint8 or images_uint8.ndim != 4 or len(images_uint8) == 0:
        raise ValueError(
            f"images must be a non-empty uint8 array (N, H, W, C), got dtype "
            f"{images_uint8.dtype}, shape {images_uint8.shape}"
        )
    run_dir = Path(out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_config(run_dir, cfg, resume)

    device = resolve_device(cfg.device)
    on_cuda = device.type == "cuda"
    bf16 = bf16_pays(device) if cfg.bf16 is None else cfg.bf16
    bf16_copy = bf16 and device.type == "cpu"  # CPU: a bf16 copy (Bf16Copy); else autocast
    channels_last = on_cuda if cfg.channels_last is None else cfg.channels_last
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    data_hash = _data_hash(images_uint8)

    torch.manual_seed(cfg.seed)  # the initial weights
    model = unet.build(cfg.preset).to(device, memory_format=fmt)
    ema = copy.deepcopy(model).requires_grad_(False)
    params = [p for p in model.parameters()]
    ema_params = [p for p in ema.parameters()]
    opt = torch.optim.AdamW(
        params, lr=cfg.lr, weight_decay=cfg.weight_decay, **_adamw_kernel(device)
    )
    gen = torch.Generator(device=device).manual_seed(cfg.seed)  # data order, t and eps
    schedule = cfg.schedule().to(device)
    data = images_to_tensor(images_uint8, device).contiguous(memory_format=fmt)
    n = data.shape[0]
    steps_per_epoch = -(-n // cfg.batch_size)

    epoch, step = 0, 0
    ckpts = list_checkpoints(run_dir) if resume else []
    if ckpts:
        ck = ckpts[-1][1]
        state = _load_state(ck / "state.pt")
        if state.get("data_hash") != data_hash:
            raise CheckpointError(
                f"{ck} was trained on different data (hash {state.get('data_hash')} != "
                f"{data_hash}); refusing to resume"
            )
        model.load_state_dict(_load_weights(ck / "model.safetensors"))
        ema.load_state_dict(_load_weights(ck / "ema.safetensors"))
        opt.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"], gen)
        epoch, step = int(state["epoch"]), int(state["step"])

    # Written only now that every check has passed; it may differ from the old one only in
    # RESUME_FREE_KEYS (e.g. a longer run). Each checkpoint keeps its own copy.
    atomic.write_text(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=1))
    steps_left = max(cfg.epochs * steps_per_epoch - step, 0)
    use_compile = compile_pays(device, steps_left) if cfg.compile is None else cfg.compile
    model.train()
    # The module the step calls: the fp32 model itself, or its bf16 copy whose gradients go back
    # to the fp32 master weights (`model`) that the optimizer, the EMA and checkpoints hold.
    net = Bf16Copy(model).to(memory_format=fmt) if bf16_copy else model
    # dynamic=False: a static graph per batch shape (the full batch and an epoch's last, partial
    # one) rather than one dynamic-shape graph, which ran the small preset at batch 128 at 143
    # images/s against 259 on a 2-core CPU.
    fwd, regions = net, None
    if use_compile and on_cuda:
        fwd = torch.compile(net, dynamic=False)
    elif use_compile:  # on CPU region by region (CPU_COMPILE_REGIONS says why)
        regions = CompiledRegions(net)
    attention = _attention_backend(device, bf16)
    autocast = bf16 and not bf16_copy
    compile_rejected = None
    if use_compile and epoch < cfg.epochs:
        # diffusers' up/downsampling blocks call an lru_cache'd torch-version check, which dynamo
        # traces through and warns about; the check is a constant, so say nothing.
        warnings.filterwarnings("ignore", message="Dynamo detected a call to a `functools.lru_")
        compile_rejected = check_compiled(
            net, fwd, schedule, data[: cfg.batch_size], autocast, attention,
            regions.eager if regions else None,
        )  # fmt: skip
        if compile_rejected:
            warnings.warn(
                f"torch.compile rejected on {device}: {compile_rejected}; training eagerly",
                RuntimeWarning,
                stacklevel=2,
            )
            fwd, use_compile = net, False
            if regions:
                regions.remove()
    summary = {
        "run_dir": str(run_dir), "preset": cfg.preset, "params": unet.n_params(model),
        "device": str(device), "bf16": bf16,
        "precision": "bf16 copy" if bf16_copy else "bf16 autocast" if bf16 else "fp32",
        "compile": use_compile, "compile_rejected": compile_rejected,
        "channels_last": channels_last, "start_epoch": epoch, "start_step": step,
    }  # fmt: skip
    if epoch >= cfg.epochs:
        return {**summary, "epochs": epoch, "steps": step, "finished": True, "loss": None,
                "images_per_s": None, "seconds": 0.0}  # fmt: skip

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
                f"or turn off bf16 (now {bf16})."
            )

    try:
        while epoch < cfg.epochs:
            perm = torch.randperm(n, device=device, generator=gen)  # the epoch's data order
            for i in range(0, n, cfg.batch_size):
                x0 = data[perm[i : i + cfg.batch_size]]
                with torch.autocast(device.type, torch.bfloat16, enabled=autocast), attention():
                    loss = schedule.loss(fwd, x0, gen)  # Ho et al. eq. 14
                loss.backward()
                if bf16_copy:  # the copy's gradients overwrite the master weights' .grad
                    net.grads_to(params)
                opt.step()
                if bf16_copy:
                    net.load_from(params)
                else:
                    opt.zero_grad(set_to_none=True)
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
                    (first_bad < 0) & ~torch.isfinite(ld),
                    torch.full_like(first_bad, step),
                    first_bad,
                )
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
            epoch += 1
            check_finite()
            t_end = time.perf_counter()
            out_of_time = time_limit_s is not None and time.perf_counter() - t_start > time_limit_s
            if epoch % cfg.ckpt_every == 0 or epoch == cfg.epochs or out_of_time:
                if step <= cfg.ema_start:  # the EMA is still the raw weights (see above)
                    torch._foreach_copy_(ema_params, params)
                _save_checkpoint(
                    run_dir, cfg, model, ema, opt, gen, epoch, step, {"data_hash": data_hash}
                )
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
        **summary, "epochs": epoch, "steps": step, "finished": finished, "loss": logged_loss,
        "seconds": seconds, "images_per_s": seen_total / seconds if seconds > 0 else None,
        "images_per_s_steady": seen_steady / (t_end - t_steady)
        if t_steady is not None and seen_steady and t_end > t_steady else None,
    }  # fmt: skip
