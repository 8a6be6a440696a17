"""Provenance: where, when and by which code a result was produced (machine, time, commit)."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path

import torch


def machine_info() -> dict:
    """The machine in words: CPU, core count, OS, torch version, GPU name when CUDA is present."""
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def machine_summary(info: Mapping) -> str:
    """One line, e.g. 'GPU NVIDIA H100' or 'CPU x86_64, 2 cores (torch 2.13, 2 threads)'."""
    if info.get("gpu"):
        return f"GPU {info['gpu']} (torch {info.get('torch')})"
    return (
        f"CPU {info.get('processor')}, {info.get('cpu_count')} cores "
        f"(torch {info.get('torch')}, {info.get('torch_threads')} threads)"
    )


def git_commit(root: str | os.PathLike | None = None) -> str:
    """The repository's HEAD commit, with '+dirty' when rulelib/ has changes (untracked files
    included) not in that commit; 'unknown' outside a git checkout."""
    root = Path(root) if root else Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "rulelib"],  # the code that made the result
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
