"""Measurement on degraded images, junk rejection and speed, against the measurement's targets.

    .venv/bin/python benchmarks/measure.py [--n 3000] [--junk 300] [--speed-n 8192]
        [--tasks A,B,C,D,mirror] [--seed 0]

For each task, on one process (one BLAS thread):

1. **Robustness** (training-style images, ``task.scene``): clean renders and the degradations of
   generated samples (rulelib.tasks.degrade: per-channel gain 1 +- 0.05 and offset +- 0.03, 0.5 px
   blur, noise std 0.05, per-object colour shifts), all together and each alone.  Prints the
   measurable share, the smallest share over the features of errors within the tolerance (0.1 px
   clean, 0.3 px degraded) and the share of errors within 2 standard errors (``se_<feature>``).
   Targets: clean 100 % / 99 %; degraded >= 99 % measurable, >= 95 % within 0.3 px.
2. **Junk rejection** per kind (rulelib.tasks.degrade ``junk``: blank, uniform noise, another
   task's shapes, an object removed, an object duplicated), clean and degraded.  Target: >= 99 %
   each.
3. **Speed**: images/s of ``task.measure`` (process CPU time and wall clock; the machine is
   shared, so the CPU-time rate is the fair one) per path: segmentation alone (the cost before
   any fit), clean images, degraded images, each also with the early stops off (every
   Gauss-Newton fit iterates to its 1e-3 px step: no one-step stop, ``fit.FAST_STEP``, and no
   stop of the other shape's fit on its residual, ``measure.ALT_COST_TOL``), and degraded
   images with the other-shape fast path off (the other shape fitted on every object),
   measured interleaved (``--repeats`` rounds, the median); then the share of fits that
   stopped after one step and the model evaluations per image, with and without early stops,
   and what each path costs per image (segmentation; closed-form starts and one Gauss-Newton
   step on clean renders; iterated fits and the other shape's fit on degraded images).
   Baseline named in the same run: rendering the images (``task.sample``).  Target: >= 5000
   images/s per task; the last line says on which paths it is met.  Beside it, the paper's
   ruler (rulelib.tasks.paper_ruler: OpenCV contours at 128 px, OpenCV on one thread) on the
   same clean and degraded images: target >= 2000 images/s per core.  (The measurement frees one
   32 MiB array at its first call, after which glibc keeps the blocks' memory: the figures hold
   for a fresh process too; see rulelib.allocator.)

Prints the CPU model first; writes nothing.
"""

import argparse
import contextlib
import os
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one process, one thread: the target's "one process"

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from rulelib import provenance, tasks  # noqa: E402
from rulelib.tasks import degrade, explain, fit, measure, rulers, segment  # noqa: E402

cv2.setNumThreads(1)  # the paper's ruler on one core too
PAPER_TARGET = 2000  # images/s per core of the paper's ruler

W = 32
TARGET = 5000  # images/s per task on one process
LEVELS = [("gain", 0.05), ("offset", 0.03), ("blur", 0.5), ("noise", 0.05)]


def accuracy(task, images, truth, tol):
    """(measurable share, min over features of the share within tol px, min share within 2 SE)."""
    f, ok = task.measure(images)
    if not ok.any():
        return ok.mean(), float("nan"), float("nan")
    err = np.stack([np.abs(f[k] - truth[k]) * W for k in task.feature_names], 1)[ok]
    se = np.stack([f[f"se_{k}"] * W for k in task.feature_names], 1)[ok]
    return ok.mean(), (err <= tol).mean(0).min(), (err <= 2 * se).mean(0).min()


def robustness(task, n, seed):
    params = task.scene(n, seed=seed)
    truth = {k: v for k, v in params.items() if np.ndim(v) == 1}
    clean = task.render(params)
    rows = [("clean", accuracy(task, clean, truth, 0.1), "100 % / 99 % within 0.1 px")]
    images = degrade.perturb_scene(task, params, seed + 1)
    rows.append(("all degradations", accuracy(task, images, truth, 0.3), ">= 99 % / 95 %"))
    for kind, level in LEVELS:
        levels = {key: 0.0 for key, _ in LEVELS} | {kind: level}
        images = degrade.degrade(clean, seed + 2, **levels)
        rows.append((f"{kind} {level}", accuracy(task, images, truth, 0.3), ">= 99 % / 95 %"))
    for label, (share, within, covered), target in rows:
        print(
            f"  {label:<18} measurable {100 * share:6.2f} %   within tol {100 * within:6.2f} %"
            f"   within 2 SE {100 * covered:6.2f} %   (target {target})"
        )


