"""Re-pair and re-execute notebooks at full size: `make notebooks` (or NAMES... to pick some).

Each notebook's first code cell is first rewritten from `rulelib.notebook.colab_cell()`, so the
repository address lives in one place (rulelib.notebook.REPO_URL).  Then jupytext writes the paired
.ipynb and executes it at full size (RULELIB_NOTEBOOK_SIZE=full), the outputs a reader sees.

    .venv/bin/python tools/sync_notebooks.py                        # every notebook
    .venv/bin/python tools/sync_notebooks.py notebooks/02_rule_tasks.py --no-execute
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import jupytext

from rulelib.notebook import SIZE_VARIABLE, colab_cell

ROOT = Path(__file__).resolve().parents[1]


def set_colab_cell(source: Path) -> bool:
    """Rewrite the first code cell of a notebook's .py from the template; True if it changed."""
    nb = jupytext.read(source)
    first = next(c for c in nb.cells if c.cell_type == "code")
    if first.source.strip() == colab_cell().strip():
        return False
    first.source = colab_cell()
    jupytext.write(nb, source, fmt="py:percent")
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "notebooks", nargs="*", type=Path, help="notebooks/NN_name.py (default: all)"
    )
    parser.add_argument(
        "--no-execute",
        action="store_true",
        help="pair only (jupytext --update: the outputs of unchanged code cells are kept)",
    )
    args = parser.parse_args(argv)
    sources = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9]*.py"))
    env = {**os.environ, SIZE_VARIABLE: "full"}
    env.pop("CI", None)
    for source in sources:
        if source.suffix != ".py" or not source.exists():
            raise SystemExit(f"{source}: expected an existing notebooks/NN_name.py")
        if set_colab_cell(source):
            print(f"{source.name}: set-up cell rewritten from rulelib.notebook.colab_cell()")
        cmd = [sys.executable, "-m", "jupytext", "--to", "ipynb", "--set-kernel", "python3"]
        cmd += ["--update"] if args.no_execute else ["--execute"]
        subprocess.run([*cmd, str(source)], check=True, env=env, cwd=ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
