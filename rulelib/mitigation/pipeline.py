"""The paper's mitigation, end to end for one task of a run (docs/paper.md section 5):
contrastive data -> pixel classifiers (accuracy table) -> filtering of the run's samples ->
noise-aware classifier -> guided sampling over a range of scales, each measured against the
unguided baseline.

Everything goes to ``<run>/<task>/mitigation/``:

    contrastive.png               the three classes side by side
    clf_<arch>.safetensors        the pixel classifiers (mlp, resnet8, smallconv) and the
                                  noise-aware one (reused by a rerun)
    guided/guided_*.npz           guided samples per scale (resumable; a rerun reuses them)
    mitigation.json               accuracies, filtering before/after, the scale sweep, all with CIs
    mitigation.md                 the same as tables beside the paper's numbers (image links
                                  relative to this folder; rulelib.report embeds it in report.md)
    filter.png, guidance.png      scatter before/after filtering, the guidance-scale curves

Entry point: ``run(task, task_dir, profile)`` (``python -m rulelib reproduce --mitigation``); the
subcommands ``python -m rulelib filter`` and ``guide`` are rulelib.run.mitigate.  How
much of each step a profile does is the table ``SETTINGS`` (smoke: seconds, for CI; quick: a 2-core
CPU; paper: GPU).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from rulelib import atomic, paper, provenance, tasks
from rulelib.device import resolve_device
from rulelib.diffusion import checkpoint
from rulelib.diffusion import sample as sampler
from rulelib.mitigation import classifiers as C
from rulelib.mitigation import contrastive as CD
from rulelib.mitigation import filtering
from rulelib.mitigation import guidance as G
from rulelib.mitigation.figures import contrastive_figure, filter_figure
from rulelib.mitigation.settings import settings_for
from rulelib.mitigation.tables import markdown


def _say(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(msg, flush=True)


# --------------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------------


def get_classifier(
    task,
    arch: str,
    images,
    labels,
    mdir: Path,
    *,
    epochs,
    batch_size,
    seed=0,
    device="cpu",
    arch_kwargs=None,
    progress=False,
    quiet=False,
):
    """Load ``mdir/clf_<arch>.safetensors`` if it was trained here already, else train and save
    it."""
    path = Path(mdir) / f"clf_{arch}.safetensors"
    kind = "noisy" if arch in C.NOISY_ARCHS else "pixel"
    want = {"epochs": epochs, "batch_size": batch_size, "seed": seed,
            "arch_kwargs": dict(arch_kwargs or {}), "images": len(images)}  # fmt: skip
    if path.exists():
        model, info = C.load_classifier(path, task=task, kind=kind, device=device)
        cfg = info.get("config", {})
        had = {**{k: cfg.get(k) for k in ("epochs", "batch_size", "seed", "arch_kwargs")},
               "images": info.get("n_train", 0) + info.get("n_test", 0)}  # fmt: skip
        if json.loads(json.dumps(had)) == json.loads(json.dumps(want)):  # as stored (lists)
            _say(f"[{task.name}] classifier {arch}: loaded {path}", quiet)
            return model, info
        # trained with other settings (another seed, profile or contrastive set): kept aside
        aside, i = path.with_name(f"{path.stem}_seed{had['seed']}_{had['epochs']}ep.safetensors"), 1
        while aside.exists():
            i += 1
            aside = aside.with_name(f"{path.stem}_seed{had['seed']}_{had['epochs']}ep_{i}"
                                    ".safetensors")  # fmt: skip
        os.replace(path, aside)
        changed = sorted(k for k in want if had.get(k) != want[k])
        _say(f"[{task.name}] classifier {arch} was trained with other {', '.join(changed)}: "
             f"moved to {aside.name}, retrained", quiet)  # fmt: skip
    cfg = C.ClassifierConfig(
        arch=arch,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        device=device,
        arch_kwargs=dict(arch_kwargs or {}),
    )
    t0 = time.perf_counter()
    model, info = C.train_classifier(cfg, images, labels, task=task.name, progress=progress)
    info["train_seconds"] = round(time.perf_counter() - t0, 1)
    C.save_classifier(path, model, info)
    _say(
        f"[{task.name}] classifier {arch}: test accuracy {100 * info['test_accuracy']:.1f} % "
        f"({info['train_seconds']} s)",
        quiet,
    )
    return model, info


def run(task, run_dir, profile, *, device=None, seed: int = 0, quiet: bool = False, progress=False):
    """The whole mitigation of one task of a run; returns the mitigation.json payload.

    ``task``: a RuleTask (or its registered name); ``run_dir``: the task's folder of a run (holds
    checkpoints/ and samples.npz); ``profile``: the run's resolved Profile (``SETTINGS`` says how
    much work each does; its sampler and training set are the run's own).  Resumable: trained
    classifiers and finished guided samples are reused.
    """
    task = tasks.get(task) if isinstance(task, str) else task
    if not task.dependent:
        raise ValueError(
            f"task {task.name} has no dependent feature (its rule is not a scale of one feature), "
            "so it has no contrastive data to mitigate with"
        )
    st = settings_for(profile)
    device = str(resolve_device("auto" if device is None else device))
    tdir = Path(run_dir)
    mdir = tdir / "mitigation"
    mdir.mkdir(parents=True, exist_ok=True)
    out = {"task": task.name, "profile": profile.name, "settings": asdict(st), "seed": seed}
    t_start = time.perf_counter()
    common = dict(seed=seed, device=device, progress=progress, quiet=quiet)

    images, labels, _ = CD.make_contrastive(task, st.n_contrastive, seed)
    out["contrastive"] = {"n": len(labels), "per_class": np.bincount(labels, minlength=3).tolist()}
    contrastive_figure(task, images, labels, mdir / "contrastive.png")
    pixel, out["accuracy"] = _pixel_classifiers(task, st, images, labels, mdir, **common)

    samples_path = tdir / "samples.npz"
    if samples_path.exists():
        train = task.measure(profile.training_set(task.name, seed)[0])
        out["filter"] = _filter_samples(
            task, st, pixel, out["accuracy"], samples_path, train, mdir, seed
        )
    else:
        _say(f"[{task.name}] no {samples_path}: filtering skipped", quiet)

    if (tdir / "checkpoints").exists() and checkpoint.list_checkpoints(tdir):
        noisy, info = get_classifier(
            task, st.noisy_arch, images, labels, mdir, epochs=st.noisy_epochs,
            batch_size=st.noisy_batch, arch_kwargs=st.noisy_kwargs, **common
        )  # fmt: skip
        keys = ("arch", "test_accuracy", "test_accuracy_clean", "train_seconds")
        out["noisy_classifier"] = {k: info.get(k) for k in keys}
        out["guidance"] = _guidance_sweep(task, st, profile, tdir, noisy, **common)
    else:
        _say(f"[{task.name}] no trained model in {tdir}: guidance skipped", quiet)

    out["seconds"] = round(time.perf_counter() - t_start, 1)
    out["provenance"] = {"machine": provenance.machine_info(), "created": provenance.now_iso()}
    atomic.write_json(mdir / "mitigation.json", out)
    atomic.write_text(mdir / "mitigation.md", markdown(out))
    _say(f"[{task.name}] mitigation: {mdir / 'mitigation.md'}", quiet)
    return out


def _pixel_classifiers(task, st, images, labels, mdir, **common):
    """Step 1: the pixel classifiers of the paper on the contrastive data: (models, accuracy)."""
    models, accuracy = {}, {}
    for arch in st.clf_archs:
        models[arch], info = get_classifier(
            task, arch, images, labels, mdir, epochs=st.clf_epochs, batch_size=st.clf_batch,
            **common,
        )  # fmt: skip
        accuracy[arch] = info["test_accuracy"]
    return models, accuracy


def _filter_samples(task, st, pixel, accuracy, samples_path, train, mdir, seed) -> dict:
    """Step 2: filter the run's generated samples with each pixel classifier (before / after
    rule metrics), and a figure for the most accurate one beside the training set."""
    gen_imgs, _ = sampler.load_samples(samples_path)
    feats, ok = task.measure(gen_imgs)
    reports = {
        arch: filtering.filter_report(
            task, gen_imgs, m, threshold=st.filter_threshold, n_boot=st.n_boot, seed=seed,
            features=feats, ok=ok,
        )
        for arch, m in pixel.items()
    }  # fmt: skip
    best = max(pixel, key=lambda a: accuracy[a])
    keep, _ = filtering.filter_mask(pixel[best], gen_imgs, threshold=st.filter_threshold)
    title = f"Task {task.name}: filtering with {best}"
    filter_figure(task, train, (feats, ok), keep, mdir / "filter.png", title=title)
    return reports


def _guidance_sweep(task, st, profile, tdir, noisy, *, seed, device, progress, quiet) -> dict:
    """Step 3: the guidance-scale sweep (s = 0, the extra scales and the paper's s) with the run's
    own sampler, so that s = 0 reproduces the run's samples; every scale from the same noise."""
    mdir = tdir / "mitigation"
    s_paper = paper.GUIDANCE_SCALES.get(task.name, 3.0)
    sampling = profile.sampling(task.name)
    method = st.method or sampling.method
    steps = st.steps if st.steps is not None else sampling.steps
    eta = st.eta if st.eta is not None else sampling.eta
    n = st.sweep_n or sampling.n
    model, cfg, epoch = checkpoint.load_model(tdir, weights=sampling.weights, device=device)
    scales = sorted({0.0, *st.extra_scales, s_paper})
    _say(f"[{task.name}] guidance sweep: scales {scales}, n = {n}", quiet)
    sweep = G.scale_sweep(
        task, model, cfg.schedule().to(device), noisy, [*st.extra_scales, s_paper], n=n,
        seed=seed, weight=st.weight, clip_x0=sampling.clip_x0, method=method,
        steps=steps if method == "ddim" else None, eta=eta, n_boot=st.n_boot,
        batch_size=sampling.batch_size, device=device, out_dir=mdir / "guided", progress=progress,
    )  # fmt: skip
    sweep.update({"paper_scale": s_paper, "epoch": epoch, "weights": sampling.weights})
    for row in sweep["rows"]:  # relative to mitigation/: still right in exported results
        if row.get("samples"):
            row["samples"] = Path(os.path.relpath(row["samples"], mdir)).as_posix()
    axes = G.plot_sweep(sweep)
    atomic.savefig(axes[0].figure, mdir / "guidance.png")
    return sweep
