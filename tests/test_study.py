"""The study (rulelib.study): checkpoint schedules, the plateau fit, resumable arms end to end."""

import argparse
import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rulelib import atomic
from rulelib.diffusion import checkpoint
from rulelib.diffusion import train as trainer
from rulelib.run import profiles
from rulelib.study import arms, artefacts, command, evaluate, figures, ruler_figure, summary
from rulelib.study import rows as study_rows
from rulelib.study.fit import fit_plateau, plateau, se_from_ci

X = np.array(arms.length_run("B").to_dict()["images_at"], dtype=float)  # 8 000 ... 512 000


def _curve(c, a=0.02, b=0.8, rel=0.05, seed=0):
    rng = np.random.default_rng(seed)
    y = plateau(X / X[0], c, a, b)
    se = rel * y
    return y + rng.normal(0, se), se


def test_plateau_fit_recovers_c_of_synthetic_curves():
    c_true, covered, excl0 = 0.006, 0, 0
    for seed in range(8):
        y, se = _curve(c_true, seed=seed)
        f = fit_plateau(X, y, se, n_boot=100, seed=seed)
        lo, hi = f["c_ci"]
        covered += lo <= c_true <= hi
        excl0 += lo > 0.003  # a plateau at half the true height is ruled out
        assert abs(f["c"] - c_true) < 0.002  # point estimates near the truth
        assert f["n_boot_ok"] >= 95
    assert covered >= 6  # nominal 95 %: at least 6 of 8 (binomial tail 0.6 %)
    assert excl0 >= 7
    # a curve that keeps falling to zero: the CI on c reaches (nearly) 0
    y, se = _curve(0.0, a=0.02, b=0.6, seed=1)
    f = fit_plateau(X, y, se, n_boot=100)
    assert f["c_ci"][0] < 1e-3 and f["c"] < 0.002


def test_plateau_fit_refuses_too_few_points():
    with pytest.raises(ValueError, match="at least 4"):
        fit_plateau([1, 2, 3], [3, 2, 1])
    with pytest.raises(ValueError, match="shape"):
        fit_plateau([1, 2, 3, 4], [3, 2, 1, 0], se=[1, 1])
    assert se_from_ci([1.0, 1.0 + 2 * 1.959963984540054]) == pytest.approx(1.0)


def test_plateau_fit_starts_where_the_coarse_rule_is_drawn():
    """The fit skips the first phase (few measurable samples, whose fine-rule error rises and
    falls with that selection), which the power law cannot describe."""
    c_true = 0.006
    y, se = _curve(c_true, seed=0)
    first = X < 40_000
    y = np.where(first, 0.001, y)  # first phase: few, atypical measurable images

    def rows(measurable):
        return [{"run": "length_B", "arm": "length", "sampling": "ema ddim", "images": int(x),
                 "measurable_rate": m, "novel_resid_std": v, "novel_resid_std_lo": v - 1.96 * e,
                 "novel_resid_std_hi": v + 1.96 * e, "novel_within_5pct": None,
                 "novel_conforming_pct": None}
                for x, m, v, e in zip(X, measurable, y, se)]  # fmt: skip

    f = summary.fits(rows(np.where(first, 0.3, 0.9)))["length_B"]["resid_std"]
    assert f["from_images"] == int(X[~first][0]) and f["skipped"] == int(first.sum())
    assert f["n_points"] == int((~first).sum())
    assert f["c_ci"][0] <= c_true <= f["c_ci"][1]
    assert f["chi2"] < 2 * f["n_points"]  # the power law fits the second phase ...
    ungated = summary.fits(rows(np.full(len(X), 0.9)))["length_B"]["resid_std"]
    assert ungated["chi2"] > 20 * f["chi2"]  # ... and not the first phase with it
    # no checkpoint measurable enough: no fit, and the note says why
    note = summary.fits(rows(np.full(len(X), 0.5)))["length_B"]["resid_std"]
    assert "c" not in note and "measurable" in note["note"] and note["from_images"] is None


