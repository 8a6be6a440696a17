"""What every notebook shares: its size (test or full), its Colab set-up cell, badge and stamp.

The notebooks run at two sizes.  ``full`` is what a reader sees: the committed ``.ipynb`` files
carry its outputs (``make notebooks`` regenerates them).  ``test`` is what the test command runs
(``make test``; ``notebooks/conftest.py`` sets ``RULELIB_NOTEBOOK_SIZE=test`` for the kernels
nbval starts, and ``CI=true`` selects it too): small settings whose asserts still check every
claim, in about a minute per notebook.

Every notebook opens with the same two cells, written by ``tools/sync_notebooks.py``: a Markdown
cell with the "Open in Colab" badge and what to do when the repository cannot be reached
(``badge_cell``), then the set-up code cell (``colab_cell``).  The repository's address lives in
one place, ``[project.urls] Repository`` of pyproject.toml (``repo_url``); on Colab the set-up
cell's form field or the environment variable ``RULELIB_REPO_URL`` overrides it (a fork).
"""

from __future__ import annotations

import os
import re
import time
import tomllib
from importlib import metadata
from pathlib import Path

from rulelib import provenance

SIZE_VARIABLE = "RULELIB_NOTEBOOK_SIZE"
URL_VARIABLE = "RULELIB_REPO_URL"  # overrides the address in the set-up cell (a fork, a mirror)
BRANCH = "main"  # the branch the Colab badges open

_PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def repo_url() -> str:
    """The repository's address: pyproject.toml's [project.urls] Repository in a source checkout,
    else the installed package's metadata (Project-URL: Repository, ...)."""
    if _PYPROJECT.exists():
        urls = tomllib.loads(_PYPROJECT.read_text())["project"].get("urls", {})
        if "Repository" in urls:
            return urls["Repository"]
    for entry in metadata.metadata("rulelib").get_all("Project-URL") or []:
        label, _, url = entry.partition(",")
        if label.strip() == "Repository":
            return url.strip()
    raise LookupError("no [project.urls] Repository in pyproject.toml or the installed metadata")


REPO_URL = repo_url()


def colab_url(notebook: str, url: str = REPO_URL) -> str:
    """Colab's address of a committed notebook (notebooks/<notebook>.ipynb) of a GitHub repo."""
    match = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+?)(?:\.git)?/?", url)
    if match is None:
        raise ValueError(
            f"repository address {url!r}: expected https://github.com/OWNER/NAME (Colab opens "
            "notebooks from GitHub)"
        )
    owner, name = match.groups()
    return (
        f"https://colab.research.google.com/github/{owner}/{name}/blob/{BRANCH}/"
        f"notebooks/{notebook}.ipynb"
    )


_BADGE_CELL = """\
[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab})

**Set-up.** Run the next cell first. With rulelib installed (`make setup`) it does nothing; on
Colab it clones the repository and installs it (about a minute), from {url}.

If that address cannot be reached, the cell stops and says so. Then put the address of a copy
you can reach (your fork) in its `REPO_URL` field or in the environment variable `{variable}`,
or upload the repository as a folder named `rulelib-repo` next to this notebook (Colab: the
Files pane), and run the cell again."""


_COLAB_CELL = """\
# Set-up: uses the installed rulelib; on Colab (or any kernel without it) clones and installs it.
# REPO_URL comes from pyproject.toml's [project.urls]; a fork sets it in the form field (Colab)
# or in the environment variable {variable}.
import os
import subprocess
import sys

REPO_URL = "{url}"  # @param {{type:"string"}}
REPO_URL = os.environ.get("{variable}", REPO_URL)
try:
    import rulelib
except ImportError:
    if not os.path.isdir("rulelib-repo"):
        clone = subprocess.run(["git", "clone", "--depth", "1", REPO_URL, "rulelib-repo"])
        if clone.returncode != 0:
            raise SystemExit(
                f"could not clone {{REPO_URL}}: put an address you can reach (your fork) in "
                "REPO_URL above or in the environment variable {variable}, or upload the "
                "repository as a folder named rulelib-repo next to this notebook; then run this "
                "cell again"
            ) from None
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "rulelib-repo"], check=True)
    sys.path.insert(0, os.path.abspath("rulelib-repo"))
    import rulelib"""


def colab_cell(url: str = REPO_URL) -> str:
    """The source of every notebook's set-up cell (the repository address filled in)."""
    return _COLAB_CELL.format(url=url, variable=URL_VARIABLE)


def badge_cell(notebook: str, url: str = REPO_URL) -> str:
    """The Markdown cell above the set-up cell: the Colab badge of this notebook and what to do
    when the repository cannot be reached."""
    return _BADGE_CELL.format(colab=colab_url(notebook, url), url=url, variable=URL_VARIABLE)


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
