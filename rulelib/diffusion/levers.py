"""The trainer's speed levers, and the choice among them by timing them on the machine at hand.

A lever changes how a training step is computed, never what it computes (up to rounding):
- precision: fp32, or bf16 (on CUDA autocast; on CPU a bf16 copy of the network over fp32 master
  weights, `Bf16Copy`, which is autocast's arithmetic without its per-step weight casts);
- layout: channels_last (NHWC) for the network's weights and the training images, or NCHW;
- compiled regions: torch.compile on the whole network (CUDA) or region by region (CPU,
  `CompiledRegions`), each compiled run checked against eager gradients (`check_compiled`);
- threads: torch's intra-op thread count (recorded with the choice: a different count can
  change the order of the reductions, hence the bits).

Which levers pay depends on the processor. On a 2-core Xeon with AMX the bf16 copy with compiled
regions made 1.51-1.53x the diffusers-example loop (batch 16); on a 2-core EPYC with AVX-512 BF16
but no AMX that default was 0.96x while fp32 with channels_last made 1.24x (quiet machine); on a
2-core EPYC with AVX2 alone, bf16 is emulated (`benchmarks/train.py --variants`). So for a long
run the trainer times a few steps of each candidate on the machine itself (`choose`), keeps the
fastest, and caches the figures per machine and network (`cache_path`), so a machine pays for the
timing once; a short run takes the rule (`rule_levers`) instead. The same levers give the same
bits, and a resumed run keeps the levers its checkpoint records (rulelib.diffusion.train).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import shutil
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rulelib import atomic, provenance
from rulelib.diffusion.schedule import Schedule

# A run shorter than this many steps takes `rule_levers` (or its recorded levers): timing the
# candidates costs ~10-20 s of a 2-core CPU at batch 16 (a few % of a 1000-step run) and would
# make the short runs of tests and notebooks depend on the load of the machine at that moment.
CHOOSE_MIN_STEPS = 1000
# Each candidate: TIME_WARMUP untimed steps, then TIME_ROUNDS rounds of TIME_STEPS timed steps,
# the candidates interleaved round by round (a burst of load from another process then slows
# every candidate, not one); the median round is kept.
TIME_WARMUP, TIME_ROUNDS, TIME_STEPS = 2, 3, 3
# Rounds of the second timing of the two fastest candidates when their first ranges overlap
# (`_settle`): a ranking within a few-step timing's noise is timed again, longer.
CONFIRM_ROUNDS = 9

# On CPU the network is compiled region by region: each residual block and attention layer on
# its own (diffusers' ResnetBlock2D and Attention; the paper preset's DoubleConv and
# SelfAttention). Compiling the whole small preset, inductor (torch 2.13, CPU) returned zero
# gradients for 138 of its 184 parameters (every block below the first upsampler; aot_eager was
# right), while the regions compiled one by one give the eager gradients (within 0.5 %, bf16) and
# made the bf16 copy's step ~8 % faster at batch 16 on a 2-core CPU with AMX (163 -> 173 img/s).
CPU_COMPILE_REGIONS = ("ResnetBlock2D", "Attention", "DoubleConv", "SelfAttention")
# A cold compilation of those regions took ~55 s on 2 cores for ~8 ms saved a step (batch 16):
# it repays after ~7000 steps (inductor's on-disk cache makes later compilations take seconds).
CPU_COMPILE_MIN_STEPS = 10_000


@dataclass(frozen=True)
class Levers:
    """One setting of the levers; `threads` is torch's intra-op thread count."""

    bf16: bool
    channels_last: bool
    compile: bool
    threads: int

    @property
    def name(self) -> str:
        """e.g. 'fp32+channels_last+compiled' (the thread count is not part of the name)."""
        parts = ["bf16" if self.bf16 else "fp32"]
        parts += ["channels_last"] * self.channels_last + ["compiled"] * self.compile
        return "+".join(parts)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Levers:
        names = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(d, dict) or sorted(d) != sorted(names):
            raise ValueError(f"levers must be a dict with keys {names}, got {d!r}")
        return cls(**d)

    def with_(self, **fixed) -> Levers:
        """These levers with the given ones replaced (None values ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in fixed.items() if v is not None})


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 matrix products natively: CUDA, and CPUs with AMX tiles or
    AVX-512 BF16; elsewhere (AVX2 alone) torch emulates bf16 in fp32 and rounds, which is slower
    than fp32. Only then is bf16 a candidate of `choose`."""
    if device.type == "cuda":
        return True
    flags = provenance.cpu_info()["flags"]
    return device.type == "cpu" and (flags["amx"] or flags["avx512_bf16"])


