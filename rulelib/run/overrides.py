"""A profile's settings changed without editing code: `--set KEY=VALUE ...` and `--config FILE`.

    python -m rulelib train --task B --profile quick --set lr=3e-4 epochs=100 --out runs/lr3e-4
    python -m rulelib reproduce --config my_settings.toml --out runs/mine

KEY is a field of the profile (rulelib.run.profiles.Profile: `lr`, `batch_size`, `epochs`,
`preset` for the network's width, `n_samples`, `sampling_steps`, ...; FIELDS below lists them with
what each takes) or a further trainer setting (`weight_decay`, and the speed levers `bf16`,
`channels_last`, `compile`).  VALUE is read as a TOML value (`3e-4`, `100`, `true`, `"ddim"`; a
bare word is a string, `none` clears a setting that may be unset).  The config file is TOML with
the same keys, per-task tables for the per-task fields:

    lr = 3e-4
    batch_size = 64
    [epochs]          # or: epochs = 100 (every task)
    default = 100
    A = 50

`--set` is applied after the file.  Every key and value is checked before anything runs: an unknown
key, a value of the wrong type or out of range ends with one line naming it and what is expected.
The changes are recorded with the run (profile.json "overrides", and in "settings" and every
checkpoint's config.json the values used); a folder made with other overrides is refused, and a
command given none takes the folder's own (as with --profile and --seed).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tomllib
from collections.abc import Callable
from pathlib import Path

from rulelib.diffusion import unet
from rulelib.run import profiles


class OverrideError(ValueError):
    """A setting that cannot be applied (the message names the key, the value and what is
    expected)."""


def _int(low: int) -> Callable:
    def check(key, v):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise OverrideError(f"{key} = {v!r}: expected an integer >= {low}")
        return v

    return check


def _float(low: float, high: float = math.inf, *, open_low=False, open_high=False) -> Callable:
    def check(key, v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise OverrideError(f"{key} = {v!r}: expected a number")
        v = float(v)
        if v < low or v > high or (open_low and v == low) or (open_high and v == high):
            lo, hi = "(" if open_low else "[", ")" if open_high else "]"
            want = f"in {lo}{low:g}, {high:g}{hi}" if high < math.inf else (
                f"{'>' if open_low else '>='} {low:g}")  # fmt: skip
            raise OverrideError(f"{key} = {v!r}: expected a number {want}")
        return v

    return check


def _choice(options) -> Callable:
    def check(key, v):
        if v not in options:
            raise OverrideError(f"{key} = {v!r}: expected one of {sorted(options)}")
        return v

    return check


def _bool(key, v):
    if not isinstance(v, bool):
        raise OverrideError(f"{key} = {v!r}: expected true or false")
    return v


def _optional(check: Callable) -> Callable:
    def optional(key, v):
        return None if v is None else check(key, v)

    return optional


def _per_task(check: Callable, *, nullable: bool = False) -> Callable:
    """A per-task table: one value for every task ({"default": v}) or a table of task names."""

    def per_task(key, v):
        if v is None and nullable:
            return None
        if not isinstance(v, dict):
            return {"default": check(key, v)}
        if not v:
            raise OverrideError(f"{key}: an empty table; expected task names or 'default'")
        return {str(k): check(f"{key}.{k}", x) for k, x in v.items()}

    return per_task


# Every key a user may set: the check that validates (and converts) its value, and what it means.
FIELDS: dict[str, tuple[Callable, str]] = {
    "preset": (_choice(set(unet.PRESETS)), "the network (rulelib.diffusion.unet.PRESETS)"),
    "epochs": (_per_task(_int(1), nullable=True), "training epochs, per task or all"),
    "batch_size": (_int(1), "training batch"),
    "lr": (_float(0.0, open_low=True), "AdamW learning rate"),
    "ema_decay": (_float(0.0, 1.0, open_high=True), "EMA decay per step"),
    "ema_start": (_int(0), "optimizer steps before the EMA averages"),
    "ckpt_count": (_int(1), "about this many checkpoints per run"),
    "train_size": (_per_task(_int(1), nullable=True), "training images per task (none: own)"),
    "sampling_method": (_choice({"ddpm", "ddim"}), "the sampler"),
    "sampling_steps": (_optional(_int(1)), "DDIM steps (none: all T steps)"),
    "sampling_eta": (_float(0.0, 1.0), "DDIM eta"),
    "sampling_weights": (_choice({"raw", "ema"}), "the weights sampled"),
    "sampling_clip_x0": (_bool, "clip each step's clean-image prediction to [-1, 1]"),
    "n_samples": (_per_task(_int(1)), "samples scored per task"),
    "sweep_n": (_int(0), "samples per earlier checkpoint in the sweep (0: none)"),
    "sample_batch": (_int(1), "sampling batch"),
    "n_boot": (_int(1), "bootstrap resamples"),
}
# Further TrainConfig fields a profile passes through `extra`.
EXTRA_FIELDS: dict[str, tuple[Callable, str]] = {
    "weight_decay": (_float(0.0), "AdamW weight decay"),
    "bf16": (_optional(_bool), "speed lever: bf16 (none: chosen per machine)"),
    "channels_last": (_optional(_bool), "speed lever: channels_last (none: per machine)"),
    "compile": (_optional(_bool), "speed lever: compiled regions (none: per machine)"),
}
KEYS = (*FIELDS, *EXTRA_FIELDS)


def _value(text: str):
    """A --set value as TOML reads it; a bare word (ddim, raw) is a string, none is None."""
    if text.strip().lower() in ("none", "null"):
        return None
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text.strip()


def parse_assignments(items) -> dict:
    """{"lr": 3e-4, ...} from ["lr=3e-4", ...]; OverrideError for an item without '='."""
    out = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise OverrideError(f"--set {item!r}: expected KEY=VALUE, e.g. lr=3e-4")
        out[key.strip()] = _value(text)
    return out


def read_config(path) -> dict:
    """The settings of a TOML config file; OverrideError naming the file when it cannot be
    read."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise OverrideError(f"--config {path}: no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise OverrideError(f"--config {path}: not a TOML file ({e})") from None


