"""``python -m rulelib study``: train, evaluate and summarise the length and size arms (issue 12).

    study train    --arm length --task B --out runs/study      (resumable; --time-limit minutes)
    study train    --arm length --task C --images N --extend   (on to a larger budget N)
    study evaluate --arm length --task B --out runs/study      (every trained checkpoint)
    study summary  --out runs/study --to results/study         (CSV, JSON, figures, plateau fit)

Each step can be stopped and rerun: training resumes from the newest checkpoint, evaluation skips
the checkpoints it has scored, samples resume chunk by chunk.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from rulelib.study import arms, evaluate

ACTIONS = ("train", "evaluate", "summary")


def _size(value: str):
    return value if value == "fresh" else int(value)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=ACTIONS, help="train, evaluate or summary")
    p.add_argument("--arm", choices=("length", "size"), default="length")
    p.add_argument("--task", default="B", help="task name (default B)")
    p.add_argument("--out", default="runs/study", help="study folder (one sub-folder per run)")
    p.add_argument("--to", default=None, help="summary: where to write CSV/JSON/figures")
    p.add_argument(
        "--images",
        type=int,
        default=None,
        help=f"image budget (length {arms.LENGTH_IMAGES}, size {arms.SIZE_IMAGES})",
    )
    p.add_argument(
        "--sizes",
        type=_size,
        nargs="+",
        default=list(arms.SIZES),
        help="size arm: training-set sizes and/or 'fresh'",
    )
    p.add_argument("--n", type=int, default=256, help="evaluate: samples per checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="train/evaluate: stop after the step that ends past this many minutes",
    )
    p.add_argument(
        "--raw-ddpm",
        action="store_true",
        help="evaluate: also the paper's raw weights + DDPM-1000 at the last checkpoint",
    )
    p.add_argument(
        "--epochs",
        type=int,
        nargs="+",
        default=None,
        help="evaluate: only these checkpoint epochs (default: every trained one)",
    )
    p.add_argument(
        "--extend",
        action="store_true",
        help="train: take a run set up for a smaller --images on to this budget",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def runs_of(args) -> list[arms.ArmRun]:
    if args.arm == "length":
        images = args.images or arms.LENGTH_IMAGES
        return [arms.length_run(args.task, images, args.seed)]
    images = args.images or arms.SIZE_IMAGES
    return [arms.size_run(args.task, s, images, args.seed) for s in args.sizes]


def run(args, command: str | None = None) -> int:
    """Run the action (``command``, the command line as typed, is accepted for the main command
    line's interface; each run folder records its own settings)."""
    command = command or shlex.join(["python", "-m", "rulelib", "study", *sys.argv[1:]])
    limit = None if args.time_limit is None else 60.0 * args.time_limit
    if args.action == "train":
        for r in runs_of(args):
            res = arms.train_run(args.out, r, device=args.device, progress=not args.quiet,
                                 time_limit_s=limit, extend=args.extend)  # fmt: skip
            print(f"{r.name}: checkpoints at epochs {res['epochs']} "
                  f"({'finished' if res['finished'] else 'not finished'})")  # fmt: skip
        return 0
    if args.action == "evaluate":
        for r in runs_of(args):
            evaluate.evaluate_run(args.out, r, n=args.n, device=args.device,
                                  progress=not args.quiet, time_limit_s=limit,
                                  raw_ddpm=args.raw_ddpm, epochs=args.epochs)  # fmt: skip
        return 0
    evaluate.summarise(args.out, args.to or args.out, command=command)
    return 0
