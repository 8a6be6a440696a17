"""Keep freed memory in the process: glibc's dynamic mmap threshold, raised once.

The measurement's blocks (20-40 MB of 1-6 MB arrays) and the trainer's steps (activations of
several MB) free their temporaries after each block or step.  glibc malloc maps every allocation
above its mmap threshold (128 KiB at start) and gives heap memory back to the OS once more than
twice that threshold is free at the top of the heap, so a process that has never freed a large
array faults the pages of each block or step in again: about 10 page faults per measured image,
a sixth of task A's measurement time, and a third of a million faults per 50 training steps.

Freeing one mapped chunk of size S raises both thresholds to S and 2 S (glibc's dynamic mmap
threshold, for S up to DEFAULT_MMAP_THRESHOLD_MAX = 32 MiB on 64-bit): the state any process
reaches once it frees a large array.  ``warm()`` reaches it at once, by allocating and freeing
one array just under 32 MiB.  Unlike ``mallopt`` (or GLIBC_TUNABLES), it keeps the thresholds
dynamic: fixing them slowed torch's training steps 20-35 % in one test.  It pins no memory (the
array is unmapped when freed) and touches no page (``np.empty``); elsewhere than glibc it is a
harmless allocation.  Measured on the 2-core AMD EPYC (benchmarks/measure.py, the trainer):
measurement page faults 40 000-119 000 -> under 700 per 8192 images (clean task A 4 950 -> 5 350
images/s beside two jobs), training faults per 50 steps cut by 60 %, 3-7 % more images/s.
"""

import numpy as np

# Just under DEFAULT_MMAP_THRESHOLD_MAX, so that malloc maps it and its free moves the thresholds.
WARM_BYTES = (32 << 20) - (1 << 16)
_warmed = False


def warm() -> None:
    """Allocate and free one array of WARM_BYTES, once per process."""
    global _warmed
    if not _warmed:
        _warmed = True
        np.empty(WARM_BYTES, np.uint8)  # freed at once: its reference is dropped