def junk(task, n, seed):
    for kind, images in degrade.junk(task, n, seed).items():
        shares = []
        for imgs in (images, degrade.degrade(images, seed + 1)):
            _, ok = task.measure(imgs)
            shares.append(100 * (1 - ok.mean()))
        print(
            f"  junk {kind:<18} rejected {shares[0]:6.2f} % clean, {shares[1]:6.2f} % degraded"
            f" (n = {len(images)}; target >= 99 %)"
        )


def _rate(fn, n):
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return n / (time.process_time() - c0), n / (time.perf_counter() - t0)


@contextlib.contextmanager
def early_stops_off():
    """Every Gauss-Newton fit iterates to its STEP_TOL step (or its cap): no one-step stop
    (``fit.FAST_STEP``) and no stop of the other shape's fit on its residual
    (``measure.ALT_COST_TOL``)."""
    fast_step, cost_tol = fit.FAST_STEP, measure.ALT_COST_TOL
    fit.FAST_STEP, measure.ALT_COST_TOL = -1.0, None
    try:
        yield
    finally:
        fit.FAST_STEP, measure.ALT_COST_TOL = fast_step, cost_tol


def gauss_newton_paths(task, images):
    """Share of the Gauss-Newton fits that stop after their first step (the one-step stop of
    ``fit._settled``: small step, zero residual) and evaluations of the model per image."""
    got = {"fits": 0, "one": 0, "evals": 0}
    first = [False]
    settled = fit._settled

    def counted(step_max, moved, model, data):
        out = settled(step_max, moved, model, data)
        got["evals"] += len(out)
        if first[0]:  # the first step of a fit covers all of its images
            got["fits"] += len(out)
            got["one"] += int(out.sum())
            first[0] = False
        return out

    def starts(fn):
        def run(*args, **kwargs):
            first[0] = True
            return fn(*args, **kwargs)

        return run

    wrapped = {(m, k): getattr(m, k) for m in (fit, measure) for k in ("fit_rects", "fit_disk")}
    for m, k in ((measure, "fit_rect"), (explain, "fit_rect"), (explain, "fit_disk")):
        wrapped[(m, k)] = getattr(m, k)  # (explain: the other shape's fits)
    try:
        fit._settled = counted
        for (m, k), fn in wrapped.items():
            setattr(m, k, starts(fn))
        task.measure(images)
    finally:
        fit._settled = settled
        for (m, k), fn in wrapped.items():
            setattr(m, k, fn)
    return got["one"] / max(got["fits"], 1), got["evals"] / len(images)


