"""Speed of the trainer and the samplers; prints figures (never asserted by tests).

    python benchmarks/train.py                       # CPU: small preset, batch 16 and 128
    python benchmarks/train.py --preset paper --project   # GPU: + the paper protocol's time
    python benchmarks/train.py --variants --auto     # + each eager candidate, the auto choice
    python benchmarks/train.py --variants --compiled --auto --repeats 5   # + compiled ones
    python benchmarks/train.py --bound --no-train --no-sample  # convolutions' share: Amdahl's bound
    python benchmarks/train.py --run runs/x/A        # + DDIM-50 vs DDPM rule metrics of a run
    python benchmarks/train.py --no-train --no-sample --run runs/x/A   # that check alone

Training: images per second of `rulelib.diffusion.train.train` against the loop a user would write
from diffusers' `train_unconditional.py` example on the same network: a torch DataLoader (shuffle)
over a TensorDataset of the same images, `DDPMScheduler.add_noise`, fp32, AdamW with its defaults,
`zero_grad()`, the example's per-step `loss.item()` for the progress bar, and its `EMAModel`
(`--use_ema`) set to the paper's EMA (decay 0.995 from step 2000), because our trainer keeps that
EMA too: both loops do the paper's work. (`--no-ref-ema` drops the reference's EMA, to show how
much of the ratio it accounts for.) Both loops are timed over the same number of steps after
warm-up steps, interleaved, `--repeats` times (`train_comparison`): the median and the min-max
over the repeats are printed, and each ratio is taken against the reference of the same repeat.
Our variants: the trainer's rule for a long run, each candidate of levers (`--variants`,
`--compiled`) and its automatic choice (`--auto`, timed afresh as a long run would). The header
names the CPU's model and its flags (AVX2, AVX-512, AVX-512 BF16, AMX): the levers that pay
depend on them (rulelib.diffusion.levers); `ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16` keeps oneDNN off
AMX on a CPU that has it, and is printed when set.

Sampling: images per second of one DDPM step at the sampling batch size, timed over `--sample-steps`
steps and scaled to the 1000 steps of DDPM ancestral and the 50 of DDIM-50 (every step costs one
network call and an elementwise update).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def reference_loop(preset, images, batch_size, steps, warmup, device, seed=0, ema=True,
                   on_step=None):  # fmt: skip
    """The diffusers-example training loop; returns images/s over `steps` timed steps.
    `on_step`: called after every step (a profiler's `step`)."""
    import torch.nn.functional as F
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel
    from torch.utils.data import DataLoader, TensorDataset

    from rulelib.diffusion import unet
    from rulelib.diffusion.schedule import images_to_tensor

    torch.manual_seed(seed)
    model = unet.build(preset).to(device).train()
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=2e-2)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    # the example's EMA with the paper's settings (decay 0.995, averaging from step 2000)
    ema_model = EMAModel(model.parameters(), decay=0.995, update_after_step=2000) if ema else None
    data = TensorDataset(images_to_tensor(images))  # on the host, like an image folder's tensors
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True)
    done, t0 = 0, None
    while True:
        for (clean,) in loader:
            if done == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            clean = clean.to(device)
            noise = torch.randn(clean.shape, device=device)
            t = torch.randint(0, 1000, (clean.shape[0],), device=device)
            noisy = scheduler.add_noise(clean, noise, t)
            loss = F.mse_loss(model(noisy, t), noise)
            loss.backward()
            opt.step()
            opt.zero_grad()
            if ema_model is not None:
                ema_model.step(model.parameters())
            loss.item()  # the example logs the loss every step
            done += 1
            if on_step is not None:
                on_step()
            if done == warmup + steps:
                return steps * batch_size / (time.perf_counter() - t0)


def ours(preset, images, batch_size, steps, warmup, device, **over):
    """rulelib.diffusion.train.train for warmup + steps steps; images/s over the last `steps`."""
    from rulelib.diffusion.config import TrainConfig
    from rulelib.diffusion.train import train

    n = batch_size * (warmup + steps)
    with tempfile.TemporaryDirectory() as tmp:
        # One epoch of warmup + steps steps; the trainer's steady-state rate counts from its
        # first log point (log_every = warmup) to the end of the steps, before the checkpoint.
        cfg = TrainConfig(task="A", preset=preset, epochs=1, batch_size=batch_size,
                          log_every=warmup, device=str(device), **over)  # fmt: skip
        s = train(cfg, images[:n], Path(tmp), progress=False)
    return s["images_per_s_steady"], s


