"""``python -m rulelib study``: train, evaluate and summarise the length and size arms.

    study train    --arm length --task B --out runs/study      (resumable; --time-limit minutes)
    study train    --arm length --task C --images N --extend   (on to a larger budget N)
    study evaluate --arm length --task B --out runs/study      (every trained checkpoint)
    study summary  --out runs/study --to results/study         (CSV, JSON, figures, plateau fit,
                                                                the last points paired)
    study run      --grid seeds --jobs 2 --out runs/study      (a job grid on submitit, resumable)
    study status   --grid all --out runs/study                 (each job: done, running, failed...)
    study pack     --out runs/study --parcels runs/parcels     (unfinished runs, to be copied over)
    study restore  --parcels runs/parcels --out runs/study     (on the new machine; then study run)

train and evaluate hold the run folder's lock (one writer per folder, rulelib.run.lock).

Each step can be stopped and rerun: training resumes from the newest checkpoint, evaluation skips
the checkpoints it has scored, samples resume chunk by chunk.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

from rulelib import arguments, atomic, provenance
from rulelib.run import overrides
from rulelib.run.lock import locked
from rulelib.study import arms, artefacts, carry, evaluate, grid, paired, ruler_figure, summary
from rulelib.tasks import rulers

ACTIONS = ("train", "evaluate", "summary", "run", "status", "pack", "restore")


def _size(value: str):
    return value if value == "fresh" else arguments.positive_int(value)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=ACTIONS,
                   help="train, evaluate, summary; run, status (the job grid); pack, restore "
                   "(unfinished runs carried to another machine: rulelib.study.carry)")  # fmt: skip
    p.add_argument("--arm", choices=("length", "size"), default="length")
    p.add_argument("--task", default="B", help="task name (default B)")
    p.add_argument("--out", default="runs/study", help="study folder (one sub-folder per run)")
    p.add_argument("--to", default=None, help="summary: where to write CSV/JSON/figures")
    p.add_argument("--parcels", default="runs/parcels",
                   help="pack: where the parcels go (<parcels>/runs/<run>/resume/, 15 MB each: "
                   "copy the folder to the new machine, not into git); restore: where they are "
                   "read from (default runs/parcels)")  # fmt: skip
    p.add_argument(
        "--floors",
        default="results/rulers/floors.json",
        help="summary: the rulers' floors (python -m rulelib rulers floors) for rulers_<task>.png",
    )
    p.add_argument(
        "--images",
        type=arguments.positive_int,
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
    p.add_argument("--n", type=arguments.image_count, default=256,
                   help="evaluate: samples per checkpoint")  # fmt: skip
    p.add_argument("--conclusion-n", type=arguments.image_count, default=evaluate.CONCLUSION_N,
                   help="evaluate: samples at each run's last three checkpoints, those its "
                   f"conclusion rests on (default {evaluate.CONCLUSION_N}; scored again when "
                   "they hold fewer)")  # fmt: skip
    p.add_argument("--seed", type=arguments.seed, default=0)
    p.add_argument("--device", type=arguments.device, default="cpu")
    p.add_argument(
        "--time-limit",
        type=arguments.positive_float,
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
        type=arguments.positive_int,
        nargs="+",
        default=None,
        help="evaluate: only these checkpoint epochs (default: every trained one)",
    )
    p.add_argument(
        "--extend",
        action="store_true",
        help="train: take a run set up for a smaller --images on to this budget",
    )
    p.add_argument("--measurement", choices=rulers.MEASUREMENTS, default="both",
                   help="evaluate: the rulers that score the samples (default both; the "
                   "paper's under 'paper_ruler')")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    overrides.add_arguments(p)  # train / evaluate: the base profile's settings, e.g. lr=3e-4
    g = p.add_argument_group("run / status (the job grid, rulelib.study.grid)")
    g.add_argument("--grid", choices=grid.GRID_NAMES, default=None, help="which grid")
    g.add_argument("--jobs", type=arguments.positive_int, default=1,
                   help="run: jobs at once (default 1)")  # fmt: skip
    g.add_argument("--threads", type=arguments.positive_int, default=None,
                   help="run: torch threads per job (default: the cores shared out)")  # fmt: skip
    g.add_argument("--executor", choices=("local", "slurm"), default="local")
    g.add_argument("--partition", default=None, help="slurm: partition")
    g.add_argument("--time-min", type=arguments.positive_int, default=24 * 60,
                   help="slurm: minutes per job")  # fmt: skip
    g.add_argument("--gpus-per-job", type=arguments.non_negative_int, default=0,
                   help="slurm: GPUs per job")  # fmt: skip
    g.add_argument("--no-wait", action="store_true",
                   help="run: submit and return (local jobs go on in the background)")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class OverriddenRun(arms.ArmRun):
    """An arm's run with its base profile's settings changed (--set, --config: rulelib.run.
    overrides): its own folder (the settings in its name), the settings in study_run.json."""

    overrides: tuple = ()  # ((key, value), ...)

    @property
    def name(self) -> str:
        said = "_".join(f"{k}{v}" for k, v in self.overrides).replace(" ", "")
        return f"{super().name}_{said}"

    def profile(self):
        return overrides.apply(super().profile(), dict(self.overrides))


def runs_of(args) -> list[arms.ArmRun]:
    if args.arm == "length":
        images = arms.LENGTH_IMAGES if args.images is None else args.images
        found = [arms.length_run(args.task, images, args.seed)]
    else:
        images = arms.SIZE_IMAGES if args.images is None else args.images
        found = [arms.size_run(args.task, s, images, args.seed) for s in args.sizes]
    settings = overrides.from_args(getattr(args, "set", None), getattr(args, "config", None))
    if not settings:
        return found
    fixed = sorted(set(settings) & {"epochs", "train_size", "ckpt_count"})
    if fixed:
        raise overrides.OverrideError(
            f"{', '.join(fixed)}: set by the study's arm (--images, --sizes), not by --set"
        )
    pairs = tuple(sorted(settings.items()))
    return [OverriddenRun(**dataclasses.asdict(r), overrides=pairs) for r in found]


def validate(args) -> None:
    """What needs several options or the study folder, checked before anything is written
    (rulelib.arguments.validate): summary needs scored runs under --out (else it would replace
    the summary at --to with an empty one), --epochs must be checkpoints of the runs."""
    if args.action == "summary":
        rdirs = [r for r in sorted(Path(args.out).glob("*_*")) if (r / "eval").is_dir()]
        if not any(evaluate.load_entries(r) for r in rdirs):
            raise FileNotFoundError(
                f"--out {args.out} holds no scored study run (no */eval/*.json); expected the "
                "folder of `study train` and `study evaluate`"
            )
    carried = (("pack", args.out, "--out"), ("restore", args.parcels, "--parcels"))
    for action, folder, what in carried:
        if args.action == action and not Path(folder).is_dir():
            raise FileNotFoundError(f"{what} {folder}: no such folder; expected "
                                    + ("the study folder of `study run`" if action == "pack"
                                       else "the folder `study pack` wrote"))  # fmt: skip
    if args.action in ("train", "evaluate") and args.epochs is not None:
        for r in runs_of(args):
            unknown = sorted(set(args.epochs) - set(r.epochs))
            if unknown:
                raise ValueError(f"--epochs {unknown}: not checkpoints of {r.name}; expected "
                                 f"some of {list(r.epochs)}")  # fmt: skip


def run(args, command: str | None = None) -> int:
    """Run the action (``command``, the command line as typed, is accepted for the main command
    line's interface; each run folder records its own settings)."""
    command = command or shlex.join(["python", "-m", "rulelib", "study", *sys.argv[1:]])
    limit = None if args.time_limit is None else 60.0 * args.time_limit
    if args.action in ("run", "status"):
        return run_grid(args, command)
    if args.action in ("pack", "restore"):
        said = (carry.pack(args.out, args.parcels) if args.action == "pack"
                else carry.restore(args.parcels, args.out))  # fmt: skip
        for name, what in said.items():
            print(f"{name}: {what}")
        if not said:
            print(f"no study run under {args.out if args.action == 'pack' else args.parcels}")
        return 0
    if args.action == "train":
        for r in runs_of(args):
            arms.run_dir(args.out, r).mkdir(parents=True, exist_ok=True)
            with locked(arms.run_dir(args.out, r), command=command):
                res = arms.train_run(args.out, r, device=args.device, progress=not args.quiet,
                                     time_limit_s=limit, extend=args.extend)  # fmt: skip
            print(f"{r.name}: checkpoints at epochs {res['epochs']} "
                  f"({'finished' if res['finished'] else 'not finished'})")  # fmt: skip
        return 0
    if args.action == "evaluate":
        for r in runs_of(args):
            arms.run_dir(args.out, r).mkdir(parents=True, exist_ok=True)
            with locked(arms.run_dir(args.out, r), command=command):
                evaluate.evaluate_run(args.out, r, n=args.n, device=args.device,
                                      progress=not args.quiet, time_limit_s=limit,
                                      raw_ddpm=args.raw_ddpm, epochs=args.epochs,
                                      measurement=args.measurement,
                                      conclusion_n=args.conclusion_n)  # fmt: skip
        return 0
    summary.summarise(args.out, args.to or args.out, command=command)
    if args.to:  # a summary elsewhere (results/) also gets what a later ruler re-scores
        artefacts.collect(args.out, args.to)
        write_paired(Path(args.to), command)
    floors = Path(args.floors)
    if floors.exists():  # the answer read with both rulers, their floors as bands
        rows = atomic.read_json(Path(args.to or args.out) / "study.json")["rows"]
        for task in sorted({r["task"] for r in rows if r["arm"] == "length"}):
            ruler_figure.draw(rows, atomic.read_json(floors), task,
                              Path(args.to or args.out) / f"rulers_{task}.png")  # fmt: skip
    return 0


def write_paired(to: Path, command: str) -> dict:
    """paired.json beside the summary: each length-arm (and fresh-arm) run's last points against
    its last one, paired on the shared noise draws, with each ruler (rulelib.study.paired), from
    the samples the summary committed under ``<to>/runs/``."""
    rows = atomic.read_json(to / "study.json")["rows"]
    length = {r["run"]: r["task"] for r in rows if r["arm"] in ("length", "fresh")}
    doc = {"pairs": paired.summarise(to / "runs", length), "n_boot": 1000, "command": command,
           "created": provenance.now_iso(), "git_commit": provenance.git_commit()}  # fmt: skip
    atomic.write_json(to / "paired.json", doc)
    return doc


def run_grid(args, command: str) -> int:
    """``study run``: launch a grid's unfinished jobs; ``study status``: each job's state."""
    if args.action == "run" and args.grid is None:
        raise ValueError(f"study run needs --grid, one of {list(grid.GRID_NAMES)}")
    jobs = grid.grid(args.grid or "all")
    if args.action == "status":
        print(grid.format_status(grid.status(args.out, jobs)))
        return 0
    grid.launch(jobs, args.out, executor=args.executor, n_jobs=args.jobs, threads=args.threads,
                device=args.device, wait=not args.no_wait, partition=args.partition,
                time_min=args.time_min, gpus_per_job=args.gpus_per_job)  # fmt: skip
    return 0
