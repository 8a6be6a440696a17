"""Pixel and noise-aware classifiers: architectures, training, checkpoints, filtering."""

import dataclasses

import numpy as np
import pytest
import torch

from rulelib import tasks
from rulelib.mitigation import classifiers as C
from rulelib.mitigation import contrastive as CD
from rulelib.mitigation import filtering, pipeline
from rulelib.run import profiles


def colour_set(n=240, seed=0):
    """An easy 3-class problem: flat red / green / blue squares on white with pixel noise.
    Any working classifier and training loop separates it in a couple of epochs."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    img = np.full((n, 32, 32, 3), 255.0)
    for i, c in enumerate(labels):
        x, y = rng.integers(4, 20, 2)
        img[i, y : y + 10, x : x + 10] = 40.0
        img[i, y : y + 10, x : x + 10, c] = 230.0
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), labels


def test_architectures_match_the_paper():
    mlp = C.build("mlp")
    dims = [
        (m.in_features, m.out_features) for m in mlp.modules() if isinstance(m, torch.nn.Linear)
    ]
    assert dims == [(3072, 512), (512, 128), (128, 3)]
    conv = C.build("smallconv")
    chans = [m.out_channels for m in conv.modules() if isinstance(m, torch.nn.Conv2d)]
    assert chans == [64, 128, 64, 3]
    res = C.build("resnet8")
    convs = [m for m in res.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    # 1 stem + 3 blocks x 2 = 7 conv layers + 1 linear = 8 weight layers, widths 16/32/64
    assert len(convs) == 7 and sorted({m.out_channels for m in convs}) == [16, 32, 64]
    x = torch.zeros(2, 3, 32, 32)
    t = torch.tensor([0, 999])
    for arch in C.PIXEL_ARCHS:
        assert C.build(arch)(x).shape == (2, 3)
    for arch, kw in (("cheap", {}), ("unet", {"width": 32})):
        assert C.build(arch, **kw)(x, t).shape == (2, 3)
    with pytest.raises(ValueError, match="unknown classifier 'vit'"):
        C.build("vit")


@pytest.mark.parametrize("arch", C.PIXEL_ARCHS)
def test_pixel_classifiers_learn_an_easy_problem(arch):
    images, labels = colour_set()
    cfg = C.ClassifierConfig(arch=arch, epochs=3, batch_size=16)
    model, info = C.train_classifier(cfg, images, labels, task="toy")
    assert info["test_accuracy"] >= 0.9, info["test_accuracy"]
    assert info["n_test"] == 48 and info["n_train"] == 192  # the 80:20 split
    assert info["loss_history"][-1] < info["loss_history"][0]
    assert np.asarray(info["confusion"]).sum() == 48


def test_training_is_seeded():
    images, labels = colour_set(96)
    cfg = C.ClassifierConfig(arch="smallconv", epochs=1, batch_size=16, seed=5)
    a, _ = C.train_classifier(cfg, images, labels, task="toy")
    b, _ = C.train_classifier(cfg, images, labels, task="toy")
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_noise_aware_classifier_learns_and_knows_time():
    images, labels = colour_set(300)
    cfg = C.ClassifierConfig(arch="cheap", epochs=6, batch_size=16)
    model, info = C.train_classifier(cfg, images, labels, task="toy")
    assert C.is_noisy(model)
    # nearly clean inputs are easy; at uniform t many inputs are pure noise (chance = 1/3)
    assert info["test_accuracy_clean"] >= 0.9, info
    assert info["test_accuracy_clean"] > info["test_accuracy"]


def test_checkpoint_roundtrip_and_mismatch(tmp_path):
    images, labels = colour_set(64)
    model, info = C.train_classifier(
        C.ClassifierConfig(arch="resnet8", epochs=1), images, labels, task="B"
    )
    path = C.save_classifier(tmp_path / "clf.safetensors", model, info)
    loaded, meta = C.load_classifier(path, task="B", kind="pixel")
    torch.testing.assert_close(C.logits_of(loaded, images), C.logits_of(model, images))
    assert meta["arch"] == "resnet8" and meta["image_size"] == 32
    with pytest.raises(C.CheckpointMismatchError, match="task 'B', not on task 'A'"):
        C.load_classifier(path, task=tasks.get("A"))
    with pytest.raises(C.CheckpointMismatchError, match="expects 32x32 images, not 64x64"):
        C.load_classifier(path, task="B", image_size=64)
    with pytest.raises(C.CheckpointMismatchError, match="noise-aware"):
        C.load_classifier(path, task="B", kind="noisy")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        C.load_classifier(bad)
    with pytest.raises(FileNotFoundError):
        C.load_classifier(tmp_path / "missing.safetensors")


class Lookup(torch.nn.Module):
    """A stand-in classifier that returns given logits in order (the filter keeps batch order)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.as_tensor(logits, dtype=torch.float32)
        self.pos = 0
        self.p = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        out = self.logits[self.pos : self.pos + len(x)]
        self.pos += len(x)
        return out


