"""Re-measure the committed quick samples with the current measurement (no retraining).

    .venv/bin/python tools/remeasure_quick.py [--dir results/quick]

For each task folder: measures ``samples.npz`` and the profile's training set with
``task.measure`` (collecting the rejection reasons), recomputes ``metrics.rule_report`` for both
(same n_boot and seed as the run), keeps the rest of ``metrics.json`` (settings, sweep, timings)
and records the re-measurement under "remeasured" (command, commit, machine, time).  The first
run also stores the previous headline numbers under "before_remeasure", so that
``remeasure.md`` (written here) can set before and after side by side on every later run.
``report.md``, ``scatter.png`` and the folder's ``report.md`` are rewritten by the report
writer (rulelib.report).  The training-length sweep and the mitigation results keep the
measurement they were made with (their samples are not committed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from rulelib import atomic, metrics, provenance, report, tasks
from rulelib.diffusion.sample import load_samples
from rulelib.run import profiles

ROOT = Path(__file__).resolve().parents[1]

HEADLINE = (
    "measurable_rate",
    "coarse_rate",
    "conforming_pct",
    "within_5pct",
    "bias_k1",
    "resid_std",
)
LABELS = {
    "measurable_rate": "measurable %",
    "coarse_rate": "coarse %",
    "conforming_pct": "rule-conforming %",
    "within_5pct": "within ±5 %",
    "bias_k1": "bias (k = 1)",
    "resid_std": "residual std",
}


def _headline(rep: dict) -> dict:
    return {k: rep.get(k) for k in (*HEADLINE, "n", "n_measurable")}


def remeasure(tdir: Path, command: str) -> dict:
    entry = atomic.read_json(tdir / "metrics.json")
    name, seed = entry["task"], int(entry.get("seed", 0))
    task, profile = tasks.get(name), profiles.get(entry.get("profile", "quick"))
    images, _ = load_samples(tdir / "samples.npz")
    data, _ = profile.training_set(name, seed)
    if "before_remeasure" not in entry:
        entry["before_remeasure"] = {
            "generated": _headline(entry["generated"]),
            "train": _headline(entry["train"]),
            "git_commit": entry.get("git_commit"),
        }
    measured = {}
    for kind, imgs in (("generated", images), ("train", data)):
        why = {}
        feats, ok = task.measure(imgs, why)
        measured[kind] = (feats, ok)
        entry[kind] = metrics.rule_report(
            task, feats, ok, n_boot=profile.n_boot, seed=seed, reasons=why
        )
    entry["remeasured"] = {
        "command": command,
        "git_commit": provenance.git_commit(),
        "created": provenance.now_iso(),
        "machine": provenance.machine_info(),
    }
    title = f"Task {name} ({entry.get('title', '')}): training vs generated"
    report.save_scatter(task, measured["train"], measured["generated"], tdir / "scatter.png", title)
    report.write_task_report(tdir, entry, limits=profile.limits)
    return entry


def _cell(rep: dict, key: str) -> str:
    v = (rep.get(key) or {}).get("value")
    if v is None:
        return "–"
    if key.endswith("_rate"):
        return f"{100 * v:.1f}"
    return f"{v:.1f}" if key.endswith("pct") else f"{v:.3f}"


def table(entries: dict) -> str:
    """Markdown: before / after of the headline metrics, bounds over all images, rejections."""
    lines = [
        "| task | set | " + " | ".join(LABELS[k] for k in HEADLINE) + " |",
        "|---|---|" + "---:|" * len(HEADLINE),
    ]
    for name, e in entries.items():
        for kind in ("generated", "train"):
            old, new = e["before_remeasure"][kind], e[kind]
            cells = [f"{_cell(old, k)} → {_cell(new, k)}" for k in HEADLINE]
            lines.append(f"| {name} | {kind} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Over all generated images (unmeasurable counted as violating – as conforming):",
        "",
        "| task | measured only: rule-conforming % | all images | measured only: within ±5 % "
        "| all images | rejections (images; an image may fail several checks) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, e in entries.items():
        g = e["generated"]
        bounds = []
        for key in ("conforming_pct", "within_5pct"):
            lo, hi = g[f"{key}_all_low"]["value"], g[f"{key}_all_high"]["value"]
            bounds += [_cell(g, key), f"{lo:.1f} – {hi:.1f}"]
        why = ", ".join(f"{k} {v}" for k, v in g["rejections"].items()) or "none"
        lines.append(f"| {name} | " + " | ".join(bounds) + f" | {why} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=str(ROOT / "results" / "quick"), help="the results folder")
    args = ap.parse_args(argv)
    root = Path(args.dir)
    command = "python tools/remeasure_quick.py " + " ".join(argv or sys.argv[1:])
    entries = {}
    for tdir in sorted(p for p in root.iterdir() if (p / "samples.npz").exists()):
        entries[tdir.name] = e = remeasure(tdir, command.strip())
        g = e["generated"]
        print(
            f"[{tdir.name}] {g['n_measurable']}/{g['n']} measurable; rejections {g['rejections']}"
        )
    profile = profiles.get(next(iter(entries.values())).get("profile", "quick"))
    report.write_run_report(root, limits=profile.limits)
    atomic.write_text(root / "remeasure.md", table(entries))
    print(table(entries))
    return 0


if __name__ == "__main__":
    np.seterr(invalid="ignore")
    raise SystemExit(main())
