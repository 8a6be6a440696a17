"""Re-pair and re-execute notebooks at full size: `make notebooks` (or NAMES... to pick some).

Each notebook first gets its two opening cells from rulelib.notebook: the "Open in Colab" badge
(`badge_cell`) and the set-up cell (`colab_cell`), both written from the repository address of
pyproject.toml's [project.urls] (rulelib.notebook.REPO_URL), so a fork changes it there and runs
this.  Then jupytext writes the paired .ipynb and executes it at full size
(RULELIB_NOTEBOOK_SIZE=full), the outputs a reader sees.

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
from nbformat import v4

from rulelib.notebook import SIZE_VARIABLE, badge_cell, colab_cell

ROOT = Path(__file__).resolve().parents[1]
SETUP_MARK = "# Set-up:"  # how the set-up cell starts (rulelib.notebook.colab_cell)
BADGE_MARK = "colab-badge.svg"  # what the badge cell holds (rulelib.notebook.badge_cell)


def set_colab_cell(source: Path) -> bool:
    """Open a notebook's .py with the badge cell and the set-up cell, both from the templates
    (an older set-up cell or badge anywhere in it is removed first); True if it changed."""
    nb = jupytext.read(source)
    top = [badge_cell(source.stem), colab_cell()]
    if [c.source.strip() for c in nb.cells[:2]] == [t.strip() for t in top]:
        return False
    rest = [
        c
        for c in nb.cells
        if not (c.cell_type == "code" and c.source.startswith(SETUP_MARK))
        and not (c.cell_type == "markdown" and BADGE_MARK in c.source)
    ]
    nb.cells = [v4.new_markdown_cell(top[0]), v4.new_code_cell(top[1]), *rest]
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
            print(f"{source.name}: badge and set-up cells written from rulelib.notebook")
        cmd = [sys.executable, "-m", "jupytext", "--to", "ipynb", "--set-kernel", "python3"]
        cmd += ["--update"] if args.no_execute else ["--execute"]
        subprocess.run([*cmd, str(source)], check=True, env=env, cwd=ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