def fixed(lev) -> dict:
    """TrainConfig overrides that give the levers `lev` outright."""
    return {"bf16": lev.bf16, "channels_last": lev.channels_last, "compile": lev.compile}


def auto_choice(preset, images, bs, device, run_steps):
    """The trainer's automatic choice (rulelib.diffusion.levers.choose) for a run of `run_steps`
    steps at batch bs, timed afresh (a temporary cache): (levers, its figures, seconds)."""
    from rulelib.diffusion import levers, unet
    from rulelib.diffusion.schedule import Schedule, images_to_tensor

    torch.manual_seed(0)
    model = unet.build(preset).to(device)
    x0 = images_to_tensor(images[:bs], device)
    old = os.environ.get("RULELIB_CACHE_DIR")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["RULELIB_CACHE_DIR"] = tmp
        try:
            lev, how = levers.choose(model, Schedule().to(device), x0, device, run_steps, preset)
        finally:
            os.environ.pop("RULELIB_CACHE_DIR") if old is None else os.environ.update(
                RULELIB_CACHE_DIR=old)  # fmt: skip
    return lev, how


def training_step(preset, images, bs, device, lev):
    """A seeded `rulelib.diffusion.levers.Step` of the network under the levers `lev` at batch bs,
    as a no-argument callable running one AdamW step (for the profiles)."""
    from rulelib.diffusion import levers, unet
    from rulelib.diffusion.schedule import Schedule, images_to_tensor

    torch.manual_seed(0)
    st = levers.Step(unet.build(preset).to(device), lev, device)
    x0 = images_to_tensor(images[:bs], device).contiguous(memory_format=st.fmt)
    opt = torch.optim.AdamW(st.params, lr=3e-4, **levers.adamw_kernel(device))
    s, gen = Schedule().to(device), torch.Generator(device=device).manual_seed(0)
    return lambda: st.step(s, x0, gen, opt)


def profile_step(preset, images, bs, device, lev, steps=5, rows=12):
    """torch.profiler over `steps` training steps (rulelib.diffusion.levers.Step, after two
    warm-up steps) under the levers `lev`: prints the operators with the most self time."""
    from torch.profiler import ProfilerActivity, profile

    step = training_step(preset, images, bs, device, lev)
    for _ in range(2):
        step()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(steps):
            step()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"profile of {steps} steps, {lev.name}, batch {bs}:")
    print(prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=50))


CONV_OPS = ("aten::mkldnn_convolution", "aten::convolution_backward")


def _self_ms(prof, steps) -> tuple[float, float]:
    """(all operators, convolutions) self CPU time per step in ms of a finished profile.
    Self times partition the step's operator time, so they add up; a convolution's self time is
    the oneDNN kernel's (forward `mkldnn_convolution`, backward `convolution_backward`)."""
    ev = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in ev) / 1e3 / steps
    conv = sum(e.self_cpu_time_total for e in ev if e.key in CONV_OPS) / 1e3 / steps
    return total, conv


def conv_bound(preset, images, bs, device, steps=5, warmup=3):
    """Amdahl's bound on any trainer that computes the same fp32 convolutions: profile the
    reference loop and our fp32 step in NCHW and channels_last (torch.profiler, `steps` steps
    after `warmup`), and divide the reference's step time by the fastest layout's convolution
    time.  On a CPU whose only faster arithmetic is emulated (bf16 on AVX2), no lever that keeps
    fp32 convolutions can beat that bound; prints the shares and the bound."""
    from torch.profiler import ProfilerActivity, profile, schedule

    from rulelib.diffusion import levers

    plan = schedule(wait=0, warmup=warmup, active=steps, repeat=1)
    with profile(activities=[ProfilerActivity.CPU], schedule=plan) as prof:
        reference_loop(preset, images, bs, steps + warmup, 0, device, on_step=prof.step)
    ref_total, ref_conv = _self_ms(prof, steps)
    print(f"batch {bs:4d}: reference loop  {ref_total:7.1f} ms/step, convolutions "
          f"{ref_conv:6.1f} ms ({ref_conv / ref_total:.0%})")  # fmt: skip
    best = float("inf")
    for cl in (False, True):
        lev = levers.Levers(False, cl, False, torch.get_num_threads())
        step = training_step(preset, images, bs, device, lev)
        with profile(activities=[ProfilerActivity.CPU], schedule=plan) as prof:
            for _ in range(steps + warmup):
                step()
                prof.step()
        total, conv = _self_ms(prof, steps)
        best = min(best, conv)
        print(f"            ours {lev.name:20s} {total:7.1f} ms/step, convolutions "
              f"{conv:6.1f} ms ({conv / total:.0%})")  # fmt: skip
    print(f"            bound with fp32 convolutions: reference step / fastest convolutions = "
          f"{ref_total / best:.2f}x")  # fmt: skip