def bf16_pays(device: torch.device) -> bool:
    """The rule's precision: bf16 on CUDA and on CPUs with AMX tiles (Intel Sapphire Rapids and
    later: a step of the small preset at batch 16 took 94 ms against 131 ms in fp32 on 2 cores);
    fp32 elsewhere: with AVX-512 BF16 alone bf16 was 0.92x fp32 (an AVX-512 EPYC), with AVX2 it is
    emulated."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and provenance.cpu_info()["flags"]["amx"]


def compile_pays(device: torch.device, steps_left: int) -> bool:
    """Whether compiled regions are worth trying: on CUDA (the whole network); on CPU for a run
    with at least CPU_COMPILE_MIN_STEPS steps left, when the C++ compiler inductor calls (`$CXX`,
    else g++) is installed. `check_compiled` guards every compiled run against a miscompilation."""
    if device.type == "cuda":
        return True
    if device.type != "cpu" or steps_left < CPU_COMPILE_MIN_STEPS:
        return False
    return shutil.which(os.environ.get("CXX", "g++")) is not None


def rule_levers(device: torch.device, steps_left: int, bf16: bool | None = None) -> Levers:
    """The levers without timing: bf16 where `bf16_pays` (unless `bf16` is given), compiled
    where `compile_pays`, channels_last on CUDA and for fp32 on CPU (1.24x NCHW on an AVX-512
    EPYC; on the AVX2-only EPYC within the noise of NCHW, 1.07x against 1.10x the
    reference at batch 16, benchmarks/train.py); the CPU's bf16 copy in NCHW, measured fastest on
    the AMX CPU."""
    bf16 = bf16_pays(device) if bf16 is None else bf16
    return Levers(
        bf16=bf16,
        channels_last=device.type == "cuda" or not bf16,
        compile=compile_pays(device, steps_left),
        threads=torch.get_num_threads(),
    )


def candidates(device: torch.device, **fixed) -> list[Levers]:
    """The eager candidates `choose` times: fp32 and (where `native_bf16`) bf16, each in NCHW and
    channels_last, at the current thread count; levers given in `fixed` (not None) are kept."""
    threads = torch.get_num_threads()
    precisions = [False, True] if native_bf16(device) else [False]
    out = []
    for bf16 in precisions:
        for cl in (False, True):
            lev = Levers(bf16, cl, False, threads).with_(**fixed)
            if lev not in out:
                out.append(lev)
    return out


def adamw_kernel(device: torch.device) -> dict:
    """AdamW's implementation: `fused` (one kernel over all parameters) on CUDA and CPU, where
    torch >= 2.4 has it (on a 2-core CPU 1.4 ms a step against 4.6 ms foreach and 6.2 ms for the
    per-tensor loop, small preset); `foreach` on other devices."""
    return {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}


def attention_backend(device: torch.device, bf16: bool):
    """A context for the training step's attention kernel.  On CPU in bf16, PyTorch's fused
    flash-attention backward is about 12x slower than its math path for the small preset's
    8x8-token attention (19 ms against 1.6 ms a step of batch 16, torch.profiler, 2-core CPU with
    AMX), so the math backend (matmul + softmax, the same function) is chosen there."""
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
    far better. Its gradients equal autocast's to the bit (tested), so a run with this copy is
    the autocast run.

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


class CompiledRegions:
    """torch.compile applied to the forward of each module of `net` whose class is named in
    `names` (in place: `net` itself then runs them compiled). `eager()` is a context in which they
    run eagerly again (for `check_compiled`); `remove()` undoes the compilation for good."""

    def __init__(self, net: torch.nn.Module, names=CPU_COMPILE_REGIONS):
        self.modules = [m for m in net.modules() if type(m).__name__ in names]
        # Instances of one class share one code object, and dynamo keeps at most
        # `recompile_limit` (8) graphs per code object before running the rest eagerly: one per
        # region and batch shape is needed here.
        # Each CompiledRegions adds its own share (the timed copies of `choose` and the trained
        # network each need theirs), up to a bound.
        limit = torch._dynamo.config.recompile_limit + 2 * len(self.modules)
        torch._dynamo.config.recompile_limit = min(max(limit, 8), 1024)
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


class Step:
    """The training step under `levers`, on the fp32 `model` (the master weights; put in the
    levers' memory format here). `step(schedule, x0, gen, opt)` runs one AdamW step of the
    epsilon-prediction loss (Ho et al. eq. 14) and returns the loss; `compile(schedule, x0)`
    turns compiled regions on after checking them, returning None or the reason they were
    rejected (the step then stays eager). `choose` times exactly this step."""

    def __init__(self, model: torch.nn.Module, levers: Levers, device: torch.device):
        self.levers, self.device = levers, device
        self.fmt = torch.channels_last if levers.channels_last else torch.contiguous_format
        self.model = model.to(memory_format=self.fmt)
        self.params = list(model.parameters())
        self.bf16_copy = levers.bf16 and device.type == "cpu"  # CPU: Bf16Copy; else autocast
        self.autocast = levers.bf16 and not self.bf16_copy
        # The module the step calls: the fp32 model itself, or its bf16 copy whose gradients go
        # back to the fp32 master weights that the optimizer, the EMA and checkpoints hold.
        self.net = Bf16Copy(model).to(memory_format=self.fmt) if self.bf16_copy else model
        self.fwd, self.regions = self.net, None
        self.attention = attention_backend(device, levers.bf16)
        precision = "bf16 autocast" if levers.bf16 else "fp32"
        self.precision = "bf16 copy" if self.bf16_copy else precision

    def compile(self, schedule: Schedule, x0: torch.Tensor) -> str | None:
        # dynamic=False: a static graph per batch shape (the full batch and an epoch's last,
        # partial one) rather than one dynamic-shape graph, which ran the small preset at batch
        # 128 at 143 images/s against 259 on a 2-core CPU.
        # diffusers' up/downsampling blocks call an lru_cache'd torch-version check, which dynamo
        # traces through and warns about; the check is a constant, so say nothing.
        warnings.filterwarnings("ignore", message="Dynamo detected a call to a `functools.lru_")
        if self.device.type == "cuda":
            self.fwd = torch.compile(self.net, dynamic=False)
        else:  # on CPU region by region (CPU_COMPILE_REGIONS says why)
            self.regions = CompiledRegions(self.net)
        reason = check_compiled(
            self.net, self.fwd, schedule, x0, self.autocast, self.attention,
            self.regions.eager if self.regions else None,
        )  # fmt: skip
        if reason:
            self.fwd = self.net
            if self.regions:
                self.regions.remove()
                self.regions = None
        return reason

    def step(self, schedule: Schedule, x0: torch.Tensor, gen, opt) -> torch.Tensor:
        dev = self.device.type
        with torch.autocast(dev, torch.bfloat16, enabled=self.autocast), self.attention():
            loss = schedule.loss(self.fwd, x0, gen)  # Ho et al. eq. 14
        loss.backward()
        if self.bf16_copy:  # the copy's gradients overwrite the master weights' .grad
            self.net.grads_to(self.params)
        opt.step()
        if self.bf16_copy:
            self.net.load_from(self.params)
        else:
            opt.zero_grad(set_to_none=True)
        return loss


# ---------------------------------------------------------------------------------------------
# Timing the candidates, and the per-machine cache of the figures


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_levers(model, cands, schedule: Schedule, x0: torch.Tensor, device, progress=False,
                rounds=TIME_ROUNDS, steps=TIME_STEPS, warmup=TIME_WARMUP) -> dict:  # fmt: skip
    """{levers name: {"images_per_s": median over the rounds, "min", "max", "rounds"}} of each
    candidate's `Step` at the batch x0, on its own deep copy of the fp32 `model` (left
    untouched, as are torch's global RNG states: a timed choice does not change the run), with
    the candidates interleaved round by round. A compiled candidate whose compilation
    `check_compiled` rejects gets {"rejected": reason} instead."""
    runs, out = [], {}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for lev in tqdm(cands, desc="time levers: warm-up", disable=not progress, leave=False):
            st = Step(copy.deepcopy(model), lev, device)
            x = x0.contiguous(memory_format=st.fmt)
            reason = st.compile(schedule, x) if lev.compile else None
            if reason:
                out[lev.name] = {"rejected": reason}
                continue
            opt = torch.optim.AdamW(st.params, lr=1e-4, **adamw_kernel(device))
            gen = torch.Generator(device=device).manual_seed(0)
            for _ in range(warmup):
                st.step(schedule, x, gen, opt)
            runs.append((lev.name, st, x, opt, gen, []))
        for _ in tqdm(range(rounds), desc="time levers", disable=not progress, leave=False):
            for _name, st, x, opt, gen, rates in runs:
                _sync(device)
                t0 = time.perf_counter()
                for _ in range(steps):
                    st.step(schedule, x, gen, opt)
                _sync(device)
                rates.append(steps * x.shape[0] / (time.perf_counter() - t0))
    for name, *_, rates in runs:
        out[name] = {"images_per_s": statistics.median(rates), "min": min(rates),
                     "max": max(rates), "rounds": len(rates)}  # fmt: skip
    return out


def cache_path() -> Path:
    """The per-machine cache of timed figures: $RULELIB_CACHE_DIR/levers.json, else
    $XDG_CACHE_HOME/rulelib/levers.json, else ~/.cache/rulelib/levers.json."""
    root = os.environ.get("RULELIB_CACHE_DIR")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        root = Path(xdg) / "rulelib"
    return Path(root) / "levers.json"


def cache_key(device: torch.device, preset: str, batch_size: int) -> str:
    """What the figures depend on: the processor (model and flags) or GPU, the core and thread
    counts, torch's version, the network (preset) and the batch size."""
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"{provenance.cpu_summary()}, {os.cpu_count()} cores"
    raw = f"{where} | {torch.get_num_threads()} threads | torch {torch.__version__}"
    return f"{raw} | {preset} | batch {batch_size}"


def _read_cache() -> dict:
    path = cache_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as e:  # a damaged cache is remeasured, not fatal
        warnings.warn(f"ignoring unreadable levers cache {path} ({e})", RuntimeWarning, 2)
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(key: str, figures: dict) -> None:
    data = _read_cache()
    data[key] = {"figures": figures, "measured": provenance.now_iso()}
    try:
        atomic.write_text(cache_path(), json.dumps(data, indent=1, sort_keys=True))
    except OSError as e:  # a cache is an optimisation: one that cannot be written only warns
        warnings.warn(f"levers cache {cache_path()} not written ({e.strerror or e}); the "
                      "timing is repeated next time", RuntimeWarning, 2)  # fmt: skip


def _fastest(cands, figures: dict) -> Levers:
    return max(cands, key=lambda c: figures.get(c.name, {}).get("images_per_s", -1.0))


def _overlap(a: dict, b: dict) -> bool:
    """Whether two timings' ranges (min-max over the rounds) overlap: not told apart."""
    return a["min"] <= b["max"] and b["min"] <= a["max"]


def _settle(model, cands, schedule, x0, device, figures: dict, progress: bool) -> tuple:
    """The fastest measured of `cands` and why: (levers, why, timed again?).

    When the two fastest candidates' ranges overlap, one short timing could rank them either way
    (a 2-core CPU shared with other work moves a few-step timing by 5-10 %): the two are timed
    again together with CONFIRM_ROUNDS rounds, their figures replaced by the longer timing, and
    the faster of that timing is kept. `why` says what the choice rests on, and that it is within
    the timing's noise when the ranges still overlap."""
    timed = [c for c in cands if "images_per_s" in figures.get(c.name, {})]
    if not timed:
        reasons = "; ".join(f"{c.name}: {figures.get(c.name)}" for c in cands)
        raise RuntimeError(f"no candidate could be timed ({reasons})")
    ranked = sorted(timed, key=lambda c: -figures[c.name]["images_per_s"])
    rate = lambda c: (  # noqa: E731
        f"{c.name} {figures[c.name]['images_per_s']:.1f} img/s "
        f"[{figures[c.name]['min']:.1f}-{figures[c.name]['max']:.1f}]"
    )
    if len(ranked) == 1:
        rejected = [c.name for c in cands if c not in timed]
        return ranked[0], f"{rate(ranked[0])}; {', '.join(rejected)} rejected", False
    again = False
    # Settled here, not at the next run: a longer timing may move another candidate into the top
    # two, so confirm until the top two no longer overlap or both have the long timing (each
    # pass gives one more candidate the long timing). The cache then holds a settled choice,
    # and a run that reads it times nothing.
    for _ in range(len(ranked)):
        pair = ranked[:2]
        timed_long = min(figures[c.name].get("rounds", 0) for c in pair) >= CONFIRM_ROUNDS
        if timed_long or not _overlap(*(figures[c.name] for c in pair)):
            break
        figures |= time_levers(
            model, pair, schedule, x0, device, progress, rounds=CONFIRM_ROUNDS
        )  # fmt: skip
        ranked = sorted(timed, key=lambda c: -figures[c.name]["images_per_s"])
        again = True
    best, second = ranked[0], ranked[1]
    why = f"fastest measured: {rate(best)} against {rate(second)}"
    if again:
        why += f" (the two timed again, {CONFIRM_ROUNDS} rounds, their first ranges overlapping)"
    if _overlap(figures[best.name], figures[second.name]):
        why += "; the ranges overlap: the two are within the timing's noise"
    return best, why, again


def choose(model, schedule: Schedule, x0: torch.Tensor, device: torch.device, steps_left: int,
           preset: str, fixed: dict | None = None, recorded: Levers | None = None,
           progress: bool = False) -> tuple[Levers, dict]:  # fmt: skip
    """The levers of a run and how they were found: (levers, {"how", "figures", "seconds"}).

    how: "resumed" (the levers its checkpoint records, `recorded`), "config" (all three given in
    `fixed`: bf16, channels_last, compile), "rule" (`rule_levers`: on CUDA, and for runs of fewer
    than CHOOSE_MIN_STEPS steps), "cached" (figures timed earlier on this machine, `cache_key`)
    or "timed": `time_levers` on the eager `candidates`, then, where `compile_pays`, the fastest
    of them against its compiled regions; the fastest measured is kept (`_settle`: two whose
    ranges overlap are timed again, longer). Levers given in `fixed` (not None) are never
    changed. figures: what the choice rests on (images/s per candidate); why: the choice in
    words (the figures it rests on, or why nothing was timed)."""
    fixed = {k: v for k, v in (fixed or {}).items() if v is not None}
    t0 = time.perf_counter()
    if recorded is not None:
        why = "the levers the run's checkpoint records (the same bits as an uninterrupted run)"
        return recorded.with_(**fixed), {
            "how": "resumed", "figures": None, "seconds": 0.0, "why": why,
        }  # fmt: skip
    rule = rule_levers(device, steps_left, fixed.get("bf16")).with_(**fixed)
    if len(fixed) == 3 or device.type != "cpu" or steps_left < CHOOSE_MIN_STEPS:
        how = "config" if len(fixed) == 3 else "rule"
        why = {
            "config": "all three levers given in the configuration",
            "rule": f"the rule, not timed: on {device.type}, a {steps_left}-step run"
            + (f" (timing pays from {CHOOSE_MIN_STEPS} steps on CPU)" if device.type == "cpu"
               else " (timed only on CPU)"),
        }[how]  # fmt: skip
        return rule, {"how": how, "figures": None, "seconds": 0.0, "why": why}
    key = cache_key(device, preset, x0.shape[0])
    figures = dict(_read_cache().get(key, {}).get("figures", {}))
    how = "cached"
    eager = candidates(device, **{k: v for k, v in fixed.items() if k != "compile"})
    if not all(c.name in figures for c in eager):
        figures |= time_levers(model, eager, schedule, x0, device, progress)
        how = "timed"
    best, why, again = _settle(model, eager, schedule, x0, device, figures, progress)
    how = "timed" if again else how
    if fixed.get("compile") is True:
        best = best.with_(compile=True)
        why += "; compiled regions as configured"
    elif "compile" not in fixed and compile_pays(device, steps_left):
        pair = [best, best.with_(compile=True)]
        if pair[1].name not in figures:  # the two timed together, interleaved
            figures |= time_levers(model, pair, schedule, x0, device, progress)
            how = "timed"
        best, compiled_why, again = _settle(model, pair, schedule, x0, device, figures, progress)
        how = "timed" if again else how
        why += f"; against its compiled regions: {compiled_why}"
    if how == "timed":
        _write_cache(key, figures)
    return best, {"how": how, "figures": figures, "seconds": time.perf_counter() - t0, "why": why}
