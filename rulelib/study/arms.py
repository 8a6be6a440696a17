"""The two training arms of the study: training length and training-set size, on the CPU.

Settings are the `quick` profile's (the small U-Net, AdamW lr 1e-3, batch 32, EMA 0.995 from step
200 and samples from the EMA weights, 100-step ancestral DDIM with each step's clean-image
prediction clipped), derived with ``dataclasses.replace``; only the image budget, the training-set
size and the checkpoints change:

    length   one task, its own training set (B, C: 2000 images), trained to ``images`` training
             images in all (default 512 000, 8x the quick budget), checkpoints log-spaced in
             images (``log_checkpoints``), so that error(images) can be fitted on a log axis;
    size     the same budget (default 128 000 images) on training sets of 250 ... 16 000 images
             and on a set as large as the budget ("fresh": every image seen once, a model that
             cannot memorise), checkpoints at a quarter, half and all of the budget;
    fresh    the size arm's "fresh" run on the length arm's budget (every image new) with the
             length arm's log-spaced checkpoints: one epoch, so the checkpoints before its end
             are mid-epoch stops (``TrainConfig.stop_step``) whose resume points are kept under
             <run>/points/images_NNNNNNNNN/ (the scored "checkpoints" of this arm).

A run may also change the network (``preset``: the width arm's "narrow" and "wide" U-Nets, the
transformer "dit"; rulelib.diffusion.unet) and derive from another profile than quick (``base``:
"smoke" for tests); both are left out of the run's record and name when at their defaults, so
the folders of the first study keep their names and records.

A run is trained in segments: the trainer is called with ``epochs`` = the next checkpoint's epoch
(``epochs`` may change on resumption, rulelib.diffusion.config.RESUME_FREE_KEYS), so each segment
ends with a checkpoint there, and a killed job resumes from its newest checkpoint to the bit (the
trainer's guarantee). Between two scored checkpoints the trainer also writes a resume point every
``RESUME_IMAGES`` images (about 7 minutes on one core; inside an epoch where the epoch is longer,
rulelib.diffusion.train's mid-epoch points), so a job cut off mid-segment loses minutes, not the
segment; a resume point is removed once the next scored checkpoint exists. Every segment
appends its summary (loss, images/s, wall time) to ``train_log.jsonl``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np

from rulelib import atomic, provenance, tasks
from rulelib.diffusion import checkpoint
from rulelib.diffusion import train as trainer
from rulelib.run import profiles

QUICK = "quick"
LENGTH_IMAGES = 512_000  # 8x the quick profile's 64 000
SIZE_IMAGES = 128_000
SIZES = (250, 1000, 4000, 16000, "fresh")
RESUME_IMAGES = 10_000  # a resume point at least every this many images (whole epochs)
FRESH_SEED_OFFSET = 1_000_003  # the fresh arm's images come from seed + this (not the test set's)


@dataclasses.dataclass(frozen=True)
class ArmRun:
    """One training run of an arm: task, training-set size (None: the task's own set, "fresh":
    a set of ``images`` distinct images, each seen once) and the checkpoints in epochs."""

    arm: str
    task: str
    train_size: int | str | None
    images: int
    epochs: tuple[int, ...]  # checkpoint epochs, increasing; the last is the run's length
    seed: int = 0
    preset: str | None = None  # None: the base profile's network (quick: "small")
    base: str = QUICK  # the profile the settings derive from
    stops: tuple[int, ...] = ()  # fresh arm: images at the mid-epoch checkpoints

    @property
    def name(self) -> str:
        # seed 0 keeps the folder names the first study used; other seeds are told apart
        suffix = ("" if self.preset is None else f"_{self.preset}") + \
            ("" if self.seed == 0 else f"_seed{self.seed}")  # fmt: skip
        if self.arm in ("length", "fresh"):
            return f"{self.arm}_{self.task}{suffix}"
        return f"size_{self.task}_{self.train_size}{suffix}"

    def n_train(self) -> int:
        if self.train_size is None:
            return int(tasks.get(self.task).train_size)
        if self.train_size == "fresh":
            return self.images
        return int(self.train_size)

    def profile(self) -> profiles.Profile:
        """The quick profile with this run's length and training set (dataclasses.replace)."""
        q = profiles.get(self.base)
        size = None if self.train_size is None else {"default": self.n_train()}
        return dataclasses.replace(
            q,
            preset=self.preset or q.preset,
            name=f"study-{self.name}",
            description=f"study {self.arm} arm: {q.description}; {self.images} images",
            epochs={"default": self.epochs[-1]},
            ckpt_count=1,
            train_size=size,
        )

    def train_config(self, device: str = "cpu"):
        # compile off: segments are short (the trainer compiles only runs of >= 10 000 steps),
        # and one arithmetic for every segment keeps the curve free of a kernel change.
        # ckpt_every: the resume points (ckpt_every may change on resumption: RESUME_FREE_KEYS).
        # resume_steps: mid-epoch resume points where one epoch is longer than RESUME_IMAGES (the
        # fresh run's single epoch of 128 000 images is over an hour on one core).
        cfg = self.profile().train_config(self.task, self.seed, device)
        every = max(1, RESUME_IMAGES // self.n_train())
        mid = RESUME_IMAGES // cfg.batch_size if self.n_train() > RESUME_IMAGES else 0
        return dataclasses.replace(cfg, ckpt_every=every, resume_steps=mid, compile=False)

    def training_set(self) -> np.ndarray:
        """uint8 images the run trains on (deterministic)."""
        t = tasks.get(self.task)
        if self.train_size is None:
            return t.dataset(self.seed)[0]
        if self.train_size == "fresh":
            return t.sample(self.images, self.seed + FRESH_SEED_OFFSET)[0]
        return t.sample(int(self.train_size), self.seed)[0]

    def points(self) -> list[tuple[str, int]]:
        """(tag, images) of every checkpoint the run is scored at, in order: "epoch_NNNNNN" for
        the epochs' checkpoints, "images_NNNNNNNNN" for the fresh arm's mid-epoch stops."""
        mid = [(f"images_{i:09d}", i) for i in self.stops]
        return mid + [(f"epoch_{e:06d}", e * self.n_train()) for e in self.epochs]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for key, default in (("preset", None), ("base", QUICK), ("stops", ())):
            if d[key] == default:  # the first study's records have none of these
                del d[key]
        d["epochs"] = list(self.epochs)
        if self.stops:
            d["stops"] = list(self.stops)
        d["n_train"] = self.n_train()
        d["images_at"] = [e * self.n_train() for e in self.epochs]
        return d


def log_checkpoints(n_train: int, images: int, *, first: int = 8_000, per_octave: int = 2):
    """Checkpoint epochs spaced evenly in log(images): ``per_octave`` per doubling from about
    ``first`` images to ``images``; rounded to whole epochs, duplicates dropped, the last one
    exactly ``images / n_train`` (rounded up)."""
    if n_train < 1 or images < n_train:
        raise ValueError(f"need 1 <= n_train <= images, got n_train={n_train}, images={images}")
    if per_octave < 1 or first < 1:
        raise ValueError(f"per_octave and first must be >= 1, got {per_octave}, {first}")
    last = math.ceil(images / n_train)
    k = max(1, math.ceil(per_octave * math.log2(max(images / first, 1.0))))
    pts = np.geomspace(max(first, n_train), images, k + 1) / n_train
    epochs = sorted({max(1, round(float(e))) for e in pts} | {last})
    return tuple(e for e in epochs if e <= last)


def length_run(task: str, images: int = LENGTH_IMAGES, seed: int = 0, per_octave: int = 2, *,
               preset: str | None = None, base: str = QUICK) -> ArmRun:  # fmt: skip
    n = int(tasks.get(task).train_size)
    return ArmRun("length", task, None, images, log_checkpoints(n, images, per_octave=per_octave),
                  seed, preset, base)  # fmt: skip


def fresh_run(task: str, images: int = LENGTH_IMAGES, seed: int = 0, *, first: int = 8_000,
              preset: str | None = None, base: str = QUICK) -> ArmRun:  # fmt: skip
    """Every image new (a training set of ``images`` images, one epoch), scored at the length
    arm's log-spaced checkpoints: ``log_checkpoints`` in units of one batch, i.e. optimizer
    steps, so that each mid-epoch stop falls on a step."""
    batch = profiles.get(base).batch_size
    steps = log_checkpoints(batch, images, first=first)
    stops = tuple(s * batch for s in steps if s * batch < images)
    return ArmRun("fresh", task, "fresh", images, (1,), seed, preset, base, stops)


def size_run(task: str, size, images: int = SIZE_IMAGES, seed: int = 0, *,
             preset: str | None = None, base: str = QUICK) -> ArmRun:  # fmt: skip
    if size != "fresh" and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"size must be a positive int or 'fresh', got {size!r}")
    n = images if size == "fresh" else size
    if n > images:
        raise ValueError(f"training-set size {size} exceeds the image budget {images}")
    last = math.ceil(images / n)
    epochs = tuple(sorted({max(1, round(last / 4)), max(1, round(last / 2)), last}))
    return ArmRun("size", task, size, images, epochs, seed, preset, base)


