"""Figures of the mitigation: the contrastive classes, and the scatter before / after filtering."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from rulelib import atomic
from rulelib.metrics import scatter_plot
from rulelib.mitigation import contrastive as CD


def contrastive_figure(task, images, labels, path=None, per_class: int = 6):
    """The three classes side by side: one row of ``per_class`` images per class."""
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
        atomic.savefig(fig, path)
    return fig


def filter_figure(task, train, gen, keep, path=None, title=""):
    """Two paper-style scatters: training vs all generated, and training vs the kept ones."""
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
        atomic.savefig(fig, path)
    return fig
