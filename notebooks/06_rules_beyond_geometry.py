# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %%
# Set-up: uses the installed rulelib; on Colab (or any kernel without it) clones and installs it.
# The address is rulelib.notebook.REPO_URL: a fork changes it there and runs `make notebooks`.
import os
import subprocess
import sys

REPO_URL = "https://github.com/rulelib/rulelib.git"
try:
    import rulelib
except ImportError:
    if not os.path.isdir("rulelib-repo"):
        clone = subprocess.run(["git", "clone", "--depth", "1", REPO_URL, "rulelib-repo"])
        if clone.returncode != 0:
            raise SystemExit(
                f"could not clone {REPO_URL} (not published there yet?): upload the repository "
                "as a folder named rulelib-repo next to this notebook, or set REPO_URL to your "
                "fork, and run this cell again"
            ) from None
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "rulelib-repo"], check=True)
    sys.path.insert(0, os.path.abspath("rulelib-repo"))
    import rulelib

# %% [markdown]
# # Rules beyond geometry: the pairing rule and mirror reflections
#
# Besides its four geometric tasks the paper tested two other kinds of hidden rule
# (`docs/paper.md`, section 7): a **categorical** one (Cifar-MNIST: a 2×2 grid of two object photos
# and two digits whose classes always come in fixed groups) and **mirror reflections** (Syn Mirror:
# an object's reflection must agree with it in size, position and colour).  Both are rule tasks
# here, `pairs` and `mirror`, that train, sample, evaluate and reproduce like A–D.
#
# This notebook runs on this machine with **no files**: `pairs` uses its offline stand-in
# (scikit-learn's bundled handwritten digits for MNIST, rendered shapes for CIFAR-10) and `mirror`
# its procedural scene (an object beside a vertical mirror strip, the reflection drawn by the
# rule).  `rulelib.tasks.pairs.use_files(cifar_dir=..., mnist_dir=...)` and
# `rulelib.tasks.mirror.use_files(folder)` switch to the real data.  For each task it measures the
# training images (the ceiling), trains a small DDPM briefly, and scores samples of each
# checkpoint: one figure per task, samples beside the rule metric against training.

# %%
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from rulelib import metrics, report, tasks
from rulelib.diffusion import checkpoint
from rulelib.diffusion import sample as sampler
from rulelib.diffusion import train as trainer
from rulelib.diffusion.config import TrainConfig
from rulelib.metrics import categorical
from rulelib.notebook import stamp, test_size
from rulelib.tasks import pairs

t0 = time.time()
TEST = test_size()
SEED = 0
N_TRAIN = 256 if TEST else 2000  # training images measured per task (the ceiling)
N_FIT = 64 if TEST else 512  # of which the DDPM trains on the first N_FIT
EPOCHS = 2 if TEST else 4  # short runs: the figure shows the start of training, not convergence
PRESET = "tiny"  # the smallest U-Net: this notebook runs on a shared 2-core CPU
N_GEN = 8 if TEST else 64  # samples per checkpoint
STEPS = 4 if TEST else 20  # DDIM steps (eta = 1)
N_BOOT = 200 if TEST else 1000
RUNS = Path(tempfile.mkdtemp(prefix="rulelib_nb06_"))
print(f"rulelib {rulelib.__version__}")
print(
    f"{'test' if TEST else 'full'} size: {N_TRAIN} training images measured, the DDPM trained "
    f"{EPOCHS} epochs on {N_FIT} of them with the "
    f"{PRESET} U-Net, {N_GEN} samples per checkpoint ({STEPS} DDIM steps)"
)

# %% [markdown]
# ## The pairing rule
# The five groups are the paper's; the offline stand-in's object class *i* is a shape that takes
# CIFAR-10 class *i*'s place.  (This cell's output is exact on every machine: nbval checks it.)

# %%
# NBVAL_CHECK_OUTPUT
print("\n".join(pairs.groups_table()))
print("stand-in objects:", dict(enumerate(pairs.SHAPE_NAMES)))
print("layouts (quadrants of the two objects):", pairs.LAYOUTS.tolist())

# %% [markdown]
# ## Training images: the ceiling
# `task.measure` classifies the four tiles of `pairs` with an MLP trained on clean tiles (its
# accuracy is on held-out tiles), and fits the object and reflection rectangles of `mirror` to
# sub-pixel precision.  The rule report's x, y for `pairs` are the group of the object tiles and
# of the digit tiles (0 / −1 when a side forms no group), so "rule-conforming %" is exactly the
# valid-group share.