def run_dir(out, run: ArmRun) -> Path:
    return Path(out) / run.name


def trained_epochs(out, run: ArmRun) -> list[int]:
    """Checkpoint epochs of the run that exist on disk."""
    return [e for e, _ in checkpoint.list_checkpoints(run_dir(out, run))]


def trained_points(out, run: ArmRun) -> dict[str, Path]:
    """{tag: checkpoint folder} of the run's points (``ArmRun.points``) that exist on disk."""
    rdir = run_dir(out, run)
    have = {f"epoch_{e:06d}": p for e, p in checkpoint.list_checkpoints(rdir)}
    have.update({p.name: p for p in sorted((rdir / "points").glob("images_*")) if p.is_dir()})
    return {tag: have[tag] for tag, _ in run.points() if tag in have}


def passed_tags(out, run: ArmRun) -> set[str]:
    """Tags of the run's points that training has passed: those on disk (``trained_points``)
    and every epoch point at or before the newest checkpoint, whose folder a run restored on
    another machine no longer holds (rulelib.study.carry: only the newest one travels)."""
    newest = max(trained_epochs(out, run), default=-1)
    done = {f"epoch_{e:06d}" for e in run.epochs if e <= newest}
    return done | set(trained_points(out, run))


def extends(old: dict, run: ArmRun) -> bool:
    """Whether ``run`` continues the run recorded as ``old`` (``ArmRun.to_dict``) to a larger
    budget: the same arm, task, training set and seed, and every old checkpoint epoch is one of
    the new run's. The learning rate is constant (AdamW, docs/paper.md section 4), so training
    on from the old last checkpoint is the run the larger budget would have been from the start."""
    new = run.to_dict()
    same = all(old.get(k) == new[k] for k in ("arm", "task", "train_size", "seed"))
    return same and old.get("images", 0) < run.images and set(old["epochs"]) <= set(run.epochs)