def test_length_figure_draws_the_plateau_fit(tmp_path, monkeypatch):
    """The figure of a length arm carries the fitted curve c + a (x / x0)^-b of each error."""
    y, se = _curve(0.006, seed=0)
    none = {f"novel_{k}{s}": None for k in ("within_5pct", "conforming_pct")
            for s in ("", "_lo", "_hi")}  # fmt: skip
    rows = [{"run": "length_B", "arm": "length", "task": "B", "sampling": "ema ddim",
             "images": int(x), "n_train": 2000, "measurable_rate": 0.9, "novel_resid_std": v,
             "novel_resid_std_lo": v - 1.96 * e, "novel_resid_std_hi": v + 1.96 * e, **none,
             "dsm_gap": 0.01, "dsm_gap_lo": -0.01, "dsm_gap_hi": 0.03, "copy_rate": 0.0,
             "nearest_median": 5.0, "fresh_nearest_median": 4.7}
            for x, v, e in zip(X, y, se)]  # fmt: skip
    fitd = summary.fits(rows)
    figs = []
    monkeypatch.setattr(figures.atomic, "savefig", lambda fig, path: figs.append(fig))
    figures.arm_figure(rows, fitd, "length", "B", tmp_path / "length_B.png")
    f = fitd["length_B"]["resid_std"]
    line = next(ln for ln in figs[0].axes[0].get_lines() if ln.get_label().startswith("c + a"))
    x, curve = line.get_data()
    assert x[0] == f["from_images"] and x[-1] > X[-1]  # from the first fitted point on, beyond
    assert np.allclose(curve, f["c"] + f["a"] * (x / f["images_0"]) ** (-f["b"]))


def test_log_checkpoints_are_log_spaced():
    e = arms.log_checkpoints(2000, 512_000)
    assert e[-1] == 256 and e[0] == 4 and list(e) == sorted(set(e))
    ratios = np.diff(np.log2(e))
    assert np.allclose(ratios, 0.5, atol=0.12)  # two per doubling, rounded to whole epochs
    assert arms.log_checkpoints(2000, 3000)[-1] == 2  # the budget rounded up to an epoch
    with pytest.raises(ValueError, match="n_train"):
        arms.log_checkpoints(5000, 1000)


def test_arms_keep_the_quick_settings():
    q = profiles.get("quick")
    r = arms.length_run("B")
    cfg = r.train_config()
    for key in ("preset", "batch_size", "lr", "ema_decay", "ema_start"):
        assert getattr(cfg, key) == getattr(q.train_config("B"), key)
    assert cfg.epochs == 256 and r.profile().sampling("B") == q.sampling("B")
    s = arms.size_run("B", 250)
    assert s.epochs[-1] * 250 == arms.SIZE_IMAGES and s.n_train() == 250
    fresh = arms.size_run("B", "fresh")
    assert fresh.epochs == (1,)
    # one epoch of 128 000 images: mid-epoch resume points every RESUME_IMAGES; none where an
    # epoch is shorter (the epochs' own resume points do)
    mid = fresh.train_config().resume_steps
    assert mid * cfg.batch_size <= arms.RESUME_IMAGES < (mid + 1) * cfg.batch_size
    assert cfg.resume_steps == 0 and s.train_config().resume_steps == 0
    with pytest.raises(ValueError, match="size"):
        arms.size_run("B", 0)
    with pytest.raises(ValueError, match="budget"):
        arms.size_run("B", 10**6)


