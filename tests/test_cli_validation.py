"""The command line's one argument validator (rulelib.arguments), tested as a pattern across every
subcommand: no option is a bare int or float, zero is never read as "the default", seeds, devices,
bootstrap counts and image counts are checked before anything is written; and the inputs a user
gives (images, task files, a cache folder) are refused by name, with exit status 2."""

import argparse
import errno
import struct
import zlib

import numpy as np
import pytest

from rulelib import arguments, atomic, cli, tasks
from rulelib.diffusion import levers
from rulelib.run.images import load_images
from rulelib.study import rows as study_rows
from rulelib.study import summary


def _subparsers():
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


def _options(types):
    """(command, option) of every option of every subcommand whose type is one of `types`."""
    return [
        (name, a.option_strings[-1])
        for name, p in _subparsers().items()
        for a in p._actions
        if a.option_strings and a.type in types
    ]


COUNTS = (arguments.positive_int, arguments.image_count, arguments.odd_positive_int)


def _refused(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err, err
    return err


def test_no_option_is_a_bare_int_or_float():
    """Every number goes through a checked type (a bare int takes 0 and -1, a float nan)."""
    bare = [(n, a.option_strings) for n, p in _subparsers().items() for a in p._actions
            if a.type in (int, float)]  # fmt: skip
    assert not bare, bare


@pytest.mark.parametrize("command, option", _options(COUNTS))
@pytest.mark.parametrize("value", ["0", "-1"])
def test_zero_is_never_the_default(command, option, value, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    err = _refused([command, option, value], capsys)
    assert f"argument {option}: expected a" in err and repr(value) in err
    assert not list(tmp_path.iterdir())  # refused at parsing: nothing written


@pytest.mark.parametrize("command, option", _options((arguments.seed,)))
@pytest.mark.parametrize("value", ["-1", "99999999999999999999999"])
def test_every_seed_is_checked_first(command, option, value, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    err = _refused([command, option, value], capsys)
    assert f"argument --seed: expected an integer seed in [0, {arguments.MAX_SEED}]" in err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "command, option, value, message",
    [*((c, o, "1", "expected at least 100 bootstrap resamples")
       for c, o in _options((arguments.n_boot,))),
     *((c, o, "meta", "unknown device 'meta'") for c, o in _options((arguments.device,))),
     *((c, o, "nan", "expected a positive number") for c, o in
       _options((arguments.positive_float,))),
     *((c, o, "10000000000000", "GiB in memory, more than this machine's")
       for c, o in _options((arguments.image_count,)))],
)  # fmt: skip
def test_values_checked_by_every_command(command, option, value, message, tmp_path, monkeypatch,
                                         capsys):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    err = _refused([command, option, value], capsys)
    assert f"argument {option}: " in err and message in err
    assert not list(tmp_path.iterdir())


def test_study_summary_of_a_missing_folder_keeps_the_summary(tmp_path, capsys):
    to = tmp_path / "results"
    to.mkdir()
    (to / "study.json").write_text('{"rows": [1]}')
    err = _refused(["study", "summary", "--out", str(tmp_path / "a/missing"), "--to", str(to)],
                   capsys)  # fmt: skip
    assert "holds no scored study run" in err
    assert (to / "study.json").read_text() == '{"rows": [1]}'
    assert sorted(p.name for p in to.iterdir()) == ["study.json"]


def test_study_pack_and_restore_name_a_missing_folder(tmp_path, capsys):
    err = _refused(["study", "restore", "--parcels", str(tmp_path / "nope"),
                    "--out", str(tmp_path / "s")], capsys)  # fmt: skip
    assert f"--parcels {tmp_path / 'nope'}: no such folder" in err
    err = _refused(["study", "pack", "--out", str(tmp_path / "s"),
                    "--parcels", str(tmp_path / "r")], capsys)  # fmt: skip
    assert f"--out {tmp_path / 's'}: no such folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_study_epochs_must_be_checkpoints(tmp_path, capsys):
    err = _refused(["study", "evaluate", "--epochs", "999", "--out", str(tmp_path / "s")], capsys)
    assert "--epochs [999]: not checkpoints of length_B" in err
    assert not (tmp_path / "s").exists()


# Task files: a failure, an exit, a folder, a task of the paper's name ----------------------------


@pytest.mark.parametrize(
    "body, message",
    [
        ("import sys\nsys.exit(0)\n", "it called sys.exit(0) while loading"),
        ("raise RuntimeError('boom')\n", "failed to load: RuntimeError: boom"),
        (None, "is a folder; expected a .py file or a module name"),
        ("from rulelib import tasks\nfrom rulelib.tasks.geometric import TwoCircles\n"
         "class Mine(TwoCircles):\n    name = 'A'\ntasks.register(Mine())\n",
         "registers task(s) ['A']"),
    ],
)  # fmt: skip
def test_a_bad_task_file_is_refused_and_the_registry_kept(body, message, tmp_path, capsys):
    task_a = tasks.get("A")
    spec = tmp_path / "tasks_dir"
    if body is None:
        spec.mkdir()
    else:
        spec = tmp_path / "my_tasks.py"
        spec.write_text(body)
    out = tmp_path / "o"
    err = _refused(["train", "--task", "A", "--profile", "smoke", "--out", str(out),
                    "--tasks-from", str(spec), "--quiet"], capsys)  # fmt: skip
    assert message in err
    assert tasks.get("A") is task_a and not out.exists()


# User images: one loader, every file named ------------------------------------------------------


def test_a_16bit_png_is_scaled_not_clipped(tmp_path):
    from PIL import Image

    images, _ = tasks.get("A").sample(1, seed=0)
    grey = images[0].mean(axis=-1).round().astype(np.uint16)
    Image.fromarray(grey * 257).save(tmp_path / "g16.png")  # 16-bit grey: 0..65535
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    got = load_images(tmp_path / "g16.png")[0]
    assert np.array_equal(got[..., 0], grey.astype(np.uint8))  # not solid white


def _png_claiming(size, path):
    """A 32x32 PNG whose header says size x size (a decompression bomb's header)."""
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = 8 + 8  # signature, then length and "IHDR"
    data[ihdr : ihdr + 8] = struct.pack(">II", size, size)
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13])))
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: _png_claiming(20000, p.with_suffix(".png")), "a huge image"),
        (lambda p: _png_claiming(64, p.with_suffix(".png")), "a 64x64 image; expected 32x32"),
        (lambda p: np.savez(p.with_suffix(".npz"), images=np.array([object()])),
         "it holds Python objects, which are never unpickled"),
        (lambda p: p.with_suffix(".npz").write_text("hello"), "not a numpy file"),
    ],
)  # fmt: skip
def test_bad_user_images_are_named(make, message, tmp_path, capsys):
    make(tmp_path / "x")
    (src,) = tmp_path.iterdir()
    err = _refused(["evaluate", "--task", "A", "--images", str(src), "--quiet"], capsys)
    assert f"{src}: {message}" in err and "allow_pickle" not in err and "delete" not in err
    assert sorted(tmp_path.iterdir()) == [src]


