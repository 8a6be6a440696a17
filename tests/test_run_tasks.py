"""A user's own rule task through the command line (`--tasks-from`), the task list taken from the
registry, profiles for tasks without paper numbers, and the subcommand table."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rulelib import cli, tasks
from rulelib.run import folder, profiles
from rulelib.tasks import base

TWO_BARS = Path(__file__).parent / "user_tasks" / "two_bars.py"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def registry():
    """The task registry as it was, restored after the test (user tasks do not leak)."""
    saved = dict(base._REGISTRY)
    yield
    base._REGISTRY.clear()
    base._REGISTRY.update(saved)


def _rulelib(*argv, env=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "rulelib", *argv],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_user_task_reproduces_end_to_end(tmp_path):
    """`reproduce --tasks-from FILE --task E` (the two-bar task of the rulelib.tasks docstring)
    trains, samples, evaluates and sweeps E, and writes the run's report; its training images
    follow E's rule h2 = 2 h1, so the file's measurement and rule were used, not a built-in's."""
    out = tmp_path / "e"
    argv = ["reproduce", "--profile", "smoke", "--tasks-from", str(TWO_BARS), "--task", "E"]
    done = _rulelib(*argv, "--out", str(out), "--device", "cpu", "--quiet")
    assert done.returncode == 0, done.stderr
    m = json.loads((out / "E" / "metrics.json").read_text())
    smoke = profiles.get("smoke")
    assert m["task"] == "E" and m["title"] == "two bars" and m["profile"] == "smoke"
    assert m["generated"]["n"] == smoke.n_samples["default"]
    assert m["train"]["n"] == smoke.train_size["default"]
    assert m["train"]["conforming_pct"]["value"] >= 99.0  # E's own rule, k = 2
    assert m["train"]["coarse_rate"]["value"] == 1.0
    assert (out / "E" / "sweep.csv").is_file() and (out / "report.md").is_file()
    assert "E" in (out / "report.md").read_text()
    assert not list(out.glob("[A-D]"))  # only the task asked for
    # the same folder without --tasks-from: E is unknown, and the message says how to load it
    again = _rulelib("evaluate", "--task", "E", "--out", str(out))
    assert again.returncode == 2
    assert "unknown task 'E'" in again.stderr and "--tasks-from" in again.stderr
    assert "Traceback" not in again.stderr


