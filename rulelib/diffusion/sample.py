"""Samplers: DDPM ancestral (the paper's) and DDIM, batched, seeded and resumable.

- `ddpm_step`: one ancestral step, Ho et al. 2020 eq. 11 with sigma_t^2 = beta_t (the paper's
  choice; section 3.2 of Ho et al. also allows beta-tilde_t, the true posterior variance), no noise
  at the last step (t = 0).
- `ddim_step`: one DDIM step, Song, Meng & Ermon 2021 eq. 12 with sigma from eq. 16 scaled by eta.
- `sample`: runs either from x_T ~ N(0, I) down to x_0, clips to [-1, 1] and returns uint8 images
  (n, 32, 32, 3).

Seeding guarantee. Sample indices are cut into fixed "noise chunks" of `noise_chunk` samples
(default 16); chunk c draws its starting noise and every step's noise from its own generator seeded
from (seed, c). A batch is a whole number of chunks. So for a given (seed, n, noise_chunk, method,
steps, eta) the random numbers each sample sees do not depend on `batch_size` or on where a resumed
run restarted; the images then agree up to the floating-point differences between batched kernels
of different batch sizes (bitwise on the same batch size; within one uint8 level in our tests
otherwise).

Resumable output. With `out_path=".../samples.npz"`, every finished noise chunk is saved at once
as `.../samples.parts/chunk_XXXXXX.npy` (atomically); a rerun with the same settings loads the
finished chunks and samples only the rest; at the end the images go to the npz (compressed,
atomic) and the parts folder is removed. A rerun after completion returns the saved images; a
rerun asking for more samples with otherwise equal settings keeps the saved ones as its first
whole chunks (the same draws, by the seeding guarantee) and draws only the rest. A rerun with
other different settings is refused (ValueError naming the differing keys) rather than
mixing or overwriting samples.  Every chunk read back, and every finished npz, is checked against
the recorded settings (count, shape, dtype uint8); one that is unreadable or does not match is
refused by a ValueError naming the file, never scored.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from rulelib import atomic
from rulelib.diffusion.schedule import Schedule, tensor_to_images

NOISE_CHUNK = 16


def ddpm_step(
    schedule: Schedule,
    x_t: torch.Tensor,
    t: int,
    eps: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    noise: torch.Tensor | None = None,
    variance: str = "beta",
) -> torch.Tensor:
    """x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha-bar_t) eps) + sigma_t z  (Ho et al.
    eq. 11), z ~ N(0, I) for t > 0 and z = 0 at t = 0 (Algorithm 2, line 3).

    sigma_t^2 = beta_t (variance="beta", the paper's) or beta-tilde_t = (1 - alpha-bar_{t-1}) /
    (1 - alpha-bar_t) beta_t (variance="beta_tilde"). z comes from `noise` if given, else from
    `generator`. t is the 0-based index (0 .. T-1) of the current step.
    """
    beta = float(schedule.betas_f64[t])
    ab = float(schedule.alpha_bars_f64[t])
    mean = (x_t - (beta / math.sqrt(1.0 - ab)) * eps) / math.sqrt(1.0 - beta)
    if t == 0:
        return mean
    if variance == "beta":
        var = beta
    elif variance == "beta_tilde":
        var = (1.0 - float(schedule.alpha_bars_f64[t - 1])) / (1.0 - ab) * beta
    else:
        raise ValueError(f"variance must be 'beta' or 'beta_tilde', got {variance!r}")
    if noise is None:
        noise = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
    return mean + math.sqrt(var) * noise


def ddim_step(
    schedule: Schedule,
    x_t: torch.Tensor,
    t: int,
    t_prev: int,
    eps: torch.Tensor,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    *,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """x_{t_prev} = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps + sigma z  (Song et al.
    eq. 12), x0_hat = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t), sigma = eta sqrt((1 - ab_prev) /
    (1 - ab_t)) sqrt(1 - ab_t / ab_prev) (eq. 16). t_prev = -1 means the end: ab_prev = 1, so the
    step returns x0_hat. With eta = 1 and t_prev = t - 1 this is DDPM with sigma_t^2 = beta-tilde_t.
    """
    if not -1 <= t_prev < t:
        raise ValueError(f"need -1 <= t_prev < t, got t={t}, t_prev={t_prev}")
    ab = float(schedule.alpha_bars_f64[t])
    ab_prev = float(schedule.alpha_bars_f64[t_prev]) if t_prev >= 0 else 1.0
    x0_hat = (x_t - math.sqrt(1.0 - ab) * eps) / math.sqrt(ab)
    sigma = eta * math.sqrt((1.0 - ab_prev) / (1.0 - ab)) * math.sqrt(1.0 - ab / ab_prev)
    x = math.sqrt(ab_prev) * x0_hat + math.sqrt(max(1.0 - ab_prev - sigma**2, 0.0)) * eps
    if sigma > 0.0:
        if noise is None:
            noise = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
        x = x + sigma * noise
    return x


def clip_eps(schedule: Schedule, x_t: torch.Tensor, t: int, eps: torch.Tensor) -> torch.Tensor:
    """The noise estimate whose clean-image prediction is clipped to the data range [-1, 1].

    x0_hat = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t) (Ho et al. eq. 15) is clamped to [-1, 1]
    and eps is recomputed from it, eps' = (x_t - sqrt(ab_t) clamp(x0_hat)) / sqrt(1 - ab_t), so
    both update rules above see a prediction inside the data range (diffusers' `clip_sample`).
    Off by default (the paper clips only the final output); the CPU `quick` profile turns it on,
    because its barely trained model's unclipped predictions run to black or grey images.
    """
    ab = float(schedule.alpha_bars_f64[t])
    x0_hat = ((x_t - math.sqrt(1.0 - ab) * eps) / math.sqrt(ab)).clamp(-1.0, 1.0)
    return (x_t - math.sqrt(ab) * x0_hat) / math.sqrt(1.0 - ab)


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """The DDIM sub-sequence, highest first: `steps` indices spread evenly over 0 .. T-1, both ends
    included (so the first step starts from pure noise at T-1, and steps = T gives every step)."""
    if not 1 <= steps <= T:
        raise ValueError(f"DDIM steps must be in 1 .. T={T}, got {steps}")
    ts = np.unique(np.round(np.linspace(0, T - 1, steps)).astype(int))
    return [int(t) for t in ts[::-1]]


def _chunk_generator(seed: int, chunk: int, device: torch.device) -> torch.Generator:
    # SeedSequence mixes (seed, chunk) so that neighbouring chunks get unrelated streams.
    s = int(np.random.SeedSequence([int(seed), int(chunk)]).generate_state(1, np.uint64)[0])
    return torch.Generator(device=device).manual_seed(s & 0x7FFF_FFFF_FFFF_FFFF)


def _randn(gens, sizes, shape, device) -> torch.Tensor:
    return torch.cat(
        [torch.randn((m, *shape), generator=g, device=device) for g, m in zip(gens, sizes)]
    )


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def _diff_keys(a: dict, b: dict) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)


_REDRAW = "delete it and run the same command to draw it again"
_GIVEN = "expected a samples.npz written by rulelib's sampler (python -m rulelib sample)"


def _refuse(path, problem: str, hint: str = _REDRAW) -> ValueError:
    """A samples file that cannot be used: a run's own is redrawn once deleted; a file the user
    gave (`given`) is theirs, and is never to be deleted on our say."""
    return ValueError(f"{path}: {problem}; {hint}")


def _check_images(path, images: np.ndarray, n: int | None, what: str,
                  hint: str = _REDRAW) -> np.ndarray:  # fmt: skip
    """uint8 (n, H, W, C) images, n as recorded; else a ValueError naming the file."""
    want = f"uint8 ({'n' if n is None else n}, H, W, C)"
    ok = images.dtype == np.uint8 and images.ndim == 4
    if not ok or (n is not None and len(images) != n):
        raise _refuse(path, f"{what} holds {images.dtype} {images.shape}, expected {want}", hint)
    return images


def load_samples(path, *, given: bool = False) -> tuple[np.ndarray, dict]:
    """Read an npz written by `sample(out_path=...)`: (uint8 images, settings dict).

    ValueError naming the file when it is unreadable, or its images are not uint8 (n, H, W, C)
    with the n its settings record.  given: a file the user named (not a run's own): the error
    then says what was expected instead of asking to delete it."""
    hint = _GIVEN if given else _REDRAW
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"])) if "meta" in z else {}
            images = z["images"]
    except _READ_ERRORS as e:
        why = "holds Python objects or is not a numpy file" if "pickle" in str(e) else e
        raise _refuse(path, f"not a readable samples file ({type(e).__name__}: {why})",
                      hint) from e  # fmt: skip
    return _check_images(path, images, meta.get("n"), "the samples file", hint), meta


def _load_chunk(path: Path, n: int, shape: tuple[int, int, int]) -> np.ndarray:
    """A finished noise chunk: uint8 (n, H, W, C) as recorded, else ValueError naming it."""
    try:
        chunk = np.load(path, allow_pickle=False)
    except _READ_ERRORS as e:
        raise _refuse(path, f"not a readable sample chunk ({type(e).__name__}: {e})") from e
    c, h, w = shape
    if chunk.dtype != np.uint8 or chunk.shape != (n, h, w, c):
        raise _refuse(
            path, f"chunk holds {chunk.dtype} {chunk.shape}, expected uint8 {(n, h, w, c)} "
            "(its samples as recorded in settings.json)"
        )  # fmt: skip
    return chunk


def sample_settings(
    schedule: Schedule,
    n: int,
    *,
    seed: int,
    method: str = "ddpm",
    steps: int | None = None,
    eta: float = 0.0,
    clip_x0: bool = False,
    noise_chunk: int = NOISE_CHUNK,
    meta: dict | None = None,
) -> dict:
    """The settings `sample` records with (and checks against) resumable output: everything that
    decides the images.  steps: DDPM always runs T; DDIM `steps` (None: 50, as `sample`)."""
    return {
        "n": n,
        "seed": int(seed),
        "method": method,
        "steps": schedule.T if method == "ddpm" else 50 if steps is None else int(steps),
        "eta": float(eta) if method == "ddim" else None,
        "noise_chunk": noise_chunk,
        "clip_x0": bool(clip_x0),
        "T": schedule.T,
        "beta_start": schedule.beta_start,
        "beta_end": schedule.beta_end,
        **(meta or {}),
    }


def stored_settings(out_path) -> dict | None:
    """Settings of the samples at `out_path`: of the finished npz, else of its partial
    `.parts` folder; None when there are neither."""
    out_path = Path(out_path)
    parts = out_path.with_name(out_path.stem + ".parts") / "settings.json"
    if out_path.exists():
        return load_samples(out_path)[1]
    if parts.exists():
        return atomic.read_json(parts)
    return None


def _timesteps(schedule: Schedule, method: str, steps: int | None) -> list[int]:
    """The reverse process's timesteps, newest first: all T for DDPM, `steps` (50) for DDIM."""
    if method == "ddpm":
        if steps not in (None, schedule.T):
            raise ValueError(f"DDPM runs all T={schedule.T} steps; got steps={steps} (use ddim)")
        return list(range(schedule.T - 1, -1, -1))
    if method == "ddim":
        return ddim_timesteps(schedule.T, 50 if steps is None else steps)
    raise ValueError(f"method must be 'ddpm' or 'ddim', got {method!r}")


def _fewer_draws(old: dict, settings: dict) -> bool:
    """Whether samples made with ``old`` settings are the first draws of ``settings``: every
    setting equal but n, and fewer of them.  Chunk c's noise depends on (seed, c) alone, so the
    old run's whole chunks are the new run's first chunks (a partial last chunk is drawn again:
    its later steps' noise comes from a shorter stream)."""
    return _diff_keys(old, settings) == ["n"] and old["n"] < settings["n"]


def _resume_chunks(parts: Path, settings: dict, chunk_sizes, image_shape) -> dict[int, np.ndarray]:
    """The finished chunks of an interrupted run in `parts` (checked against the recorded
    settings, count, shape and dtype), after recording the settings of a new one."""
    parts.mkdir(parents=True, exist_ok=True)
    meta_file = parts / "settings.json"
    if meta_file.exists():
        old = atomic.read_json(meta_file)
        if old != settings:
            raise ValueError(
                f"{parts} holds partial samples made with different settings "
                f"(differing: {_diff_keys(old, settings)}); delete it or choose another path"
            )
    else:
        atomic.write_text(meta_file, json.dumps(settings, indent=1))
    done = {}
    for c, size in enumerate(chunk_sizes):
        f = parts / f"chunk_{c:06d}.npy"
        if f.exists():
            done[c] = _load_chunk(f, size, image_shape)
    return done


def _reverse_process(x, eps_fn, noise, *, schedule, ts, method, eta, clip_x0, bf16, bar):
    """x_T -> x_0 by DDPM ancestral steps (Ho et al. eq. 11) or DDIM steps (Song et al. eq. 12);
    `noise()` draws the next N(0, I) of every chunk from its own generator."""
    for i, t in enumerate(ts):
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            eps = eps_fn(x, tt)
        eps = eps.float()
        if clip_x0:
            eps = clip_eps(schedule, x, t, eps)
        if method == "ddpm":
            x = ddpm_step(schedule, x, t, eps, noise=noise() if t > 0 else None)
        else:
            t_prev = ts[i + 1] if i + 1 < len(ts) else -1
            x = ddim_step(schedule, x, t, t_prev, eps, eta, noise=noise() if eta > 0 else None)
        bar.update(1)
    return x


def sample(
    model: torch.nn.Module | None,
    schedule: Schedule,
    n: int,
    *,
    seed: int,
    method: str = "ddpm",
    steps: int | None = None,
    eta: float = 0.0,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    out_path=None,
    progress: bool = True,
    eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    noise_chunk: int = NOISE_CHUNK,
    bf16: bool = False,
    clip_x0: bool = False,
    image_shape: tuple[int, int, int] = (3, 32, 32),
    meta: dict | None = None,
) -> np.ndarray:
    """Draw n images; returns uint8 (n, 32, 32, 3).

    method: "ddpm" (ancestral, `steps` must be None or T) or "ddim" (`steps` sub-steps, default 50,
    `eta` 0 deterministic, 1 ancestral on the sub-sequence). batch_size bounds memory (rounded down
    to whole noise chunks). eps_fn(x_t, t) -> eps, t an int64 (B,) tensor, replaces the call
    model(x_t, t) (guidance wraps the model in it; model may then be None). bf16: autocast the
    network in bfloat16 (the update arithmetic stays float32). clip_x0: clip each step's clean-image
    prediction to [-1, 1] (`clip_eps`). `meta` adds entries (e.g. the
    checkpoint) to the settings recorded with, and checked against, resumable output.
    """
    if model is None and eps_fn is None:
        raise ValueError("give a model or an eps_fn")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if noise_chunk < 1 or batch_size < noise_chunk:
        raise ValueError(
            f"batch_size must be at least noise_chunk={noise_chunk} (and noise_chunk >= 1), "
            f"got batch_size={batch_size}"
        )
    ts = _timesteps(schedule, method, steps)
    if device is None:
        device = next(model.parameters()).device if model is not None else "cpu"
    device = torch.device(device)
    if eps_fn is None:
        model.eval()

        def eps_fn(x, t):
            return model(x, t)

    settings = sample_settings(
        schedule, n, seed=seed, method=method, steps=len(ts), eta=eta, clip_x0=clip_x0,
        noise_chunk=noise_chunk, meta=meta,
    )  # fmt: skip
    n_chunks = math.ceil(n / noise_chunk)
    chunk_sizes = [min(noise_chunk, n - c * noise_chunk) for c in range(n_chunks)]
    done: dict[int, np.ndarray] = {}
    parts = None
    if out_path is not None:
        out_path = Path(out_path)
        earlier = None
        if out_path.exists():  # finished earlier: the same settings, fewer draws, or a refusal
            images, old = load_samples(out_path)
            if old == settings:
                return images
            if not _fewer_draws(old, settings):
                raise ValueError(
                    f"{out_path} holds samples made with different settings "
                    f"(differing: {_diff_keys(old, settings)}); delete it or choose another path"
                )
            earlier = images
        parts = out_path.with_name(out_path.stem + ".parts")
        done = _resume_chunks(parts, settings, chunk_sizes, image_shape)
        if earlier is not None:  # its whole chunks are this run's first chunks, draw for draw
            for c in range(len(earlier) // noise_chunk):
                done.setdefault(c, earlier[c * noise_chunk : (c + 1) * noise_chunk])

    todo = [c for c in range(n_chunks) if c not in done]
    per_batch = batch_size // noise_chunk
    batches = [todo[i : i + per_batch] for i in range(0, len(todo), per_batch)]
    bar = tqdm(
        total=len(batches) * len(ts),
        desc=f"{method} {len(ts)} steps, {len(todo) and sum(chunk_sizes[c] for c in todo)} images",
        disable=not progress,
        unit="step",
    )
    step = dict(schedule=schedule, ts=ts, method=method, eta=eta, clip_x0=clip_x0, bf16=bf16)
    with torch.inference_mode():
        for chunks in batches:
            sizes = [chunk_sizes[c] for c in chunks]
            gens = [_chunk_generator(seed, c, device) for c in chunks]
            noise = functools.partial(_randn, gens, sizes, image_shape, device)
            x = _reverse_process(noise(), eps_fn, noise, bar=bar, **step)
            imgs = tensor_to_images(x)  # clip to [-1, 1] (docs/paper.md section 4), then to uint8
            start = 0
            for c, m in zip(chunks, sizes):
                done[c] = imgs[start : start + m]
                start += m
                if parts is not None:
                    _atomic_save_npy(parts / f"chunk_{c:06d}.npy", done[c])
    bar.close()
    images = np.concatenate([done[c] for c in range(n_chunks)])
    if out_path is not None:
        with atomic.atomic_path(out_path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, images=images, meta=np.array(json.dumps(settings)))
        shutil.rmtree(parts)
    return images
