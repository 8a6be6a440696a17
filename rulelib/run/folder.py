"""A run folder: the settings of a run, which profile and seed made each task folder, its wall
times, samples made with other settings moved aside, and temporary files left by a killed run.

    <out>/<task>/profile.json   the profile (name and settings) and seed the folder was made with
                                (`record_identity`, the only writer)
    <out>/<task>/timings.json   wall seconds per stage, a resumed stage adding each call's part
                                (`add_time`, the only writer)
    <out>/<task>/lock.json      the process working in the folder now (rulelib.run.lock)

`RunSettings` are resolved once per command (`resolve`) and passed to every stage; later stages
check the folder against them (`check_identity`) instead of re-reading their settings from disk.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rulelib import atomic, provenance, tasks
from rulelib.device import resolve_device
from rulelib.diffusion import checkpoint
from rulelib.diffusion import sample as sampler
from rulelib.run import overrides as profile_overrides
from rulelib.run import profiles

# Seeds are 32-bit: numpy's legacy global seeding takes no more, and the code adds offsets to a
# seed (fresh reference images: seed + 7919), which must stay inside torch's 64-bit seeds.
MAX_SEED = 2**32 - 1


class RunError(ValueError):
    """A run folder or input that cannot be used as asked (the message says why and what to do)."""


@dataclass(frozen=True)
class RunSettings:
    """Everything a run's stages share, resolved once: where, which profile and seed, on which
    device, how chatty, and the command that started it (recorded in metrics.json)."""

    out: Path
    profile: profiles.Profile
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    progress: bool = True
    quiet: bool = False
    command: str = ""

    def task_dir(self, task: str) -> Path:
        return Path(self.out) / task

    def say(self, msg: str) -> None:
        if not self.quiet:
            print(msg, flush=True)


def resolve(
    out,
    task_names,
    profile: str | None = None,
    seed: int | None = None,
    *,
    device="auto",
    progress: bool = True,
    quiet: bool = False,
    command: str = "",
    overrides: dict | None = None,
) -> RunSettings:
    """RunSettings of a command: the profile and seed given, else those the first of the tasks'
    folders was made with, else `auto` and 0; the profile's settings changed by `overrides`
    (rulelib.run.overrides: --set, --config), else by the folder's own; the device through
    rulelib.device.resolve_device. Every value is checked here, before anything in the run
    folder is touched."""
    made = next(
        (_read_identity(Path(out) / t) for t in task_names
         if (Path(out) / t / "profile.json").exists()),
        {},
    )  # fmt: skip
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                             or not 0 <= seed <= MAX_SEED):  # fmt: skip
        raise ValueError(f"seed must be an integer in [0, {MAX_SEED}], got {seed!r}")
    return RunSettings(
        out=Path(out),
        profile=profile_overrides.apply(
            profiles.get(profile or made.get("profile", "auto")),
            made.get("overrides", {}) if overrides is None else overrides,
        ),
        seed=int(made.get("seed", 0) if seed is None else seed),
        device=resolve_device(str(device)),
        progress=progress,
        quiet=quiet,
        command=command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    )


# --------------------------------------------------------------------------------------------------
# profile.json: which profile and seed made a task folder


def record_identity(tdir: Path, profile: profiles.Profile, seed: int) -> None:
    """Record (profile, seed) in tdir/profile.json, or refuse a folder made with other ones.

    The profile's settings are recorded as they are now: when the profile's definition changed
    since the folder was made (e.g. a new sampler for `quick`), "settings" is updated and the
    earlier settings are kept under "earlier_settings" with the time they were replaced."""
    pfile = tdir / "profile.json"
    now = json.loads(json.dumps(profile.to_dict()))  # as read back (tuples become lists)
    if not pfile.exists():
        data = _data_source(tdir)
        changed = {"overrides": now["overrides"]} if profile.overrides else {}
        atomic.write_json(
            pfile,
            {"profile": profile.name, "seed": seed, **changed, "data": data, "settings": now},
        )
        return
    old = check_identity(tdir, profile, seed)
    if old.get("settings") != now:
        earlier = [*old.get("earlier_settings", []),
                   {"replaced": provenance.now_iso(), "settings": old.get("settings")}]  # fmt: skip
        atomic.write_json(pfile, {**old, "settings": now, "earlier_settings": earlier})


def check_identity(tdir: Path, profile: profiles.Profile, seed: int) -> dict:
    """profile.json of a task folder made with this profile and seed; RunError otherwise."""
    old = _read_identity(tdir)
    if old.get("profile") != profile.name or old.get("seed") != seed:
        raise RunError(
            f"{tdir} was made with profile {old.get('profile')!r} seed {old.get('seed')}, "
            f"not profile {profile.name!r} seed {seed}; use another --out or the same settings"
        )
    made, now = old.get("overrides", {}), json.loads(json.dumps(profile.overrides))
    if made != now:
        said = [
            "the profile's own settings" if not d else " ".join(f"{k}={v}" for k, v in d.items())
            for d in (made, now)
        ]
        raise RunError(
            f"{tdir} was made with {said[0]}, not {said[1]}; use another --out, or the folder's "
            "own settings (a command without --set and --config takes them)"
        )
    data = _data_source(tdir)
    if old.get("data", data) != data:  # folders made before "data" was recorded: rulelib's own
        raise RunError(
            f"{tdir} was made with the images of {old['data']!r}, not of {data!r}; use another "
            "--out or the same data (--cifar-dir, --mnist-dir, --syn-mirror-dir)"
        )
    return old


def _data_source(tdir: Path) -> str:
    """The data source of the task a folder is named after (rulelib.tasks.RuleTask.data_source)."""
    return tasks.get(tdir.name).data_source() if tdir.name in tasks.names() else "unknown task"


def run_identity(tdir) -> tuple[profiles.Profile, int]:
    """(profile, seed) a task folder was made with; RunError when the folder is not a run."""
    info = _read_identity(Path(tdir))
    profile = profile_overrides.apply(profiles.get(info["profile"]), info.get("overrides", {}))
    return profile, int(info["seed"])


def _read_identity(tdir: Path) -> dict:
    """tdir/profile.json; RunError naming the command to run when the folder is not a run, and
    naming the file when it does not hold a profile name and an integer seed (edited by hand)."""
    pfile = tdir / "profile.json"
    if not pfile.exists():
        raise RunError(
            f"{tdir} is not a run folder of rulelib (no profile.json); run "
            f"`python -m rulelib train --task {tdir.name} --out {tdir.parent}` first"
        )
    info = atomic.read_json(pfile)
    if not isinstance(info, dict):
        raise RunError(f"{pfile} holds a {type(info).__name__}, expected a JSON object with "
                       "'profile' and 'seed'; restore it or use another --out")  # fmt: skip
    seed, name = info.get("seed"), info.get("profile")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise RunError(f"{pfile}: seed {seed!r} is not an integer in [0, {MAX_SEED}]; restore "
                       "it or use another --out")  # fmt: skip
    if name not in profiles.PROFILES:
        raise RunError(f"{pfile}: profile {name!r} is not one of {sorted(profiles.PROFILES)}; "
                       "restore it or use another --out")  # fmt: skip
    return info


def check_scores_folder(out_dir, task: str) -> None:
    """Where `evaluate --images` may write the scores of `task`: not a run's task folder (its
    metrics.json, report.md and figures are the run's own) and not a folder holding the scores
    of another task; RunError naming the folder otherwise, before anything is written."""
    out_dir = Path(out_dir)
    if (out_dir / "profile.json").exists() or (out_dir / "checkpoints").exists():
        raise RunError(
            f"--out {out_dir} is a run's task folder; scoring other images there would replace "
            "the run's metrics.json, report.md and figures: choose another --out"
        )
    mfile = out_dir / "metrics.json"
    old = atomic.read_json(mfile) if mfile.exists() else {}
    if isinstance(old, dict) and old.get("task", task) != task:
        raise RunError(
            f"--out {out_dir} holds the scores of task {old['task']}, not {task}; choose another "
            "--out"
        )


# --------------------------------------------------------------------------------------------------
# timings.json


def read_timings(tdir: Path) -> dict:
    path = tdir / "timings.json"
    return atomic.read_json(path) if path.exists() else {}


def add_time(tdir: Path, stage: str, seconds: float) -> None:
    """Add a stage's wall time to tdir/timings.json (a resumed stage adds each call's part; the
    folder's lock keeps two processes from adding theirs at once)."""
    timings = read_timings(tdir)
    timings[stage] = round(timings.get(stage, 0.0) + seconds, 1)
    atomic.write_json(tdir / "timings.json", timings)