def speed(task, n, repeats, seed):
    """Images/s of each path by process CPU time, interleaved rounds (median), against rendering.

    Paths: segmentation alone (ink, background, colour classes: the cost before any fit); the
    whole measurement of clean renders (its fast paths: white background, the other shape not
    fitted where the object's own shape explains >= 99 % of its coverage map); of degraded
    images (noise leaves > 1 % unexplained, so the other shape is fitted on most objects); and
    of degraded images with the fast path off (the other shape fitted on every object); clean
    and degraded with the early stops off (``early_stops_off``).
    """
    params = task.scene(n, seed=seed)
    clean = task.render(params)
    degraded = degrade.perturb_scene(task, params, seed + 1)
    skip = measure.SKIP_ALT

    def no_early_stop(images):
        with early_stops_off():
            task.measure(images)

    def full_fit():
        measure.SKIP_ALT = -1.0  # fast path off: the other shape fitted on every object
        try:
            task.measure(degraded)
        finally:
            measure.SKIP_ALT = skip

    def segmentation(images):
        for i in range(0, n, measure.CHUNK):  # in the measurement's blocks
            segment.ink_and_classes(images[i : i + measure.CHUNK], with_grey=False)

    runs = {
        "render (baseline)": lambda: task.sample(n, seed=seed),
        "segmentation only, clean": lambda: segmentation(clean),
        "segmentation only, degraded": lambda: segmentation(degraded),
        "measure clean": lambda: task.measure(clean),
        "measure clean without early stops": lambda: no_early_stop(clean),
        "measure degraded": lambda: task.measure(degraded),
        "measure degraded without early stops": lambda: no_early_stop(degraded),
        "measure degraded without fast path": full_fit,
    }
    if rulers.supports(task, "paper"):
        runs["paper ruler clean"] = lambda: rulers.measure(task, clean, "paper")
        runs["paper ruler degraded"] = lambda: rulers.measure(task, degraded, "paper")
    task.measure(clean[:64])  # warm up
    got = {k: [] for k in runs}
    for _ in range(repeats):  # interleaved, so that load on the shared machine hits all alike
        for k, fn in runs.items():
            got[k].append(_rate(fn, n))
    base = np.median([c for c, _ in got["render (baseline)"]])
    cpu = {k: np.median([c for c, _ in v]) for k, v in got.items()}
    for k, v in got.items():
        wall = np.median([w for _, w in v])
        target = "  (target >= 5000/s)" if k.startswith("measure") else ""
        target = f"  (target >= {PAPER_TARGET}/s)" if k.startswith("paper") else target
        print(
            f"  {k:<35} {cpu[k]:7.0f} images/s cpu, {wall:7.0f} wall, "
            f"{cpu[k] / base:5.2f}x render{target}"
        )
    for label, images in (("clean", clean), ("degraded", degraded)):
        one, evals = gauss_newton_paths(task, images[: min(n, 2048)])
        with early_stops_off():
            _, evals_off = gauss_newton_paths(task, images[: min(n, 2048)])
        print(
            f"  {label}: {100 * one:5.1f} % of the Gauss-Newton fits stop after one step "
            f"(zero residual); model evaluations per image {evals:5.2f} "
            f"({evals_off:5.2f} without early stops)"
        )
    us = {k: 1e6 / v for k, v in cpu.items()}  # CPU microseconds per image
    seg_c, seg_d = us["segmentation only, clean"], us["segmentation only, degraded"]
    print(
        f"  cost per image (us of CPU): segmentation {seg_c:5.0f} clean, {seg_d:5.0f} degraded; "
        f"fast path (clean: closed-form starts, one Gauss-Newton step, checks) "
        f"{us['measure clean'] - seg_c:5.0f}; fit path (degraded: iterated fits, other shape) "
        f"{us['measure degraded'] - seg_d:5.0f}"
    )
    met = [k[len("measure ") :] for k in cpu if k.startswith("measure") and cpu[k] >= TARGET]
    missed = [k[len("measure ") :] for k in cpu if k.startswith("measure") and cpu[k] < TARGET]
    print(
        f"  target >= {TARGET}/s per process: met on {', '.join(met) or 'no path'}; "
        f"not met on {', '.join(missed) or 'no path'}"
    )
    paper = {k: v for k, v in cpu.items() if k.startswith("paper")}
    if paper:
        print(
            f"  the paper's ruler: {', '.join(f'{k[12:]} {v:.0f}/s' for k, v in paper.items())} "
            f"(target >= {PAPER_TARGET}/s per core: "
            f"{'met' if min(paper.values()) >= PAPER_TARGET else 'NOT met'}); exact ruler "
            f"{cpu['measure clean']:.0f} / {cpu['measure degraded']:.0f}/s on the same images"
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000, help="images per robustness row")
    ap.add_argument("--junk", type=int, default=300, help="images per junk kind")
    ap.add_argument("--speed-n", type=int, default=8192, help="images per speed measurement")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved speed rounds (median)")
    ap.add_argument("--tasks", default="A,B,C,D,mirror", help="comma-separated (or ABCD)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(provenance.machine_summary(provenance.machine_info()))
    print(f"one process, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}; seed {args.seed}")
    names = args.tasks.split(",") if "," in args.tasks else [args.tasks]
    if names == [args.tasks] and args.tasks not in tasks.names():
        names = list(args.tasks)  # letters: ABCD
    for name in names:
        task = tasks.get(name)
        print(f"task {name} ({task.title})")
        robustness(task, args.n, args.seed)
        junk(task, args.junk, args.seed + 7)
        speed(task, args.speed_n, args.repeats, args.seed + 11)


if __name__ == "__main__":
    main()
