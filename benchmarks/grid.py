"""The study grid's throughput on this machine, and how close the training step comes to the
CPU's fp32 peak; prints figures (never asserted by tests).

    OMP_NUM_THREADS=1 python benchmarks/grid.py                 # ~1-2 minutes on 2 cores
    python benchmarks/grid.py --json benchmarks/results/grid.json  # the figures also as a file
    python benchmarks/grid.py --images 960 --preset small      # longer runs, another network

Throughput: the study's jobs are the trainer (rulelib.diffusion.train.train) with the quick
profile's settings (rulelib.study.arms); scoring a checkpoint is a small share of a job.  The
benchmark trains the same epoch of Task B images (``--images``, default 640: 20 steps of batch
32) as one job with all the cores' threads and as one job per core with one thread each, started
together (a barrier), and prints the total images/s of each layout, steady state (the trainer's
``images_per_s_steady``: after warm-up, before the checkpoint), and their ratio, both measured in
this run.

FLOP utilisation: the FLOPs of one training step (forward, loss, backward) counted with
``torch.utils.flop_counter.FlopCounterMode`` (matrix products and convolutions; the elementwise
work, normalisations and AdamW are not counted, so the utilisation is a lower bound), per image,
times the measured images/s, against the fp32 peak of the cores: cores x clock x 2 FMA pipes x
fp32 lanes x 2 FLOPs per FMA, with 8 lanes for AVX2 and 16 for AVX-512 (the vector width torch's
kernels use on this CPU, ``torch.backends.cpu.get_cpu_capability``).  The clock is /proc/cpuinfo's
"cpu MHz" (in a virtual machine the nominal clock; boost would raise the peak).  The CPU is named
and every other process's CPU share is printed: the machine is shared.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from rulelib import atomic, provenance, tasks
from rulelib.diffusion import train as trainer
from rulelib.diffusion import unet
from rulelib.diffusion.schedule import Schedule
from rulelib.study import arms


def cpu() -> dict:
    """Model name, cores, clock (MHz), the vector flags and torch's kernel capability."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.*)", text)
    mhz = re.search(r"cpu MHz\s*:\s*([\d.]+)", text)
    flags = set((re.search(r"flags\s*:\s*(.*)", text) or [None, ""])[1].split())
    cores = len(os.sched_getaffinity(0))
    cap = torch.backends.cpu.get_cpu_capability()
    return {"model": model[1] if model else "unknown", "cores": cores,
            "mhz": float(mhz[1]) if mhz else None, "avx2": "avx2" in flags and "fma" in flags,
            "avx512f": "avx512f" in flags, "torch_capability": cap}  # fmt: skip


def peak_gflops(info: dict, cores: int, lanes: int) -> float:
    """cores x GHz x 2 FMA pipes x lanes x 2 FLOPs (one multiply and one add per FMA)."""
    return cores * info["mhz"] / 1000 * 2 * lanes * 2


def flops_per_image(preset: str, batch: int = 32) -> float:
    """FLOPs of one training step's forward and backward per image (FlopCounterMode)."""
    torch.manual_seed(0)
    model = unet.build(preset).train()
    schedule = Schedule(1000, 1e-4, 2e-2)
    x0 = torch.rand(batch, 3, 32, 32) * 2 - 1
    gen = torch.Generator().manual_seed(0)
    with FlopCounterMode(display=False) as counter:
        loss = schedule.loss(model, x0, gen)
        loss.backward()
    return counter.get_total_flops() / batch


