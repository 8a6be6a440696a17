"""Task "pairs": the pairing rule's encoding, the images, the classifier, CIFAR-10/MNIST files."""

import numpy as np
import pytest
from test_loaders import write_cifar_batch, write_idx  # tests/test_loaders.py: the file writers

from rulelib import metrics, tasks
from rulelib.metrics import categorical
from rulelib.tasks import pairs

DOG, CAT, CAR, TRUCK = 5, 3, 1, 9


@pytest.fixture(scope="module")
def offline():
    task = tasks.get("pairs")
    images, truth = task.sample(400, seed=1)
    feats, ok = task.measure(images)
    return task, images, truth, feats, ok


def test_groups_of_known_answers():
    rows = np.array([
        [DOG, CAT, 10, 11],  # group 1, complete
        [10, DOG, 11, CAT],  # the same in other quadrants
        [DOG, CAT, 12, 13],  # objects of group 1, digits of group 2
        [DOG, TRUCK, 10, 11],  # objects from two groups
        [DOG, CAT, CAR, 10],  # three objects: wrong layout
        [DOG, DOG, 10, 10],  # one group, but not all four of its classes
    ])  # fmt: skip
    g = pairs.groups_of(rows)
    assert g["obj_group"].tolist() == [1, 1, 1, 0, 0, 1]
    assert g["digit_group"].tolist() == [1, 1, 2, 1, -1, 1]
    assert g["n_objects"].tolist() == [2, 2, 2, 2, 3, 2]
    assert g["complete"].tolist() == [1, 1, 0, 0, 0, 0]


def test_rule_report_counts_exactly_the_valid_groups():
    """conforming (bins of 0.05) and within +-5 % hold iff the four tiles form one group."""
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 20, (5000, 4))
    rows[:2000] = np.array([DOG, CAT, 10, 11])[
        rng.permuted(np.tile(np.arange(4), (2000, 1)), axis=1)
    ]
    f = pairs.groups_of(rows)
    task = tasks.get("pairs")
    x, y = task.rule_xy(f)
    valid = task.valid_group(f)
    assert 0.3 < valid.mean() < 0.6  # both kinds present
    np.testing.assert_array_equal(metrics.conforming(x, y, task.k), valid)
    np.testing.assert_array_equal(metrics.within(x, y, task.k, 0.10), valid)


def test_training_images_follow_the_rule_in_their_quadrants(offline):
    task, images, truth, *_ = offline
    assert images.shape == (400, 32, 32, 3) and images.dtype == np.uint8
    g = (truth["group"] - 1).astype(int)
    np.testing.assert_array_equal(np.sort([truth["obj_class_1"], truth["obj_class_2"]], 0),
                                  np.sort(pairs.OBJECT_PAIRS[g], 1).T)  # fmt: skip
    np.testing.assert_array_equal(truth["dig_class_1"] // 2, g)
    tiles = pairs.split_tiles(images)
    lay = pairs.LAYOUTS[truth["layout"].astype(int)]
    src = task.source
    for i in range(20):
        np.testing.assert_array_equal(tiles[i, lay[i, 0]], src.objects[int(truth["obj_tile_1"][i])])
        np.testing.assert_array_equal(tiles[i, lay[i, 1]], src.objects[int(truth["obj_tile_2"][i])])
    # training tiles come from the training part of each pool only
    used = np.concatenate([truth["obj_tile_1"], truth["obj_tile_2"]]).astype(int)
    assert not set(used) & set(src.split["objects"]["test"].tolist())


def test_classifier_and_measured_training_images(offline):
    task, _, truth, f, ok = offline
    assert task.accuracy["all"] >= 0.9 and task.accuracy["kind"] >= 0.99  # held-out tiles
    assert ok.mean() >= 0.9
    rep = categorical.pairing_report(task, f, ok, n_boot=200)
    assert rep["layout"]["value"] >= 0.99 and rep["valid_group"]["value"] >= 0.9
    lo, hi = rep["valid_group"]["ci"]
    assert lo <= rep["valid_group"]["value"] <= hi and hi - lo < 0.1
    # shuffling the digit halves breaks the pairing: about 1 in 5 images stay valid by chance
    swapped = f | {"digit_group": np.roll(f["digit_group"], 1)}
    assert task.valid_group({k: v[ok] for k, v in swapped.items()}).mean() < 0.4


def test_contrastive_scaling_is_refused():
    with pytest.raises(ValueError, match="categorical"):
        tasks.get("pairs").sample(4, seed=0, dependent_scale=0.5)


def test_cifar_and_mnist_files_become_the_tiles(tmp_path):
    rng = np.random.default_rng(5)
    # CIFAR images constant on 2x2 blocks: their 16x16 area average is exactly the block value
    # (each class its own colour, plus noise, so that a classifier can learn the classes)
    labels = np.tile(np.arange(10), 6).astype(np.uint8)
    base = np.stack([labels * 25, 255 - labels * 25, 128 + 0 * labels], 1)[:, None, None, :]
    small = np.clip(base + rng.integers(-10, 11, (60, 16, 16, 3)), 0, 255).astype(np.uint8)
    cifar = np.kron(small, np.ones((1, 2, 2, 1), np.uint8))
    (tmp_path / "cifar").mkdir()
    write_cifar_batch(tmp_path / "cifar" / "data_batch_1.bin", cifar, labels)
    # MNIST digits of one grey level each: any resize keeps it
    level = (20 + 23 * labels + rng.integers(0, 4, 60)).astype(np.uint8)
    mnist = np.broadcast_to(level[:, None, None], (60, 28, 28)).copy()
    (tmp_path / "mnist").mkdir()
    write_idx(tmp_path / "mnist" / "train-images-idx3-ubyte.gz", mnist, gz=True)
    write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte.gz", labels, gz=True)
    src = pairs.files_source(tmp_path / "cifar", tmp_path / "mnist", max_per_class=None)
    task = pairs.Pairs(src)
    images, truth = task.sample(30, seed=2)
    tiles = pairs.split_tiles(images)
    lay = pairs.LAYOUTS[truth["layout"].astype(int)]
    for i in range(30):
        j = int(truth["obj_tile_1"][i])
        np.testing.assert_array_equal(tiles[i, lay[i, 0]], small[j])
        assert labels[j] == truth["obj_class_1"][i]
        digit_quads = [q for q in range(4) if q not in lay[i]]
        d = int(truth["dig_tile_1"][i])
        assert (tiles[i, digit_quads[0]] == level[d]).all() and labels[d] == truth["dig_class_1"][i]
    assert "CIFAR-10 from" in src.description and "MNIST from" in src.description
    # the classifier trains on these tiles and is tested on the held-out fifth (12 per kind);
    # the images were drawn by the rule, so the measured ones form valid groups
    f, ok = task.measure(images)
    assert ok.shape == (30,) and task.accuracy["n_test"] == 24
    assert ok.mean() >= 0.8 and task.valid_group({k: v[ok] for k, v in f.items()}).mean() >= 0.9