# Writes that cannot complete name their file; a cache that cannot be written only warns ----------


def test_a_failed_write_names_the_file_not_its_temporary_name(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    with pytest.raises(OSError) as e, atomic.atomic_path(target):
        raise OSError(errno.ENOSPC, "No space left on device")  # as a full disk's write()
    assert e.value.filename == str(target) and e.value.errno == errno.ENOSPC
    monkeypatch.setattr(atomic, "_disk_full", lambda folder: True)
    with pytest.raises(OSError) as e, atomic.atomic_path(target):
        raise OSError("problem writing element 0 to file")  # numpy's, without errno
    assert e.value.filename == str(target) and e.value.errno == errno.ENOSPC
    assert not target.exists() and not list(tmp_path.iterdir())


def test_json_lines_are_appended_atomically_and_a_cut_line_is_skipped(tmp_path):
    log = tmp_path / "train_log.jsonl"
    log.write_text('{"images": 1}\n{"images": 2, "lo')  # an in-place append cut by a kill
    with pytest.warns(RuntimeWarning, match="line 2 is truncated"):
        atomic.append_jsonl(log, {"images": 3})
    assert atomic.read_jsonl(log) == [{"images": 1}, {"images": 3}]
    log.write_text('{"images": 1}\nnot json\n{"images": 3}\n')
    with pytest.raises(ValueError, match=f"{log}: line 2 is not valid JSON"):
        atomic.read_jsonl(log)


@pytest.mark.parametrize("kind", ["file", "read-only folder"])
def test_an_unwritable_cache_only_warns(kind, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    if kind == "file":
        cache.write_text("")
    else:
        cache.mkdir()
        monkeypatch.setattr(atomic.tempfile, "mkstemp", _refuse_write)  # as for root as for users
    monkeypatch.setenv("RULELIB_CACHE_DIR", str(cache))
    with pytest.warns(RuntimeWarning, match="levers cache .* not written"):
        levers._write_cache("key", {"eager": {"images_per_s": 1.0}})


def _refuse_write(*a, dir=None, **kw):  # noqa: A002 (tempfile's own name)
    raise PermissionError(errno.EACCES, "Permission denied", str(dir))


def test_argument_errors_are_value_errors_too():
    """validate() checks raise ValueError, which rulelib.cli.main reports with exit status 2."""
    with pytest.raises(ValueError, match="expected a probability in"):
        arguments.probability("1.5")


def test_a_partly_evaluated_study_run_is_flagged(tmp_path):
    """After a stopped `study evaluate`, the summary says which runs are scored to their end; the
    size figure takes no point from the others."""
    for name, scored in (("size_B_250", [1, 2, 4]), ("size_B_500", [1])):
        rdir = tmp_path / name
        (rdir / "eval").mkdir(parents=True)
        atomic.write_json(rdir / "study_run.json", {"run": {"epochs": [1, 2, 4]}})
        for e in scored:
            atomic.write_json(rdir / "eval" / f"epoch_{e:06d}.json", {"epoch": e, "images": e})
    done = summary.completeness(tmp_path)
    assert done["size_B_250"]["complete"] is True and done["size_B_500"]["complete"] is False
    assert done["size_B_500"] == {"planned": [1, 2, 4], "scored": [1], "complete": False}
    rows = [{"n_train": 250, "images": i, "run_complete": True} for i in (250, 500, 1000)]
    rows.append({"n_train": 500, "images": 500, "run_complete": False})
    rows.append({"n_train": 999, "images": 999})  # carried from an earlier summary: no flag
    kept = [(r["n_train"], r["images"]) for r in study_rows.size_points(rows)]
    assert kept == [(250, 1000), (999, 999)]
