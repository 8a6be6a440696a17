"""Score every checkpoint of a study run, and gather the arms into CSV / JSON / figures.

Per checkpoint (``evaluate_run``), into <run>/eval/epoch_XXXXXX.json:

* ``n`` samples (at the run's last three points ``conclusion_n``, 512 by default) from the EMA
  weights with the quick profile's sampler (100-step ancestral DDIM,
  x0 clipped), the same noise seed at every checkpoint, so the curve compares models rather than
  noise draws; samples resume chunk by chunk (<run>/eval/epoch_XXXXXX.npz);
* the rule metrics with bootstrap CIs (rulelib.metrics.rule_report), of all images and of the
  novel ones (not copies), and the memorisation columns against the run's own training set, with
  fresh task images as the reference (rulelib.metrics.memorisation);
* the DSM loss (Ho et al. eq. 14) of the EMA weights on 512 training images against 512 fresh
  images, paired so that pair i shares its draws of t and eps (rulelib.study.loss_gap): the gap
  loss_fresh / loss_train - 1 with a bootstrap CI is memorisation in the loss; and the training
  loss the trainer logged for the segment that ended there.  (Entries scored before the gap had
  a CI hold the two means of one draw, ``dsm_loss_train`` / ``dsm_loss_fresh``, whose ratio moves
  by about 4 % (SD) from draw to draw; ``evaluate_run`` adds the 4-draw gap with its CI to them.)

``raw_ddpm``: at the last checkpoint also the paper's sampling -- raw weights, DDPM 1000 steps --
into eval/epoch_XXXXXX_raw_ddpm.json.

The scored points are gathered into tables, fits and figures by rulelib.study.summary.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from rulelib import atomic, metrics, provenance, tasks
from rulelib.diffusion import checkpoint
from rulelib.diffusion import sample as sampler
from rulelib.metrics import memorisation
from rulelib.study import arms, loss_gap
from rulelib.tasks import rulers

FRESH_SEED = 7919  # fresh reference images: task.sample(n, seed + FRESH_SEED), never trained on
LOSS_IMAGES = 512
# draws of (t, eps) per image pair for the DSM gap: its CI shrinks roughly as 1 / sqrt(draws) (on
# the size arm's fresh run, 128 000 images: +-4.2 % at 2 draws, +-2.3 % at 8), 4 costs about a
# minute per checkpoint on one core.
LOSS_DRAWS = 4
CONCLUSION_POINTS = 3  # a run's last three points carry its conclusion: scored with more samples
CONCLUSION_N = 512  # their samples (the grid's and `study evaluate`'s default)


def _dsm_gap(model, schedule, run: arms.ArmRun, train_images, fresh) -> dict:
    n = min(LOSS_IMAGES, len(train_images))  # a set of 250 images gives 250 pairs
    return loss_gap.dsm_gap(model, schedule, train_images[:n], fresh[:n], seed=run.seed,
                            draws=LOSS_DRAWS)  # fmt: skip


def _fresh(task, n: int, run: arms.ArmRun) -> np.ndarray:
    return task.sample(max(n, LOSS_IMAGES), run.seed + FRESH_SEED)[0]


def train_log(rdir: Path) -> dict[int, dict]:
    """The trainer's segment summaries keyed by the images seen at the segment's end."""
    f = rdir / "train_log.jsonl"
    if not f.exists():
        return {}
    return {int(r["images"]): r for r in atomic.read_jsonl(f)}


def score_checkpoint(run: arms.ArmRun, rdir: Path, epoch, ckpt: Path, *, n: int,
                     train_images, device="cpu", progress=True, weights="ema",
                     method=None, tag: str | None = None,
                     measurement: str = "both") -> dict:  # fmt: skip
    """Samples -> rule metrics, memorisation, DSM losses of one checkpoint (see the module
    docstring); returns the entry written to eval/<tag>[_raw_ddpm].json (tag: the point's,
    ``ArmRun.points``; by default epoch_XXXXXX; ``epoch`` is fractional at the fresh arm's
    mid-epoch points).  measurement: the rulers (rulelib.tasks.rulers.rulers_for); the first one's
    numbers under "generated" ("ruler" names it), the paper's ruler's also under "paper_ruler"."""
    task = tasks.get(run.task)
    chosen = rulers.rulers_for(task, measurement)
    tag = tag or f"epoch_{epoch:06d}"
    s = run.profile().sampling(run.task)
    kw = {"method": s.method, "steps": s.steps, "eta": s.eta, "clip_x0": s.clip_x0}
    if method == "ddpm":
        kw = {"method": "ddpm", "steps": None, "eta": 0.0, "clip_x0": False}  # the paper's
    model, cfg, _ = checkpoint.load_model(ckpt, weights=weights, device=device)
    schedule = cfg.schedule()
    suffix = "" if method is None else "_raw_ddpm"
    t0 = time.perf_counter()
    images = sampler.sample(model, schedule, n, seed=run.seed, batch_size=s.batch_size,
                            device=device, progress=progress,
                            out_path=rdir / "eval" / f"{tag}{suffix}.npz",
                            meta={"epoch": epoch, "weights": weights}, **kw)  # fmt: skip
    t_sample = time.perf_counter() - t0
    feats, ok = rulers.measure(task, images, chosen[0])
    fresh = _fresh(task, n, run)
    paper_entry = {}
    if "paper" in chosen:
        reasons = {}
        pf, pok = rulers.measure(task, images, "paper", reasons=reasons)
        paper_entry["paper_ruler"] = {
            "ruler": "paper", "options": rulers.paper_ruler.DEFAULT.label,
            "trim": rulers.TRIM["paper"],
            "generated": metrics.rule_report(task, pf, pok, n_boot=1000, seed=run.seed,
                                             trim=rulers.TRIM["paper"], reasons=reasons),
        }  # fmt: skip
    n_train = len(train_images)
    return {
        "run": run.name, "arm": run.arm, "task": run.task, "train_size": run.train_size,
        "n_train": n_train, "epoch": epoch, "images": round(epoch * n_train),
        "sampling": {**kw, "weights": weights, "n": n, "seed": run.seed},
        "ruler": chosen[0],
        "generated": metrics.rule_report(task, feats, ok, n_boot=1000, seed=run.seed,
                                         trim=rulers.TRIM[chosen[0]]),
        **paper_entry,
        **memorisation.memorisation_columns(task, images, train_images, feats, ok,
                                            fresh_images=fresh[:n], seed=run.seed),
        "dsm_gap": _dsm_gap(model, schedule, run, train_images, fresh),
        "train_loss_logged": train_log(rdir).get(round(epoch * n_train), {}).get("loss"),
        "seconds_sampling": round(t_sample, 1), "machine": provenance.machine_info(),
        "created": provenance.now_iso(), "git_commit": provenance.git_commit(),
    }  # fmt: skip


def wanted_n(run: arms.ArmRun, tag: str, n: int, conclusion_n: int | None = None) -> int:
    """Samples for one point: ``n``, or at least ``conclusion_n`` at the run's last
    CONCLUSION_POINTS points, those its conclusion rests on (the paper's ruler drops about half
    of the samples, so they need more)."""
    last = {t for t, _ in run.points()[-CONCLUSION_POINTS:]}
    return max(n, conclusion_n or 0) if tag in last else n


def needs_scoring(entry: Path, n: int | None = None) -> bool:
    """An eval entry is missing, or (with ``n``) holds fewer than ``n`` samples."""
    if not entry.exists():
        return True
    return n is not None and atomic.read_json(entry)["sampling"]["n"] < n


def _todo(rdir: Path, run: arms.ArmRun, trained, n: int, conclusion_n, more: bool) -> list:
    """(tag, images, samples) of each trained point to score: not scored yet, or scored with
    fewer samples than it needs (its conclusion_n, or ``n`` everywhere with ``more``)."""
    todo = []
    for tag, images in run.points():
        want = wanted_n(run, tag, n, conclusion_n)
        if tag in trained and needs_scoring(rdir / "eval" / f"{tag}.json",
                                            want if more or want > n else None):  # fmt: skip
            todo.append((tag, images, want))
    return todo


def evaluate_run(out, run: arms.ArmRun, *, n=256, device="cpu", progress=True,
                 time_limit_s=None, raw_ddpm=False, epochs=None,
                 train_images=None, measurement="both", more=False,
                 conclusion_n=None) -> list[dict]:  # fmt: skip
    """Score each trained checkpoint of ``run`` not scored yet (only ``epochs`` when given, so
    that two processes can share the checkpoints); returns every entry so far.
    train_images: the run's training set when the caller has it (``run.training_set()``).
    more: also score again, with ``n`` samples, each checkpoint scored with fewer; its samples
    file keeps the earlier draws as its first ones (rulelib.diffusion.sample: the same seed's
    chunks), so only the rest are drawn.  conclusion_n: the samples of the last
    CONCLUSION_POINTS points (``wanted_n``); an entry with fewer is scored again the same way."""
    rdir = arms.run_dir(out, run)
    ckpts = dict(checkpoint.list_checkpoints(rdir))
    points = arms.trained_points(out, run)
    (rdir / "eval").mkdir(parents=True, exist_ok=True)
    todo = _todo(rdir, run, points, n, conclusion_n, more)
    if train_images is None and (todo or ckpts):
        train_images = run.training_set()
    t0 = time.time()
    for tag, images, want in todo:
        epoch = images // run.n_train() if tag.startswith("epoch_") else images / run.n_train()
        if epochs is not None and epoch not in epochs:
            continue
        e = score_checkpoint(run, rdir, epoch, points[tag], n=want, train_images=train_images,
                             device=device, progress=progress, tag=tag,
                             measurement=measurement)  # fmt: skip
        atomic.write_json(rdir / "eval" / f"{tag}.json", e)
        if time_limit_s is not None and time.time() - t0 > time_limit_s:
            break
    for f in sorted((rdir / "eval").glob("epoch_*.json")):
        e = atomic.read_json(f)
        if "dsm_gap" in e or e["epoch"] not in ckpts or (epochs and e["epoch"] not in epochs):
            continue
        atomic.write_json(f, {**e, "dsm_gap": add_gap(run, ckpts[e["epoch"]], e, train_images,
                                                      device=device)})  # fmt: skip
    last = run.epochs[-1]
    f = rdir / "eval" / f"epoch_{last:06d}_raw_ddpm.json"
    if raw_ddpm and last in ckpts and not f.exists():
        atomic.write_json(f, score_checkpoint(run, rdir, last, ckpts[last], n=n,
                                              train_images=train_images, device=device,
                                              progress=progress, weights="raw",
                                              method="ddpm",
                                              measurement=measurement))  # fmt: skip
    return load_entries(rdir)


def add_gap(run: arms.ArmRun, ckpt: Path, entry: dict, train_images, device="cpu") -> dict:
    """The paired DSM gap for an entry scored before it had one, from the entry's weights."""
    model, cfg, _ = checkpoint.load_model(ckpt, weights=entry["sampling"]["weights"], device=device)
    fresh = _fresh(tasks.get(run.task), entry["sampling"]["n"], run)
    return _dsm_gap(model, cfg.schedule(), run, train_images, fresh)


def load_scored(rdir) -> list[tuple[dict, Path]]:
    """(entry, its samples file) of each scored point of a run folder, by images seen."""
    files = sorted(Path(rdir).glob("eval/epoch_*.json")) + \
        sorted(Path(rdir).glob("eval/images_*.json"))  # fmt: skip
    return sorted(((atomic.read_json(p), p.with_suffix(".npz")) for p in files),
                  key=lambda pair: pair[0]["images"])  # fmt: skip


def load_entries(rdir) -> list[dict]:
    return [e for e, _ in load_scored(rdir)]
