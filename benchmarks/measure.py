"""Images per second for rendering and measuring the four rule tasks (issue 2 target: >= 5000/s).

    .venv/bin/python benchmarks/measure.py [--n 20000] [--workers 1 2]

For each task: renders n images (``task.sample``) and measures them (``task.measure``), first in
this process, then split over a pool of worker processes (both are vectorised numpy code, and
images are independent, so k cores give about k times the rate).  Prints wall-clock rates, the
single-process CPU-time rate (the fair figure on a machine shared with other jobs) and the share
of measurable images.
"""

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one BLAS thread per process: parallelism is by processes


def _render(args):
    from rulelib import tasks

    name, n, seed = args
    return tasks.get(name).sample(n, seed=seed)[0]


def _measure(args):
    from rulelib import tasks

    name, images = args
    return tasks.get(name).measure(images)[1]


def _split(n, k):
    return [n // k + (i < n % k) for i in range(k)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="images per task")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="process counts")
    ap.add_argument("--tasks", default="ABCD")
    args = ap.parse_args()
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from rulelib import tasks

    n = args.n
    print(f"{n} images per task; rates in images/second (wall clock; cpu = process CPU time)")
    for name in args.tasks:
        task = tasks.get(name)
        for k in args.workers:
            if k == 1:
                t0, c0 = time.perf_counter(), time.process_time()
                images, _ = task.sample(n, seed=0)
                t1, c1 = time.perf_counter(), time.process_time()
                _, ok = task.measure(images)
                t2, c2 = time.perf_counter(), time.process_time()
                cpu = f"  (cpu: render {n / (c1 - c0):.0f}, measure {n / (c2 - c1):.0f})"
            else:
                with ProcessPoolExecutor(k) as pool:
                    list(pool.map(_render, [(name, 8, i) for i in range(k)]))  # warm up
                    t0 = time.perf_counter()
                    parts = list(
                        pool.map(_render, [(name, m, i) for i, m in enumerate(_split(n, k))])
                    )
                    t1 = time.perf_counter()
                    oks = list(pool.map(_measure, [(name, p) for p in parts]))
                    t2 = time.perf_counter()
                ok, cpu = np.concatenate(oks), ""
            print(
                f"task {name}, {k} process(es): render {n / (t1 - t0):7.0f}, measure "
                f"{n / (t2 - t1):6.0f}, measurable {100 * ok.mean():.2f} %{cpu}"
            )


if __name__ == "__main__":
    main()
