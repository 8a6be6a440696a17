"""The repository's set-up promises: one dependency list for pip and conda, notebooks paired."""

import ast
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import jupytext
import pytest
import yaml  # PyYAML: a dependency of jupytext

from rulelib import notebook

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    """Package name of a requirement string such as 'torch>=2.4' or 'nbval==0.11'."""
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject_packages() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["dev"]
    return {_name(r) for r in reqs}


def _environment_yml_pip() -> list[str]:
    """The `pip:` list of environment.yml, read as conda reads it (YAML)."""
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(sections) == 1, sections
    return [str(entry) for entry in sections[0]]


def _environment_yml_packages() -> set[str]:
    return {_name(e) for e in _environment_yml_pip() if not e.startswith("-")}


def test_environment_yml_installs_the_same_packages_as_pyproject():
    assert _environment_yml_packages() == _pyproject_packages()


def test_environment_yml_applies_the_constraints():
    """conda writes the pip list to a requirements file beside environment.yml and runs pip there,
    so `-c constraints.txt` pins every package to the tested version; the other option lines are
    ones pip reads in a requirements file."""
    pip = _environment_yml_pip()
    assert "-c constraints.txt" in pip, pip
    assert (ROOT / "constraints.txt").is_file()
    options = [e.split()[0] for e in pip if e.startswith("-")]
    assert set(options) <= {"-c", "-e", "--extra-index-url"}, options


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
def test_notebook_opens_with_the_badge_then_the_setup_cell(source: Path):
    """Every notebook opens with its "Open in Colab" badge (and what to do when the repository
    cannot be reached), then the set-up cell, both written from the one repository address of
    pyproject.toml's [project.urls], so a fork changes it there and runs `make notebooks`."""
    cells = _cells(source)
    assert cells[0] == ("markdown", notebook.badge_cell(source.stem).strip()), (
        f"{source.name}: its first cell is not rulelib.notebook.badge_cell(); run "
        f".venv/bin/python tools/sync_notebooks.py {source} --no-execute"
    )
    assert cells[1] == ("code", notebook.colab_cell().strip()), (
        f"{source.name}: its first code cell is not rulelib.notebook.colab_cell(); run "
        f".venv/bin/python tools/sync_notebooks.py {source} --no-execute"
    )
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    assert notebook.REPO_URL == urls["Repository"]
    assert f'REPO_URL = "{urls["Repository"]}"  # @param' in cells[1][1]  # Colab's form field
    assert f'os.environ.get("{notebook.URL_VARIABLE}", REPO_URL)' in cells[1][1]
    colab = f"https://colab.research.google.com/github/{urls['Repository'][19:]}/blob/"
    assert f"({colab}{notebook.BRANCH}/notebooks/{source.stem}.ipynb)" in cells[0][1]


def test_colab_address_is_built_from_a_github_address():
    url = "https://github.com/someone/fork.git"
    assert notebook.colab_url("02_rule_tasks", url) == (
        "https://colab.research.google.com/github/someone/fork/blob/main/notebooks/"
        "02_rule_tasks.ipynb"
    )
    with pytest.raises(ValueError, match="gitlab.com/x/y"):
        notebook.colab_url("02_rule_tasks", "https://gitlab.com/x/y")


def test_setup_cell_takes_the_address_from_the_environment(tmp_path):
    """Run the set-up cell where rulelib cannot be imported and the address cannot be reached: it
    stops with the message that says what to do, naming the address the variable gave."""
    fake = tmp_path / "rulelib.py"
    fake.write_text("raise ImportError('not installed here')\n")
    script = tmp_path / "setup_cell.py"
    script.write_text(notebook.colab_cell())
    bad = str(tmp_path / "no-such-repository")
    env = {**os.environ, notebook.URL_VARIABLE: bad, "PYTHONPATH": str(tmp_path)}
    env["GIT_TERMINAL_PROMPT"] = "0"
    done = subprocess.run(
        [sys.executable, "-S", str(script)], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert f"could not clone {bad}" in done.stderr
    assert notebook.URL_VARIABLE in done.stderr and "rulelib-repo" in done.stderr
    assert not (tmp_path / "rulelib-repo").exists()


@pytest.mark.parametrize("source", NOTEBOOK_SOURCES, ids=lambda p: p.name)
def test_notebook_figures_are_embedded(source: Path):
    """A figure a notebook shows is embedded in it (an image output), never a Markdown link to a
    file beside it, which Colab and most viewers do not show."""
    nb = jupytext.read(source.with_suffix(".ipynb"))
    link = re.compile(r"!\[[^\]]*\]\((?!https?:|data:|attachment:)[^)]+\)")
    images, links = 0, []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            links += link.findall(cell.source)
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            images += "image/png" in data or "image/svg+xml" in data
            links += link.findall("".join(data.get("text/markdown", "")))
    assert not links, f"{source.name}: figures linked, not embedded: {links}"
    assert images > 0, f"{source.name}: no embedded figure"


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


# --------------------------------------------------------------------------------------------------
# What a reader of the repository meets: no tracker numbers, licence, citation, CI, the two commands

# The tree a reader gets (what git tracks, and files not yet committed), without the virtual
# environment, run outputs and caches.
_SKIP_DIRS = {".git", ".venv", "runs", "__pycache__", ".ruff_cache", ".pytest_cache", "build"}
_TEXT = {".py", ".md", ".ipynb", ".toml", ".yml", ".yaml", ".cff", ".txt", ".json", ".csv", ".sh"}


def _reader_files() -> list[Path]:
    found = []
    for path in ROOT.rglob("*"):
        parts = path.relative_to(ROOT).parts
        if any(p in _SKIP_DIRS or p.endswith(".egg-info") for p in parts[:-1]):
            continue
        if path.is_file() and (path.suffix in _TEXT or path.name in ("Makefile", "run")):
            found.append(path)
    return found


def test_no_tracker_issue_numbers_in_the_tree():
    """A reader has no issue tracker: code, tests, notebooks, docs and results say what a thing
    is, never a tracker number ("issue" and a number) or a tracker issue's budget."""
    pattern = re.compile(r"\bissues?\s*#?\s*\d+|\bthe\s+issue'?s\b", re.IGNORECASE)
    hits = []
    for path in _reader_files():
        text = path.read_text(errors="replace")
        for match in pattern.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            hits.append(f"{path.relative_to(ROOT)}:{line}: {match.group(0)!r}")
    assert len(_reader_files()) > 100  # the walk saw the tree
    assert not hits, "\n".join(hits)


def test_no_code_in_results():
    """results/ holds results; the scripts that made them live in tools/ or the package."""
    code = [
        p.relative_to(ROOT) for p in (ROOT / "results").rglob("*") if p.suffix in (".py", ".sh")
    ]
    assert not code, code


def test_licence_citation_and_ci_workflow():
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT"
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    assert cff["repository-code"] == urls["Repository"]
    paper = cff["preferred-citation"]
    assert [a["family-names"] for a in paper["authors"]] == ["Han", "Han", "Huang", "Lu", "Zou"]
    assert paper["year"] == 2025 and "arXiv:2502.04725" in str(paper["identifiers"])
    # a fork's CI runs the README's test command, the same one as .ci/run
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "test.yml").read_text())
    steps = [s.get("run", "") for job in workflow["jobs"].values() for s in job["steps"]]
    assert "make test" in steps
    assert "make test" in (ROOT / "README.md").read_text()


