"""Markdown of the mitigation: accuracies beside the paper's, filtering and guidance tables, the
run report's "mitigation at a glance", and mitigation.md of one task."""

from __future__ import annotations

from rulelib import paper
from rulelib.mitigation import guidance as G
from rulelib.mitigation.networks import NOISY_ARCHS, PIXEL_ARCHS


def accuracy_table(accuracies: dict) -> str:
    """Markdown: test accuracy per task (columns) and classifier (rows), ours beside the paper's.

    ``accuracies``: {task name: {arch: accuracy in [0, 1]}}."""
    tasks_ = list(accuracies)
    lines = [
        "| classifier | " + " | ".join(f"{t} ours | {t} paper" for t in tasks_) + " |",
        "|---|" + "---:|---:|" * len(tasks_),
    ]
    archs = [a for a in PIXEL_ARCHS + NOISY_ARCHS if any(a in accuracies[t] for t in tasks_)]
    for a in archs:
        cells = []
        for t in tasks_:
            v = accuracies[t].get(a)
            p = paper.CLASSIFIER_ACCURACY.get(a, {}).get(t)
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
