"""The command line, profiles and reports: a smoke `reproduce` end to end, resuming, scoring images
made elsewhere (npz and PNG folder), and clear errors on bad input."""

import json

import numpy as np
import pytest
import torch

from rulelib import atomic, cli, metrics, report, tasks
from rulelib.diffusion import checkpoint as trainer
from rulelib.diffusion.sample import load_samples
from rulelib.run import folder, profiles, stages
from rulelib.run.folder import RunSettings


def _run(out, profile="smoke", seed=0) -> RunSettings:
    """The settings of a quiet CPU run into `out` (what the command line resolves once)."""
    return RunSettings(
        out=out, profile=profiles.get(profile), seed=seed, device=torch.device("cpu"),
        progress=False, quiet=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One smoke reproduction of Task A (the profile CI uses), shared by the tests below."""
    out = tmp_path_factory.mktemp("run")
    entries = cli.reproduce(["A"], "smoke", out, device="cpu", progress=False, quiet=True)
    return out, entries


def test_reproduce_writes_every_result(smoke_run):
    out, entries = smoke_run
    a = out / "A"
    for name in ("config.json", "profile.json", "samples.npz", "metrics.json", "report.md"):
        assert (a / name).is_file(), name
    for name in ("scatter.png", "samples.png", "sweep.png"):
        assert (a / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name  # real PNG files
    smoke = profiles.get("smoke")
    # every planned checkpoint exists; the last one is at the profile's epochs
    epochs = [e for e, _ in trainer.list_checkpoints(a)]
    assert epochs[-1] == smoke.epochs_for("A") and len(epochs) == smoke.ckpt_count
    images, meta = load_samples(a / "samples.npz")
    n = smoke.sampling("A").n
    assert images.shape == (n, 32, 32, 3) and images.dtype == np.uint8
    assert meta["epoch"] == epochs[-1] and meta["method"] == smoke.sampling_method

    m = json.loads((a / "metrics.json").read_text())
    assert m["profile"] == "smoke" and m["task"] == "A" and m["epoch"] == epochs[-1]
    assert m["generated"]["n"] == n and m["command"] and m["machine"]["cpu_count"] >= 1
    # the training images of the profile conform to the rule (our measurement is exact)
    assert m["train"]["n"] == smoke.train_size_for("A")
    assert m["train"]["conforming_pct"]["value"] >= 99.0
    assert m == json.loads(json.dumps(entries["A"]))  # what reproduce returned is what it wrote
    # how the trainer ran (train.train's summary): smoke runs are too short to compile on CPU
    assert m["trainer"] == json.loads((a / "train_summary.json").read_text())
    assert m["trainer"]["device"] == "cpu" and m["trainer"]["compile"] is False
    assert m["trainer"]["precision"] in ("bf16 copy", "fp32")

    rows = (a / "sweep.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,n,") and len(rows) == 1 + len(epochs)
    assert [int(r.split(",")[0]) for r in rows[1:]] == epochs
    # both rulers (the default measurement): the paper's in its own columns, from its own reading
    sweep = {r["epoch"]: r for r in m["sweep"]}
    last = sweep[epochs[-1]]
    assert last["measurable_rate"] == m["generated"]["measurable_rate"]["value"]
    paper_gen = m["paper_ruler"]["generated"]
    assert last["paper_measurable_rate"] == paper_gen["measurable_rate"]["value"]
    assert "paper_resid_std_hi" in rows[0].split(",")

    text = (out / "report.md").read_text()
    assert "| metric | A ours | A paper |" in text and "75.53" in text  # paper's number beside ours
    assert "smoke" in text and "What this profile can and cannot show" in text
    assert f"- trainer on cpu: {m['trainer']['levers']}" in (a / "report.md").read_text()


def test_rerun_resumes_without_redoing_work(smoke_run):
    out, _ = smoke_run
    a = out / "A"
    ckpts = trainer.list_checkpoints(a)
    stamps = {p: p.stat().st_mtime_ns for _, p in ckpts}
    samples_stamp = (a / "samples.npz").stat().st_mtime_ns
    cli.reproduce(["A"], "smoke", out, device="cpu", progress=False, quiet=True)
    assert {p: p.stat().st_mtime_ns for _, p in trainer.list_checkpoints(a)} == stamps
    assert (a / "samples.npz").stat().st_mtime_ns == samples_stamp


def test_interrupted_training_continues_to_the_same_weights(smoke_run, tmp_path):
    """A run killed before its last checkpoint resumes from the one before, ends bit-identical."""
    from safetensors.torch import load_file

    out, _ = smoke_run
    (last_epoch, last), (prev_epoch, prev) = trainer.list_checkpoints(out / "A")[::-1][:2]
    # A copy of the run as it stood at the previous checkpoint: no last checkpoint, no samples.
    copy = tmp_path / "A"
    (copy / "checkpoints").mkdir(parents=True)
    for name in ("config.json", "profile.json"):
        (copy / name).write_bytes((out / "A" / name).read_bytes())
    dst = copy / "checkpoints" / prev.name
    dst.mkdir()
    for f in prev.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    run = _run(tmp_path)
    early = stages.sample(run, "A")  # samples of the earlier checkpoint
    epoch = stages.train(run, "A")
    assert epoch == last_epoch > prev_epoch
    resumed = load_file(trainer.list_checkpoints(copy)[-1][1] / "model.safetensors")
    original = load_file(last / "model.safetensors")
    assert all(torch.equal(resumed[k], original[k]) for k in original)
    # sampling again moves the earlier checkpoint's samples aside and gives the run's own samples
    again = stages.sample(run, "A")
    assert np.array_equal(again, load_samples(out / "A" / "samples.npz")[0])
    kept, meta = load_samples(copy / f"samples_epoch{prev_epoch:05d}.npz")
    assert np.array_equal(kept, early) and meta["epoch"] == prev_epoch


def test_changed_sampler_settings_move_samples_aside_and_are_recorded(smoke_run, tmp_path):
    """A profile whose sampler changed since the run was sampled: `sample` keeps the old samples
    under a new name, draws new ones with the new settings, and profile.json records both."""
    import dataclasses
    import shutil

    out, _ = smoke_run
    copy = tmp_path / "A"
    shutil.copytree(out / "A", copy)
    old_images, old_meta = load_samples(copy / "samples.npz")
    smoke = profiles.get("smoke")
    changed = dataclasses.replace(smoke, sampling_clip_x0=not smoke.sampling_clip_x0)
    run = dataclasses.replace(_run(tmp_path), profile=changed)
    new = stages.sample(run, "A")
    new_meta = load_samples(copy / "samples.npz")[1]
    assert new_meta["clip_x0"] == changed.sampling_clip_x0 != old_meta["clip_x0"]
    (aside,) = [p for p in copy.glob("samples_*.npz")]
    assert aside.name.startswith(f"samples_{old_meta['method']}{old_meta['steps']}-")
    kept, kept_meta = load_samples(aside)
    assert np.array_equal(kept, old_images) and kept_meta == old_meta  # nothing lost
    assert new.shape == old_images.shape
    info = json.loads((copy / "profile.json").read_text())
    assert info["settings"]["sampling_clip_x0"] == changed.sampling_clip_x0
    assert info["earlier_settings"][-1]["settings"]["sampling_clip_x0"] == smoke.sampling_clip_x0
    # the same settings again: the samples are read back, nothing moves
    stamp = (copy / "samples.npz").stat().st_mtime_ns
    stages.sample(run, "A")
    assert (copy / "samples.npz").stat().st_mtime_ns == stamp
    assert len(list(copy.glob("samples_*.npz"))) == 1


def test_partial_samples_of_other_settings_are_moved_aside_whole(tmp_path):
    """An interrupted draw (a .parts folder) made with other settings moves aside as a folder,
    chunks and settings kept; samples with the expected settings stay where they are."""
    path = tmp_path / "samples.npz"
    parts = tmp_path / "samples.parts"
    parts.mkdir()
    old = {"n": 32, "seed": 0, "method": "ddim", "steps": 50, "epoch": 4}
    (parts / "settings.json").write_text(json.dumps(old))
    np.save(parts / "chunk_000000.npy", np.zeros((16, 32, 32, 3), np.uint8))
    said = []
    assert folder.set_aside(path, old, said.append) is None  # same settings: nothing moves
    assert parts.is_dir() and not said
    dst = folder.set_aside(path, {**old, "steps": 100}, said.append)
    (moved,) = tmp_path.glob("samples_*.parts")
    assert dst == moved and said == [f"samples made with other settings (steps) moved to {dst}"]
    assert moved.name.startswith("samples_ddim50-") and not parts.exists()
    assert json.loads((moved / "settings.json").read_text()) == old
    assert (moved / "chunk_000000.npy").is_file()
    # another checkpoint: named by the old epoch
    parts.mkdir()
    (parts / "settings.json").write_text(json.dumps(old))
    folder.set_aside(path, {**old, "epoch": 8}, said.append)
    assert (tmp_path / "samples_epoch00004.parts" / "settings.json").is_file()


def test_time_limit_stops_with_a_checkpoint_and_the_same_call_continues(tmp_path):
    run = _run(tmp_path)
    assert stages.train(run, "D", time_limit_s=1e-6) == 1  # one epoch
    assert [e for e, _ in trainer.list_checkpoints(tmp_path / "D")] == [1]
    assert stages.train(run, "D") == run.profile.epochs_for("D") == 2


def test_rerun_with_another_profile_is_refused(smoke_run):
    out, _ = smoke_run
    with pytest.raises(ValueError, match="profile 'smoke' seed 0"):
        stages.train(_run(out, "quick"), "A")
    with pytest.raises(ValueError, match="seed 0"):
        stages.train(_run(out, seed=1), "A")
    with pytest.raises(ValueError, match="seed 0"):
        stages.evaluate(_run(out, seed=1), "A")  # later stages check too


@pytest.fixture(scope="module")
def rendered():
    """200 rendered Task C images and their directly computed rule report."""
    task = tasks.get("C")
    images, _ = task.sample(200, seed=3)
    feats, ok = task.measure(images)
    return images, metrics.rule_report(task, feats, ok, n_boot=200, seed=0)


def _scored(path):
    return json.loads((path / "metrics.json").read_text())["generated"]


def test_evaluate_images_from_npz_and_png_folder(rendered, tmp_path):
    from PIL import Image

    images, direct = rendered
    np.savez_compressed(tmp_path / "imgs.npz", images=images)
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    for i, im in enumerate(images):
        Image.fromarray(im).save(pngs / f"{i:04d}.png")
    for src, dst in ((tmp_path / "imgs.npz", "e_npz"), (pngs, "e_png")):
        argv = ["evaluate", "--task", "C", "--images", str(src), "--out", str(tmp_path / dst)]
        assert cli.main([*argv, "--n-boot", "200", "--quiet"]) == 0
        assert _scored(tmp_path / dst) == direct  # the same numbers as measuring them in memory
    # rendered images are training images: they follow the rule (the training metrics)
    assert direct["measurable_rate"]["value"] == 1.0
    assert direct["conforming_pct"]["value"] >= 99.0 and direct["bias"]["value"] < 0.02
    assert (tmp_path / "e_png" / "scatter.png").exists()


def test_load_images_accepts_float_and_channels_first(rendered, tmp_path):
    images, _ = rendered
    np.save(tmp_path / "f.npy", images.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    assert np.array_equal(cli.load_images(tmp_path / "f.npy"), images)


def test_evaluate_images_with_both_rulers(rendered, tmp_path):
    from rulelib.tasks import rulers

    images, direct = rendered
    np.savez_compressed(tmp_path / "imgs.npz", images=images)
    task = tasks.get("C")
    reasons = {}
    pf, pok = rulers.measure(task, images, "paper", reasons=reasons)
    paper = metrics.rule_report(task, pf, pok, n_boot=200, seed=0, trim="xy", reasons=reasons)
    runs = {}
    for choice in ("both", "exact", "paper"):
        argv = ["evaluate", "--task", "C", "--images", str(tmp_path / "imgs.npz"),
                "--out", str(tmp_path / choice), "--measurement", choice,
                "--n-boot", "200", "--quiet"]  # fmt: skip
        assert cli.main(argv) == 0
        runs[choice] = json.loads((tmp_path / choice / "metrics.json").read_text())
    both = runs["both"]
    # the exact ruler's numbers stay where readers find them; the paper's sit under their key
    assert both["ruler"] == "exact" and both["generated"] == direct
    assert both["paper_ruler"]["generated"] == paper
    assert both["paper_ruler"]["trim"] == "xy" and both["paper_ruler"]["options"] == "boxes@128"
    assert paper["resid_std"]["value"] > 3 * direct["resid_std"]["value"]  # a coarser ruler
    assert (tmp_path / "both" / "scatter_paper.png").exists()
    assert "Read with the paper's ruler" in (tmp_path / "both" / "report.md").read_text()
    assert "paper_ruler" not in runs["exact"] and runs["exact"]["generated"] == direct
    assert not (tmp_path / "exact" / "scatter_paper.png").exists()
    assert runs["paper"]["ruler"] == "paper" and runs["paper"]["generated"] == paper


def test_measurement_choice_is_checked(tmp_path, capsys):
    np.savez(tmp_path / "imgs.npz", images=np.full((4, 32, 32, 3), 255, np.uint8))
    base = ["evaluate", "--images", str(tmp_path / "imgs.npz"), "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as e:
        cli.main([*base, "--task", "B", "--measurement", "ruler2", "--quiet"])
    assert e.value.code == 2 and "ruler2" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main([*base, "--task", "mirror", "--measurement", "paper", "--quiet"])
    assert e.value.code == 2
    assert "the paper's ruler measures tasks ('A', 'B', 'C', 'D') only" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["reproduce", "--profile", "bogus", "--out", "{tmp}/o"],
            "unknown profile 'bogus'; expected",
        ),
        (["train", "--task", "E", "--profile", "smoke", "--out", "{tmp}/o"], "unknown task 'E'"),
        (["evaluate", "--task", "A", "--out", "{tmp}/nothing"], "not a run folder"),
        (["sample", "--task", "A", "--profile", "smoke", "--out", "{tmp}"], "not a run folder"),
        (["evaluate", "--task", "A", "--images", "{tmp}/missing.npz"], "does not exist"),
        (["evaluate", "--task", "A", "--images", "{tmp}/bad.npz"], "expected images of shape"),
        (["evaluate", "--task", "A", "B", "--images", "{tmp}/bad.npz"], "one task at a time"),
    ],
)
def test_bad_input_is_a_clear_error(argv, message, tmp_path, capsys):
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 16, 16, 3), np.uint8))
    with pytest.raises(SystemExit) as e:
        cli.main([a.replace("{tmp}", str(tmp_path)) for a in argv] + ["--quiet"])
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing written on bad input


def test_profiles():
    assert profiles.resolve("auto") == ("paper" if torch.cuda.is_available() else "quick")
    with pytest.raises(ValueError, match=r"unknown profile 'fast'; expected one of \['smoke'"):
        profiles.get("fast")
    paper = profiles.get("paper")
    for t, epochs in zip("ABCD", (400, 800, 1600, 1000)):
        cfg = paper.train_config(t)
        assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.preset) == (epochs, 3e-4, 16, "paper")
        s = paper.sampling(t)
        assert (s.method, s.steps, s.weights) == ("ddpm", None, "raw") and s.n >= 3000
    quick = profiles.get("quick")
    a, b = quick.train_config("A"), quick.train_config("B")
    # the same image budget for every task: epochs scale inversely with the training-set size
    assert a.epochs * tasks.get("A").train_size == b.epochs * tasks.get("B").train_size
    assert quick.sampling("A").weights == "ema" == a.sample_weights
    assert cli.parse_tasks(["c,a"]) == ["A", "C"] and cli.parse_tasks(["all"]) == tasks.names()
    assert cli.parse_tasks(["paper"]) == list("ABCD") and set("ABCD") < set(tasks.names())


def test_report_writes_are_atomic_and_json_safe(tmp_path):
    path = atomic.write_json(tmp_path / "x.json", {"a": np.float64("nan"), "b": np.int64(3)})
    assert json.loads(path.read_text()) == {"a": None, "b": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temporary file left behind
    grid = report.image_grid(np.full((10, 32, 32, 3), 7, np.uint8), ncol=4)
    assert grid.shape == (3 * 34 + 2, 4 * 34 + 2, 3) and (grid == 7).sum() == 10 * 32 * 32 * 3


def test_reproduce_with_mitigation_reports_and_exports_it(tmp_path):
    """`reproduce --mitigation` on one task: classifier accuracies, a filter before/after report,
    a guidance sweep from s = 0; mitigation.md embedded in both report.md files with working image
    links; a rerun reuses the classifiers; export copies the results but no weights or samples."""
    import re

    from rulelib.mitigation.settings import SETTINGS

    out = tmp_path / "run"
    argv = ["reproduce", "--task", "A", "--profile", "smoke", "--out", str(out)]
    assert cli.main([*argv, "--mitigation", "--no-sweep", "--device", "cpu", "--quiet"]) == 0
    mdir = out / "A" / "mitigation"
    res = json.loads((mdir / "mitigation.json").read_text())
    st = SETTINGS["smoke"]

    assert set(res["accuracy"]) == set(st.clf_archs)
    assert all(0.0 <= a <= 1.0 for a in res["accuracy"].values())
    n = profiles.get("smoke").sampling("A").n
    for arch, rep in res["filter"].items():
        assert rep["n"] == n and 0 <= rep["kept"] <= n, arch
        assert 0.0 <= rep["kept_share"] <= 1.0 and rep["kept_share"] == rep["kept"] / n, arch
        assert rep["before"]["n"] == n and rep["after"]["n"] == rep["kept"], arch
    g = res["guidance"]
    scales = [row["scale"] for row in g["rows"]]
    assert scales[0] == 0.0 and g["paper_scale"] in scales and g["n"] == st.sweep_n
    for row in g["rows"]:  # each scale's samples, stored relative to mitigation/
        assert load_samples(mdir / row["samples"])[0].shape == (st.sweep_n, 32, 32, 3)
        # the paired difference to s = 0: exactly 0 for s = 0, the reports' difference otherwise
        d, base = row["vs_unguided"], g["rows"][0]["report"]
        for m in ("measurable_rate", "conforming_pct"):
            if row["scale"] == 0:
                assert d[m]["value"] in (0.0, None), m
            elif row["report"][m]["value"] is not None and base[m]["value"] is not None:
                assert d[m]["value"] == pytest.approx(row["report"][m]["value"] - base[m]["value"])

    for report_md, where in ((out / "report.md", out), (out / "A" / "report.md", out / "A")):
        text = report_md.read_text()
        assert "### Task A: mitigation (profile `smoke`)" in text, report_md
        assert "| kept / total |" in text and "| 0 (unguided) |" in text, report_md
        assert "| scale | Δ measurable_rate |" in text, report_md  # the paired effect table
        links = re.findall(r"\]\(([^)]+)\)", text)
        for name in ("contrastive.png", "filter.png", "guidance.png", "mitigation.md"):
            assert any(link.endswith("mitigation/" + name) for link in links), (report_md, name)
        missing = [link for link in links if not (where / link).is_file()]
        assert not missing, (report_md, missing)  # every link resolves from the report's folder

    summary = (out / "report.md").read_text().split("## Mitigation at a glance")[1]
    assert f"| A | guidance s = {g['paper_scale']:g} (paper's s) |" in summary
    assert "| A | filter (" in summary and "| classifier | A ours | A paper |" in summary

    # a rerun reuses the trained classifiers and the guided samples, and gets the same numbers
    stamps = {p: p.stat().st_mtime_ns for p in [*mdir.glob("clf_*"), *mdir.glob("guided/*")]}
    again = stages.run_mitigation(_run(out), "A")
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps and len(stamps) >= 4
    assert again["accuracy"] == res["accuracy"] and again["guidance"] == g

    report.export_results(out, tmp_path / "exported")
    exported = tmp_path / "exported" / "A" / "mitigation"
    expected = ["contrastive.png", "filter.png", "guidance.png", "mitigation.json", "mitigation.md"]
    assert sorted(p.name for p in exported.rglob("*")) == expected  # no clf_*, no guided/
    exported_report = (tmp_path / "exported" / "A" / "report.md").read_text()
    assert all(
        (tmp_path / "exported" / "A" / link).is_file()
        for link in re.findall(r"\]\((mitigation/[^)]+)\)", exported_report)
    )
