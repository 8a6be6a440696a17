"""Make the README picture docs/tasks.png: a few rendered training images of each of the four tasks.

    .venv/bin/python docs/make_figures.py [--out docs/tasks.png] [--n 6] [--seed 0]

One row per task (A light-shadow, B perspective, C two circles, D two squares), titled with its
hidden rule; images drawn at their native 32x32 with nearest-neighbour upscaling, so the pixels
seen are the pixels the diffusion model is trained on.  Deterministic for a given seed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rulelib import (
    atomic,
    tasks,  # noqa: E402
)

ROOT = Path(__file__).resolve().parents[1]

# The rule in the paper's notation, for the row titles (docs/paper.md section 2).
RULES = {
    "A": "l1·h2 = l2·h1",
    "B": "l1·h1 = l2·h2",
    "C": "r2 = √2·r1",
    "D": "l2 = 1.5·l1",
}


def tasks_figure(n: int = 6, seed: int = 0):
    """Figure with one row of n example images per task."""
    names = tasks.names()
    fig, axes = plt.subplots(
        len(names), n, figsize=(1.1 * n, 1.25 * len(names)), squeeze=False, dpi=110
    )
    for row, name in zip(axes, names):
        task = tasks.get(name)
        images, _ = task.sample(n, seed=seed)
        for ax, img in zip(row, images):
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        rule = RULES.get(name, "")
        row[0].set_title(f"Task {name}: {task.title}   rule {rule}", loc="left", fontsize=8, pad=3)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.95, bottom=0.01, wspace=0.06, hspace=0.32)
    return fig


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "tasks.png")
    parser.add_argument("--n", type=int, default=6, help="examples per task")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.n <= 0:
        raise ValueError(f"--n must be a positive number of examples, got {args.n}")
    fig = tasks_figure(args.n, args.seed)
    print(atomic.savefig(fig, args.out, dpi=110))


if __name__ == "__main__":
    main()
