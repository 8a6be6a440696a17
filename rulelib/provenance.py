"""Provenance: where, when and by which code a result was produced (machine, time, commit)."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path

import torch

# The CPU features that decide which training levers pay (rulelib.diffusion.levers): AMX tiles
# and AVX-512 BF16 run bf16 matrix products natively; with AVX2 alone torch emulates bf16.
# Keys: the names used here -> the flag names of Linux's /proc/cpuinfo.
CPU_FLAGS = {"amx": "amx_tile", "avx512_bf16": "avx512_bf16", "avx512": "avx512f", "avx2": "avx2"}


def _torch_cpu_flags() -> dict[str, bool]:
    """The same flags as torch's own CPU probe sees them (cpuinfo), where /proc is not there."""
    probes = {"amx": "_is_amx_tile_supported", "avx512_bf16": "_is_avx512_bf16_supported",
              "avx512": "_is_avx512_supported", "avx2": "_is_avx2_supported"}  # fmt: skip
    out = {}
    for k, name in probes.items():
        f = getattr(torch.cpu, name, None)
        out[k] = bool(f()) if f is not None else False
    return out


def cpu_info(cpuinfo_text: str | None = None) -> dict:
    """{"model": the CPU's model name, "flags": {amx, avx512_bf16, avx512, avx2: bool}}.

    Read from /proc/cpuinfo (or `cpuinfo_text`, its contents) where there is one; elsewhere the
    model is platform.processor() (sysctl's brand string on macOS) and the flags torch's probe."""
    if cpuinfo_text is None:
        try:
            cpuinfo_text = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo_text = ""
    model, flags = None, None
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key in ("flags", "Features") and flags is None:
            flags = set(value.split())
    if model is None:
        model = _brand_string() or platform.processor() or platform.machine() or "unknown"
    found = {k: f in flags for k, f in CPU_FLAGS.items()} if flags else _torch_cpu_flags()
    return {"model": model, "flags": found}


def _brand_string() -> str | None:
    if platform.system() != "Darwin":
        return None
    try:
        r = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                           text=True, timeout=5)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() or None


def cpu_summary(cpu: Mapping | None = None) -> str:
    """The model and its relevant flags, e.g. 'AMD EPYC (AVX2; no AVX-512, no AVX-512 BF16, no
    AMX)'."""
    cpu = cpu or cpu_info()
    names = {"avx2": "AVX2", "avx512": "AVX-512", "avx512_bf16": "AVX-512 BF16", "amx": "AMX"}
    flags = cpu.get("flags", {})
    has = [v for k, v in names.items() if flags.get(k)]
    lacks = [v for k, v in names.items() if not flags.get(k)]
    parts = ", ".join(has) or "none of AVX2, AVX-512, AMX"
    return f"{cpu.get('model')} ({parts}" + (f"; no {', no '.join(lacks)})" if lacks else ")")


def machine_info() -> dict:
    """The machine in words: CPU model and flags, core count, OS, torch version, GPU name when CUDA
    is present."""
    cpu = cpu_info()
    info = {
        "platform": platform.platform(),
        "processor": cpu["model"],
        "cpu_flags": cpu["flags"],
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
    """One line, e.g. 'GPU NVIDIA H100' or 'CPU AMD EPYC (AVX2; no AVX-512, no AVX-512 BF16,
    no AMX), 2 cores (torch 2.13, 2 threads)' (a record without cpu_flags: the processor alone)."""
    if info.get("gpu"):
        return f"GPU {info['gpu']} (torch {info.get('torch')})"
    cpu = info.get("processor")
    if info.get("cpu_flags"):
        cpu = cpu_summary({"model": cpu, "flags": info["cpu_flags"]})
    return (
        f"CPU {cpu}, {info.get('cpu_count')} cores "
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
