"""Results on disk: metrics JSON, figures and report.md of a run, every write atomic.

A run folder (`python -m rulelib reproduce --out runs/reproduce`) holds one sub-folder per task:

    runs/reproduce/
        report.md            our numbers beside the paper's (paper.md section 3), all tasks
        A/  config.json      the TrainConfig (written by rulelib.diffusion.train)
            profile.json     the profile, sampling settings, seed (written by rulelib.cli)
            checkpoints/     every checkpoint (rulelib.diffusion.train)
            samples.npz      generated uint8 images (n, 32, 32, 3), compressed
            metrics.json     rule_report of training and generated images; machine, command,
                             git commit, wall times
            scatter.png      the paper-style scatter: training (blue) vs generated (red)
            samples.png      a grid of generated images
            sweep.csv/.png   rule metrics against training epoch (one row per checkpoint)
            mitigation/      `reproduce --mitigation` (rulelib.mitigation.pipeline):
            mitigation.json,
                             mitigation.md and figures, classifier weights, guided samples
            report.md        the same tables for this task alone (with mitigation.md embedded)

Every file is written to a temporary file in the same directory and moved into place with
os.replace, so a killed run never leaves a half-written file under a final name.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rulelib import atomic, provenance

# --------------------------------------------------------------------------------------------------
# Figures


def image_grid(images: np.ndarray, ncol: int = 8, pad: int = 2) -> np.ndarray:
    """Tile uint8 images (n, H, W, 3) into one (rows*(H+pad)+pad, ...) uint8 array on grey."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected images of shape (n, H, W, 3), got {images.shape}")
    n, h, w, _ = images.shape
    ncol = max(1, min(ncol, n))
    nrow = max(1, math.ceil(n / ncol))
    grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, 3), 128, np.uint8)
    for i in range(n):
        r, c = divmod(i, ncol)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) :][:, :w] = images[
            i
        ]
    return grid


def save_sample_grid(images: np.ndarray, path, title: str = "", n: int = 64, ncol: int = 8) -> Path:
    """A grid of the first `n` images (nearest-neighbour, so pixels stay pixels)."""
    import matplotlib.pyplot as plt

    grid = image_grid(np.asarray(images)[:n], ncol=ncol)
    fig, ax = plt.subplots(figsize=(grid.shape[1] / 40, grid.shape[0] / 40 + (0.4 if title else 0)))
    ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return atomic.savefig(fig, path)


def save_scatter(task, train, generated, path, title: str = "") -> Path:
    """The paper-style scatter (rulelib.metrics.scatter_plot): training blue, generated red.

    `train` and `generated` are (features, ok) pairs as task.measure returns them."""
    import matplotlib.pyplot as plt

    from rulelib import metrics

    fig, ax = plt.subplots(figsize=(5, 5))
    metrics.scatter_plot(
        task,
        train[0],
        generated[0],
        ax=ax,
        train_ok=train[1],
        gen_ok=generated[1],
        title=title or None,
    )
    return atomic.savefig(fig, path)


SWEEP_METRICS = ("conforming_pct", "bias", "resid_std", "coarse_rate", "measurable_rate")


def sweep_rows(epoch_reports: Sequence[tuple[int, Mapping]]) -> list[dict]:
    """(epoch, rule_report) pairs -> CSV rows: epoch, n, and value/lo/hi of each metric."""
    rows = []
    for epoch, rep in sorted(epoch_reports, key=lambda er: er[0]):
        row = {"epoch": int(epoch), "n": rep.get("n")}
        for key in SWEEP_METRICS:
            v, lo, hi = metric_triplet(rep, key)
            row[key], row[f"{key}_lo"], row[f"{key}_hi"] = v, lo, hi
        rows.append(row)
    return rows


def write_sweep_csv(rows: Sequence[Mapping], path) -> Path:
    buf = io.StringIO()
    fields = list(rows[0]) if rows else ["epoch"]
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return atomic.write_text(path, buf.getvalue())


