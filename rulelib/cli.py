"""`python -m rulelib`: the command line (argument parsing and dispatch only; the work is in
rulelib.run).

    python -m rulelib reproduce --profile auto --out runs/reproduce    # the README's main job
    python -m rulelib train     --task A --profile quick --out runs/reproduce [--time-limit 8]
    python -m rulelib sample    --task A --out runs/reproduce [--n 1000]
    python -m rulelib evaluate  --task A --out runs/reproduce [--sweep]   # a run's samples
    python -m rulelib evaluate  --task A --images my_samples.npz       # images made elsewhere
    python -m rulelib evaluate  --task B --images folder_of_pngs/ --out scores/
    python -m rulelib filter    --task B --out runs/reproduce         # the mitigation, one step
    python -m rulelib guide     --task B --out runs/reproduce --scale 3
    python -m rulelib export    --out runs/reproduce --to results/quick  # copy for the repo
    python -m rulelib export-diffusers --task B --out runs/reproduce --to models/B  # diffusers
    python -m rulelib reproduce --profile smoke --tasks-from my_tasks.py --task E --out runs/e

`--task` takes one or several names (`A C`, `A,C`), `paper` (the paper's tasks A-D, reproduce's
default) or `all` (every registered task), from the task registry (rulelib.tasks.names();
`--tasks-from FILE_OR_MODULE` registers a user's own tasks first).
`--profile` and `--seed` default to the ones the run folder was made with, else `auto` (paper with
CUDA, else quick) and 0.  The stages, the run folder and its guarantees: rulelib.run.stages,
rulelib.run.folder, rulelib.run.lock.

Errors.  Bad arguments, unusable run folders and unreadable inputs end with one line naming the
value or file and what was expected, and exit status 2 (as argparse's own errors), before anything
in the run folder moves.  File and disk faults (a full disk, a read-only folder) end the same way,
naming the file and the cause; what was finished before stays, and the same command resumes.

A subcommand is one `Command(name, help, add_arguments, run)` entry of COMMANDS:
`add_arguments(parser)` declares its options, `run(args, command)` does the work and returns the
exit status (command: the command line as typed, recorded in results).
"""

from __future__ import annotations

import argparse
import errno
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rulelib import arguments, report, tasks
from rulelib.analytic import command as analytic_command
from rulelib.diffusion import diffusers_export
from rulelib.mitigation import guidance, networks
from rulelib.report import ruler_command
from rulelib.run import folder, mitigate, overrides, profiles, stages
from rulelib.run.folder import RunError, RunSettings, run_identity  # noqa: F401  (public names)
from rulelib.run.images import load_images  # noqa: F401  (public: notebooks call cli.load_images)
from rulelib.run.lock import locked
from rulelib.run.stages import parse_tasks, reproduce  # noqa: F401  (public: cli.reproduce)
from rulelib.study import command as study_command
from rulelib.tasks import mirror, pairs, rulers

# --------------------------------------------------------------------------------------------------
# Argument types and shared options


# The one validator (rulelib.arguments): value types here, validate(args) before dispatch.
positive_int, positive_float, seed_type = arguments.positive_int, arguments.positive_float, \
    arguments.seed  # fmt: skip