def spread(xs) -> str:
    return f"{statistics.median(xs):7.1f} [{min(xs):6.1f}-{max(xs):6.1f}]"


def train_comparison(a, device, preset, steps, warmup, images):
    """The reference loop against each variant of ours at each batch size, interleaved: every
    repeat times the reference and every variant once, in an order rotated from one repeat to
    the next (a burst of load from another process then hits every variant alike). Prints the
    median images/s with its min-max over the repeats, and the median (min-max) of the ratio to
    the reference of the same repeat. Returns the first variant's median at batch 16."""
    from rulelib.diffusion import levers

    # "rule": what the trainer's rule gives a run of --auto-steps steps (the timed runs are a few
    # dozen steps, below levers.CPU_COMPILE_MIN_STEPS, so the compile choice is made here).
    rule = levers.rule_levers(device, a.auto_steps)
    base = {f"rule ({rule.name})": fixed(rule)}
    if a.variants:
        for bf16 in (False, True):
            for cl in (False, True):
                for comp in (False, True) if a.compiled else (False,):
                    lev = levers.Levers(bf16, cl, comp, torch.get_num_threads())
                    base[lev.name] = fixed(lev)
    if a.only:
        unknown = sorted(set(a.only) - set(base))
        if unknown:
            raise SystemExit(f"unknown variants {unknown}; expected some of {sorted(base)}")
        base = {v: base[v] for v in base if v in a.only or v.startswith("rule")}
    train16 = None
    for bs in a.batches:
        variants = dict(base)
        if a.auto:
            lev, how = auto_choice(preset, images, bs, device, a.auto_steps)
            # figures is None when nothing was timed (a short run takes the rule): `why` says so
            print(f"batch {bs:4d}: automatic choice for a {a.auto_steps}-step run: {lev.name} "
                  f"({how['how']} in {how['seconds']:.0f} s): {how['why']}")  # fmt: skip
            variants[f"auto ({lev.name})"] = fixed(lev)
            auto_how = how
        names = ["reference", *variants]
        rates: dict[str, list[float]] = {v: [] for v in names}
        ratios: dict[str, list[float]] = {v: [] for v in variants}
        for rep in range(a.repeats):
            k = rep % len(names)
            this = {}
            for v in names[k:] + names[:k]:
                if v == "reference":
                    this[v] = reference_loop(preset, images, bs, steps, warmup, device,
                                             ema=not a.no_ref_ema)  # fmt: skip
                else:
                    this[v], summary = ours(preset, images, bs, steps, warmup, device,
                                            **variants[v])  # fmt: skip
                    if summary.get("compile_rejected"):
                        print(f"  ({v}: compile rejected, {summary['compile_rejected']})")
                rates[v].append(this[v])
            for v in variants:
                ratios[v].append(this[v] / this["reference"])
        ema_note = "without EMA" if a.no_ref_ema else "with EMAModel"
        print(f"batch {bs:4d}: reference ({ema_note:13s})     {spread(rates['reference'])} img/s")
        for v in variants:
            print(f"            ours {v:36s} {spread(rates[v])} img/s  ratio "
                  f"{statistics.median(ratios[v]):4.2f}x [{min(ratios[v]):4.2f}-"
                  f"{max(ratios[v]):4.2f}]")  # fmt: skip
        if a.auto:
            auto = next(v for v in variants if v.startswith("auto"))
            best = max(variants, key=lambda v: statistics.median(rates[v]))
            gap = statistics.median(rates[auto]) / statistics.median(rates[best])
            print(f"            automatic choice: {gap:.1%} of the fastest ({best})")
            if variants[best] != variants[auto]:  # not the same levers
                # another timing, another ranking: the chooser's own figures decided it
                print(f"            (the chooser ranked on its own timing: {auto_how['why']})")
        if bs == 16:
            train16 = statistics.median(rates[next(iter(variants))])
        sys.stdout.flush()
    return train16


