"""What a later ruler needs from a study run, copied next to its summary to be committed.

A run folder (checkpoints of 15 MB each, optimiser state included) stays on the machine that
trained it; a new machine starts without it.  So that any ruler can re-score a study without
retraining, ``collect`` copies, per run, the samples of every scored checkpoint (uint8 npz, about
120 KB per 128 samples) and, once the run is finished, its final EMA weights (safetensors, 3.8 MB
for the small U-Net) into ``<to>/runs/<run>/``: ``samples_<images>.npz`` and
``ema_final.safetensors``.  A run not finished yet (one extended to a larger budget, or stopped)
gets the EMA weights of its newest scored checkpoint instead, ``ema_<images>.safetensors``, which
replaces the copy of an older one.  Weights larger than MAX_WEIGHTS_BYTES (the transformer's
5 MB, a wide U-Net's) are not copied: large binaries do not belong in git, and training is
deterministic, so ``study run --grid ...`` regenerates them to the bit.  Files already there with
the same bytes are left alone; every copy is atomic.
"""

from __future__ import annotations

from pathlib import Path

from rulelib import atomic
from rulelib.diffusion import checkpoint

MAX_WEIGHTS_BYTES = 4_000_000  # the small U-Net's EMA weights (3.8 MB) pass; larger are retrained


def copy_file(src: Path, dst: Path) -> bool:
    """Copy ``src`` to ``dst`` atomically (its folders made); False when ``dst`` already holds
    the same bytes and is left alone."""
    data = src.read_bytes()
    if dst.exists() and dst.read_bytes() == data:
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(dst, data)
    return True


def samples_name(eval_stem: str, n_train: int) -> str:
    """The committed name of the samples scored as ``eval/<eval_stem>``: epoch_000256 ->
    samples_0512000.npz (images seen, with 2000 training images), epoch_000256_raw_ddpm ->
    samples_0512000_raw_ddpm.npz (a sampling variant); the fresh arm's mid-epoch point
    images_000011328 -> samples_0011328.npz."""
    kind, _, rest = eval_stem.partition("_")
    count, _, variant = rest.partition("_")
    images = int(count) * n_train if kind == "epoch" else int(count)
    return f"samples_{images:07d}{'_' + variant if variant else ''}.npz"


def _scored_weights(rdir: Path, n_train: int) -> list[tuple[int, Path]]:
    """(images seen, checkpoint folder) of each scored point whose folder is here: the epoch
    checkpoints and the fresh arm's mid-epoch points (<run>/points/images_N), by images."""
    have = [(e * n_train, p, f"epoch_{e:06d}") for e, p in checkpoint.list_checkpoints(rdir)]
    have += [(int(p.name.removeprefix("images_")), p, p.name)
             for p in (rdir / "points").glob("images_*") if p.is_dir()]  # fmt: skip
    return sorted((i, p) for i, p, tag in have if (rdir / "eval" / f"{tag}.json").exists())


def collect(out, to) -> list[str]:
    """Copy the scored samples and final weights of every run under ``out`` into
    ``<to>/runs/<run>/``; returns the files written (unchanged ones are not rewritten)."""
    written = []
    for rdir in sorted(Path(out).glob("*_*")):
        found = [*(rdir / "eval").glob("epoch_*.npz"), *(rdir / "eval").glob("images_*.npz")]
        evals = sorted(f for f in found if f.with_suffix(".json").exists())  # scored ones only
        ckpts = checkpoint.list_checkpoints(rdir) if (rdir / "checkpoints").is_dir() else []
        if not evals and not ckpts:
            continue
        dest = Path(to) / "runs" / rdir.name
        dest.mkdir(parents=True, exist_ok=True)
        spec = atomic.read_json(rdir / "study_run.json")["run"]
        n_train, last = spec["n_train"], spec["epochs"][-1]
        for f in evals:  # epoch_000091.npz, epoch_000256_raw_ddpm.npz -> images seen
            name = samples_name(f.stem, n_train)
            if copy_file(f, dest / name):
                written.append(str(dest / name))
        scored = _scored_weights(rdir, n_train)
        if ckpts and ckpts[-1][0] == last and (ckpts[-1][1] / "ema.safetensors").exists():
            src, name = ckpts[-1][1], "ema_final.safetensors"
        elif scored and (scored[-1][1] / "ema.safetensors").exists():
            images, src = scored[-1]
            name = f"ema_{images:07d}.safetensors"
        else:
            continue
        big = (src / "ema.safetensors").stat().st_size > MAX_WEIGHTS_BYTES
        for old in dest.glob("ema_*.safetensors"):  # the newest weights only, and none too large
            if old.name != name or big:
                old.unlink()
        if not big and copy_file(src / "ema.safetensors", dest / name):
            written.append(str(dest / name))
    return written