def _run_options(p: argparse.ArgumentParser, *, out_default="runs/reproduce") -> None:
    """Options of every command that works on a run folder."""
    p.add_argument(
        "--profile",
        type=arguments.profile,
        default=None,
        help=f"one of {profiles.names()} (default: the run's own, else auto: paper with CUDA, "
        "else quick)",
    )
    p.add_argument("--out", default=out_default, help="run folder (one sub-folder per task)")
    p.add_argument(
        "--seed", type=seed_type, default=None, help="seed of data, training and sampling "
        "(default: the run's own, else 0)"
    )  # fmt: skip
    p.add_argument(
        "--device", type=arguments.device, default="auto", help="auto, cpu, cuda, cuda:1, ..."
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or messages")
    p.add_argument(
        "--tasks-from",
        action="append",
        default=[],
        metavar="FILE_OR_MODULE",
        help="a Python file or importable module that registers tasks of your own "
        "(rulelib.tasks.register); loaded before --task is read; may be repeated",
    )
    data = p.add_argument_group(
        "real data of the pairs and mirror tasks (default: offline stand-ins)"
    )
    data.add_argument(
        "--cifar-dir", metavar="DIR", help="CIFAR-10 binary batches (data_batch_*.bin)"
    )
    data.add_argument(
        "--mnist-dir", metavar="DIR", help="MNIST IDX files (*-ubyte, gzipped or not)"
    )
    data.add_argument(
        "--syn-mirror-dir", metavar="DIR", help="Syn Mirror HDF5 renders (needs rulelib[mirror])"
    )


def _task_option(p, *, several=True, default=None) -> None:
    known = f"{', '.join(tasks.names())} or one of --tasks-from"  # the registry decides
    p.add_argument(
        "--task",
        nargs="+" if several else None,
        default=[default] if default else None,
        required=default is None,
        help=f"task name(s) ({known}), comma or space separated; 'paper' (the paper's tasks) or "
        "'all' (every registered task)"
        if several
        else f"one task name ({known})",
    )


def _time_limit_option(p) -> None:
    p.add_argument(
        "--time-limit",
        type=positive_float,
        default=None,
        metavar="MIN",
        help="stop training (with a checkpoint) after about MIN minutes; rerun to continue",
    )


def _settings(args, names, command: str) -> RunSettings:
    """The run's settings, resolved once (folder.resolve) from the arguments and the folder."""
    return folder.resolve(
        args.out, names, args.profile, args.seed, device=args.device,
        progress=not args.quiet, quiet=args.quiet, command=command,
        overrides=overrides.from_args(getattr(args, "set", None), getattr(args, "config", None)),
    )  # fmt: skip


def _seconds(minutes):
    return None if minutes is None else 60.0 * minutes


# --------------------------------------------------------------------------------------------------
# The subcommands: options, then what they run


def _train_args(p) -> None:
    _task_option(p)
    _run_options(p)
    _time_limit_option(p)
    overrides.add_arguments(p)  # --set KEY=VALUE ..., --config FILE


def _train(args, command: str) -> int:
    names = parse_tasks(args.task)
    run = _settings(args, names, command)
    for name in names:
        epoch = stages.train(run, name, time_limit_s=_seconds(args.time_limit))
        if epoch < run.profile.epochs_for(name):
            break  # out of time
    return 0


def _sample_args(p) -> None:
    _task_option(p)
    _run_options(p)
    p.add_argument("--n", type=arguments.image_count, default=None, help="number of samples "
                   "(default: the profile's)")  # fmt: skip


def _sample(args, command: str) -> int:
    names = parse_tasks(args.task)
    run = _settings(args, names, command)
    for name in names:
        stages.sample(run, name, n=args.n)
    return 0


def _measurement_option(p) -> None:
    p.add_argument(
        "--measurement", choices=rulers.MEASUREMENTS, default="both",
        help="which ruler scores the images: the exact sub-pixel one, the paper's OpenCV one "
        "(tasks A-D), or both (default; the paper's numbers under metrics.json's 'paper_ruler')",
    )  # fmt: skip


def _evaluate_args(p) -> None:
    _task_option(p)
    _run_options(p, out_default=None)
    _measurement_option(p)
    p.add_argument("--images", default=None, help="an .npz/.npy of uint8 images or a PNG folder")
    p.add_argument(
        "--sweep", action="store_true", help="rule metrics of every checkpoint against epoch"
    )
    p.add_argument(
        "--n-boot", type=arguments.n_boot, default=1000, help="bootstrap resamples (--images)"
    )


def _evaluate(args, command: str) -> int:
    names = parse_tasks(args.task)
    if args.images is not None:
        return _evaluate_images(args, names, command)
    args.out = args.out or "runs/reproduce"
    run = _settings(args, names, command)
    for name in names:
        if args.sweep:
            stages.sweep(run, name, args.measurement)
        else:
            stages.evaluate(run, name, args.measurement)
    report.write_run_report(run.out, limits=run.profile.limits)
    return 0


def _evaluate_images(args, names, command: str) -> int:
    """`evaluate --images`: score images made elsewhere into --out (default: beside them)."""
    if len(names) != 1:
        raise ValueError(f"--images is scored for one task at a time, got {names}")
    imgs = load_images(args.images)
    src = Path(args.images)
    out_dir = Path(args.out) if args.out else src.parent / f"{src.stem}_eval"
    folder.check_scores_folder(out_dir, names[0])  # never a run's folder, nor another task's
    made = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with locked(out_dir, command=command, say=_say(args)):
            entry = stages.evaluate_images(
                names[0], imgs, out_dir, seed=0 if args.seed is None else args.seed,
                n_boot=args.n_boot, extra={"source": str(src), **folder.provenance_entry(command)},
                measurement=args.measurement,
            )  # fmt: skip
    except BaseException:
        if made and not any(out_dir.iterdir()):  # refused before writing: leave no trace
            out_dir.rmdir()
        raise
    gen = entry["generated"]
    if not args.quiet:
        print(
            f"[{names[0]}] {src}: {gen['n_measurable']}/{gen['n']} measurable; rule-conforming "
            f"{stages.value(gen, 'conforming_pct', '.1f')} %, coarse "
            f"{stages.value(gen, 'coarse_rate', '.3f')} -> {out_dir / 'metrics.json'}"
        )
        pg = (entry.get("paper_ruler") or {}).get("generated")
        if pg and entry.get("ruler") != "paper":
            print(
                f"[{names[0]}] the paper's ruler: {pg['n_measurable']}/{pg['n']} measurable; "
                f"rule-conforming {stages.value(pg, 'conforming_pct', '.1f')} %, residual std "
                f"{stages.value(pg, 'resid_std', '.4f')}"
            )
    return 0


def _reproduce_args(p) -> None:
    _task_option(p, default="paper")
    _run_options(p)
    _time_limit_option(p)
    _measurement_option(p)
    overrides.add_arguments(p)  # --set KEY=VALUE ..., --config FILE
    p.add_argument("--no-sweep", action="store_true", help="skip the training-length sweep")
    p.add_argument(
        "--mitigation", action="store_true", help="also run the mitigation for each task"
    )


def _reproduce(args, command: str) -> int:
    names = parse_tasks(args.task)
    run = _settings(args, names, command)
    stages.run_tasks(
        run, names, sweep_too=not args.no_sweep, mitigation=args.mitigation,
        time_limit_s=_seconds(args.time_limit), measurement=args.measurement,
    )  # fmt: skip
    return 0


def _export_args(p) -> None:
    p.add_argument("--out", default="runs/reproduce", help="the run folder")
    p.add_argument("--to", required=True, help="destination, e.g. results/quick")
    p.add_argument("--max-samples", type=positive_int, default=512, help="samples kept per task")
    p.add_argument("--quiet", action="store_true", help="no messages")


def _say(args):
    """print, or nothing with --quiet."""
    return (lambda msg: None) if getattr(args, "quiet", False) else print


def _export(args, command: str) -> int:
    report.export.check_destination(args.out, args.to)  # before the folder is made
    Path(args.to).mkdir(parents=True, exist_ok=True)
    with locked(args.to, command=command, say=_say(args)):
        copied = report.export_results(args.out, args.to, max_samples=args.max_samples)
    _say(args)(f"exported {len(copied)} files to {args.to}")
    return 0


def _mitigation_options(p) -> None:
    _task_option(p, several=False)
    _run_options(p)
    p.add_argument("--classifier", default=None, help="a classifier checkpoint (.safetensors)")
    p.add_argument("--n-boot", type=arguments.n_boot, default=1000, help="bootstrap resamples")


def _filter_args(p) -> None:
    _mitigation_options(p)
    p.add_argument("--arch", default="smallconv", choices=networks.PIXEL_ARCHS)
    p.add_argument("--threshold", type=arguments.probability, default=None,
                   help="also require p(class 1) >= this")  # fmt: skip
    p.add_argument(
        "--images", default=None, help="images to filter (default: the run's samples.npz)"
    )


def _one_task(value) -> str:
    names = parse_tasks(value)
    if len(names) != 1:
        raise ValueError(f"expected one task, got {names}")
    return names[0]


def _filter(args, command: str) -> int:
    name = _one_task(args.task)
    mitigate.filter_samples(
        _settings(args, [name], command), name, arch=args.arch, classifier=args.classifier,
        images=args.images, threshold=args.threshold, n_boot=args.n_boot,
    )  # fmt: skip
    return 0


def _guide_args(p) -> None:
    _mitigation_options(p)
    p.add_argument("--arch", default="cheap", choices=networks.NOISY_ARCHS)
    p.add_argument("--scale", type=arguments.non_negative_float, required=True,
                   help="guidance scale s >= 0")  # fmt: skip
    p.add_argument("--schedule", default="linear", help=f"one of {guidance.WEIGHT_SCHEDULES}")
    p.add_argument("--last-k", type=positive_int, default=20, help="K of the last_k schedule")
    p.add_argument("--grad-at", default="x_t", choices=guidance.GRAD_AT)
    p.add_argument(
        "--method", default=None, choices=("ddpm", "ddim"), help="default: the profile's"
    )
    p.add_argument(
        "--steps", type=positive_int, default=None, help="DDIM steps (default: the profile's)"
    )
    p.add_argument("--n", type=arguments.image_count, default=None, help="number of guided samples")


def _guide(args, command: str) -> int:
    name = _one_task(args.task)
    mitigate.guide(
        _settings(args, [name], command), name, scale=args.scale, arch=args.arch,
        classifier=args.classifier, schedule=args.schedule, last_k=args.last_k,
        grad_at=args.grad_at, method=args.method, steps=args.steps, n=args.n,
        n_boot=args.n_boot,
    )  # fmt: skip
    return 0


# --------------------------------------------------------------------------------------------------
# The table of subcommands, the parser, main


@dataclass(frozen=True)
class Command:
    """One subcommand: `add_arguments(parser)` declares its options (validated by their
    rulelib.arguments types), `validate(args)` (optional) checks what needs several of them, and
    `run(args, command)` runs it (command: the command line as typed) and returns the exit
    status.  Both checks run before anything is written."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, str], int]
    validate: Callable[[argparse.Namespace], None] | None = None


COMMANDS: list[Command] = [
    Command("train", "train (or resume) the DDPM of each task", _train_args, _train),
    Command(
        "sample", "sample the last checkpoint into task_dir/samples.npz", _sample_args, _sample
    ),
    Command(
        "evaluate",
        "score a run's samples (--sweep: every checkpoint), or --images made elsewhere",
        _evaluate_args,
        _evaluate,
    ),
    Command(
        "reproduce",
        "train -> sample -> evaluate every task; report.md",
        _reproduce_args,
        _reproduce,
    ),
    Command(
        "export", "copy a run's results (small) into e.g. results/<profile>/", _export_args, _export
    ),
    Command(
        "filter",
        "keep the generated images a pixel classifier calls rule-conforming",
        _filter_args,
        _filter,
    ),
    Command("guide", "classifier-guided sampling towards the rule", _guide_args, _guide),
    Command(
        "export-diffusers",
        "write a trained run as a diffusers DDPMPipeline (UNet2DModel + DDPMScheduler)",
        diffusers_export.add_arguments,
        diffusers_export.run,
    ),
    Command(
        "analytic",
        "sample and score a closed-form denoiser (empirical, gaussian, local, equivariant)",
        analytic_command.add_arguments,
        analytic_command.run,
        analytic_command.validate,
    ),
    Command(
        "rulers",
        "the paper's ruler validated on training images; both rulers' floors (results/rulers)",
        ruler_command.add_arguments,
        ruler_command.run,
    ),
    Command(
        "study",
        "training length and training-set size arms: train, evaluate, summary",
        study_command.add_arguments,
        study_command.run,
        study_command.validate,
    ),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rulelib",
        description="Can diffusion models learn hidden inter-feature rules? Train, sample, score.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(run=cmd.run, validate=cmd.validate)
    return parser


_FAULT_HINTS = {
    errno.ENOSPC: "the disk is full: free space, then run the same command again; finished work "
    "is kept and resumed",
    errno.EDQUOT: "the disk quota is exhausted: free space, then run the same command again",
    errno.EACCES: "not writable (or readable) by you: fix the permissions or choose another --out",
    errno.EPERM: "not permitted here: fix the permissions or choose another --out",
    errno.EROFS: "the file system is read-only: choose another --out",
}


def describe_fault(e: OSError) -> str:
    """One line for a file or disk fault: the file, the cause, what to do."""
    where = f"{e.filename}: " if e.filename else ""
    cause = e.strerror or str(e)
    hint = _FAULT_HINTS.get(e.errno)
    return f"{where}{cause}" + (f" ({hint})" if hint else "")


def _use_real_data(args) -> None:
    """Point the pairs / mirror tasks at the user's files before any stage reads them."""
    if getattr(args, "cifar_dir", None) or getattr(args, "mnist_dir", None):
        pairs.use_files(cifar_dir=args.cifar_dir, mnist_dir=args.mnist_dir)
    if getattr(args, "syn_mirror_dir", None):
        mirror.use_files(args.syn_mirror_dir)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    command = "python -m rulelib " + shlex.join(argv)
    try:
        for spec in getattr(args, "tasks_from", []):
            tasks.load_tasks_from(spec)
        arguments.validate(args, getattr(args, "validate", None))  # before anything is written
        _use_real_data(args)
        return int(args.run(args, command) or 0)
    except FileNotFoundError as e:  # a missing input: its own message names it
        message = str(e) if e.filename is None else describe_fault(e)
    except OSError as e:  # file and disk faults: name the file and the cause, no traceback
        message = describe_fault(e)
    except ValueError as e:  # bad input (RunError, CheckpointError, ...): one clear line
        message = str(e)
    parser.exit(2, f"{parser.prog} {args.command}: error: {message}\n")


if __name__ == "__main__":
    raise SystemExit(main())