def test_size_run_trains_resumes_and_is_scored(tmp_path, monkeypatch):
    quick = profiles.get("quick")
    # 5 sampling steps and a small loss set keep this test short; everything else as run
    monkeypatch.setitem(profiles.PROFILES, "quick", dataclasses.replace(quick, sampling_steps=5))
    monkeypatch.setattr(evaluate, "LOSS_IMAGES", 48)  # more than the 32 training images
    run = arms.size_run("B", 32, images=64)
    assert run.epochs == (1, 2)
    res = arms.train_run(tmp_path, run, progress=False, time_limit_s=0)  # one segment, then stop
    assert res == {"finished": False, "epochs": [1]}
    # a run not finished commits the EMA weights of its newest scored checkpoint
    evaluate.evaluate_run(tmp_path, run, n=16, progress=False)
    artefacts.collect(tmp_path, tmp_path / "summary")
    part = tmp_path / "summary" / "runs" / run.name
    assert sorted(p.name for p in part.glob("ema_*")) == ["ema_0000032.safetensors"]
    res = arms.train_run(tmp_path, run, progress=False)  # resumes from epoch 1
    assert res == {"finished": True, "epochs": [1, 2]}
    log = (tmp_path / run.name / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in log] == [1, 2]
    with pytest.raises(ValueError, match="another run"):
        arms.train_run(tmp_path, arms.size_run("B", 32, images=96), progress=False)
    entries = evaluate.evaluate_run(tmp_path, run, n=16, progress=False)
    assert [e["epoch"] for e in entries] == [1, 2]
    e = entries[-1]
    assert e["images"] == 64 and e["n_train"] == 32
    assert 0 <= e["memorisation"]["copy_rate"]["value"] <= 1
    gap = e["dsm_gap"]
    assert gap["n_pairs"] == 32 and gap["ci"][0] <= gap["value"] <= gap["ci"][1]
    again = evaluate.evaluate_run(tmp_path, run, n=16, progress=False)  # nothing left to do
    assert [x["created"] for x in again] == [x["created"] for x in entries]
    # an entry scored before the paired gap existed gets it added, the same as if scored now
    f = tmp_path / run.name / "eval" / "epoch_000002.json"
    old = {k: v for k, v in e.items() if k != "dsm_gap"}
    f.write_text(json.dumps({**old, "dsm_loss_train": 1.0, "dsm_loss_fresh": 1.1}))
    assert study_rows.row({**old, "dsm_loss_fresh": 1.1})["dsm_loss_fresh"] == 1.1
    assert study_rows.row(old)["dsm_gap"] is None
    again = evaluate.evaluate_run(tmp_path, run, n=16, progress=False)
    assert again[-1]["dsm_gap"] == gap and again[-1]["created"] == e["created"]
    assert study_rows.row(again[-1])["dsm_gap_hi"] == gap["ci"][1]
    out = summary.summarise(tmp_path, tmp_path / "summary")
    assert len(out["rows"]) == 2 and (tmp_path / "summary" / "study.csv").exists()
    assert (tmp_path / "summary" / "size_B.png").exists()
    # what a later ruler re-scores: the scored samples by images seen, the final EMA weights
    got = artefacts.collect(tmp_path, tmp_path / "summary")
    dest = tmp_path / "summary" / "runs" / run.name
    assert sorted(p.name for p in dest.iterdir()) == [
        "ema_final.safetensors", "samples_0000032.npz", "samples_0000064.npz"]  # fmt: skip
    sampled = np.load(tmp_path / run.name / "eval" / "epoch_000002.npz")["images"]
    assert np.array_equal(np.load(dest / "samples_0000064.npz")["images"], sampled)
    final = tmp_path / run.name / "checkpoints" / "epoch_000002" / "ema.safetensors"
    assert (dest / "ema_final.safetensors").read_bytes() == final.read_bytes()
    # the finished run's final weights replace the unfinished run's; samples_0000032 was there
    assert len(got) == 2 and artefacts.collect(tmp_path, tmp_path / "summary") == []
    # weights above the size limit are not kept (retrained instead), the samples are
    monkeypatch.setattr(artefacts, "MAX_WEIGHTS_BYTES", final.stat().st_size - 1)
    assert artefacts.collect(tmp_path, tmp_path / "summary") == []
    assert sorted(p.name for p in dest.iterdir()) == ["samples_0000032.npz", "samples_0000064.npz"]
    monkeypatch.setattr(artefacts, "MAX_WEIGHTS_BYTES", final.stat().st_size)
    again = artefacts.collect(tmp_path, tmp_path / "summary")
    assert again == [str(dest / "ema_final.safetensors")]
    # a run scored elsewhere (its folder not here) is carried from the earlier summary; this
    # run's own earlier rows are replaced by its current ones
    prev = tmp_path / "summary2"
    prev.mkdir()
    other = {**out["rows"][-1], "run": "size_B_999"}
    stale = {**out["rows"][-1], "resid_std": -1.0}
    (prev / "study.json").write_text(json.dumps({"rows": [other, stale],
                                                 "runs": {"size_B_999": {"x": 1}}}))  # fmt: skip
    again = summary.summarise(tmp_path, prev)
    names = [r["run"] for r in again["rows"]]
    assert names.count("size_B_999") == 1 and names.count(run.name) == 2
    assert all(r["resid_std"] != -1.0 for r in again["rows"])
    saved = json.loads((prev / "study.json").read_text())
    assert saved["carried"] == ["size_B_999"] and saved["runs"]["size_B_999"] == {"x": 1}
    # the points a conclusion rests on (the last three; here both) are scored again with more
    # samples, the earlier ones kept as the first draws; a run's other points are left alone
    assert evaluate.wanted_n(arms.length_run("B"), "epoch_000004", 128, 512) == 128
    assert evaluate.wanted_n(arms.length_run("B"), "epoch_000181", 128, 512) == 512
    more = evaluate.evaluate_run(tmp_path, run, n=16, conclusion_n=32, progress=False)
    assert [x["sampling"]["n"] for x in more] == [32, 32]
    assert more[-1]["created"] != e["created"]
    bigger = np.load(tmp_path / run.name / "eval" / "epoch_000002.npz")["images"]
    assert bigger.shape[0] == 32 and np.array_equal(bigger[:16], sampled)
    again = evaluate.evaluate_run(tmp_path, run, n=16, conclusion_n=32, progress=False)
    assert [x["created"] for x in again] == [x["created"] for x in more]


