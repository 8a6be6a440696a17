"""The mitigation's one-step commands on a run (`python -m rulelib filter` and `guide`): filter the
run's samples (or images made elsewhere) with a pixel classifier, or draw classifier-guided
samples from the run's model.  The whole mitigation of `reproduce --mitigation` is
rulelib.run.stages.run_mitigation; the steps themselves live in rulelib.mitigation.

Both hold the task folder's lock, check their arguments before anything is written, and write
into `<task_dir>/mitigation/` (filter_<arch>.json; guided/guide_*.npz and .json).
"""

from __future__ import annotations

import json
from pathlib import Path

from rulelib import atomic, tasks
from rulelib.diffusion import checkpoint
from rulelib.diffusion import sample as sampler
from rulelib.metrics import format_table, rule_report
from rulelib.mitigation import classifiers as C
from rulelib.mitigation import contrastive as CD
from rulelib.mitigation import filtering, pipeline
from rulelib.mitigation import guidance as G
from rulelib.mitigation.settings import settings_for
from rulelib.mitigation.tables import filter_table
from rulelib.run import folder
from rulelib.run.folder import RunSettings
from rulelib.run.images import load_images
from rulelib.run.lock import locked


def _classifier(run: RunSettings, task, arch, mdir: Path, *, noisy: bool):
    """The pixel (noisy=False) or noise-aware classifier `arch` of the task: trained into mdir on
    the profile's contrastive set, or read back when it was trained there before."""
    st = settings_for(run.profile)
    imgs, labels, _ = CD.make_contrastive(task, st.n_contrastive, run.seed)
    epochs, batch = (st.noisy_epochs, st.noisy_batch) if noisy else (st.clf_epochs, st.clf_batch)
    kwargs = st.noisy_kwargs if noisy and arch == st.noisy_arch else None
    return pipeline.get_classifier(
        task, arch, imgs, labels, mdir, epochs=epochs, batch_size=batch, seed=run.seed,
        device=str(run.device), arch_kwargs=kwargs, quiet=run.quiet,  # a name: stored as JSON
    )  # fmt: skip


def filter_samples(
    run: RunSettings, task_name: str, *, arch="smallconv", classifier=None, images=None,
    threshold=None, n_boot=1000,
) -> dict:  # fmt: skip
    """Filter the run's samples (or `images`, a file or PNG folder) with a pixel classifier (a
    checkpoint `classifier`, else `arch` trained on the contrastive set); prints the before/after
    table and writes mitigation/filter_<arch>.json.  Returns the filter report."""
    task = tasks.get(task_name)
    tdir = run.task_dir(task.name)
    folder.check_identity(tdir, run.profile, run.seed)  # the run's own profile and seed only
    path = Path(images) if images else tdir / "samples.npz"
    if not path.exists():
        raise FileNotFoundError(f"no generated images at {path}; sample first or pass --images")
    # the user's images: the loader of `evaluate --images`; the run's own: the samples reader
    gen = load_images(path) if images else sampler.load_samples(path)[0]
    mdir = tdir / "mitigation"
    mdir.mkdir(parents=True, exist_ok=True)
    with locked(tdir, command=run.command, say=run.say):
        if classifier:
            model, info = C.load_classifier(classifier, task=task, kind="pixel", device=run.device)
            arch = info["arch"]
        else:
            model, info = _classifier(run, task, arch, mdir, noisy=False)
        rep = filtering.filter_report(
            task, gen, model, threshold=threshold, n_boot=n_boot, seed=run.seed
        )
        atomic.write_json(mdir / f"filter_{arch}.json", rep)
    print(filter_table({arch: rep}))
    print(json.dumps({"kept": rep["kept"], "kept_share": rep["kept_share"]}))
    return rep


def _check_steps(method: str, steps: int | None, T: int) -> None:
    """--steps belongs to DDIM (1 .. T); DDPM takes every one of the T steps."""
    if steps is None:
        return
    if method != "ddim":
        raise ValueError(
            f"--steps {steps} is for the DDIM sampler; the {method} sampler takes all T = {T} "
            "steps (add --method ddim, or leave --steps out)"
        )
    if not 1 <= steps <= T:
        raise ValueError(f"--steps {steps}: expected DDIM steps in 1 .. T = {T}")


def guide(
    run: RunSettings, task_name: str, *, scale: float, arch="cheap", classifier=None,
    schedule="linear", last_k=20, grad_at="x_t", method=None, steps=None, n=None, n_boot=1000,
) -> dict:  # fmt: skip
    """Guided samples of the run's model with a noise-aware classifier (a checkpoint
    `classifier`, else `arch` trained on the contrastive set) at guidance scale `scale`; prints
    and writes (mitigation/guided/guide_*.json) their rule report.  Returns that report."""
    task = tasks.get(task_name)
    tdir = run.task_dir(task.name)
    G.weights(schedule, scale, last_k=last_k)  # a bad scale or schedule fails before any work
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be a positive integer, got {n!r}")
    folder.check_identity(tdir, run.profile, run.seed)  # the run's own profile and seed only
    sampling = run.profile.sampling(task.name)
    model, cfg, _ = checkpoint.load_model(tdir, weights=sampling.weights, device=run.device)
    _check_steps(method or sampling.method, steps, cfg.T)  # before a classifier is trained
    mdir = tdir / "mitigation"
    (mdir / "guided").mkdir(parents=True, exist_ok=True)
    with locked(tdir, command=run.command, say=run.say):
        if classifier:
            noisy, _ = C.load_classifier(classifier, task=task, kind="noisy", device=run.device)
        else:
            noisy, _ = _classifier(run, task, arch, mdir, noisy=True)
        method = method or sampling.method
        sched = cfg.schedule().to(run.device)
        g = G.Guidance(noisy, sched, scale, weight=schedule, method=method, grad_at=grad_at,
                       last_k=last_k)  # fmt: skip
        n = n or settings_for(run.profile).sweep_n or sampling.n
        out_path = mdir / "guided" / f"guide_{schedule}_s{g.scale:g}_{grad_at}.npz"
        kw = {"clip_x0": sampling.clip_x0}
        if method == "ddim":
            kw.update(steps=steps if steps is not None else sampling.steps, eta=sampling.eta)
        imgs = G.guided_sample(
            model, sched, g, n, seed=run.seed, batch_size=sampling.batch_size, device=run.device,
            out_path=out_path, progress=run.progress, **kw,
        )  # fmt: skip
        feats, ok = task.measure(imgs)
        rep = rule_report(task, feats, ok, n_boot=n_boot, seed=run.seed)
        atomic.write_json(out_path.with_suffix(".json"), {"guidance": g.describe(), "report": rep})
    print(format_table({task.name: rep}))
    return rep