def sampling_rate(preset, device, batch_size, steps, bf16=False):
    """images/s of one network call + DDPM update at batch_size, over `steps` steps."""
    from rulelib.diffusion import unet
    from rulelib.diffusion.sample import sample
    from rulelib.diffusion.schedule import Schedule

    torch.manual_seed(0)
    model = unet.build(preset).to(device).eval()
    s = Schedule().to(device)
    sample(
        model,
        s,
        batch_size,
        seed=0,
        method="ddim",
        steps=2,
        batch_size=batch_size,
        device=device,
        progress=False,
        bf16=bf16,
    )  # fmt: skip  (warm-up)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    sample(model, s, batch_size, seed=0, method="ddim", steps=steps, batch_size=batch_size,
           device=device, progress=False, bf16=bf16)  # fmt: skip
    per_step = (time.perf_counter() - t0) / steps
    return batch_size / per_step  # image-steps per second


def project_paper_protocol(train_rate, sample_rate, preset="paper"):
    """Print the projected wall time of `python -m rulelib reproduce --profile paper` (all four
    tasks: training at the paper's epochs, the main samples and the training-length sweep, all
    DDPM-1000) from a training rate (images/s at batch 16) and a sampling rate (image-steps/s)."""
    from rulelib import tasks
    from rulelib.run import profiles

    prof = profiles.get("paper")
    total = 0.0
    print(f"projected paper protocol at {train_rate:.0f} img/s training, "
          f"{sample_rate:.0f} image-steps/s sampling:")  # fmt: skip
    for name in ("A", "B", "C", "D"):  # the paper's four tasks
        images = prof.epochs_for(name) * (prof.train_size_for(name) or tasks.get(name).train_size)
        s = prof.sampling(name)
        n_samples = s.n + (prof.ckpt_count - 1) * (s.sweep_n or 0)  # main + earlier checkpoints
        t_train, t_sample = images / train_rate, n_samples * 1000 / sample_rate
        total += t_train + t_sample
        print(f"  task {name}: train {images / 1e6:.1f} M images {t_train / 3600:5.2f} h, "
              f"sample {n_samples} x 1000 steps {t_sample / 3600:5.2f} h")  # fmt: skip
    print(f"  all four tasks: {total / 3600:.2f} h (measurement and reports add minutes)")
    if preset != prof.preset:
        print(f"  (rates of the {preset!r} preset; the paper profile trains {prof.preset!r})")
    return total