def test_resume_points_are_resumed_from_and_then_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(arms, "RESUME_IMAGES", 16)  # a resume point every epoch of 16 images
    run = arms.size_run("B", 16, images=64)
    assert run.epochs == (1, 2, 4) and run.train_config().ckpt_every == 1
    whole = arms.train_run(tmp_path / "whole", run, progress=False)
    assert whole == {"finished": True, "epochs": [1, 2, 4]}  # the resume point 3 is gone
    # a job cut off after the resume point of epoch 3: resumes there and ends on the same bits
    cut = tmp_path / "cut"
    arms.train_run(cut, run, progress=False, time_limit_s=0)
    arms.train_run(cut, run, progress=False, time_limit_s=0)
    cfg = dataclasses.replace(run.train_config(), epochs=3)
    trainer.train(cfg, run.training_set(), arms.run_dir(cut, run), resume=True, progress=False)
    assert arms.trained_epochs(cut, run) == [1, 2, 3]
    assert arms.train_run(cut, run, progress=False)["epochs"] == [1, 2, 4]
    last = json.loads((arms.run_dir(cut, run) / "train_log.jsonl").read_text().splitlines()[-1])
    assert round(last["images_per_s"] * last["seconds"]) == 16  # one epoch: resumed from 3, not 2
    a, b = (arms.run_dir(d, run) / "checkpoints/epoch_000004" for d in (tmp_path / "whole", cut))
    for f in ("model.safetensors", "ema.safetensors"):
        wa, wb = load_file(a / f), load_file(b / f)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    with pytest.raises(ValueError, match="newest"):
        checkpoint.remove(arms.run_dir(cut, run), [4])


def test_a_run_is_extended_to_a_larger_budget_only_on_request(tmp_path):
    small, large = arms.size_run("B", 16, images=32), arms.size_run("B", 16, images=64)
    assert small.epochs == (1, 2) and large.epochs == (1, 2, 4)
    arms.train_run(tmp_path / "a", small, progress=False)
    with pytest.raises(ValueError, match="--extend"):  # not without asking
        arms.train_run(tmp_path / "a", large, progress=False)
    res = arms.train_run(tmp_path / "a", large, progress=False, extend=True)
    assert res == {"finished": True, "epochs": [1, 2, 4]}
    spec = json.loads((arms.run_dir(tmp_path / "a", large) / "study_run.json").read_text())
    assert spec["run"]["images"] == 64 and [x["images"] for x in spec["extended"]] == [32]
    # the constant learning rate makes the extended run the run trained at 64 from the start
    arms.train_run(tmp_path / "b", large, progress=False)
    a, b = (
        arms.run_dir(d, large) / "checkpoints/epoch_000004"
        for d in (tmp_path / "a", tmp_path / "b")
    )
    for f in ("model.safetensors", "ema.safetensors"):
        wa, wb = load_file(a / f), load_file(b / f)
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # a smaller budget, a grid without the trained checkpoints, or another set: no extension
    assert not arms.extends(large.to_dict(), arms.size_run("B", 16, images=48))  # epochs 1, 2, 3
    assert not arms.extends(small.to_dict(), arms.size_run("B", 16, images=96))  # epochs 2, 3, 6
    assert not arms.extends(small.to_dict(), arms.size_run("B", 32, images=64))
    with pytest.raises(ValueError, match="another run"):
        arms.train_run(
            tmp_path / "a", arms.size_run("B", 16, images=48), progress=False, extend=True
        )


