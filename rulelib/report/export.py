"""Copy a run's results into the repository (results/<profile>/) for readers without a GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rulelib import atomic

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
    check_destination(run_dir, dest)
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


def check_destination(run_dir, dest) -> None:
    """Refuse, before anything is written, a missing run folder and a destination that would
    overwrite a run: the run folder itself or a folder inside it, or a folder whose task
    sub-folders are a run's (they hold checkpoints; an export holds none)."""
    run_dir, dest = Path(run_dir), Path(dest)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    src, dst = run_dir.resolve(), dest.resolve()
    if dst == src or src in dst.parents:
        raise ValueError(
            f"export destination {dest} is the run folder {run_dir} or inside it; writing there "
            "would overwrite the run's own files: choose a destination outside it"
        )
    runs = sorted(p.parent.name for p in dst.glob("*/checkpoints") if p.is_dir())
    if runs:
        raise ValueError(
            f"export destination {dest} holds a run (its task folders {runs} have checkpoints); "
            "exporting there would overwrite that run's results: choose another destination"
        )
