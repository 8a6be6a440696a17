"""What every notebook shares: its size (test or full), its Colab set-up cell and its stamp.

The notebooks run at two sizes.  ``full`` is what a reader sees: the committed ``.ipynb`` files
carry its outputs (``make notebooks`` regenerates them).  ``test`` is what the test command runs
(``make test``; ``notebooks/conftest.py`` sets ``RULELIB_NOTEBOOK_SIZE=test`` for the kernels
nbval starts, and ``CI=true`` selects it too): small settings whose asserts still check every
claim, in about a minute per notebook.
"""

from __future__ import annotations

import os
import time

from rulelib import provenance

SIZE_VARIABLE = "RULELIB_NOTEBOOK_SIZE"

# The repository a notebook clones when rulelib is not installed (Colab).  A fork changes this one
# constant and runs `make notebooks`, which rewrites the set-up cell of every notebook from it.
REPO_URL = "https://github.com/rulelib/rulelib.git"


# The first code cell of every notebook, written by `colab_cell` (`make notebooks` puts it there and
# tests/test_packaging.py checks it): the installed package where there is one, else a clone.
_COLAB_CELL = """\
# Set-up: uses the installed rulelib; on Colab (or any kernel without it) clones and installs it.
# The address is rulelib.notebook.REPO_URL: a fork changes it there and runs `make notebooks`.
import os
import subprocess
import sys

REPO_URL = "{url}"
try:
    import rulelib
except ImportError:
    if not os.path.isdir("rulelib-repo"):
        clone = subprocess.run(["git", "clone", "--depth", "1", REPO_URL, "rulelib-repo"])
        if clone.returncode != 0:
            raise SystemExit(
                f"could not clone {{REPO_URL}} (not published there yet?): upload the repository "
                "as a folder named rulelib-repo next to this notebook, or set REPO_URL to your "
                "fork, and run this cell again"
            ) from None
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "rulelib-repo"], check=True)
    sys.path.insert(0, os.path.abspath("rulelib-repo"))
    import rulelib"""


def colab_cell(url: str = REPO_URL) -> str:
    """The source of every notebook's set-up cell (the repository address filled in)."""
    return _COLAB_CELL.format(url=url)


def size() -> str:
    """'test' under the test command (or CI=true), else 'full'; a bad value is refused."""
    value = os.environ.get(SIZE_VARIABLE, "").strip().lower()
    if value not in ("", "test", "full"):
        raise ValueError(f"{SIZE_VARIABLE}={value!r}; expected 'test' or 'full'")
    if value:
        return value
    return "test" if os.environ.get("CI") == "true" else "full"


def test_size() -> bool:
    """True when the notebook runs at test size (see ``size``)."""
    return size() == "test"


def stamp(started: float) -> str:
    """'ran in 12 s at full size on CPU AMD EPYC ..., 2 cores (...), 2026-11-28T07:00:00+00:00'."""
    info = provenance.machine_info()
    return (
        f"ran in {time.time() - started:.0f} s at {size()} size on "
        f"{provenance.machine_summary(info)}, {provenance.now_iso()}"
    )
