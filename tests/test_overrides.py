"""Settings changed without editing code: `--set KEY=VALUE` and `--config FILE.toml` on train,
reproduce and study, validated with one clear line, applied, and recorded with the run."""

import json

import pytest

from rulelib import cli
from rulelib.run import folder, overrides, profiles
from rulelib.study import command as study_command


def test_set_values_are_read_as_toml_and_checked():
    got = overrides.from_args(["lr=3e-4", "epochs=100", "sampling_method=ddim", "bf16=false",
                               "sampling_steps=none"], None)  # fmt: skip
    assert got == {"lr": 3e-4, "epochs": {"default": 100}, "sampling_method": "ddim",
                   "bf16": False, "sampling_steps": None}  # fmt: skip
    assert overrides.from_args([], None) is None  # nothing given: the run folder's own apply
    assert overrides.validate({"lr": 1})["lr"] == 1.0 and isinstance(
        overrides.validate({"lr": 1})["lr"], float
    )


@pytest.mark.parametrize("items, message", [
    (["lrr=1e-3"], "unknown setting 'lrr'; expected one of preset, epochs"),
    (["lr=-1"], "lr = -1.0: expected a number > 0"),
    (["lr=fast"], "lr = 'fast': expected a number"),
    (["epochs=1.5"], "epochs = 1.5: expected an integer >= 1"),
    (["batch_size=true"], "batch_size = True: expected an integer >= 1"),
    (["ema_decay=1"], "ema_decay = 1.0: expected a number in [0, 1)"),
    (["sampling_method=ddpx"], "sampling_method = 'ddpx': expected one of ['ddim', 'ddpm']"),
    (["preset=huge"], "preset = 'huge': expected one of"),
    (["lr"], "--set 'lr': expected KEY=VALUE"),
    (["n_samples={A = 0}"], "n_samples.A = 0: expected an integer >= 1"),
])  # fmt: skip
def test_bad_settings_are_named_with_what_is_expected(items, message):
    with pytest.raises(overrides.OverrideError) as e:
        overrides.from_args(items, None)
    assert message in str(e.value)


def test_config_file_then_set(tmp_path):
    cfg = tmp_path / "mine.toml"
    cfg.write_text("lr = 3e-4\nbatch_size = 64\n[epochs]\nB = 50\ndefault = 7\n")
    got = overrides.from_args(["batch_size=8"], cfg)
    assert got == {"lr": 3e-4, "batch_size": 8, "epochs": {"B": 50, "default": 7}}
    (tmp_path / "bad.toml").write_text("lr = \n")
    with pytest.raises(overrides.OverrideError, match="bad.toml: not a TOML file"):
        overrides.from_args([], tmp_path / "bad.toml")
    with pytest.raises(overrides.OverrideError, match="missing.toml: no such file"):
        overrides.from_args([], tmp_path / "missing.toml")


def test_apply_changes_the_profile_and_records_what_changed():
    quick = profiles.get("quick")
    p = overrides.apply(quick, {"lr": 3e-4, "epochs": {"B": 50}, "weight_decay": 0.0})
    assert p.name == "quick" and p.lr == 3e-4 and quick.lr == 1e-3  # the named one is untouched
    assert p.epochs_for("B") == 50 and p.epochs_for("A") == quick.epochs_for("A")  # merged
    cfg = p.train_config("B")
    assert cfg.lr == 3e-4 and cfg.weight_decay == 0.0 and cfg.epochs == 50
    assert p.to_dict()["overrides"] == {"lr": 3e-4, "epochs": {"B": 50}, "weight_decay": 0.0}
    assert "overrides" not in quick.to_dict()  # folders made before overrides read the same
    # the paper profile takes the paper's epochs per task: a table must say what the rest get
    with pytest.raises(overrides.OverrideError, match="give a 'default' entry"):
        overrides.apply(profiles.get("paper"), {"epochs": {"B": 50}})


def _config_json(tdir):
    ckpts = sorted((tdir / "checkpoints").glob("epoch_*/config.json"))
    return json.loads(ckpts[-1].read_text())


def test_train_records_the_settings_and_refuses_others_in_the_same_folder(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["--task", "A", "--profile", "smoke", "--out", str(out), "--quiet"]
    assert cli.main(["train", *base, "--set", "lr=3e-4", "epochs=1"]) == 0
    info = json.loads((out / "A" / "profile.json").read_text())
    assert info["overrides"] == {"lr": 3e-4, "epochs": {"default": 1}}
    assert info["settings"]["lr"] == 3e-4
    assert _config_json(out / "A")["lr"] == 3e-4 and _config_json(out / "A")["epochs"] == 1
    before = sorted(p.name for p in (out / "A").rglob("*"))
    # other settings in the same folder: one line, exit 2, nothing changed
    with pytest.raises(SystemExit) as e:
        cli.main(["train", *base, "--set", "lr=1e-3"])
    assert e.value.code == 2
    assert "was made with lr=0.0003" in capsys.readouterr().err
    assert sorted(p.name for p in (out / "A").rglob("*")) == before
    # a command without --set takes the folder's own settings (as with --profile and --seed)
    run = folder.resolve(out, ["A"])
    assert run.profile.lr == 3e-4 and run.profile.epochs_for("A") == 1
    assert folder.run_identity(out / "A")[0].lr == 3e-4
    assert cli.main(["sample", "--task", "A", "--out", str(out), "--quiet", "--n", "4"]) == 0


def test_a_bad_setting_stops_the_command_before_anything_is_made(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        cli.main(["reproduce", "--task", "A", "--profile", "smoke", "--out", str(out),
                  "--set", "n_samples=0"])  # fmt: skip
    assert e.value.code == 2
    assert "n_samples = 0: expected an integer >= 1" in capsys.readouterr().err
    assert not out.exists()


def test_reproduce_takes_a_config_file(tmp_path):
    cfg = tmp_path / "settings.toml"
    cfg.write_text("epochs = 1\nn_samples = 8\nsweep_n = 0\n")
    out = tmp_path / "run"
    argv = ["reproduce", "--task", "A", "--profile", "smoke", "--out", str(out), "--quiet",
            "--config", str(cfg), "--no-sweep"]  # fmt: skip
    assert cli.main(argv) == 0
    info = json.loads((out / "A" / "profile.json").read_text())
    assert info["overrides"] == {"epochs": {"default": 1}, "n_samples": {"default": 8},
                                 "sweep_n": 0}  # fmt: skip
    metrics = json.loads((out / "A" / "metrics.json").read_text())
    assert metrics["generated"]["n"] == 8


def test_study_runs_take_the_settings_in_their_own_folder():
    parser = cli.build_parser()
    args = parser.parse_args(["study", "train", "--arm", "length", "--task", "B",
                              "--set", "lr=3e-4", "batch_size=64"])  # fmt: skip
    (run,) = study_command.runs_of(args)
    plain = study_command.runs_of(parser.parse_args(["study", "train", "--task", "B"]))[0]
    assert run.name != plain.name and run.name.startswith(plain.name)
    assert run.train_config().lr == 3e-4 and run.train_config().batch_size == 64
    assert plain.train_config().lr == profiles.get("quick").lr
    assert run.to_dict()["overrides"] == (("batch_size", 64), ("lr", 3e-4))
    with pytest.raises(overrides.OverrideError, match="set by the study's arm"):
        study_command.runs_of(parser.parse_args(["study", "train", "--set", "epochs=3"]))