def test_filter_mask_and_threshold():
    logits = np.log([[0.1, 0.8, 0.1], [0.5, 0.4, 0.1], [0.2, 0.6, 0.2], [0.1, 0.2, 0.7]])
    imgs = np.zeros((4, 32, 32, 3), np.uint8)
    keep, p1 = filtering.filter_mask(Lookup(logits), imgs)
    assert keep.tolist() == [True, False, True, False]
    np.testing.assert_allclose(p1, [0.8, 0.4, 0.6, 0.2], rtol=1e-5)
    keep, _ = filtering.filter_mask(Lookup(logits), imgs, threshold=0.7)
    assert keep.tolist() == [True, False, False, False]
    with pytest.raises(ValueError, match="threshold"):
        filtering.filter_mask(Lookup(logits), imgs, threshold=1.5)


def test_filter_report_keeps_the_conforming_images():
    """A perfect filter on a half-violating set: kept share 1/3, and after filtering the images
    conform (rule-conforming % near 100, bias near 0) while before they did not."""
    task = tasks.get("D")
    images, labels, _ = CD.make_contrastive(task, 240, seed=0)
    logits = np.full((240, 3), -5.0)
    logits[np.arange(240), labels] = 5.0
    rep = filtering.filter_report(task, images, Lookup(logits), n_boot=200)
    assert rep["kept"] == 80 and rep["kept_share"] == pytest.approx(1 / 3)
    after, before = rep["after"], rep["before"]
    assert after["conforming_pct"]["value"] >= 95
    assert before["conforming_pct"]["value"] <= 60
    assert after["bias"]["value"] < 0.05 < before["bias"]["value"]
    assert after["n"] == 80 and len(after["conforming_pct"]["ci"]) == 2


@pytest.mark.parametrize(
    "kw,match",
    [({"arch": "vgg"}, "unknown classifier"), ({"epochs": 0}, "epochs"), ({"lr": -1.0}, "lr")],
)
def test_bad_config(kw, match):
    with pytest.raises(ValueError, match=match):
        C.ClassifierConfig(**kw)


def test_bad_images():
    with pytest.raises(ValueError, match="uint8"):
        C.to_tensor(np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="RGB"):
        C.to_tensor(np.zeros((2, 32, 32, 4), np.uint8))


def test_mitigation_run_filters_a_run_folder(tmp_path):
    """reproduce --mitigation on a task folder with samples but no model: contrastive data, the
    three classifiers (smoke size), filtering with before/after reports, files; guidance skipped.
    A rerun reuses the saved classifiers (same accuracies, no retraining)."""
    task = tasks.get("D")
    smoke = profiles.get("smoke")
    gen, _, _ = CD.make_contrastive(task, 60, seed=9)  # stand-in "generated" images, measurable
    tdir = tmp_path / "D"
    tdir.mkdir()
    np.savez_compressed(tdir / "samples.npz", images=gen)
    out = pipeline.run("D", tdir, smoke, device="cpu", quiet=True)
    mdir = tdir / "mitigation"
    for f in ("mitigation.json", "mitigation.md", "contrastive.png", "filter.png"):
        assert (mdir / f).exists(), f
    assert set(out["accuracy"]) == set(C.PIXEL_ARCHS) and "guidance" not in out
    for rep in out["filter"].values():
        assert rep["n"] == 60 and rep["before"]["n_measurable"] >= 57
        assert 0 <= rep["kept"] <= 60
    again = pipeline.run("D", tdir, smoke, device="cpu", quiet=True)
    assert again["accuracy"] == out["accuracy"]
    with pytest.raises(ValueError, match="no mitigation settings for profile 'huge'"):
        pipeline.run("D", tdir, dataclasses.replace(smoke, name="huge"))


def test_cli_subcommands_refuse_bad_input(tmp_path, capsys):
    from rulelib import cli

    parser = cli.build_parser()
    args = parser.parse_args(["guide", "--task", "D", "--scale", "7", "--schedule", "last_k"])
    assert args.scale == 7.0 and args.schedule == "last_k" and args.profile is None
    for bad, msg in (("-1", "finite number >= 0"), ("inf", "finite number >= 0")):
        with pytest.raises(SystemExit) as e:
            cli.main(["guide", "--task", "D", "--out", str(tmp_path), "--scale", bad])
        assert e.value.code == 2 and msg in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(
            ["guide", "--task", "D", "--out", str(tmp_path), "--scale", "1", "--schedule", "x"]
        )
    assert "unknown guidance schedule 'x'" in capsys.readouterr().err