def _train(args):
    """One job: the trainer on n images for one epoch, with `threads` torch threads."""
    threads, n_images, preset, barrier = args
    torch.set_num_threads(threads)
    images = tasks.get("B").sample(n_images, 11)[0]
    cfg = dataclasses.replace(arms.length_run("B").train_config(), preset=preset, epochs=1,
                              log_every=4, compile=False, bf16=False,
                              channels_last=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        barrier.wait()
        s = trainer.train(cfg, images, d, progress=False)
    return {"threads": threads, "images_per_s": s["images_per_s_steady"],
            "whole": s["images_per_s"]}  # fmt: skip


def layout(n_jobs: int, threads: int, n_images: int, preset: str) -> list[dict]:
    ctx = mp.get_context("spawn")
    with ctx.Manager() as m:
        barrier = m.Barrier(n_jobs)
        with ctx.Pool(n_jobs) as pool:
            return pool.map(_train, [(threads, n_images, preset, barrier)] * n_jobs)


def others() -> str:
    """Other processes using CPU now (ps), so that a reader can judge the figures."""
    out = subprocess.run(["ps", "-eo", "pcpu,ni,args", "--sort=-pcpu"], capture_output=True,
                         text=True).stdout.splitlines()[1:]  # fmt: skip
    busy = [ln.strip()[:110] for ln in out
            if float(ln.split()[0]) >= 5 and "benchmarks/grid.py" not in ln]  # fmt: skip
    return "\n".join("   " + b for b in busy[:8]) or "   (none above 5 % CPU)"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=640, help="images per job (one epoch)")
    p.add_argument("--preset", default="small", help="network (rulelib.diffusion.unet)")
    p.add_argument("--repeats", type=int, default=2, help="each layout this many times")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    a = p.parse_args(argv)
    info = cpu()
    n = info["cores"]
    print(f"CPU: {info['model']}, {n} cores at {info['mhz']} MHz; AVX2+FMA {info['avx2']}, "
          f"AVX-512F {info['avx512f']}; torch kernels: {info['torch_capability']}")  # fmt: skip
    busy = others()
    print("other processes now:\n" + busy)
    results = {}
    for r in range(a.repeats):  # the layouts interleaved, so that a change in load hits both
        for jobs, threads in ((1, n), (n, 1)):
            res = layout(jobs, threads, a.images, a.preset)
            total = sum(x["images_per_s"] for x in res)
            results.setdefault((jobs, threads), []).append(total)
            each = ", ".join(f"{x['images_per_s']:.1f}" for x in res)
            print(f"  repeat {r + 1}: {jobs} job(s) x {threads} thread(s): {total:6.1f} images/s "
                  f"in all ({each})")  # fmt: skip
    one, many = (max(results[k]) for k in ((1, n), (n, 1)))
    print(f"best of {a.repeats}: 1 job x {n} threads {one:.1f} images/s; {n} jobs x 1 thread "
          f"{many:.1f} images/s; ratio {many / one:.2f}")  # fmt: skip
    fpi = flops_per_image(a.preset)
    lanes = 16 if info["torch_capability"].startswith("AVX512") else 8
    for name, ln in (("AVX2", 8), ("AVX-512", 16)):
        pk = peak_gflops(info, n, ln)
        used = " (torch's kernels)" if ln == lanes else ""
        print(f"fp32 peak, {name}{used}: {n} cores x {info['mhz'] / 1000:.2f} GHz x 2 FMA x {ln} "
              f"lanes x 2 = {pk:.0f} GFLOP/s")  # fmt: skip
    pk = peak_gflops(info, n, lanes)
    print(f"training step ({a.preset}): {fpi / 1e6:.1f} MFLOP per image (matmuls and convs, "
          f"forward + backward)")  # fmt: skip
    util = {}
    for label, ips in ((f"1 job x {n} threads", one), (f"{n} jobs x 1 thread", many)):
        g = fpi * ips / 1e9
        util[label] = {"images_per_s": ips, "gflops": g, "share_of_peak": g / pk}
        print(f"  {label}: {g:.2f} GFLOP/s = {100 * g / pk:.1f} % of the {pk:.0f} GFLOP/s peak")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_json(a.json, {
            "cpu": info, "other_processes": busy, "preset": a.preset, "images": a.images,
            "repeats": {f"{j} job(s) x {t} thread(s)": v for (j, t), v in results.items()},
            "ratio_jobs_over_threads": many / one, "mflop_per_image": fpi / 1e6,
            "peak_gflops": pk, "layouts": util, "created": provenance.now_iso(),
            "command": " ".join(["python benchmarks/grid.py", *(argv or sys.argv[1:])]),
        })  # fmt: skip
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