def _log_segment(rdir: Path, row: dict) -> None:
    atomic.append_jsonl(rdir / "train_log.jsonl", row)  # one line per segment, atomically


def _train_to_stop(rdir: Path, run: ArmRun, base, images, stop: int, progress) -> dict | None:
    """Train the fresh arm's single epoch on to ``stop`` images and keep the mid-epoch resume
    point there as <run>/points/images_NNNNNNNNN (copied under a temporary name, then renamed:
    atomic). A job killed between the stop and the copy copies it at the next call."""
    step = stop // base.batch_size
    mid = rdir / "checkpoints" / f"midepoch_{step:09d}"
    summary = None
    if not mid.is_dir():
        spe = -(-len(images) // base.batch_size)
        at = [s for s, _ in checkpoint.midepoch_points(rdir)]
        at += [e * spe for e, _ in checkpoint.list_checkpoints(rdir)]
        if at and max(at) > step:
            raise ValueError(f"{rdir} is trained past {stop} images (step {max(at)}) but holds no "
                             f"point there; move the folder aside to retrain it")  # fmt: skip
        cfg = dataclasses.replace(base, epochs=1, stop_step=step)
        summary = trainer.train(cfg, images, rdir, resume=True, progress=progress)
    kept = rdir / "points" / f"images_{stop:09d}"
    tmp = kept.with_name(f".tmp-{kept.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(mid, tmp)
    os.replace(tmp, kept)
    return summary


def train_run(out, run: ArmRun, *, device="cpu", progress=True, time_limit_s=None,
              extend=False, after_segment=None) -> dict:  # fmt: skip
    """Train (or resume) one run segment by segment up to its last checkpoint epoch.

    time_limit_s: stop after the first segment that ends past it (a later call resumes).
    extend: a folder set up for a smaller budget of the same run (``extends``) is taken on to
    ``run.images``; its record keeps the budgets it had, under "extended".
    after_segment: called with no argument after each segment (the grid scores the new
    checkpoint there, so that a long job leaves scored results as it goes).
    Returns {"finished": bool, "epochs": [...done]}.
    """
    rdir = run_dir(out, run)
    rdir.mkdir(parents=True, exist_ok=True)
    spec = rdir / "study_run.json"
    if spec.exists():
        old = atomic.read_json(spec)
        if old.get("run") != run.to_dict():
            larger = extends(old.get("run", {}), run)
            if not (extend and larger):
                hint = " (the same run with a larger budget: pass --extend)" if larger else ""
                raise ValueError(f"{rdir} was set up for another run ({old.get('run')}); "
                                 f"expected {run.to_dict()}{hint}")  # fmt: skip
            was = {"images": old["run"]["images"], "until": provenance.now_iso()}
            atomic.write_json(spec, {**old, "run": run.to_dict(),
                                     "extended": [*old.get("extended", []), was]})  # fmt: skip
    else:
        atomic.write_json(spec, {"run": run.to_dict(), "created": provenance.now_iso(),
                                 "machine": provenance.machine_info()})  # fmt: skip
    checkpoint.remove_partial(rdir)
    images = run.training_set()
    base = run.train_config(device)
    t0 = time.time()
    segments = [(tag, n, None) for tag, n in run.points() if tag.startswith("images_")]
    segments += [(f"epoch_{e:06d}", e * len(images), e) for e in run.epochs]
    for tag, n, epoch in segments:
        if tag in passed_tags(out, run):
            continue
        if epoch is None:
            summary = _train_to_stop(rdir, run, base, images, n, progress) or {}
        else:
            cfg = dataclasses.replace(base, epochs=epoch)
            summary = trainer.train(cfg, images, rdir, resume=True, progress=progress)
        _log_segment(rdir, {"epoch": epoch if epoch is not None else n / len(images),
                            "images": n, "loss": summary.get("loss"),
                            "images_per_s": summary.get("images_per_s"),
                            "seconds": summary.get("seconds"),
                            "finished_at": provenance.now_iso()})  # fmt: skip
        checkpoint.remove(rdir, [e for e in trained_epochs(out, run) if e not in run.epochs])
        if after_segment is not None:
            after_segment()
        if time_limit_s is not None and time.time() - t0 > time_limit_s:
            break
    done = trained_epochs(out, run)
    return {"finished": all(e in done for e in run.epochs), "epochs": done}