def test_command_line_builds_the_runs():
    p = argparse.ArgumentParser()
    command.add_arguments(p)
    a = p.parse_args(["evaluate", "--arm", "size", "--sizes", "250", "fresh", "--epochs", "4"])
    assert [r.name for r in command.runs_of(a)] == ["size_B_250", "size_B_fresh"]
    assert a.epochs == [4]
    a = p.parse_args(["train", "--task", "C", "--images", "256000"])
    (r,) = command.runs_of(a)
    assert r.name == "length_C" and r.to_dict()["images_at"][-1] == 256_000


def test_plateau_label_rounds_to_the_ci_scale():
    assert figures.on_scale(3.7e-18, 2e-26, 0.00355) == "0.0000 [0.0000, 0.0036]"
    assert figures.on_scale(2.7e-14, 1e-20, 49.05) == "0 [0, 49]"


def test_length_arm_at_the_size_arms_budget_is_its_point_for_the_tasks_own_set():
    def r(arm, task, images, n_train, sampling="ema ddim"):
        return {"arm": arm, "task": task, "images": images, "n_train": n_train,
                "sampling": sampling}  # fmt: skip

    rows = [r("length", "B", 64_000, 2000), r("length", "B", 128_000, 2000),
            r("length", "B", 128_000, 2000, "raw ddpm"), r("length", "C", 128_000, 2000),
            r("size", "B", 128_000, 128_000), r("size", "B", 128_000, 250)]  # fmt: skip
    got = study_rows.length_at_budget(rows, "B")
    assert got == [rows[1]]  # the same task, images and sampler only
    assert study_rows.length_at_budget(rows, "C") == []  # C has no size arm


def test_ruler_figure_bands_come_from_the_floors_file(tmp_path):
    floors = {"tasks": {"B": {
        "floors": {"cases": {
            "exact/degraded": {"resid_std": {"mean": 0.001, "ci": [0.0009, 0.0011]}},
            "paper/clean": {"resid_std": {"mean": 0.0115, "ci": [0.011, 0.012]}},
            "paper/degraded": {"resid_std": {"mean": 0.0245, "ci": [0.023, 0.026]}}}},
        "measurement_only": {"x/unet_samples.npz": {"resid_std_from_se": {"ci": [0.0016, 0.0032]}},
                             "x/samples.npz": {"resid_std_from_se": {"ci": [0.002, 0.007]}}},
    }}}  # fmt: skip
    # exact: degraded renders' floor up to what its own uncertainty gives on U-Net samples
    assert ruler_figure.floor_bands(floors, "B") == {"exact": (0.0009, 0.0032),
                                                     "paper": (0.011, 0.026)}  # fmt: skip
    base = {"run": "length_B_seed1", "arm": "length", "task": "B", "sampling": "ema ddim"}
    rows = [{**base, "images": i, "novel_resid_std": v, "novel_resid_std_lo": v * 0.9,
             "novel_resid_std_hi": v * 1.1, "paper_resid_std": 0.02, "paper_resid_std_lo": 0.015,
             "paper_resid_std_hi": 0.03}
            for i, v in ((182000, 0.0055), (512000, 0.003))]  # fmt: skip
    assert ruler_figure.draw(rows, floors, "B", tmp_path / "r.png").exists()
    assert ruler_figure.draw(rows, floors, "C", tmp_path / "c.png") is None  # no run of C


def _row(run, images, resid=0.003):
    return {"run": run, "arm": "length", "task": "B", "images": images, "sampling": "ema ddim",
            "novel_resid_std": resid, "novel_resid_std_lo": resid * 0.9,
            "novel_resid_std_hi": resid * 1.1, "measurable_rate": 1.0}  # fmt: skip