def rule_check(run_dir, n, device, batch_size, etas=(0.0,), out_json=None):
    """Rule metrics of DDIM-50 (each eta in `etas`) against DDPM's, for a trained run.

    Two criteria are printed for every metric:
    - the first: DDIM-50's point value inside DDPM's 95 % bootstrap CI. Even two draws of the
      same sampler often fail it: the difference of two independent estimates has sqrt(2) times
      the standard error of one, so a point falls outside the other's 95 % CI with probability
      P(|Z| > 1.96 / sqrt(2)) = 17 % per metric (with 9 metrics, 1 - 0.83^9 = 81 % that one
      fails, were they independent);
    - the verdict: the paired-bootstrap 95 % CI of DDIM - DDPM (rulelib.metrics.paired_difference;
      both samplers start image i from the same x_T, seed 123) contains 0, which fails 5 % of the
      time per metric when the samplers agree.
    Returns {"ddpm": {"report"}, "ddim50_eta<eta>": {"report", "difference", ...}, ...}, written
    to `out_json` when given."""
    from rulelib import atomic, tasks
    from rulelib.diffusion.checkpoint import load_model
    from rulelib.diffusion.sample import sample
    from rulelib.metrics import paired_difference, rule_report

    weights, clip_x0 = run_sampling(run_dir)
    model, cfg, epoch = load_model(run_dir, weights=weights, device=device)
    task = tasks.get(cfg.task)
    s = cfg.schedule().to(device)
    print(f"  {weights} weights of epoch {epoch}, x0 clipped at each step: {clip_x0}")
    measured, out = {}, {"run": str(run_dir), "epoch": epoch, "weights": weights,
                         "clip_x0": clip_x0, "n": n}  # fmt: skip
    for method, eta in [("ddpm", 1.0)] + [("ddim", float(e)) for e in etas]:
        name = "ddpm" if method == "ddpm" else f"ddim50_eta{eta:g}"
        # resumable: a rerun continues
        eta_tag = "" if method == "ddpm" or eta == 0 else f"_eta{eta:g}"
        path = Path(run_dir) / f"bench_{method}_{n}{eta_tag}{'_clip' if clip_x0 else ''}.npz"
        t0 = time.perf_counter()
        imgs = sample(model, s, n, seed=123, method=method, steps=None if method == "ddpm" else 50,
                      eta=eta, batch_size=batch_size, device=device, out_path=path,
                      clip_x0=clip_x0, meta={"epoch": epoch})  # fmt: skip
        measured[name] = task.measure(imgs)
        out[name] = {"report": rule_report(task, *measured[name], seed=0)}
        print(f"  {name}: {n} samples in {time.perf_counter() - t0:.0f} s -> {path}")
    keys = ["measurable_rate", "coarse_rate", "slope", "intercept", "r2", "bias", "resid_std",
            "conforming_pct", "within_5pct"]  # fmt: skip
    base = out["ddpm"]["report"]
    for name in [k for k in out if k.startswith("ddim")]:
        rep = out[name]["report"]
        diff = paired_difference(task, measured["ddpm"], measured[name], seed=0)
        out[name]["difference"] = diff
        print(f"  {name}: {'metric':16s} {'DDPM (95% CI)':>28s} {'DDIM':>9s} in?"
              f" {'DDIM - DDPM (paired 95% CI)':>34s} 0 in?")  # fmt: skip
        n_in, n_keys, differ = 0, 0, []
        for k in keys:
            a, b, d = base.get(k), rep.get(k), diff.get(k)
            if not a or not b or a.get("value") is None or b.get("value") is None:
                continue
            lo, hi = a["ci"] if a.get("ci") else (a["value"], a["value"])
            inside = lo <= b["value"] <= hi
            dlo, dhi = d["ci"] if d and d.get("ci") else (math.nan, math.nan)
            zero = bool(dlo <= 0 <= dhi)
            n_keys, n_in = n_keys + 1, n_in + inside
            differ += [] if zero else [k]
            print(f"  {'':{len(name)}s}  {k:16s} {a['value']:9.4f} [{lo:8.4f}, {hi:8.4f}] "
                  f"{b['value']:9.4f} {'yes' if inside else 'NO ':3s} {d['value']:+9.4f} "
                  f"[{dlo:+9.4f}, {dhi:+9.4f}] {'yes' if zero else 'NO'}")  # fmt: skip
        out[name]["inside_ddpm_ci"] = f"{n_in}/{n_keys}"
        out[name]["difference_ci_contains_0"] = f"{n_keys - len(differ)}/{n_keys}"
        out[name]["differs_in"] = differ
        verdict = "differs in " + ", ".join(differ) if differ else "agrees with DDPM"
        print(f"  {name}: point inside DDPM's CI for {n_in}/{n_keys} metrics; paired difference "
              f"CI contains 0 for {n_keys - len(differ)}/{n_keys}: {verdict}")  # fmt: skip
    if out_json is not None:
        atomic.write_text(out_json, json.dumps(out, indent=1))
        print(f"  written {out_json}")
    return out