# %%
train, ceiling = {}, {}
for name in ("pairs", "mirror"):
    task = tasks.get(name)
    images, truth = task.sample(N_TRAIN, seed=SEED)
    feats, ok = task.measure(images)
    train[name] = (images, feats, ok)
    ceiling[name] = metrics.rule_report(task, feats, ok, n_boot=N_BOOT, seed=SEED)
shares_train = categorical.pairing_report(tasks.get("pairs"), *train["pairs"][1:], n_boot=N_BOOT)
refl_train = categorical.reflection_report(*train["mirror"][1:], n_boot=N_BOOT)
acc = tasks.get("pairs").accuracy
print(
    f"tile classifier, held-out accuracy: {acc['all']:.3f} (objects {acc['objects']:.3f}, "
    f"digits {acc['digits']:.3f}, object vs digit {acc['kind']:.3f}; {acc['n_test']} tiles)"
)
for key in ("valid_group", "layout", "complete"):
    v = shares_train[key]
    print(f"pairs training images, {key}: {v['value']:.3f} [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}]")
m = ceiling["mirror"]
print(
    f"mirror training images: conforming {m['conforming_pct']['value']:.1f} %, slope "
    f"{m['slope']['value']:.4f} [{m['slope']['ci'][0]:.4f}, {m['slope']['ci'][1]:.4f}], "
    + ", ".join(f"{k} {refl_train[k]['value']:.3f}" for k in ("height", "alignment", "colour"))
)

# the claims: the classifier reads the stand-in tiles (>= 90 % held out), the training images keep
# the pairing (>= 85 % at the CI's lower end; the misses are classifier errors), the encoding makes
# conforming % equal the valid-group share, and mirror's training set is on its rule (slope 1 to 1e-3)
assert acc["all"] >= 0.9 and acc["kind"] >= 0.99, acc
assert shares_train["valid_group"]["ci"][0] >= 0.85, shares_train["valid_group"]
assert (
    abs(ceiling["pairs"]["conforming_pct"]["value"] - 100 * shares_train["valid_group"]["value"])
    < 1e-9
)
assert m["conforming_pct"]["value"] >= 99 and abs(m["slope"]["value"] - 1) < 1e-3, m

# %% [markdown]
# ## A short training run per task
# The DDPM of the project (`rulelib.diffusion`), a few epochs only, a checkpoint every
# few epochs; each checkpoint draws the same noise (DDIM, η = 1, clean-image prediction clipped).