# --------------------------------------------------------------------------------------------------
# Samples made with other settings; temporary files of killed runs


def set_aside(path: Path, expected: dict, say=print) -> Path | None:
    """Move samples (finished or partial) at `path` made with other settings than `expected` out of
    the way, so that the run's current sampler redraws them and nothing is overwritten; returns
    where they went (None: nothing to move).

    The old files keep their settings inside; they go to `<stem>_epochXXXXX` when they came from
    another checkpoint, else to `<stem>_<method><steps>-<hash of their settings>` (a counter is
    added if that name is taken)."""
    old = sampler.stored_settings(path)
    if old is None or old == expected:
        return None
    parts = path.with_name(path.stem + ".parts")
    src = path if path.exists() else parts
    ext = ".npz" if src is path else ".parts"
    if old.get("epoch") is not None and old.get("epoch") != expected.get("epoch"):
        tag = f"epoch{int(old['epoch']):05d}"
    else:
        digest = hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:6]
        tag = f"{old.get('method')}{old.get('steps')}-{digest}"
    dst, i = src.with_name(f"{path.stem}_{tag}{ext}"), 1
    while dst.exists():
        i += 1
        dst = src.with_name(f"{path.stem}_{tag}_{i}{ext}")
    src.rename(dst)
    if src is path and parts.exists():  # a finished npz never has parts; stray ones go with it
        parts.rename(dst.with_suffix(".parts"))
    changed = sorted(k for k in set(old) | set(expected) if old.get(k) != expected.get(k))
    say(f"samples made with other settings ({', '.join(changed)}) moved to {dst}")
    return dst


def clean_stale(tdir: Path, say=print) -> list[Path]:
    """Remove what a killed or failed run left half-written in a task folder: rulelib.atomic's
    temporary files (`.<name>.<random>.tmp`, anywhere below) and temporary checkpoint folders;
    move incomplete checkpoint folders aside (rulelib.diffusion.checkpoint.clean).  Called with the
    folder's lock held, so no live writer's file is touched.  Returns the paths removed or moved."""
    gone = []
    for p in sorted(Path(tdir).rglob(".*.tmp")):
        if p.is_file():
            p.unlink(missing_ok=True)
            gone.append(p)
    ck = checkpoint.clean(tdir)
    gone += ck["removed"]
    for p in ck["set_aside"]:
        say(f"incomplete checkpoint {p.with_suffix('')} (a file is missing) moved to {p.name}")
    gone += ck["set_aside"]
    if gone:
        say(f"{tdir}: removed or set aside {len(gone)} stale temporary file(s) of an earlier run")
    return gone


def provenance_entry(command: str) -> dict:
    """Machine, command, git commit and time of a result (entries of metrics.json)."""
    return {
        "machine": provenance.machine_info(),
        "command": command,
        "git_commit": provenance.git_commit(),
        "created": provenance.now_iso(),
    }
