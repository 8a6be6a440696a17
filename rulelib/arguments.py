"""The command line's one argument validator: value types for argparse and the checks that need
several values at once, run before a command writes anything.

Every option of every subcommand (rulelib.cli, rulelib.analytic.command, rulelib.study.command)
is checked in two places, both before the first write:

* its argparse `type=` (`positive_int`, `seed`, `n_boot`, `image_count`, `device`, `profile`,
  ...), so that a bad value ends with argparse's own "argument --X: ..." line and exit status 2;
* `validate(args)`, the checks that need other values or the file system (`--to` inside the run
  folder `--out`, `--steps` given to a sampler that has none, ...), which rulelib.cli.main calls
  after parsing and before dispatch; a subcommand adds its own checks (`Command.validate`).

Zero never means "default": a count is at least 1 (`positive_int`), an option left out is None and
its default is chosen where it is used (`x if x is not None else default`, never `x or default`).
"""

from __future__ import annotations

import argparse
import math

from rulelib.device import resolve_device
from rulelib.run import profiles
from rulelib.run.folder import MAX_SEED
from rulelib.run.images import check_image_count

# A percentile bootstrap CI needs enough resamples for its 2.5 % and 97.5 % quantiles to be
# resampled values, not the ends of a handful (with 1 resample the "95 % CI" is one point, which
# need not contain the estimate): 100 gives 2-3 resamples in each tail.
MIN_N_BOOT = 100


class ArgumentError(argparse.ArgumentTypeError, ValueError):
    """A bad value: argparse reports it as "argument --X: <message>" when a `type=` raises it,
    rulelib.cli.main as "error: <message>" when a check of validate() does."""


def _error(message: str) -> ArgumentError:
    return ArgumentError(message)


def positive_int(text: str) -> int:
    """A count: an integer >= 1 (0 is refused, never read as "the default")."""
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = 0
    if value < 1:
        raise _error(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (nan and inf are refused)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not 0 < value < math.inf:
        raise _error(f"expected a positive number, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (where 0 is a real value: no GPUs, say)."""
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = -1
    if value < 0:
        raise _error(f"expected an integer >= 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (a guidance scale: 0 is no guidance)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not 0 <= value < math.inf:
        raise _error(f"expected a finite number >= 0, got {text!r}")
    return value


def probability(text: str) -> float:
    """A number in [0, 1]."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not 0 <= value <= 1:
        raise _error(f"expected a probability in [0, 1], got {text!r}")
    return value


def seed(text: str) -> int:
    """A seed: an integer in [0, MAX_SEED]."""
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = -1
    if not 0 <= value <= MAX_SEED:
        raise _error(f"expected an integer seed in [0, {MAX_SEED}], got {text!r}")
    return value


def n_boot(text: str) -> int:
    """Bootstrap resamples: at least MIN_N_BOOT (see there)."""
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = 0
    if value < MIN_N_BOOT:
        raise _error(
            f"expected at least {MIN_N_BOOT} bootstrap resamples (fewer give no 95 % CI), got "
            f"{text!r}"
        )
    return value


def image_count(text: str) -> int:
    """A number of images to draw: `positive_int` that fits in memory (`check_image_count`)."""
    n = positive_int(text)
    try:
        return check_image_count(n)
    except ValueError as e:
        raise _error(str(e)) from e


def odd_positive_int(text: str) -> int:
    value = positive_int(text)
    if value % 2 == 0:
        raise _error(f"expected an odd positive integer, got {text!r}")
    return value


def device(text: str) -> str:
    """'auto', 'cpu', 'cuda', 'cuda:1', ...: checked by rulelib.device.resolve_device; the text
    is kept (each stage resolves it the same way)."""
    try:
        resolve_device(text)
    except ValueError as e:
        raise _error(str(e)) from e
    return text


def profile(text: str) -> str:
    """A profile name (rulelib.run.profiles.names())."""
    try:
        profiles.resolve(text)
    except ValueError as e:
        raise _error(str(e)) from e
    return text


# --------------------------------------------------------------------------------------------------
# Checks of several values: validate(args)


def validate(args: argparse.Namespace, extra=None) -> None:
    """The checks of several values (see the module docstring), the subcommand's own
    `extra(args)`; ValueError naming the option and value on the first that fails.  Add a check
    every command shares here."""
    if extra is not None:
        extra(args)