def run_sampling(run_dir):
    """(weights, clip_x0) the run's own samples use: its profile's sampler for a `python -m
    rulelib` run folder (rulelib.cli.run_identity), else the training config's weights, no
    clipping."""
    from rulelib.cli import RunError, run_identity

    run_dir = Path(run_dir)
    cfg_file = run_dir / "config.json"
    cfg = json.loads(cfg_file.read_text()) if cfg_file.exists() else {}
    try:
        profile, _ = run_identity(run_dir)
    except RunError:
        return cfg.get("sample_weights", "raw"), False
    sampling = profile.sampling(cfg.get("task", run_dir.name))
    return sampling.weights, sampling.clip_x0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default=None, help="default: paper on CUDA, small on CPU")
    p.add_argument("--device", default="auto")
    p.add_argument("--batches", type=int, nargs="+", default=[16, 128])
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 20 CPU, 200 GPU)")
    p.add_argument("--warmup", type=int, default=None, help="default 3 CPU, 30 GPU")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--variants", action="store_true", help="time each eager candidate too")
    p.add_argument("--compiled", action="store_true", help="with --variants: + compiled ones")
    p.add_argument("--only", nargs="+", default=None, help="with --variants: just these ones")
    p.add_argument(
        "--profile",
        action="store_true",
        help="torch.profiler of the step, fp32 NCHW and channels_last, first batch",
    )
    p.add_argument(
        "--bound",
        action="store_true",
        help="profile the convolutions' share: the bound on any fp32 trainer, every batch",
    )
    p.add_argument("--auto", action="store_true", help="time the trainer's automatic choice too")
    p.add_argument("--auto-steps", type=int, default=100_000,
                   help="run length the rule and the automatic choice are made for (compiled "
                        "candidates from levers.CPU_COMPILE_MIN_STEPS steps)")  # fmt: skip
    p.add_argument("--no-ref-ema", action="store_true", help="reference loop without its EMA")
    p.add_argument("--sample-batch", type=int, default=64)
    p.add_argument("--sample-steps", type=int, default=10)
    p.add_argument("--no-sample", action="store_true")
    p.add_argument("--no-train", action="store_true", help="skip the training comparison")
    p.add_argument("--run", default=None, help="a trained task run folder: DDIM-50 vs DDPM check")
    p.add_argument("--run-n", type=int, default=512, help="samples per method for --run")
    p.add_argument(
        "--run-etas",
        type=float,
        nargs="+",
        default=[0.0, 1.0],
        help="DDIM etas compared with DDPM for --run (0: the deterministic DDIM)",
    )
    p.add_argument("--project", action="store_true", help="projected time of the paper protocol")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    from rulelib.device import resolve_device

    device = resolve_device(a.device)
    gpu = device.type == "cuda"
    preset = a.preset or ("paper" if gpu else "small")
    steps = a.steps or (200 if gpu else 20)
    warmup = a.warmup or (30 if gpu else 3)
    from rulelib import provenance

    name = torch.cuda.get_device_name() if gpu else provenance.machine_summary(
        provenance.machine_info())  # fmt: skip
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    isa = f"; ONEDNN_MAX_CPU_ISA={isa}" if isa else ""
    print(f"device: {name}; preset {preset}; {steps} timed steps after {warmup} warm-up, "
          f"{a.repeats} interleaved repeats{isa}")  # fmt: skip
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (max(a.batches) * (warmup + steps), 32, 32, 3), dtype=np.uint8)

    if a.profile:
        from rulelib.diffusion import levers

        for cl in (False, True):
            lev = levers.Levers(False, cl, False, torch.get_num_threads())
            profile_step(preset, images, a.batches[0], device, lev)
    if a.bound:
        for bs in a.batches:
            conv_bound(preset, images, bs, device)
    train16 = None if a.no_train else train_comparison(a, device, preset, steps, warmup, images)
    if gpu:
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    sample32 = None  # fp32 image-steps/s: what `python -m rulelib sample` runs
    if not a.no_sample:
        for bf16 in (False, True) if a.variants or gpu else (False,):
            r = sampling_rate(preset, device, a.sample_batch, a.sample_steps, bf16=bf16)
            sample32 = sample32 or r
            print(f"sampling batch {a.sample_batch}{' bf16' if bf16 else ''}: "
                  f"DDPM-1000 {r / 1000:.3f} img/s, DDIM-50 {r / 50:.2f} img/s "
                  f"({r:.0f} image-steps/s over {a.sample_steps} steps)")  # fmt: skip
        if gpu:
            peak = torch.cuda.max_memory_allocated() / 2**30
            print(f"peak GPU memory with sampling: {peak:.2f} GiB")
    if a.project:
        if train16 is None or sample32 is None:
            p.error("--project needs batch 16 among --batches and sampling (no --no-sample)")
        project_paper_protocol(train16, sample32, preset)
    if a.run:
        print(f"rule metrics, DDIM-50 against DDPM, {a.run_n} samples each, run {a.run}:")
        rule_check(
            a.run,
            a.run_n,
            device,
            a.sample_batch,
            a.run_etas,
            Path(a.run) / f"bench_rule_check_{a.run_n}.json",
        )


if __name__ == "__main__":
    main()
