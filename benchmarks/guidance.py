"""Cost of classifier-guided sampling as a ratio to unguided sampling.

Guidance adds one classifier forward and backward pass per sampling step.  This script times
``rulelib.diffusion.sample.sample`` unguided and ``rulelib.mitigation.guidance.guided_sample`` with
the same denoiser,
sampler and seed, for each noise-aware classifier asked for, and prints images per second and the
ratio guided / unguided (target: under 1.5x with the cheap classifier).

    .venv/bin/python benchmarks/guidance.py               # CPU: small U-Net, cheap classifier
    .venv/bin/python benchmarks/guidance.py --preset paper --classifiers cheap unet --device cuda

The classifiers are untrained (random weights): the cost of a gradient does not depend on them.
The configurations run in turn ``--repeats`` times after one warm-up; the best time is reported.
"""

from __future__ import annotations

import argparse
import time

import torch

from rulelib.diffusion import unet
from rulelib.diffusion.sample import sample
from rulelib.diffusion.schedule import Schedule
from rulelib.mitigation import classifiers as C
from rulelib.mitigation import guidance as G


def interleaved_best(fns: dict, repeats: int) -> dict:
    """Best wall time of each function, running them in turn ``repeats`` times after a warm-up, so
    that a load change on a shared machine hits every configuration alike."""
    for fn in fns.values():
        fn()  # warm-up: allocator, kernels, lazy imports
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small", help="denoiser preset of rulelib.diffusion.unet")
    p.add_argument("--classifiers", nargs="+", default=["cheap"], choices=C.NOISY_ARCHS)
    p.add_argument("--unet-width", type=int, default=128, help="width of the 'unet' classifier")
    p.add_argument("--n", type=int, default=16, help="images per run")
    p.add_argument("--method", default="ddim", choices=("ddpm", "ddim"))
    p.add_argument("--steps", type=int, default=25, help="DDIM steps")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = unet.build(args.preset).to(device).eval()
    schedule = Schedule().to(device)
    steps = args.steps if args.method == "ddim" else None
    kw = dict(steps=steps, batch_size=max(16, args.n), device=device, progress=False)

    fns = {"unguided": lambda: sample(model, schedule, args.n, seed=0, method=args.method, **kw)}
    sizes = {}
    for arch in args.classifiers:
        kwargs = {"width": args.unet_width} if arch == "unet" else {}
        clf = C.build(arch, **kwargs).to(device)
        sizes[arch] = sum(q.numel() for q in clf.parameters())
        g = G.Guidance(clf, schedule, 7.0, weight="linear", method=args.method)
        fns[arch] = lambda g=g: G.guided_sample(model, schedule, g, args.n, seed=0, **kw)
    best = interleaved_best(fns, args.repeats)
    t_plain = best["unguided"]
    print(
        f"device {device} ({torch.get_num_threads()} threads), denoiser '{args.preset}', "
        f"{args.method} {steps or schedule.T} steps, {args.n} images, best of {args.repeats}"
    )
    print(f"unguided: {t_plain:.2f} s, {args.n / t_plain:.1f} images/s")
    for arch in args.classifiers:
        t_g = best[arch]
        print(
            f"guided, {arch} classifier ({sizes[arch] / 1e6:.2f} M parameters): {t_g:.2f} s, "
            f"{args.n / t_g:.1f} images/s, ratio {t_g / t_plain:.2f}x unguided"
        )


if __name__ == "__main__":
    main()
