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
from pathlib import Path

from rulelib import arguments
from rulelib.analytic import denoisers, draw
from rulelib.diffusion.config import TrainConfig
from rulelib.run.lock import locked


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", nargs="+", default=["B"], help="task name(s) (default B)")
    p.add_argument("--denoiser", nargs="+", choices=denoisers.NAMES, default=["empirical"],
                   help="closed-form class(es)")  # fmt: skip
    p.add_argument("--n", type=arguments.image_count, default=256, help="samples (default 256)")
    p.add_argument("--out", default="runs/analytic", help="output folder")
    p.add_argument("--seed", type=arguments.seed, default=0,
                   help="training set and sampling noise seed")  # fmt: skip
    p.add_argument("--patch", type=arguments.odd_positive_int, default=draw.DEFAULT_PATCH,
                   help="local machines: patch side (odd, px)")  # fmt: skip
    p.add_argument(
        "--pool",
        type=arguments.positive_int,
        default=16384,
        help="equivariant machine: training patches sampled into its pool",
    )
    p.add_argument("--steps", type=arguments.positive_int, default=None,
                   help="DDIM steps (default: quick's 100)")  # fmt: skip
    p.add_argument("--n-boot", type=arguments.n_boot, default=1000, help="bootstrap resamples")
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
    p.add_argument("--levels", type=arguments.positive_int, default=20,
                   help="--calibrate-to: noise levels scored")  # fmt: skip
    p.add_argument("--n-calibrate", type=arguments.positive_int, default=16,
                   help="--calibrate-to: held-out images per noise level")  # fmt: skip
    p.add_argument("--summary", action="store_true", help="only gather the model-class table")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def validate(args) -> None:
    """What needs several options, before anything is written (rulelib.arguments.validate)."""
    local = {"local", "equivariant"}
    if args.calibrate_to is not None and not local & set(args.denoiser):
        raise ValueError(f"--calibrate-to: only the local machines ({sorted(local)}) have a "
                         f"patch size to calibrate, not {args.denoiser}")  # fmt: skip
    if args.steps is not None and args.steps > TrainConfig.T:  # the quick profile's schedule
        raise ValueError(f"--steps {args.steps}: expected DDIM steps in 1 .. T = {TrainConfig.T}")
    if args.summary and not Path(args.out).is_dir():
        raise FileNotFoundError(f"--out {args.out} does not exist; expected the folder of earlier "
                                "analytic runs to summarise")  # fmt: skip
    for given in (args.unet, args.calibrate_to):
        if given is not None and not Path(given).exists():
            raise FileNotFoundError(f"{given} does not exist; expected a trained run, a "
                                    "checkpoint folder or a samples.npz")  # fmt: skip


def run(args, command: str | None = None) -> int:
    """Run the command; ``command``: the command line as typed (recorded in metrics.json).
    The output folder is locked while it is written (rulelib.run.lock)."""
    Path(args.out).mkdir(parents=True, exist_ok=True)
    with locked(args.out, command=command or "python -m rulelib analytic"):
        return _run(args, command)


def _run(args, command: str | None) -> int:
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