def validate(settings: dict) -> dict:
    """The settings checked and converted (ints where a float is expected become floats, one value
    of a per-task field becomes {"default": value}); OverrideError naming the first bad one."""
    out = {}
    for key, value in settings.items():
        if key not in FIELDS and key not in EXTRA_FIELDS:
            raise OverrideError(f"unknown setting {key!r}; expected one of {', '.join(KEYS)}")
        check = (FIELDS.get(key) or EXTRA_FIELDS[key])[0]
        out[key] = check(key, value)
    return out


def apply(profile: profiles.Profile, settings: dict) -> profiles.Profile:
    """The profile with `settings` (validated here) in place of its own, and the settings recorded
    in its `overrides`.  A per-task table is merged into the profile's own table; where the profile
    has none (the paper's epochs) the table needs a 'default' entry."""
    if not settings:
        return profile
    settings = validate(settings)
    changes, extra = {}, dict(profile.extra)
    for key, value in settings.items():
        if key in EXTRA_FIELDS:
            extra[key] = value
            continue
        own = getattr(profile, key)
        if isinstance(value, dict) and "default" not in value:
            if own is None:
                raise OverrideError(
                    f"{key} = {value!r}: the {profile.name} profile has no table of its own "
                    "here; give a 'default' entry too"
                )
            value = {**own, **value}
        changes[key] = value
    return dataclasses.replace(profile, **changes, extra=extra, overrides=settings)


def from_args(set_items, config) -> dict | None:
    """The settings of `--config FILE` then `--set ...`, validated; None when neither is given
    (the run folder's own apply)."""
    if not set_items and config is None:
        return None
    settings = read_config(config) if config is not None else {}
    settings.update(parse_assignments(set_items))
    return validate(settings)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """--set and --config, for the commands that make a run (train, reproduce, study train)."""
    g = p.add_argument_group("settings (change the profile's without editing code)")
    g.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help=f"change a setting of the profile, e.g. lr=3e-4 epochs=100; keys: {', '.join(KEYS)}",
    )
    g.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="a TOML file of settings (the same keys; --set is applied after it)",
    )