def test_a_run_retrained_elsewhere_keeps_its_committed_rows_until_it_catches_up(tmp_path):
    """A run whose folder is back (retrained after its machine was lost) replaces its committed
    rows only where it has scored again; the rest stay, marked carried, while its trainer log
    matches the committed one. A changed spec or a different loss at a shared checkpoint (not
    the same model) drops them all; a run without a folder here is carried whole."""
    spec = {"run": arms.length_run("B", seed=1).to_dict()}
    log = [{"images": i, "loss": 1.0 / i} for i in (8000, 16000, 32000)]
    prev = tmp_path / "study.json"
    rows = [_row("length_B_seed1", i) for i in (8000, 16000, 32000)]
    rows.append(_row("length_B_seed2", 8000))
    prev.write_text(json.dumps({"rows": rows, "runs": {"length_B_seed1": spec},
                                "train_logs": {"length_B_seed1": log}}))  # fmt: skip
    here = {"length_B_seed1": spec}
    scored = {("length_B_seed1", 8000, "ema ddim")}
    kept = summary.carried(prev, here, {"length_B_seed1": log[:1]}, scored)
    got = sorted((r["run"], r["images"]) for r in kept["rows"])
    assert got == [("length_B_seed1", 16000), ("length_B_seed1", 32000), ("length_B_seed2", 8000)]
    assert all(r["carried"] for r in kept["rows"])
    other_loss = [{"images": 8000, "loss": 0.5}]
    for h, lg in (({"length_B_seed1": {"run": {**spec["run"], "images": 1}}}, log[:1]),
                  (here, other_loss)):  # fmt: skip
        kept = summary.carried(prev, h, {"length_B_seed1": lg}, scored)
        assert [(r["run"], r["images"]) for r in kept["rows"]] == [("length_B_seed2", 8000)]


def test_seeds_without_a_shared_scored_checkpoint_give_no_seed_curve():
    """A seed that has only reached the early (unmeasurable) checkpoints shares no point with the
    others: no mean over seeds (and no empty one for the figure to draw); with a shared point,
    one is drawn over it."""
    rows = [_row("length_B", i) for i in (16000, 32000)] + [_row("length_B_seed1", 8000)]
    assert summary.seed_curves(rows) == {}
    curve = summary.seed_curves(rows + [_row("length_B_seed1", 32000, 0.004)])["length_B"]
    assert curve["images"] == [32000] and curve["seeds"] == [0, 1]
    assert curve["mean"][0] == pytest.approx(0.0035)


def test_the_fresh_arms_mid_epoch_points_are_committed_like_epochs(tmp_path):
    """The fresh arm scores points inside its one epoch (eval/images_N); their samples are
    committed as samples_<images>.npz and the newest scored point's EMA weights while the run
    is unfinished; samples not scored yet (no entry) are not."""
    assert artefacts.samples_name("images_000011328", 512000) == "samples_0011328.npz"
    assert artefacts.samples_name("epoch_000256_raw_ddpm", 2000) == "samples_0512000_raw_ddpm.npz"
    rdir = tmp_path / "out" / "fresh_B"
    (rdir / "eval").mkdir(parents=True)
    atomic.write_json(rdir / "study_run.json", {"run": {"n_train": 64, "epochs": [1]}})
    for i, scored in ((16, True), (32, True), (48, False)):
        np.savez(rdir / "eval" / f"images_{i:09d}.npz", images=np.full((2, 4, 4, 3), i, np.uint8))
        if scored:
            atomic.write_json(rdir / "eval" / f"images_{i:09d}.json", {"images": i})
        point = rdir / "points" / f"images_{i:09d}"
        point.mkdir(parents=True)
        (point / "ema.safetensors").write_bytes(bytes([i]) * 10)
    artefacts.collect(tmp_path / "out", tmp_path / "to")
    dest = tmp_path / "to" / "runs" / "fresh_B"
    assert sorted(p.name for p in dest.iterdir()) == [
        "ema_0000032.safetensors", "samples_0000016.npz", "samples_0000032.npz"]  # fmt: skip
    assert (dest / "ema_0000032.safetensors").read_bytes() == bytes([32]) * 10