def _make_reproduce_argv(*assignments: str) -> list[str]:
    """The `python -m rulelib reproduce ...` arguments `make reproduce ASSIGNMENTS` runs (make -n
    prints the command without running it)."""
    done = subprocess.run(
        ["make", "-n", "-s", "reproduce", *assignments], cwd=ROOT, capture_output=True,
        text=True, check=True,
    )  # fmt: skip
    line = next(x for x in done.stdout.splitlines() if "-m rulelib reproduce" in x)
    return line.split("-m rulelib ", 1)[1].split()


def test_make_reproduce_smoke_then_default_never_share_a_folder(tmp_path, monkeypatch):
    """The README's `make reproduce PROFILE=smoke` then `make reproduce`: each gets its own
    default folder, so the second is not refused by the first's profile.json. Runs the folder
    logic of both commands in sequence (their arguments as the Makefile passes them)."""
    from rulelib import cli
    from rulelib.run import folder

    monkeypatch.chdir(tmp_path)
    outs = []
    for assignments in (["PROFILE=smoke"], []):
        args = cli.build_parser().parse_args(_make_reproduce_argv(*assignments))
        run = folder.resolve(args.out, ["A"], args.profile, args.seed)
        (run.task_dir("A")).mkdir(parents=True, exist_ok=True)
        folder.record_identity(run.task_dir("A"), run.profile, run.seed)  # refuses a collision
        outs.append(run.out)
    assert outs[0] != outs[1], outs
    # what the check guards against: the second profile in the first one's folder is refused
    with pytest.raises(folder.RunError, match="smoke"):
        folder.record_identity(tmp_path / outs[0] / "A", run.profile, run.seed)


def test_readme_opens_with_the_finding_and_its_figure():
    """A new user reads what the study found, with its figure, on the first screen."""
    readme = (ROOT / "README.md").read_text()
    head = "\n".join(readme.splitlines()[:30])
    start, end = "<!-- finding:start -->", "<!-- finding:end -->"
    assert start in head and end in readme
    finding = readme.split(start, 1)[1].split(end, 1)[0]
    assert re.search(r"!\[[^\]]*\]\(results/study/[^)]+\.png\)", finding), finding
    assert re.search(r"\d\.\d{3}", finding)  # with its numbers
    for figure in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme):
        assert (ROOT / figure).is_file(), figure


def test_user_facing_files_do_not_describe_the_development_setup():
    readme = (ROOT / "README.md").read_text()
    assert "gpu_check" not in readme
    ignored = (ROOT / ".gitignore").read_text().split()
    assert not {".whl/", ".gl/"} & set(ignored), ignored


def test_results_the_study_commits_are_not_ignored_by_git():
    """`study summary --to results/study` writes each run's samples and weights under
    results/study/runs/<run>/; an ignore rule that matched them (a bare `runs/` once did) would
    leave the study with nothing to re-measure on a new machine."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    paths = [
        "results/study/runs/length_B/samples_0512000.npz",
        "results/study/runs/length_B/ema_final.safetensors",
        "results/quick/B/samples.npz",
        "runs/study/length_B/checkpoints/x",  # the training folders stay on their machine
    ]
    res = subprocess.run(
        ["git", "check-ignore", "--no-index", *paths], cwd=ROOT, capture_output=True, text=True
    )
    assert res.returncode in (0, 1), res.stderr
    assert res.stdout.split() == paths[-1:]
