"""The repository's set-up promises: one dependency list for pip and conda, notebooks paired."""

import ast
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
def test_committed_notebook_carries_full_size_outputs(source: Path):
    """The committed .ipynb is what a reader sees: executed at full size (its last cell prints
    rulelib.notebook.stamp: machine, time and size), every NBVAL_CHECK_OUTPUT cell with outputs."""
    notebook = jupytext.read(source.with_suffix(".ipynb"))
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.get("outputs") is not None for c in code)
    printed = "".join(
        "".join(o.get("text", "")) for c in code for o in c.get("outputs", []) if "text" in o
    )
    assert "at full size on" in printed, (
        f"{source.name}: not executed at full size (make notebooks)"
    )
    checked = [c for c in code if "NBVAL_CHECK_OUTPUT" in c.source]
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


def _rulelib_imports() -> tuple[dict[str, set[str]], list[str]]:
    """The package's import graph {module: rulelib modules it imports} and every import of
    rulelib inside a function ('module.function -> target')."""
    modules = {}
    for path in (ROOT / "rulelib").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path

    def targets(node) -> list[str]:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            found = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names
            ]
        else:
            found = [a.name for a in node.names]
        return [t for t in found if t in modules]

    graph, inner = {}, []
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
        graph[name] = {t for n in imports for t in targets(n)} - {name}
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for n in ast.walk(fn):
                    if isinstance(n, (ast.Import, ast.ImportFrom)) and targets(n):
                        inner.append(f"{name}.{fn.name} -> {targets(n)}")
    return graph, inner


def test_imports_go_one_way():
    """No import cycle among rulelib's modules, and no rulelib import hidden inside a function
    (docs/design.md): each module can be read knowing only what it imports at the top."""
    graph, inner = _rulelib_imports()
    assert not inner, inner
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            assert state.get(dep) != 1, f"import cycle: {' -> '.join([*path, module, dep])}"
            if dep not in state:
                visit(dep, [*path, module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert len(graph) > 40 and graph["rulelib.cli"]  # the walk saw the whole package