# %%
def run_task(name):
    images = train[name][0][:N_FIT]
    cfg = TrainConfig(
        task=name,
        preset=PRESET,
        epochs=EPOCHS,
        batch_size=32,
        lr=1e-3,
        seed=SEED,
        ema_decay=0.99,
        ema_start=20,
        ckpt_every=max(1, EPOCHS // 2),
        device="cpu",
        sample_weights="ema",
    )
    out = RUNS / name
    trainer.train(cfg, images, out, progress=False)
    rows, last = [], None
    task = tasks.get(name)
    for epoch, ckpt in checkpoint.list_checkpoints(out):
        model, cfg_, _ = checkpoint.load_model(ckpt, weights="ema")
        gen = sampler.sample(
            model,
            cfg_.schedule(),
            N_GEN,
            seed=SEED + 1,
            method="ddim",
            steps=STEPS,
            eta=1.0,
            clip_x0=True,
            progress=False,
        )
        feats, ok = task.measure(gen)
        rule = metrics.rule_report(task, feats, ok, n_boot=N_BOOT, seed=SEED)
        shares = (
            categorical.pairing_report(task, feats, ok, n_boot=N_BOOT)
            if name == "pairs"
            else categorical.reflection_report(feats, ok, n_boot=N_BOOT)
        )
        rows.append({"epoch": epoch, "rule": rule, "shares": shares})
        last = gen
    return rows, last


results = {}
for name in ("pairs", "mirror"):
    t1 = time.time()
    results[name] = run_task(name)
    print(
        f"{name}: trained and sampled {len(results[name][0])} checkpoints in "
        f"{time.time() - t1:.0f} s"
    )


# %%
def _series(rows, get):
    """Values and CI error bars (NaN where undefined) of one metric across checkpoints."""
    val = np.array([np.nan if get(r)["value"] is None else get(r)["value"] for r in rows])
    ci = np.array([get(r)["ci"] or [np.nan, np.nan] for r in rows], dtype=float)
    return val, [val - ci[:, 0], ci[:, 1] - val]


def metric_panel(ax, rows, key, label, train_rep, source):
    """The fine-rule share of the measurable samples and the measurable share of all samples,
    against epoch (95 % CIs), beside the training images' ceiling."""
    ep = [r["epoch"] for r in rows]
    val, err = _series(rows, lambda r: r[source][key])
    ax.errorbar(ep, val, yerr=err, fmt="o-", capsize=3, label=f"generated: {label}")
    mval, merr = _series(rows, lambda r: r["rule"]["measurable_rate"])
    ax.errorbar(
        ep,
        mval,
        yerr=merr,
        fmt="s--",
        capsize=3,
        color="tab:grey",
        label="generated: measurable share (of all)",
    )
    ax.axhspan(*train_rep[key]["ci"], color="tab:green", alpha=0.2)
    ax.axhline(train_rep[key]["value"], color="tab:green", label=f"training images: {label}")
    if np.isnan(val).all():
        ax.text(
            0.5,
            0.5,
            "no generated sample measurable yet",
            transform=ax.transAxes,
            ha="center",
            fontsize=8,
        )
    meas = ", ".join(f"{r['rule']['n_measurable']}/{r['rule']['n']}" for r in rows)
    ax.set_xlabel(f"epoch (measurable samples: {meas})")
    ax.set_xlim(0, max(ep) + 1)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("share (95 % CI)")
    ax.legend(fontsize=7, loc="center left")


def figure(name, key, label, train_rep, source, title):
    rows, gen = results[name]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), gridspec_kw={"width_ratios": [1, 1, 1.4]})
    for ax, imgs, what in (
        (axes[0], train[name][0], "training images"),
        (axes[1], gen, f"samples, epoch {rows[-1]['epoch']}"),
    ):
        ax.imshow(report.image_grid(imgs[:16], ncol=4))
        ax.set_title(what, fontsize=9)
        ax.axis("off")
    metric_panel(axes[2], rows, key, label, train_rep, source)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    plt.show()


figure(
    "pairs",
    "valid_group",
    "valid group (fine rule)",
    shares_train,
    "shares",
    "pairs: samples and the pairing rule against training (stand-in data)",
)

# %%
mirror_train = {"height": refl_train["height"]}
figure(
    "mirror",
    "height",
    "reflection height within 5 %",
    mirror_train,
    "shares",
    "mirror: samples and the reflection rule against training (procedural scenes)",
)

# %% [markdown]
# ## Conclusion (computed)


# %%
def last(name, key):
    v = results[name][0][-1]["shares"][key]
    return v, results[name][0][-1]["rule"]


lines = []
for name, key, what in (
    ("pairs", "valid_group", "keep a valid group"),
    ("mirror", "height", "draw the reflection within 5 % of the object's height"),
):
    v, rule = last(name, key)
    ceil = (shares_train if name == "pairs" else refl_train)[key]
    gen_txt = (
        "no sample was measurable"
        if v["value"] is None
        else f"{100 * v['value']:.0f} % [{100 * v['ci'][0]:.0f}, {100 * v['ci'][1]:.0f}] of the "
        f"{rule['n_measurable']} measurable samples (of {rule['n']})"
    )
    lines.append(
        f"- **{name}**: training images {what} in {100 * ceil['value']:.1f} % "
        f"[{100 * ceil['ci'][0]:.1f}, {100 * ceil['ci'][1]:.1f}]; after "
        f"{results[name][0][-1]['epoch']} epochs {gen_txt}."
    )
    # a short run does not beat its own training data: the samples' lower bound stays under
    # the ceiling's upper bound
    assert v["value"] is None or v["ci"][0] <= ceil["ci"][1], (name, v, ceil)
lines.append(
    f"- The pairs tile classifier reads held-out tiles with {100 * acc['all']:.1f} % "
    "accuracy; the offline data are a stand-in, so these numbers are not the paper's "
    "(23 % generated against 93 % training on CIFAR-10 + MNIST)."
)
print("\n".join(lines))
print(stamp(t0))
