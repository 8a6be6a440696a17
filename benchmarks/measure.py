"""Images per second for rendering and measuring the four rule tasks (issue 2 target: >= 5000/s).

    .venv/bin/python benchmarks/measure.py [--n 20000] [--threads 1]

Renders n images per task (``task.sample``), then measures them (``task.measure``), and prints
wall-clock and CPU-time rates with the share of measurable images.  Run it on an otherwise idle
machine for figures to quote; on a shared one the CPU-time rate is the fairer number.
"""

import argparse
import os
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="images per task")
    ap.add_argument("--threads", type=int, default=1, help="BLAS / torch threads")
    ap.add_argument("--tasks", default="ABCD")
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from rulelib import tasks

    print(f"{args.n} images per task, {args.threads} thread(s)")
    print(
        f"{'task':<5}{'render img/s':>14}{'(cpu)':>10}{'measure img/s':>16}{'(cpu)':>10}{'ok %':>8}"
    )
    for name in args.tasks:
        task = tasks.get(name)
        t0, c0 = time.perf_counter(), time.process_time()
        images, _ = task.sample(args.n, seed=0)
        t1, c1 = time.perf_counter(), time.process_time()
        _, ok = task.measure(images)
        t2, c2 = time.perf_counter(), time.process_time()
        n = args.n
        print(
            f"{name:<5}{n / (t1 - t0):>14.0f}{n / (c1 - c0):>10.0f}"
            f"{n / (t2 - t1):>16.0f}{n / (c2 - c1):>10.0f}{100 * ok.mean():>8.2f}"
        )


if __name__ == "__main__":
    main()
