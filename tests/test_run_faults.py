"""A run folder that no command can damage: arguments checked before anything moves,
incomplete checkpoints set aside by name, file and disk faults named with exit status 2 and
nothing lost, and half-written temporary files cleaned at the next start."""

import errno
import json
import os
import shutil

import numpy as np
import pytest
import torch

from rulelib import atomic, cli
from rulelib.diffusion import checkpoint
from rulelib.diffusion.sample import load_samples


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished smoke run of Task D (no sweep), copied afresh by `run_copy` for each test."""
    out = tmp_path_factory.mktemp("finished")
    cli.reproduce(["D"], "smoke", out, device="cpu", progress=False, quiet=True, sweep=False)
    return out


@pytest.fixture
def run_copy(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def _fails(argv, capsys) -> str:
    """Run the command line; it must exit 2 with one message and no traceback: the message."""
    with pytest.raises(SystemExit) as e:
        cli.main([*argv, "--quiet"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err, err
    return err


def _snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# 1. A rejected command changes nothing ------------------------------------------------------------


@pytest.mark.parametrize("n", ["-5", "0", "many"])
def test_rejected_sample_command_moves_nothing(run_copy, n, capsys):
    before = _snapshot(run_copy)
    err = _fails(["sample", "--task", "D", "--out", str(run_copy), "--n", n], capsys)
    assert f"--n: expected a positive integer, got '{n}'" in err
    assert _snapshot(run_copy) == before  # samples.npz still there, nothing set aside


def test_rejected_sample_call_moves_nothing(run_copy):
    from rulelib.run import folder, stages

    run = folder.resolve(run_copy, ["D"], quiet=True, progress=False, device="cpu")
    before = _snapshot(run_copy)
    for bad in (-5, 0, 2.5, True):
        with pytest.raises(ValueError, match="n .*must be a positive integer"):
            stages.sample(run, "D", n=bad)
    assert _snapshot(run_copy) == before


# 2. An incomplete checkpoint is named and set aside -----------------------------------------------


def test_incomplete_checkpoint_is_named_set_aside_and_retrained(run_copy, finished, capsys):
    d = run_copy / "D"
    last_epoch, last = checkpoint.list_checkpoints(d)[-1]
    (last / "model.safetensors").unlink()
    assert cli.main(["train", "--task", "D", "--out", str(run_copy), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"incomplete checkpoint {last}" in out and f"{last.name}.incomplete" in out
    aside = last.with_name(last.name + ".incomplete")
    assert aside.is_dir() and not (aside / "model.safetensors").exists()
    # retrained from the checkpoint before: the same weights as the original run, to the bit
    (epoch, new), *_ = checkpoint.list_checkpoints(d)[::-1]
    assert epoch == last_epoch and new == last
    original = checkpoint.load_file(
        finished / "D" / "checkpoints" / last.name / "model.safetensors"
    )
    retrained = checkpoint.load_file(new / "model.safetensors")
    assert all(torch.equal(original[k], retrained[k]) for k in original)
    assert (d / "checkpoints" / "latest").read_text().strip() == last.name


def test_a_save_over_an_incomplete_checkpoint_replaces_it(run_copy):
    """The trainer itself (without the command line's cleaning) never refuses after the work."""
    from rulelib.diffusion import train as trainer
    from rulelib.run import profiles

    d = run_copy / "D"
    _, last = checkpoint.list_checkpoints(d)[-1]
    (last / "ema.safetensors").unlink()
    smoke = profiles.get("smoke")
    images, _ = smoke.training_set("D", 0)
    with pytest.warns(RuntimeWarning, match="incomplete checkpoint .* moved to"):
        trainer.train(smoke.train_config("D", device="cpu"), images, d, progress=False)
    assert checkpoint.list_checkpoints(d)[-1][1] == last
    assert (last / "ema.safetensors").is_file()


# 3. File and disk faults: named, exit 2, nothing lost ---------------------------------------------


def test_a_non_image_png_is_named(tmp_path, capsys):
    from PIL import Image

    pngs = tmp_path / "pngs"
    pngs.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(pngs / "0.png")
    (pngs / "1.png").write_text("not an image")
    err = _fails(["evaluate", "--task", "D", "--images", str(pngs)], capsys)
    assert f"{pngs / '1.png'}: not a readable image (UnidentifiedImageError" in err
    assert not (tmp_path / "pngs_eval").exists()


def test_a_png_of_another_size_is_named(tmp_path, capsys):
    from PIL import Image

    pngs = tmp_path / "pngs"
    pngs.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(pngs / "0.png")
    Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(pngs / "1.png")
    err = _fails(["evaluate", "--task", "D", "--images", str(pngs)], capsys)
    assert f"{pngs / '1.png'}: a 24x16 image; expected 32x32" in err


def _disk_full_at(monkeypatch, failing_call: int):
    """torch.save (the checkpoint's state.pt) raises ENOSPC at its `failing_call`-th call, as it
    does on a full disk when it writes through a file object."""
    calls = {"n": 0}
    real = torch.save

    def save(obj, f, *a, **kw):
        calls["n"] += 1
        if calls["n"] == failing_call:
            f.write(b"half a file")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(obj, f, *a, **kw)

    monkeypatch.setattr(checkpoint.torch, "save", save)


def test_full_disk_during_a_checkpoint_is_named_and_loses_nothing(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    argv = ["train", "--task", "D", "--profile", "smoke", "--out", str(out), "--device", "cpu"]
    _disk_full_at(monkeypatch, failing_call=2)  # the second epoch's checkpoint
    err = _fails(argv, capsys)
    target = out / "D" / "checkpoints" / "epoch_000002" / "state.pt"
    assert f"{target}: No space left on device (the disk is full: free space, then run" in err
    ckdir = out / "D" / "checkpoints"
    assert [e for e, _ in checkpoint.list_checkpoints(out / "D")] == [1]  # the first one kept
    assert not list(ckdir.glob(".tmp-*")) and not (ckdir / "epoch_000002").exists()
    assert not (out / "D" / "lock.json").exists()  # the lock is released on failure too
    monkeypatch.undo()
    assert cli.main([*argv, "--quiet"]) == 0  # space again: the same command finishes the run
    assert [e for e, _ in checkpoint.list_checkpoints(out / "D")] == [1, 2]


def test_read_only_run_folder_is_named_and_loses_nothing(run_copy, capsys, monkeypatch):
    d = run_copy / "D"
    before = _snapshot(run_copy)
    if os.geteuid() == 0:  # root writes anyway: inject the refusal at every atomic write

        def refuse(*a, dir=None, **kw):  # noqa: A002 (tempfile's own name)
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))

        monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)
    else:
        for p in [d, *d.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        err = _fails(["evaluate", "--task", "D", "--out", str(run_copy)], capsys)
    finally:
        for p in [d, *d.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
    assert f"{d}" in err and "Permission denied (not writable (or readable) by you" in err
    assert _snapshot(run_copy) == before  # metrics.json, samples, checkpoints as they were


# 4. Half-written files of a killed run are cleaned at the next start ------------------------------


def test_stale_temporary_files_are_removed_at_the_next_start(run_copy, capsys):
    d = run_copy / "D"
    before = _snapshot(run_copy)
    stale_ckpt = d / "checkpoints" / ".tmp-epoch_000003-k1ll3d"
    stale_ckpt.mkdir()
    (stale_ckpt / "model.safetensors").write_bytes(b"half")
    (d / ".metrics.json.x7a.tmp").write_text('{"half": ')
    parts = d / "samples.parts"
    parts.mkdir()
    (parts / ".chunk_000001.npy.q9.tmp").write_bytes(b"\x93NUMPY")
    assert cli.main(["evaluate", "--task", "D", "--out", str(run_copy), "--quiet"]) == 0
    assert not stale_ckpt.exists() and not (d / ".metrics.json.x7a.tmp").exists()
    assert not list(parts.iterdir())
    after = _snapshot(run_copy)
    assert {p: after[p] for p in before if p.suffix in (".npz", ".safetensors", ".pt")} == {
        p: b for p, b in before.items() if p.suffix in (".npz", ".safetensors", ".pt")
    }  # samples and checkpoints untouched; the stale files were never read as results
    assert load_samples(d / "samples.npz")[0].shape[0] == 32


# The mitigation's commands on a run: their own files only, under the folder's lock ----------------


def test_filter_and_guide_write_only_under_mitigation(run_copy, capsys):
    d = run_copy / "D"
    before = _snapshot(run_copy)
    base = ["--task", "D", "--out", str(run_copy), "--device", "cpu", "--quiet"]
    assert cli.main(["filter", *base, "--n-boot", "100"]) == 0
    rep = json.loads((d / "mitigation" / "filter_smallconv.json").read_text())
    n = load_samples(d / "samples.npz")[0].shape[0]
    assert rep["n"] == n and 0 <= rep["kept"] <= n and rep["kept_share"] == rep["kept"] / n
    assert cli.main(["guide", *base, "--scale", "2", "--n", "16", "--n-boot", "100"]) == 0
    (guided,) = (d / "mitigation" / "guided").glob("guide_*.npz")
    assert load_samples(guided)[0].shape == (16, 32, 32, 3)
    assert json.loads(guided.with_suffix(".json").read_text())["report"]["n"] == 16
    after = _snapshot(run_copy)
    assert {p: b for p, b in after.items() if "mitigation" not in p.parts} == before
    assert "| kept / total |" in capsys.readouterr().out  # the filter table was printed


# A refused command changes nothing in the run, whatever it was refused for -----------------------


def _profile_list(run):
    (run / "D" / "profile.json").write_text("[1, 2]")


def _seed_text(run):
    pfile = run / "D" / "profile.json"
    pfile.write_text(pfile.read_text().replace('"seed": 0', '"seed": "0"'))


def _other_network(run):
    _, last = checkpoint.list_checkpoints(run / "D")[-1]
    cfg = json.loads((last / "config.json").read_text())
    (last / "config.json").write_text(json.dumps({**cfg, "preset": "paper"}))


def _task_file_named_d(run):
    (run.parent / "d.py").write_text(
        "from rulelib import tasks\nfrom rulelib.tasks.geometric import TwoCircles\n"
        "class Mine(TwoCircles):\n    name = 'D'\ntasks.register(Mine())\n"
    )


def _not_images(run):
    (run.parent / "x.npz").write_text("not a numpy file")


RUN = ["--out", "{run}", "--device", "cpu"]


@pytest.mark.parametrize(
    "prepare, argv, message",
    [
        (None, ["export", "--out", "{run}", "--to", "{run}", "--max-samples", "5"],
         "is the run folder"),
        (None, ["export", "--out", "{run}", "--to", "{run}/D/x"], "is the run folder"),
        (None, ["evaluate", "--task", "B", "--images", "{run}/D/samples.npz", "--out", "{run}/D"],
         "is a run's task folder"),
        (None, ["filter", "--task", "D", "--seed", "3", *RUN], "not profile 'smoke' seed 3"),
        (None, ["guide", "--task", "D", "--profile", "quick", "--scale", "1", *RUN],
         "not profile 'quick' seed 0"),
        (None, ["guide", "--task", "D", "--scale", "1", "--method", "ddpm", "--steps", "5", *RUN],
         "--steps 5 is for the DDIM sampler"),
        (None, ["guide", "--task", "D", "--scale", "1", "--method", "ddim", "--steps", "5000",
                *RUN], "expected DDIM steps in 1 .. T = 1000"),
        (_profile_list, ["evaluate", "--task", "D", *RUN], "profile.json holds a list"),
        (_seed_text, ["sample", "--task", "D", *RUN], "profile.json: seed '0' is not an integer"),
        (_other_network, ["sample", "--task", "D", "--n", "8", *RUN],
         "does not fit the 'paper' network of its config.json"),
        (_task_file_named_d, ["evaluate", "--task", "D", "--tasks-from", "{run}/../d.py", *RUN],
         "registers task(s) ['D']"),
        (_not_images, ["filter", "--task", "D", "--images", "{run}/../x.npz", *RUN],
         "x.npz: not a numpy file"),
    ],
)  # fmt: skip
def test_a_refused_command_changes_nothing(prepare, argv, message, run_copy, capsys):
    if prepare:
        prepare(run_copy)
    before = _snapshot(run_copy)
    err = _fails([a.replace("{run}", str(run_copy)) for a in argv], capsys)
    assert message in err and "delete it" not in err
    assert _snapshot(run_copy) == before


def test_identical_runs_write_identical_checkpoint_bytes(tmp_path):
    """Whatever state the process's numpy RNG is in, and whatever order safetensors' metadata map
    takes, two identical runs write the same bytes (a hash comparison works); older checkpoints,
    whose headers are not sorted, still load."""
    from rulelib.run import folder, stages

    for name, state in (("a", 1), ("b", 2)):
        np.random.seed(state)  # noqa: NPY002 (what another process would have)
        run = folder.resolve(tmp_path / name, ["D"], "smoke", 0, device="cpu", quiet=True,
                             progress=False)  # fmt: skip
        stages.train(run, "D")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("checkpoints/*/*"))
    assert files and all(
        (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files
    )
    weights = tmp_path / "a" / files[-1].parent / "model.safetensors"
    raw = weights.read_bytes()
    header = raw[8 : 8 + int.from_bytes(raw[:8], "little")]
    assert header.rstrip() == json.dumps(json.loads(header), sort_keys=True,
                                         separators=(",", ":")).encode()  # fmt: skip
    tensors = {k: v.clone() for k, v in checkpoint.load_file(weights).items()}  # not mmapped
    atomic.write_bytes(weights, checkpoint.safetensors_bytes(tensors, {"epoch": "2"}))  # older
    model, _, _ = checkpoint.load_model(weights.parent)
    assert all(torch.equal(v, tensors[k]) for k, v in model.state_dict().items())


def test_a_classifier_of_other_settings_is_set_aside_not_reused(tmp_path):
    from rulelib import tasks
    from rulelib.mitigation import contrastive, pipeline

    task = tasks.get("D")
    imgs, labels, _ = contrastive.make_contrastive(task, 60, 0)
    kw = dict(epochs=1, batch_size=16, quiet=True)
    _, first = pipeline.get_classifier(task, "smallconv", imgs, labels, tmp_path, seed=0, **kw)
    _, again = pipeline.get_classifier(task, "smallconv", imgs, labels, tmp_path, seed=0, **kw)
    assert again == first  # the same settings: read back
    _, other = pipeline.get_classifier(task, "smallconv", imgs, labels, tmp_path, seed=1, **kw)
    assert other["config"]["seed"] == 1 and first["config"]["seed"] == 0
    assert (tmp_path / "clf_smallconv_seed0_1ep.safetensors").is_file()  # kept, not overwritten