def test_tasks_from_takes_a_module_name_on_every_command(tmp_path, registry):
    """--tasks-from accepts an importable module name; each subcommand declares the option."""
    parser = cli.build_parser()
    for cmd in ("train", "sample", "evaluate", "reproduce", "guide", "filter"):
        extra = ["--scale", "1"] if cmd == "guide" else []
        args = parser.parse_args([cmd, "--task", "E", "--tasks-from", "x.py", *extra])
        assert args.tasks_from == ["x.py"], cmd
    (tmp_path / "bars_pkg").mkdir()
    (tmp_path / "bars_pkg" / "__init__.py").write_text(TWO_BARS.read_text())
    sys.path.insert(0, str(tmp_path))
    try:
        assert tasks.load_tasks_from("bars_pkg") == ["E"]
        assert tasks.load_tasks_from("bars_pkg") == ["E"]  # imported before: still its tasks
    finally:
        sys.path.remove(str(tmp_path))
    assert tasks.get("E").title == "two bars" and "E" in tasks.names()
    assert cli.parse_tasks(["all"]) == tasks.names()  # 'all' is the registry, E included
    assert cli.parse_tasks(["paper", "e"]) == ["A", "B", "C", "D", "E"]


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist"),
        ("x = 1\n", "registered no task"),
        ("def broken(:\n", "failed to load: SyntaxError"),
        ("import not_a_module_anywhere\n", "failed to load: ModuleNotFoundError"),
    ],
)
def test_bad_task_files_are_named(content, message, tmp_path, registry, capsys):
    path = tmp_path / "mine.py"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=message) as e:
        tasks.load_tasks_from(path)
    assert str(path) in str(e.value)
    with pytest.raises(SystemExit) as e:  # on the command line: exit 2, one line, nothing written
        cli.main(["train", "--tasks-from", str(path), "--task", "A", "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="cannot import task module 'no_such_tasks_module'"):
        tasks.load_tasks_from("no_such_tasks_module")


def test_profiles_serve_any_registered_task(registry):
    """Per-task tables fall back on "default"; the paper profile takes the task's own paper
    epochs, else the paper's image budget over the task's training set; unknown names are refused
    with the registry's list."""
    tasks.load_tasks_from(TWO_BARS)
    paper, quick, smoke = (profiles.get(p) for p in ("paper", "quick", "smoke"))
    assert paper.epochs_for("E") == profiles.PAPER_IMAGE_BUDGET // 2000 == 800
    assert paper.epochs_for("A") == 400  # the paper's own number wins
    assert quick.epochs_for("E") == quick.epochs["default"] and smoke.epochs_for("E") == 2
    assert paper.sampling("E").n == paper.n_samples["default"]
    assert paper.train_config("E").epochs == 800
    with pytest.raises(ValueError, match=r"unknown task 'F'; valid names are \['A', .*'E'.*\]"):
        quick.epochs_for("F")


def test_one_device_resolver(tmp_path, capsys, monkeypatch):
    """--device goes through rulelib.device.resolve_device: an unknown or unavailable device is
    refused before anything is written."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for dev, msg in (("cuda", "CUDA is not available"), ("tpu9", "unknown device 'tpu9'")):
        with pytest.raises(SystemExit) as e:
            cli.main(["train", "--task", "A", "--profile", "smoke", "--out", str(tmp_path / "o"),
                      "--device", dev])  # fmt: skip
        assert e.value.code == 2 and msg in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_subcommand_is_one_table_entry(capsys):
    """Adding a subcommand: one Command entry (name, help, add_arguments, run)."""
    seen = {}

    def add_arguments(p):
        p.add_argument("--x", type=int, required=True)

    def run(args, command):
        seen.update(x=args.x, command=command)
        return 3

    cli.COMMANDS.append(cli.Command("hello", "say hello", add_arguments, run))
    try:
        assert cli.main(["hello", "--x", "4"]) == 3
    finally:
        cli.COMMANDS.pop()
    assert seen == {"x": 4, "command": "python -m rulelib hello --x 4"}
    names = [c.name for c in cli.COMMANDS]
    assert names[:7] == ["train", "sample", "evaluate", "reproduce", "export", "filter", "guide"]
    assert {"analytic", "study"} <= set(names)


def _docstring_example() -> str:
    """The code block of the rulelib.tasks docstring that defines task E (the one after '::')."""
    doc = tasks.__doc__
    start = doc.index('"the right bar is exactly twice as tall as the left bar"::')
    lines = doc[start:].splitlines()[2:]
    block = []
    for line in lines:
        if line and not line.startswith("    "):
            break
        block.append(line[4:])
    return "\n".join(block).strip()


def _code_only(source: str) -> list[str]:
    """The statements of a module as AST dumps: docstrings, comments and formatting ignored."""
    tree = ast.parse(source)
    docstring = (ast.Expr, ast.Constant)
    return [
        ast.dump(n)
        for n in tree.body
        if not (isinstance(n, docstring[0]) and isinstance(n.value, docstring[1]))
    ]


def test_docstring_example_is_the_task_the_tests_run():
    """The two-bar task that rulelib.tasks teaches (tests/test_tasks.py runs the example itself) is
    the code the end-to-end test runs, so neither can drift from the other."""
    example = _docstring_example().splitlines()
    assert example[-1].startswith('images, truth = tasks.get("E").sample(')
    assert _code_only("\n".join(example[:-1])) == _code_only(TWO_BARS.read_text())


def test_a_run_folder_refuses_images_of_other_data(tmp_path, monkeypatch):
    """profile.json records where the task's images came from (pairs and mirror can read real
    files); the folder refuses to continue with other data instead of mixing them."""
    tdir = tmp_path / "D"
    tdir.mkdir()
    smoke = profiles.get("smoke")
    folder.record_identity(tdir, smoke, 0)
    assert json.loads((tdir / "profile.json").read_text())["data"] == "rendered by rulelib"
    folder.check_identity(tdir, smoke, 0)  # the same data: accepted
    monkeypatch.setattr(type(tasks.get("D")), "data_source", lambda self: "files in /x")
    with pytest.raises(folder.RunError, match="files in /x"):
        folder.check_identity(tdir, smoke, 0)


def test_real_data_flags_name_a_missing_folder(tmp_path, capsys):
    missing = tmp_path / "no-such-dir"
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--task", "pairs", "--out", str(tmp_path), "--mnist-dir", str(missing)])
    assert e.value.code == 2
    assert str(missing) in capsys.readouterr().err
