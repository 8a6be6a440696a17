"""Figures of a run: sample grids, the paper-style scatter, rule metrics against epoch."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from rulelib import atomic, metrics
from rulelib.report.values import metric_triplet


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


def sweep_rows(epoch_reports: Sequence[tuple[int, Mapping]],
               paper: Sequence[tuple[int, Mapping]] | None = None) -> list[dict]:  # fmt: skip
    """(epoch, rule_report) pairs -> CSV rows: epoch, n, and value/lo/hi of each metric; with
    ``paper`` (the same epochs read with the paper's ruler) also paper_<metric> columns."""
    other = dict(paper or [])
    rows = []
    for epoch, rep in sorted(epoch_reports, key=lambda er: er[0]):
        row = {"epoch": int(epoch), "n": rep.get("n")}
        for prefix, r in (("", rep), ("paper_", other.get(epoch))):
            if r is None:
                continue
            for key in SWEEP_METRICS:
                v, lo, hi = metric_triplet(r, key)
                k = prefix + key
                row[k], row[f"{k}_lo"], row[f"{k}_hi"] = v, lo, hi
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

    # the primary ruler in red; the paper's ruler, when the rows have it, in purple beside it
    both = any(r.get("paper_resid_std") is not None for r in rows)
    shown = [("", "tab:red", "o-", "exact ruler"), ("paper_", "tab:purple", "s--", "paper's ruler")]
    for ax, (key, label, scale) in zip(axes, panels):
        for prefix, colour, style, name in shown[: 1 + both]:
            ax.plot(epochs, scale * column(prefix + key), style, color=colour, label=name)
            lo, hi = scale * column(f"{prefix}{key}_lo"), scale * column(f"{prefix}{key}_hi")
            ax.fill_between(epochs, lo, hi, color=colour, alpha=0.2, lw=0)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        if epochs.size:  # the same epoch axis on every panel, also where a metric is undefined
            pad = 0.05 * max(epochs.max() - epochs.min(), 1.0)
            ax.set_xlim(epochs.min() - pad, epochs.max() + pad)
    if both:
        axes[-1].legend(fontsize=7)
    if title:
        axes[0].figure.suptitle(title, fontsize=10)
    axes[0].figure.tight_layout()
    return axes


def save_sweep(rows: Sequence[Mapping], csv_path, png_path, title: str = "") -> None:
    write_sweep_csv(rows, csv_path)
    axes = plot_sweep(rows, title=title)
    atomic.savefig(axes[0].figure, png_path)
