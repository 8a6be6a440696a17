"""The repository's set-up promises: one dependency list for pip and conda, notebooks paired."""

import re
import tomllib
from pathlib import Path

import jupytext
import pytest

from rulelib import notebook

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    """Package name of a requirement string such as 'torch>=2.4' or 'nbval==0.11'."""
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject_packages() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["dev"]
    return {_name(r) for r in reqs}


def _environment_yml_packages() -> set[str]:
    # environment.yml lists the requirements under `pip:`; parsed by hand (no YAML dependency).
    names = set()
    in_pip = False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("- pip:"):
            in_pip = True
            continue
        if in_pip and stripped.startswith("- ") and not stripped.startswith("- -e"):
            names.add(_name(stripped[2:]))
    return names


def test_environment_yml_installs_the_same_packages_as_pyproject():
    assert _environment_yml_packages() == _pyproject_packages()


def test_constraints_pin_every_package_ci_installs():
    pinned = {
        _name(line)
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert _pyproject_packages() <= pinned, _pyproject_packages() - pinned


NOTEBOOK_SOURCES = sorted((ROOT / "notebooks").glob("[0-9]*.py"))


def _cells(path: Path) -> list[tuple[str, str]]:
    notebook = jupytext.read(path)
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


@pytest.mark.parametrize("source", NOTEBOOK_SOURCES, ids=lambda p: p.name)
def test_notebook_py_and_ipynb_are_paired(source: Path):
    paired = source.with_suffix(".ipynb")
    sync = f"run .venv/bin/python tools/sync_notebooks.py {source.relative_to(ROOT)}"
    assert paired.exists(), f"{paired.name} is missing: {sync}"
    assert _cells(source) == _cells(paired), f"{source.name} and {paired.name} differ: {sync}"


@pytest.mark.parametrize("source", NOTEBOOK_SOURCES, ids=lambda p: p.name)
def test_committed_notebook_was_executed(source: Path):
    """nbval compares outputs of `# NBVAL_CHECK_OUTPUT` cells, so the .ipynb must carry them."""
    notebook = jupytext.read(source.with_suffix(".ipynb"))
    checked = [c for c in notebook.cells if "NBVAL_CHECK_OUTPUT" in c.source]
    assert checked, f"{source.name} has no # NBVAL_CHECK_OUTPUT cell"
    assert all(c.get("outputs") for c in checked), f"{source.name}: checked cells lack outputs"


@pytest.mark.parametrize("source", NOTEBOOK_SOURCES, ids=lambda p: p.name)
def test_setup_cell_is_the_shared_template(source: Path):
    """The Colab set-up cell is written from one template holding the repository address, so a
    fork changes rulelib.notebook.REPO_URL and runs `make notebooks`."""
    first = next(src for kind, src in _cells(source) if kind == "code")
    assert first == notebook.colab_cell().strip(), (
        f"{source.name}: its first code cell is not rulelib.notebook.colab_cell(); run "
        f".venv/bin/python tools/sync_notebooks.py {source}"
    )
    assert notebook.REPO_URL in first


def test_notebook_size_follows_the_test_command(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv(notebook.SIZE_VARIABLE, raising=False)
    assert notebook.size() == "full"
    monkeypatch.setenv("CI", "true")
    assert notebook.test_size()
    monkeypatch.setenv(notebook.SIZE_VARIABLE, "full")
    assert notebook.size() == "full"  # the explicit setting wins over CI
    monkeypatch.setenv(notebook.SIZE_VARIABLE, "huge")
    with pytest.raises(ValueError, match="huge"):
        notebook.size()


def test_makefile_runs_notebooks_at_test_size():
    """`make test` (so .ci/run too) selects the test size itself: the user sets no variable."""
    test_rule = (ROOT / "Makefile").read_text().split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert f"{notebook.SIZE_VARIABLE}=test" in test_rule
    assert "notebooks" in test_rule
    assert "make test" in (ROOT / ".ci" / "run").read_text()
