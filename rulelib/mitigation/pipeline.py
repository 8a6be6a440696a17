"""The paper's mitigation, end to end for one task of a run (paper section 5): contrastive data ->
pixel classifiers (accuracy table) -> filtering of the run's samples -> noise-aware classifier ->
guided sampling over a range of scales, each measured against the unguided baseline.

Everything goes to ``<run>/<task>/mitigation/``:

    contrastive.png               the three classes side by side
    clf_<arch>.safetensors        the pixel classifiers (mlp, resnet8, smallconv) and the
                                  noise-aware one (reused by a rerun)
    guided/guided_*.npz           guided samples per scale (resumable; a rerun reuses them)
    mitigation.json               accuracies, filtering before/after, the scale sweep, all with CIs
    mitigation.md                 the same as tables beside the paper's numbers (image links
                                  relative to this folder; rulelib.report embeds it in report.md)
    filter.png, guidance.png      scatter before/after filtering, the guidance-scale curves

Entry points: ``run(task, task_dir, profile)`` (``python -m rulelib reproduce --mitigation``) and
the subcommands ``python -m rulelib filter`` and ``python -m rulelib guide`` (``add_cli``).  How
much of each step a profile does is the table ``SETTINGS`` (smoke: seconds, for CI; quick: a 2-core
CPU; paper: GPU).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from rulelib import atomic, provenance
from rulelib.mitigation import classifiers as C
from rulelib.mitigation import contrastive as CD
from rulelib.mitigation import guidance as G


@dataclass(frozen=True)
class MitigationSettings:
    """How much mitigation work a profile does (the paper's values under ``paper``)."""

    n_contrastive: int  # contrastive images per task (paper: about 5000)
    clf_archs: tuple[str, ...]  # pixel classifiers trained
    clf_epochs: int  # paper: 100
    clf_batch: int  # paper: 16
    noisy_arch: str  # "unet" (the paper's encoder) or "cheap"
    noisy_kwargs: dict = field(default_factory=dict)
    noisy_epochs: int = 100
    noisy_batch: int = 64
    extra_scales: tuple[float, ...] = (1.0, 3.0)  # swept besides 0 and the paper's s for the task
    weight: str = "linear"  # the paper's w_t = s + 3 (1 - t/T)
    sweep_n: int | None = None  # guided samples per scale; None: the profile's sample count
    method: str | None = None  # None: the profile's sampler (paper: DDPM ancestral)
    steps: int | None = None
    eta: float | None = None
    n_boot: int = 1000
    filter_threshold: float | None = None


SETTINGS = {
    "smoke": MitigationSettings(
        n_contrastive=150,
        clf_archs=C.PIXEL_ARCHS,
        clf_epochs=1,
        clf_batch=16,
        noisy_arch="cheap",
        noisy_epochs=1,
        noisy_batch=32,
        extra_scales=(),
        sweep_n=16,
        n_boot=100,
    ),
    "quick": MitigationSettings(
        n_contrastive=3000,
        clf_archs=C.PIXEL_ARCHS,
        clf_epochs=8,
        clf_batch=16,
        noisy_arch="cheap",
        noisy_epochs=30,
        noisy_batch=64,
        extra_scales=(1.0, 3.0),
        sweep_n=None,  # the run's 256: scale 0 is then exactly the run's own samples
        n_boot=1000,
    ),
    "paper": MitigationSettings(
        n_contrastive=5000,
        clf_archs=C.PIXEL_ARCHS,
        clf_epochs=100,
        clf_batch=16,
        noisy_arch="unet",
        noisy_kwargs={"width": 128},
        noisy_epochs=100,
        noisy_batch=64,
        extra_scales=(1.0, 3.0, 15.0),
        sweep_n=1000,
        n_boot=1000,
    ),
}


def settings_for(profile) -> MitigationSettings:
    """The MitigationSettings of a profile (a rulelib.run.profiles.Profile or its name)."""
    name = getattr(profile, "name", profile)
    if name not in SETTINGS:
        raise ValueError(
            f"no mitigation settings for profile {name!r}; expected one of {list(SETTINGS)}"
        )
    return SETTINGS[name]


def _say(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(msg, flush=True)


def _device(device=None) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


# --------------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------------


def contrastive_figure(task, images, labels, path=None, per_class: int = 6):
    """The three classes side by side: one row of ``per_class`` images per class."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, per_class, figsize=(1.2 * per_class, 4.0))
    for c in range(3):
        idx = np.flatnonzero(labels == c)[:per_class]
        for j in range(per_class):
            ax = axes[c, j]
            ax.axis("off")
            if j < len(idx):
                ax.imshow(images[idx[j]], interpolation="nearest")
        axes[c, 0].set_title(f"class {c}: {CD.CLASS_NAMES[c]}", fontsize=8, loc="left")
    fig.suptitle(f"Task {task.name}: contrastive classes", fontsize=10)
    fig.tight_layout()
    if path is not None:
        from rulelib import atomic

        atomic.savefig(fig, path)
        plt.close(fig)
    return fig


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
    if path.exists():
        model, info = C.load_classifier(path, task=task, kind=kind, device=device)
        _say(f"[{task.name}] classifier {arch}: loaded {path}", quiet)
        return model, info
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


def accuracy_table(accuracies: dict) -> str:
    """Markdown: test accuracy per task (columns) and classifier (rows), ours beside the paper's.

    ``accuracies``: {task name: {arch: accuracy in [0, 1]}}."""
    tasks_ = list(accuracies)
    lines = [
        "| classifier | " + " | ".join(f"{t} ours | {t} paper" for t in tasks_) + " |",
        "|---|" + "---:|---:|" * len(tasks_),
    ]
    archs = [a for a in C.PIXEL_ARCHS + C.NOISY_ARCHS if any(a in accuracies[t] for t in tasks_)]
    for a in archs:
        cells = []
        for t in tasks_:
            v = accuracies[t].get(a)
            p = C.PAPER_ACCURACY.get(a, {}).get(t)
            cells += ["–" if v is None else f"{100 * v:.1f}", "–" if p is None else f"{p:.2f}"]
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_markdown(results: dict) -> str:
    """The run report's "mitigation at a glance": classifier accuracies of every task beside the
    paper's, then per task what filtering (best classifier) and guidance (each scale against the
    unguided samples of the same noise, paired CI) did to rule-conforming % and within-5 %.

    ``results``: {task name: mitigation.json payload}."""
    lines = [
        "**Pixel classifiers, test accuracy (%)**",
        "",
        accuracy_table({t: r.get("accuracy", {}) for t, r in results.items()}),
        "",
        "**Effect on the fine rule** (points; filtering: kept minus all samples with the most "
        "accurate classifier; guidance: guided minus unguided from the same noise, "
        "paired-bootstrap 95 % CI, * where it excludes 0)",
        "",
        "| task | step | kept (filter) or measurable / n | Δ conforming % | Δ within ±5 % "
        "| Δ measurable % |",
        "|---|---|---:|---:|---:|---:|",
    ]

    def val(rep, m):
        return ((rep or {}).get(m) or {}).get("value")

    for t, r in results.items():
        if r.get("filter"):
            best = max(r["filter"], key=lambda a: r.get("accuracy", {}).get(a, 0.0))
            fr = r["filter"][best]
            cells = []
            for m in ("conforming_pct", "within_5pct"):
                a, b = val(fr["after"], m), val(fr["before"], m)
                cells.append("–" if a is None or b is None else f"{a - b:+.1f}")
            kept = f"{fr['kept']} / {fr['n']}"
            lines.append(f"| {t} | filter ({best}) | {kept} | {cells[0]} | {cells[1]} | – |")
        for row in (r.get("guidance") or {}).get("rows", []):
            if row["scale"] == 0 or "vs_unguided" not in row:
                continue
            d = row["vs_unguided"]
            paper = " (paper's s)" if row["scale"] == r["guidance"].get("paper_scale") else ""
            lines.append(
                f"| {t} | guidance s = {row['scale']:g}{paper} | {row['report']['n_measurable']} / "
                f"{row['report']['n']} | "
                + " | ".join(
                    G.format_cell(d.get(m), m, signed=True)
                    for m in ("conforming_pct", "within_5pct", "measurable_rate")
                )
                + " |"
            )
    return "\n".join(lines)


def filter_table(filters: dict, metrics=G.SWEEP_METRICS) -> str:
    """Markdown: each metric before filtering and after filtering with each classifier, with CIs."""

    def cell(rep, m):
        return G.format_cell((rep or {}).get(m), m)

    archs = list(filters)
    first = filters[archs[0]]
    lines = [
        "| metric | before | " + " | ".join(f"after {a}" for a in archs) + " |",
        "|---|---:|" + "---:|" * len(archs),
    ]
    for m in metrics:
        lines.append(
            f"| {m} | {cell(first['before'], m)} | "
            + " | ".join(cell(filters[a]["after"], m) for a in archs)
            + " |"
        )
    lines.append(
        f"| kept / total | {first['n']} | "
        + " | ".join(
            f"{filters[a]['kept']} ({100 * filters[a]['kept_share']:.1f} %)" for a in archs
        )
        + " |"
    )
    return "\n".join(lines)


def filter_figure(task, train, gen, keep, path=None, title=""):
    """Two paper-style scatters: training vs all generated, and training vs the kept ones."""
    import matplotlib.pyplot as plt

    from rulelib.metrics import scatter_plot

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.4))
    feats, ok = gen
    kept = {k: np.asarray(v)[keep] for k, v in feats.items()}
    scatter_plot(task, train[0], feats, ax=axes[0], train_ok=train[1], gen_ok=ok, title="before")
    n_kept = int(keep.sum())
    scatter_plot(
        task,
        train[0],
        kept if n_kept else None,  # nothing kept: the training points alone
        ax=axes[1],
        train_ok=train[1],
        gen_ok=np.asarray(ok)[keep] if n_kept else None,
        title=f"after filtering ({n_kept} of {len(keep)} kept)",
    )
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if path is not None:
        from rulelib import atomic

        atomic.savefig(fig, path)
        plt.close(fig)
    return fig


def run(task, run_dir, profile, *, device=None, seed: int = 0, quiet: bool = False, progress=False):
    """The whole mitigation of one task of a run; returns the mitigation.json payload.

    ``run_dir``: the task's folder of a run (holds checkpoints/ and samples.npz); ``profile``: a
    Profile or its name (``SETTINGS`` says how much work each does).  Resumable: trained classifiers
    and finished guided samples are reused.
    """
    from rulelib import tasks
    from rulelib.diffusion import sample as sampler
    from rulelib.diffusion import train as trainer
    from rulelib.run import profiles

    task = tasks.get(task) if isinstance(task, str) else task
    st = settings_for(profile)
    # a name -> its Profile, so that the run's own sampler and training set are used below
    profile = profiles.get(profile) if isinstance(profile, str) else profile
    profile_name = profile.name
    device = _device(device)
    tdir = Path(run_dir)
    mdir = tdir / "mitigation"
    mdir.mkdir(parents=True, exist_ok=True)
    out = {"task": task.name, "profile": profile_name, "settings": asdict(st), "seed": seed}
    t_start = time.perf_counter()

    # 1. Contrastive data and pixel classifiers.
    images, labels, _ = CD.make_contrastive(task, st.n_contrastive, seed)
    out["contrastive"] = {"n": len(labels), "per_class": np.bincount(labels, minlength=3).tolist()}
    contrastive_figure(task, images, labels, mdir / "contrastive.png")
    pixel = {}
    for arch in st.clf_archs:
        model, info = get_classifier(
            task,
            arch,
            images,
            labels,
            mdir,
            epochs=st.clf_epochs,
            batch_size=st.clf_batch,
            seed=seed,
            device=device,
            progress=progress,
            quiet=quiet,
        )
        pixel[arch] = model
        out.setdefault("accuracy", {})[arch] = info["test_accuracy"]

    # 2. Filtering the run's generated samples (beside the training set the run was trained on).
    train_imgs, _ = profile.training_set(task.name, seed)
    train = task.measure(train_imgs)
    samples_path = tdir / "samples.npz"
    if samples_path.exists():
        gen_imgs, _ = sampler.load_samples(samples_path)
        feats, ok = task.measure(gen_imgs)
        out["filter"] = {
            arch: C.filter_report(
                task,
                gen_imgs,
                m,
                threshold=st.filter_threshold,
                n_boot=st.n_boot,
                seed=seed,
                features=feats,
                ok=ok,
            )
            for arch, m in pixel.items()
        }
        best = max(pixel, key=lambda a: out["accuracy"][a])
        keep, _ = C.filter_mask(pixel[best], gen_imgs, threshold=st.filter_threshold)
        filter_figure(
            task,
            train,
            (feats, ok),
            keep,
            mdir / "filter.png",
            title=f"Task {task.name}: filtering with {best}",
        )
    else:
        _say(f"[{task.name}] no {samples_path}: filtering skipped", quiet)

    # 3. Noise-aware classifier and the guidance-scale sweep.
    has_model = (tdir / "checkpoints").exists() and trainer.list_checkpoints(tdir)
    if has_model:
        noisy, info = get_classifier(
            task,
            st.noisy_arch,
            images,
            labels,
            mdir,
            epochs=st.noisy_epochs,
            batch_size=st.noisy_batch,
            seed=seed,
            device=device,
            arch_kwargs=st.noisy_kwargs,
            progress=progress,
            quiet=quiet,
        )
        out["noisy_classifier"] = {
            k: info.get(k)
            for k in ("arch", "test_accuracy", "test_accuracy_clean", "train_seconds")
        }
        s_paper = G.PAPER_SCALES.get(task.name, 3.0)
        sampling = profile.sampling(task.name)
        method = st.method or sampling.method
        steps = st.steps if st.steps is not None else sampling.steps
        eta = st.eta if st.eta is not None else sampling.eta
        weights = sampling.weights
        n = st.sweep_n or sampling.n
        model, cfg, epoch = trainer.load_model(tdir, weights=weights, device=device)
        schedule = cfg.schedule().to(device)
        _say(
            f"[{task.name}] guidance sweep: scales {sorted({0.0, *st.extra_scales, s_paper})}, "
            f"n = {n}",
            quiet,
        )
        sweep = G.scale_sweep(
            task,
            model,
            schedule,
            noisy,
            [*st.extra_scales, s_paper],
            n=n,
            seed=seed,
            weight=st.weight,
            # the profile's sampler, so that s = 0 equals the run's own samples
            clip_x0=sampling.clip_x0,
            method=method,
            steps=steps if method == "ddim" else None,
            eta=eta,
            n_boot=st.n_boot,
            batch_size=sampling.batch_size,
            device=device,
            out_dir=mdir / "guided",
            progress=progress,
        )
        sweep.update({"paper_scale": s_paper, "epoch": epoch, "weights": weights})
        for row in sweep["rows"]:  # relative to mitigation/: still right in exported results
            if row.get("samples"):
                row["samples"] = Path(os.path.relpath(row["samples"], mdir)).as_posix()
        out["guidance"] = sweep
        axes = G.plot_sweep(sweep)
        atomic.savefig(axes[0].figure, mdir / "guidance.png")
        import matplotlib.pyplot as plt

        plt.close(axes[0].figure)
    else:
        _say(f"[{task.name}] no trained model in {tdir}: guidance skipped", quiet)

    out["seconds"] = round(time.perf_counter() - t_start, 1)
    out["provenance"] = {"machine": provenance.machine_info(), "created": provenance.now_iso()}
    atomic.write_json(mdir / "mitigation.json", out)
    atomic.write_text(mdir / "mitigation.md", markdown(out))
    _say(f"[{task.name}] mitigation: {mdir / 'mitigation.md'}", quiet)
    return out


def markdown(out: dict) -> str:
    """mitigation.md of one task: accuracies beside the paper's, filtering and guidance tables.

    Image links are relative to the mitigation folder, where the file lives (rulelib.report
    re-roots them when it embeds the file in a task's or a run's report.md)."""
    t = out["task"]
    lines = [
        f"## Task {t}: mitigation (profile `{out['profile']}`)",
        "",
        f"Contrastive set: {out['contrastive']['n']} images, per class "
        f"{out['contrastive']['per_class']} (0 too small, 1 conforming, 2 too large).",
        "",
        "**Pixel classifiers, test accuracy (%)** (ours beside the paper's)",
        "",
        accuracy_table({t: out.get("accuracy", {})}),
        "",
        "![contrastive classes](contrastive.png)",
        "",
    ]
    if "filter" in out:
        lines += [
            "**Filtering the generated samples** (keep what a classifier calls class 1; "
            "ours [95 % CI]; paper: Task B bias 0.073 -> 0.040, Task C 0.209 -> 0.160)",
            "",
            filter_table(out["filter"]),
            "",
            "![filtering](filter.png)",
            "",
        ]
    if "guidance" in out:
        g = out["guidance"]
        nc = out.get("noisy_classifier", {})
        acc = nc.get("test_accuracy")
        lines += [
            f"**Classifier guidance** ({nc.get('arch')} noise-aware classifier, accuracy on x_t "
            f"{'–' if acc is None else f'{100 * acc:.1f} %'}; {g['method']} sampler, {g['weight']} "
            f"weights w_t = s + 3(1 - t/T); paper's s = {g['paper_scale']:g}; {g['n']} samples per "
            "scale from the same seed; s = 0 is the unguided baseline)",
            "",
            G.sweep_table(g),
            "",
            "Effect of guidance: each scale minus the unguided samples of the same noise, with a "
            "paired-bootstrap 95 % CI (* where the CI excludes 0; rates and shares in points):",
            "",
            G.difference_table(g),
            "",
            "![guidance-scale curves](guidance.png)",
            "",
        ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Command line: python -m rulelib filter | guide
# --------------------------------------------------------------------------------------------------


def _task_and_dir(args):
    from rulelib import tasks

    task = tasks.get(args.task)
    tdir = Path(args.out) / task.name
    return task, tdir


def _profile_of(tdir: Path, name):
    from rulelib.run import profiles

    if name:
        return profiles.get(name)
    pfile = tdir / "profile.json"
    if pfile.exists():
        from rulelib import atomic

        return profiles.get(atomic.read_json(pfile)["profile"])
    return profiles.get("auto")


def cmd_filter(args) -> int:
    """Filter a run's samples (or --images) with a pixel classifier; print and save the report."""
    import json

    from rulelib.diffusion import sample as sampler

    task, tdir = _task_and_dir(args)
    device = _device(args.device)
    mdir = tdir / "mitigation"
    if args.classifier:
        model, info = C.load_classifier(args.classifier, task=task, kind="pixel", device=device)
        arch = info["arch"]
    else:
        st = settings_for(_profile_of(tdir, args.mitigation_profile))
        images, labels, _ = CD.make_contrastive(task, st.n_contrastive, args.seed)
        arch = args.arch
        model, info = get_classifier(
            task,
            arch,
            images,
            labels,
            mdir,
            epochs=st.clf_epochs,
            batch_size=st.clf_batch,
            seed=args.seed,
            device=device,
            quiet=args.quiet,
        )
    path = Path(args.images) if args.images else tdir / "samples.npz"
    if not path.exists():
        raise FileNotFoundError(f"no generated images at {path}; sample first or pass --images")
    if path.suffix == ".npz":
        gen, _ = sampler.load_samples(path)
    else:
        from rulelib.cli import load_images

        gen = load_images(path)
    rep = C.filter_report(
        task, gen, model, threshold=args.threshold, n_boot=args.n_boot, seed=args.seed
    )
    atomic.write_json(mdir / f"filter_{arch}.json", rep)
    print(filter_table({arch: rep}))
    print(json.dumps({"kept": rep["kept"], "kept_share": rep["kept_share"]}))
    return 0


def cmd_guide(args) -> int:
    """Guided samples of a run's model with a noise-aware classifier; print and save the rule
    report."""
    from rulelib.diffusion import train as trainer
    from rulelib.metrics import format_table, rule_report

    task, tdir = _task_and_dir(args)
    device = _device(args.device)
    mdir = tdir / "mitigation"
    profile = _profile_of(tdir, args.mitigation_profile)
    st = settings_for(profile)
    G.weights(
        args.schedule, args.scale, last_k=args.last_k
    )  # bad scale / schedule: fail before work
    if args.classifier:
        noisy, _ = C.load_classifier(args.classifier, task=task, kind="noisy", device=device)
    else:
        images, labels, _ = CD.make_contrastive(task, st.n_contrastive, args.seed)
        noisy, _ = get_classifier(
            task,
            args.arch,
            images,
            labels,
            mdir,
            epochs=st.noisy_epochs,
            batch_size=st.noisy_batch,
            seed=args.seed,
            device=device,
            arch_kwargs=st.noisy_kwargs if args.arch == st.noisy_arch else None,
            quiet=args.quiet,
        )
    sampling = profile.sampling(task.name)
    method = args.method or sampling.method
    steps = args.steps if args.steps is not None else sampling.steps
    model, cfg, _ = trainer.load_model(tdir, weights=sampling.weights, device=device)
    schedule = cfg.schedule().to(device)
    g = G.Guidance(
        noisy,
        schedule,
        args.scale,
        weight=args.schedule,
        method=method,
        grad_at=args.grad_at,
        last_k=args.last_k,
    )
    n = args.n or st.sweep_n or sampling.n
    out_path = mdir / "guided" / f"guide_{args.schedule}_s{g.scale:g}_{args.grad_at}.npz"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    kw = {"steps": steps, "eta": sampling.eta} if method == "ddim" else {}
    kw["clip_x0"] = sampling.clip_x0
    imgs = G.guided_sample(
        model,
        schedule,
        g,
        n,
        seed=args.seed,
        batch_size=sampling.batch_size,
        device=device,
        out_path=out_path,
        progress=not args.quiet,
        **kw,
    )
    feats, ok = task.measure(imgs)
    rep = rule_report(task, feats, ok, n_boot=args.n_boot, seed=args.seed)
    atomic.write_json(out_path.with_suffix(".json"), {"guidance": g.describe(), "report": rep})
    print(format_table({task.name: rep}))
    return 0


def add_cli(subparsers) -> None:
    """Add ``filter`` and ``guide`` to ``python -m rulelib`` (called by
    rulelib.cli.build_parser)."""

    def common(p):
        p.add_argument("--task", required=True, help="task name A-D")
        p.add_argument(
            "--out", default="runs/reproduce", help="run folder (one sub-folder per task)"
        )
        # dest differs from "profile" on purpose: rulelib.cli dispatches our subcommands by its
        # absence.
        p.add_argument(
            "--profile",
            dest="mitigation_profile",
            default=None,
            help="smoke, quick or paper (default: the run's)",
        )
        p.add_argument("--classifier", default=None, help="a classifier checkpoint (.safetensors)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--device", default="auto")
        p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
        p.add_argument("--quiet", action="store_true")

    p = subparsers.add_parser(
        "filter", help="keep the generated images a pixel classifier calls rule-conforming"
    )
    common(p)
    p.add_argument("--arch", default="smallconv", choices=C.PIXEL_ARCHS)
    p.add_argument("--threshold", type=float, default=None, help="also require p(class 1) >= this")
    p.add_argument(
        "--images", default=None, help="images to filter (default: the run's samples.npz)"
    )
    p.set_defaults(func=cmd_filter)

    p = subparsers.add_parser("guide", help="classifier-guided sampling towards the rule")
    common(p)
    p.add_argument("--arch", default="cheap", choices=C.NOISY_ARCHS)
    p.add_argument("--scale", type=float, required=True, help="guidance scale s >= 0")
    p.add_argument("--schedule", default="linear", help=f"one of {G.WEIGHT_SCHEDULES}")
    p.add_argument("--last-k", type=int, default=20, help="K of the last_k schedule")
    p.add_argument("--grad-at", default="x_t", choices=G.GRAD_AT)
    p.add_argument(
        "--method", default=None, choices=("ddpm", "ddim"), help="default: the profile's"
    )
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the profile's)")
    p.add_argument("--n", type=int, default=None, help="number of guided samples")
    p.set_defaults(func=cmd_guide)
