"""The "ours vs paper" Markdown table (the paper's numbers: rulelib.paper)."""

from __future__ import annotations

from collections.abc import Mapping

from rulelib import paper
from rulelib.metrics.bootstrap import METRICS

_BOUND_ROWS = {
    "conforming_pct": "rule-conforming %, all images (unmeasurable: violating – conforming)",
    "within_5pct": "within ±5 %, all images (unmeasurable: violating – conforming)",
}

PAPER, PAPER_APPROX = paper.RULE_METRICS, paper.RULE_METRICS_APPROX  # the paper's numbers

_LABELS = {
    "measurable_rate": "measurable %",
    "coarse_rate": "coarse rule %",
    "conforming_pct": "rule-conforming % (bins 0.05)",
    "within_1pct": "within ±1 % of rule",
    "within_5pct": "within ±5 % of rule",
    "within_10pct": "within ±10 % of rule",
    "slope": "slope (trimmed fit)",
    "intercept": "intercept",
    "r2": "R²",
    "bias": "bias, true k",
    "bias_k1": "bias, k = 1 (paper's code)",
    "resid_std": "residual std",
}
_PERCENT_RATES = ("measurable_rate", "coarse_rate")  # shown in % in tables


def _fmt(v, name: str, paper: bool = False) -> str:
    """Ours with fixed decimals per metric; the paper's numbers with the digits it printed."""
    if v is None:
        return "–"
    if name in _PERCENT_RATES:
        v = 100 * v
    if paper:
        return f"{v:.4g}"
    if name in _PERCENT_RATES or name.endswith("pct"):
        return f"{v:.2f}"
    return f"{v:.3f}" if name in ("slope", "r2") else f"{v:.4f}"


def format_table(
    reports: Mapping, paper: Mapping | None = PAPER, *, kind: str = "generated", ci: bool = True
) -> str:
    """Markdown table, one row per metric and for each task the columns "ours" and "paper".

    reports: {task or task name: rule_report(...)}.  kind: which of the paper's numbers to set
    beside ours, "generated" (samples) or "train" (training images).  ci: print [lo, hi] after ours.
    Rates are printed in %.  Where the reports carry them, two rows give the bounds over all
    images (rule_report's BOUNDS: unmeasurable images counted as violating – as conforming).
    Paper cells are "–" where the paper gives no number, "≈" where it
    gives one only roughly.
    """
    if kind not in ("generated", "train"):
        raise ValueError(f"kind must be 'generated' or 'train', got {kind!r}")
    if not reports:
        raise ValueError("reports is empty; expected {task name: rule_report(...)}")
    names = [str(getattr(t, "name", t)) for t in reports]
    header = "| metric | " + " | ".join(f"{t} ours | {t} paper" for t in names) + " |"
    lines = [header, "|---|" + "---:|---:|" * len(names)]
    for metric in METRICS:
        cells = []
        for t, rep in zip(names, reports.values()):
            entry = rep.get(metric) or {}
            ours = _fmt(entry.get("value"), metric)
            if ci and entry.get("ci") is not None:
                lo, hi = entry["ci"]
                ours += f" [{_fmt(lo, metric)}, {_fmt(hi, metric)}]"
            p = (paper or {}).get(t, {}).get(kind, {}).get(metric)
            pcell = _fmt(p, metric, paper=True)
            if p is not None and (t, kind, metric) in PAPER_APPROX:
                pcell = "≈" + pcell
            cells += [ours, pcell]
        lines.append(f"| {_LABELS[metric]} | " + " | ".join(cells) + " |")
    for key, label in _BOUND_ROWS.items():
        if not any(f"{key}_all_low" in rep for rep in reports.values()):
            continue  # reports written before the bounds existed
        cells = []
        for rep in reports.values():
            lo = (rep.get(f"{key}_all_low") or {}).get("value")
            hi = (rep.get(f"{key}_all_high") or {}).get("value")
            cells += [f"{_fmt(lo, key)} – {_fmt(hi, key)}" if lo is not None else "–", "–"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    counts = [
        f"{rep.get('n_measurable', '–')} / {rep.get('n', '–')} | –" for rep in reports.values()
    ]
    lines.append("| images measured / total | " + " | ".join(counts) + " |")
    return "\n".join(lines)


def _plot_xy(task, features, ok):
    """Scatter quantities for plotting; ok None keeps the images whose features are all finite."""
