"""``python -m rulelib analytic``: sample a closed-form denoiser and score it like a trained run.

    python -m rulelib analytic --task B --denoiser empirical --n 256 --out results/analytic
    python -m rulelib analytic --task B --denoiser local --patch 5 --n 128 --out ...
    python -m rulelib analytic --task B --denoiser local --calibrate-to runs/study/length_B ...
    python -m rulelib analytic --summary --out results/analytic      (the model-class table)

writes DIR/<task>/<denoiser>/ metrics.json (with the copy rate), report.md, samples.png and
samples.npz (resumable); ``--summary`` writes DIR/table.csv and DIR/table.md.
"""

from __future__ import annotations

import argparse

from rulelib.analytic import denoisers, draw


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", nargs="+", default=["B"], help="task name(s) (default B)")
    p.add_argument("--denoiser", nargs="+", choices=denoisers.NAMES, default=["empirical"],
                   help="closed-form class(es)")  # fmt: skip
    p.add_argument("--n", type=int, default=256, help="samples (default 256)")
    p.add_argument("--out", default="runs/analytic", help="output folder")
    p.add_argument("--seed", type=int, default=0, help="training set and sampling noise seed")
    p.add_argument(
        "--patch", type=int, default=draw.DEFAULT_PATCH, help="local machines: patch side (odd, px)"
    )
    p.add_argument(
        "--pool",
        type=int,
        default=16384,
        help="equivariant machine: training patches sampled into its pool",
    )
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: quick's 100)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--unet", default=None,
                   help="a trained run or checkpoint (sampled from the same noise), or a "
                   "samples.npz of the same sampler and seed (results/quick/B/samples.npz): "
                   "the per-image pixel r^2 between its images and the denoiser's")  # fmt: skip
    p.add_argument(
        "--calibrate-to",
        default=None,
        help="local machines: a trained run or checkpoint; the patch size per noise "
        "level is calibrated to its U-Net (written to <denoiser>-calibrated/)",
    )
    p.add_argument("--levels", type=int, default=20, help="--calibrate-to: noise levels scored")
    p.add_argument("--n-calibrate", type=int, default=16,
                   help="--calibrate-to: held-out images per noise level")  # fmt: skip
    p.add_argument("--summary", action="store_true", help="only gather the model-class table")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args, command: str | None = None) -> int:
    """Run the command; ``command``: the command line as typed (recorded in metrics.json)."""
    if args.n < 1:
        raise SystemExit(f"--n must be a positive number of samples, got {args.n}")
    if not args.summary:
        for task in args.task:
            for name in args.denoiser:
                e = draw.draw(task, name, args.n, args.out, seed=args.seed, patch=args.patch,
                              pool=args.pool, n_boot=args.n_boot, steps=args.steps,
                              unet=args.unet, calibrate_to=args.calibrate_to,
                              levels=args.levels, n_calibrate=args.n_calibrate,
                              progress=not args.quiet, command=command)  # fmt: skip
                g, m = e["generated"], e["memorisation"]
                print(
                    f"[{task}] {name}: measurable {100 * g['measurable_rate']['value']:.1f} %, "
                    f"copy rate {100 * m['copy_rate']['value']:.1f} % -> "
                    f"{args.out}/{task}/{name}{'-calibrated' * bool(args.calibrate_to)}"
                )
    rows = draw.summarise(args.out)
    print(f"model-class table: {len(rows)} rows -> {args.out}/table.md")
    return 0
