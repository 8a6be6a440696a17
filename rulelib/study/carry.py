"""An unfinished study run carried to another machine: ``pack`` it into a folder to copy over
(not into git: a parcel is 15 MB of binaries), ``restore`` it into a run folder there, and the
grid trains it on from where it stopped.

A run folder stays on the machine that trained it, and a machine may be replaced between two
sessions; a run longer than one session (Task B to 1 024 000 images is about four hours on two
cores) would then start from zero every time.  What training on needs is small: the run's record
(``study_run.json``, ``config.json``, ``train_log.jsonl``), its newest checkpoint (weights, EMA,
optimiser and generator state: 15 MB for the small U-Net) and the scores of the checkpoints
before it (``eval/``: each score and its samples).
``pack`` copies that into ``<parcels>/runs/<run>/resume/``; ``restore`` rebuilds
``<out>/<run>/`` from it.  The
trainer resumes a checkpoint to the bit (rulelib.diffusion.train), so the restored run ends as
the uninterrupted one would.  Checkpoints older than the newest are not carried: training has
passed them (``arms.passed_tags``), and their scores and samples are what the study keeps.

A finished run needs no parcel (its final EMA weights are committed): ``pack`` removes it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rulelib import atomic
from rulelib.diffusion import checkpoint
from rulelib.run.lock import locked
from rulelib.study import artefacts

RUN_FILES = ("study_run.json", "config.json", "train_log.jsonl")


def _parcel(parcels, name: str) -> Path:
    return Path(parcels) / "runs" / name / "resume"


def pack(out, parcels) -> dict[str, str]:
    """A parcel of each unfinished run under ``out`` that has a checkpoint; the parcel of a
    finished run is removed.  Returns {run: "packed at epoch E" | "finished" | ...}."""
    said = {}
    for rdir in sorted(p for p in Path(out).glob("*_*") if (p / "study_run.json").exists()):
        dest = _parcel(parcels, rdir.name)
        ckpts = checkpoint.list_checkpoints(rdir)
        last = atomic.read_json(rdir / "study_run.json")["run"]["epochs"][-1]
        if ckpts and ckpts[-1][0] == last:
            shutil.rmtree(dest, ignore_errors=True)
            said[rdir.name] = "finished: no parcel"
            continue
        if not ckpts:
            said[rdir.name] = "no checkpoint yet: nothing to pack"
            continue
        epoch, src = ckpts[-1]
        for old in (dest / "checkpoint").glob("epoch_*"):  # the newest checkpoint only
            if old.name != src.name:
                shutil.rmtree(old)
        for f in checkpoint.CHECKPOINT_FILES:
            artefacts.copy_file(src / f, dest / "checkpoint" / src.name / f)
        for f in RUN_FILES:
            if (rdir / f).exists():
                artefacts.copy_file(rdir / f, dest / f)
        for f in sorted((rdir / "eval").glob("*.json")):  # each score with its samples
            for g in (f, f.with_suffix(".npz")):
                if g.exists():
                    artefacts.copy_file(g, dest / "eval" / g.name)
        said[rdir.name] = f"packed at epoch {epoch}"
    return said


def restore(parcels, out, *, say=print) -> dict[str, str]:
    """Rebuild ``<out>/<run>/`` from each parcel under ``<parcels>/runs/``, holding the run
    folder's lock (rulelib.run.lock); a folder that already holds a checkpoint is left alone (it
    is at least as far on: its own machine's).  Returns {run: "restored at ..." | "kept: ..."}."""
    found = []
    for dest in sorted(Path(parcels).glob("runs/*/resume")):  # every parcel checked first
        ckpts = sorted((dest / "checkpoint").glob("epoch_*"))
        if len(ckpts) != 1 or any(not (ckpts[0] / f).exists() for f in checkpoint.CHECKPOINT_FILES):
            raise FileNotFoundError(f"{dest}: expected one complete checkpoint folder under "
                                    f"checkpoint/, found {[p.name for p in ckpts]}")  # fmt: skip
        found.append((dest, ckpts[0]))
    said = {}
    for dest, ckpt in found:
        rdir = Path(out) / dest.parent.name
        rdir.mkdir(parents=True, exist_ok=True)
        with locked(rdir, command=f"study restore {dest}", say=say):
            said[rdir.name] = _restore_run(dest, ckpt, rdir)
    return said


def _restore_run(dest: Path, ckpt: Path, rdir: Path) -> str:
    held = checkpoint.list_checkpoints(rdir)
    if held:
        return f"kept: {rdir} already holds epoch {held[-1][0]}"
    for f in RUN_FILES:
        if (dest / f).exists():
            artefacts.copy_file(dest / f, rdir / f)
    for f in sorted((dest / "eval").iterdir()):  # each score and its samples
        artefacts.copy_file(f, rdir / "eval" / f.name)
    # the checkpoint last, then `latest`: a restore cut short leaves no checkpoint to resume from
    for f in checkpoint.CHECKPOINT_FILES:
        artefacts.copy_file(ckpt / f, rdir / "checkpoints" / ckpt.name / f)
    atomic.write_text(rdir / "checkpoints" / "latest", ckpt.name + "\n")
    return f"restored at {ckpt.name}"