def plot_sweep(rows: Sequence[Mapping], axes=None, title: str = ""):
    """Rule metrics against training epoch with their 95 % CIs; returns the 5 axes (measurable,
    coarse rule, rule-conforming, fit bias, residual std)."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 5, figsize=(17, 3.2))
    epochs = np.array([r["epoch"] for r in rows], float)
    panels = (
        ("measurable_rate", "measurable (%)", 100.0),
        ("coarse_rate", "coarse rule holds (%)", 100.0),
        ("conforming_pct", "rule-conforming (%)", 1.0),
        ("bias", "fit bias |slope-k|+|b|", 1.0),
        ("resid_std", "residual std", 1.0),
    )

    def column(key):
        return np.array([np.nan if r.get(key) is None else r[key] for r in rows], float)

    for ax, (key, label, scale) in zip(axes, panels):
        ax.plot(epochs, scale * column(key), "o-", color="tab:red")
        lo, hi = scale * column(f"{key}_lo"), scale * column(f"{key}_hi")
        ax.fill_between(epochs, lo, hi, color="tab:red", alpha=0.2, lw=0)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        if epochs.size:  # the same epoch axis on every panel, also where a metric is undefined
            pad = 0.05 * max(epochs.max() - epochs.min(), 1.0)
            ax.set_xlim(epochs.min() - pad, epochs.max() + pad)
    if title:
        axes[0].figure.suptitle(title, fontsize=10)
    axes[0].figure.tight_layout()
    return axes


def save_sweep(rows: Sequence[Mapping], csv_path, png_path, title: str = "") -> None:
    write_sweep_csv(rows, csv_path)
    axes = plot_sweep(rows, title=title)
    atomic.savefig(axes[0].figure, png_path)


# --------------------------------------------------------------------------------------------------
# Tables: our numbers beside the paper's


def metric_triplet(
    report: Mapping | None, key: str
) -> tuple[float | None, float | None, float | None]:
    """(value, ci_lo, ci_hi) of one metric of a rule_report; Nones when absent."""
    if not report or key not in report:
        return None, None, None
    m = report[key]
    if isinstance(m, Mapping):
        ci = m.get("ci") or [None, None]
        return _num(m.get("value")), _num(ci[0]), _num(ci[1])
    return _num(m), None, None


def _num(v):
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def metrics_tables(entries: Mapping[str, Mapping]) -> str:
    """Our numbers beside the paper's (rulelib.metrics.format_table): generated, then training.

    `entries` maps task name -> metrics.json payload ("generated", "train": rule_reports).
    """
    from rulelib.metrics import format_table

    parts = []
    for kind, heading in (("generated", "Generated images"), ("train", "Training images")):
        reports = {t: e[kind] for t, e in entries.items() if e.get(kind)}
        if reports:
            parts += [
                f"**{heading}** (ours [95 % CI] beside the paper's)",
                "",
                format_table(reports, kind=kind),
                "",
            ]
    return "\n".join(parts)


_MD_LINK = re.compile(r"(\]\()([^)\s]+)(\))")  # the target of [text](target) / ![alt](target)


def mitigation_markdown(task_dir, figure_prefix: str = "") -> str:
    """task_dir/mitigation/mitigation.md (rulelib.mitigation.pipeline) as a section of a report.md,
        or ''
    when there is none.

    Its headings go one level down (they sit under "## Task X") and its relative links, written
    relative to the mitigation folder, are re-rooted at the report: `figure_prefix` + "mitigation/"
    (figure_prefix is the task folder relative to the report, as in task_markdown)."""
    md = Path(task_dir) / "mitigation" / "mitigation.md"
    if not md.is_file():
        return ""
    base = f"{figure_prefix}mitigation/"

    def reroot(m: re.Match) -> str:
        target = m.group(2)
        if "://" in target or target.startswith(("/", "#")):
            return m.group(0)
        return f"{m.group(1)}{base}{target}{m.group(3)}"

    body = []
    for line in md.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            line = "#" + line
        body.append(_MD_LINK.sub(reroot, line))
    heading = body.pop(0) if body and body[0].startswith("#") else "### Mitigation"
    link = f"[{base}mitigation.md]({base}mitigation.md)"
    intro = f"(contrastive classifiers, filtering, guidance; the full file: {link})"
    return "\n".join([heading, "", intro, *body])


def task_markdown(
    entry: Mapping, figure_prefix: str = "", tables: bool = True, task_dir=None
) -> str:
    """The per-task section of report.md: settings, provenance, the table, the figures, and the
    mitigation's results when task_dir/mitigation/mitigation.md exists.

    `figure_prefix` is the task folder relative to the report ("A/" in the run's report.md);
    `task_dir` the task folder on disk (None: only a link to the mitigation, if the entry lists
    one)."""
    t = entry["task"]
    s = entry.get("sampling", {})
    cfg = entry.get("train_config", {})
    steps = s.get("steps") or "all"
    lines = [
        f"## Task {t} ({entry.get('title', '')})",
        "",
        f"- profile `{entry.get('profile')}`; trained {entry.get('epoch')} epochs "
        f"({cfg.get('preset')} preset, batch "
        f"{cfg.get('batch_size')}, lr {cfg.get('lr')}), "
        f"{s.get('weights')} weights, {s.get('method')} sampler ({steps} steps, "
        f"eta {s.get('eta')}), "
        f"{entry.get('generated', {}).get('n')} samples, seed {entry.get('seed')}",
        f"- machine: {provenance.machine_summary(entry.get('machine', {}))}",
        f"- command: `{entry.get('command')}`; git commit `{entry.get('git_commit')}`; "
        f"written {entry.get('created')}",
    ]
    if cfg.get("epochs") and entry.get("epoch") is not None and entry["epoch"] < cfg["epochs"]:
        lines.append(
            f"- **training incomplete**: these samples come from epoch {entry['epoch']} of the "
            f"profile's {cfg['epochs']} (training was stopped early, e.g. by --time-limit)"
        )
    trainer = entry.get("trainer")
    if trainer:  # rulelib.cli.stage_train's train_summary.json
        rate = trainer.get("images_per_s_steady")
        lines.append(
            f"- trainer: {trainer.get('precision')} on {trainer.get('device')}, "
            f"{'compiled' if trainer.get('compile') else 'eager'}"
            + (f", {rate:.0f} images/s" if rate else "")
        )
    timings = entry.get("timings_s") or {}
    if timings:
        lines.append(
            "- wall time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items() if v)
        )
    lines.append("")
    if tables:
        lines.append(metrics_tables({t: entry}))
    for name, caption in (
        ("scatter.png", "training (blue) vs generated (red)"),
        ("samples.png", "generated samples"),
        ("sweep.png", "rule metrics against training epoch"),
    ):
        if name in entry.get("files", ()):
            lines.append(f"![{caption}]({figure_prefix}{name})")
    mitigation = mitigation_markdown(task_dir, figure_prefix) if task_dir is not None else ""
    if mitigation:
        lines += ["", mitigation]
    elif "mitigation/mitigation.md" in entry.get("files", ()):
        lines.append(
            f"\nMitigation (contrastive classifiers, filtering, guidance): "
            f"[{figure_prefix}mitigation/mitigation.md]({figure_prefix}mitigation/mitigation.md)"
        )
    return "\n".join(lines) + "\n"


def report_markdown(
    entries: Mapping[str, Mapping], limits: str = "", title: str = "", run_dir=None
) -> str:
    """The report.md of a run: header, tables for every task, the honest paragraph, sections.

    `run_dir`: the run folder, to embed each task's mitigation/mitigation.md (None: links only)."""
    first = next(iter(entries.values()), {})
    out = [
        f"# {title or 'Rule learning of DDPM: our reproduction beside the paper'}",
        "",
        "Han et al., *Can Diffusion Models Learn Hidden Inter-Feature Rules Behind Images?* "
        "(ICML 2025).",
        f"Profile `{first.get('profile')}` on "
        f"{provenance.machine_summary(first.get('machine', {}))}; "
        f"command `{first.get('command')}`; git commit `{first.get('git_commit')}`.",
        "",
        "Ours with a bootstrap 95 % confidence interval in brackets; the paper's from its unguided "
        "DDPM at paper epochs (– where the paper gives none, ≈ where only roughly). The measurable "
        "rate is over all images, every other metric over the measurable ones. Training images are "
        "measured by the same sub-pixel measurement as the generated ones.",
        "",
        metrics_tables(entries),
    ]
    if limits:
        out += ["## What this profile can and cannot show", "", limits, ""]
    summary = mitigation_summary(run_dir, entries) if run_dir is not None else ""
    if summary:
        out += ["## Mitigation at a glance", "", summary, ""]
    for entry in entries.values():
        tdir = None if run_dir is None else Path(run_dir) / entry["task"]
        out.append(
            task_markdown(entry, figure_prefix=f"{entry['task']}/", tables=False, task_dir=tdir)
        )
    return "\n".join(out)


def mitigation_summary(run_dir, entries: Mapping) -> str:
    """rulelib.mitigation.pipeline.summary_markdown over the tasks of a run that have a
    mitigation.json."""
    results = {}
    for name in entries:
        f = Path(run_dir) / name / "mitigation" / "mitigation.json"
        if f.exists():
            results[name] = atomic.read_json(f)
    if not results:
        return ""
    from rulelib.mitigation import (
        pipeline as mitigation,  # imported here: mitigation imports this module
    )

    return mitigation.summary_markdown(results)


def write_task_report(task_dir, entry: Mapping, limits: str = "") -> Path:
    """task_dir/metrics.json and task_dir/report.md for one task."""
    task_dir = Path(task_dir)
    atomic.write_json(task_dir / "metrics.json", entry)
    text = task_markdown(entry, task_dir=task_dir)
    if limits:
        text += "\n### What this profile can and cannot show\n\n" + limits + "\n"
    return atomic.write_text(task_dir / "report.md", text)


def write_run_report(run_dir, limits: str = "", title: str = "") -> Path | None:
    """run_dir/report.md from every task_dir/metrics.json found (tasks in A-D order)."""
    run_dir = Path(run_dir)
    entries = {}
    for task_dir in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        mfile = task_dir / "metrics.json"
        if mfile.exists():
            entry = atomic.read_json(mfile)
            entries[entry.get("task", task_dir.name)] = entry
    if not entries:
        return None
    text = report_markdown(entries, limits, title, run_dir=run_dir)
    return atomic.write_text(run_dir / "report.md", text)


# --------------------------------------------------------------------------------------------------
# Results for the repository (readers without a GPU)

EXPORT_FILES = (
    "metrics.json",
    "report.md",
    "scatter.png",
    "samples.png",
    "sweep.csv",
    "sweep.png",
    "profile.json",
    "config.json",
    "timings.json",
)
# From task_dir/mitigation/: its results and figures; not the classifier weights
# (clf_*.safetensors) nor the guided samples (guided/*.npz), which a rerun recomputes.
EXPORT_MITIGATION = ("mitigation.json", "mitigation.md", "*.png")


def export_results(run_dir, dest, *, max_samples: int = 512) -> list[Path]:
    """Copy what a reader needs from a run into `dest` (e.g. results/quick): per task the metrics,
    report, figures, profile and config, the mitigation's results and figures (EXPORT_MITIGATION),
    and the first `max_samples` generated images as a compressed samples.npz (a few MB at most);
    the run's report.md.  No checkpoints, classifier weights or guided samples."""
    run_dir, dest = Path(run_dir), Path(dest)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    copied = []
    for tdir in sorted(p for p in run_dir.iterdir() if (p / "metrics.json").exists()):
        for name in EXPORT_FILES:
            if (tdir / name).exists():
                copied.append(
                    atomic.write_bytes(dest / tdir.name / name, (tdir / name).read_bytes())
                )
        mdir = tdir / "mitigation"
        for f in sorted({f for pattern in EXPORT_MITIGATION for f in mdir.glob(pattern)}):
            if f.is_file():
                copied.append(
                    atomic.write_bytes(dest / tdir.name / "mitigation" / f.name, f.read_bytes())
                )
        if (tdir / "samples.npz").exists():
            with np.load(tdir / "samples.npz") as z:
                images = z["images"][:max_samples]
                meta = z["meta"] if "meta" in z else np.array("{}")
            copied.append(atomic.savez(dest / tdir.name / "samples.npz", images=images, meta=meta))
    if (run_dir / "report.md").exists():
        copied.append(atomic.write_bytes(dest / "report.md", (run_dir / "report.md").read_bytes()))
    if not copied:
        raise FileNotFoundError(f"{run_dir} has no finished task (no */metrics.json) to export")
    return copied
