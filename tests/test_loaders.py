"""The real-data readers on small files written in exactly the published formats."""

import gzip

import numpy as np
import pytest

from rulelib.tasks import loaders

# ---- writers in the published formats (independent of the readers) --------------------------


def write_cifar_batch(path, images, labels):
    """CIFAR-10 binary: per record a label byte, then the R, G and B planes (row-major)."""
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    path.write_bytes(np.concatenate([labels[:, None].astype(np.uint8), planes], 1).tobytes())


def write_idx(path, array, gz=False):
    """IDX: 00 00 08 <ndim>, big-endian int32 sizes, unsigned bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    data = header + np.ascontiguousarray(array, np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def write_syn_mirror(path, colors, seg, *, skip=()):
    """A Syn Mirror HDF5 file (skips the calling test where h5py, an optional extra, is missing)."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        values = {
            "colors": colors,
            "category_id_segmaps": seg,
            "depth": np.linspace(1, 2, seg.size, dtype=np.float32).reshape(seg.shape),
            "normals": np.zeros((*seg.shape, 3), np.float32),
            "cam_states": np.bytes_('{"cam2world": [[1, 0, 0, 0]]}'),
        }
        for k, v in values.items():
            if k not in skip:
                f.create_dataset(k, data=v)


# ---- CIFAR-10 ----------------------------------------------------------------------------------


def test_cifar10_batches_are_read_in_order_with_channels_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 7).astype(np.uint8)
    write_cifar_batch(tmp_path / "data_batch_1.bin", images[:4], labels[:4])
    write_cifar_batch(tmp_path / "data_batch_2.bin", images[4:], labels[4:])
    write_cifar_batch(tmp_path / "test_batch.bin", images[:1], labels[:1])
    got, lab = loaders.load_cifar10(tmp_path)
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(lab, labels)
    assert loaders.load_cifar10(tmp_path, "test_batch.bin")[0].shape == (1, 32, 32, 3)
    # the red plane comes first: a record whose first 1024 pixel bytes are 255 is pure red
    red = np.zeros((1, 32, 32, 3), np.uint8)
    red[..., 0] = 255
    write_cifar_batch(tmp_path / "red.bin", red, np.array([3]))
    img, lab = loaders.read_cifar10_batch(tmp_path / "red.bin")
    assert img[0, 5, 7].tolist() == [255, 0, 0] and lab.tolist() == [3]


def test_cifar10_bad_files_are_refused_clearly(tmp_path):
    (tmp_path / "data_batch_1.bin").write_bytes(b"\x00" * 3000)
    with pytest.raises(ValueError, match="3073"):
        loaders.load_cifar10(tmp_path)
    with pytest.raises(FileNotFoundError, match="data_batch"):
        loaders.load_cifar10(tmp_path, "nothing_*.bin")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        loaders.load_cifar10(tmp_path / "missing")


# ---- MNIST ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files_plain_or_gzipped(tmp_path, gz):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], np.uint8)
    suffix = ".gz" if gz else ""
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, gz)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels, gz)
    got, lab = loaders.load_mnist(tmp_path)
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(lab, labels)


def test_idx_header_and_size_are_checked(tmp_path):
    write_idx(tmp_path / "x", np.zeros((4, 3), np.uint8))
    data = (tmp_path / "x").read_bytes()
    (tmp_path / "short").write_bytes(data[:-1])
    with pytest.raises(ValueError, match="truncated"):
        loaders.read_idx(tmp_path / "short")
    (tmp_path / "bad").write_bytes(b"\x01" + data[1:])
    with pytest.raises(ValueError, match="not an IDX file"):
        loaders.read_idx(tmp_path / "bad")
    assert loaders.read_idx(tmp_path / "x").shape == (4, 3)
    with pytest.raises(ValueError, match="split"):
        loaders.load_mnist(tmp_path, "test")


# ---- Syn Mirror ----------------------------------------------------------------------------------


def test_syn_mirror_crop_and_resize_give_the_expected_image(tmp_path):
    """A 96x96 render that is a 32x32 design upscaled 3x, mirror and object spanning the whole
    view: the crop is the whole image and the area-average resize returns the design exactly."""
    rng = np.random.default_rng(2)
    design = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    seg32 = np.zeros((32, 32), np.int64)
    seg32[:, 20:] = 1  # mirror: the right part, top to bottom
    seg32[10:20, 0:6] = 2  # object touching the left edge
    colors = np.kron(design, np.ones((3, 3, 1), np.uint8))
    seg = np.kron(seg32, np.ones((3, 3), np.int64))
    write_syn_mirror(tmp_path / "0.hdf5", colors, seg)
    data = loaders.load_syn_mirror(tmp_path, margin=0.0)
    np.testing.assert_array_equal(data["images"][0], design)
    np.testing.assert_array_equal(data["segmaps"][0], seg32)
    assert data["depth"].shape == (1, 32, 32) and data["paths"][0].endswith("0.hdf5")


def test_crop_box_is_square_centred_and_inside():
    seg = np.zeros((100, 200), np.int64)
    seg[40:60, 50:70] = 1  # mirror 20x20
    seg[45:55, 80:90] = 2  # object: joint box rows 40-60, cols 50-90 (40 wide)
    assert loaders.crop_box(seg, margin=0.5) == (20, 40, 60)  # side 40 * 1.5, centred on (50, 70)
    seg[:] = 0
    seg[0:5, 195:200] = 2  # a corner object: the box is shifted inside the image
    top, left, side = loaders.crop_box(seg, margin=1.0)
    assert (top, left, side) == (0, 190, 10)
    with pytest.raises(ValueError, match="no mirror"):
        loaders.crop_box(np.zeros((4, 4), np.int64))


def test_syn_mirror_missing_key_is_named(tmp_path):
    write_syn_mirror(tmp_path / "a.hdf5", np.zeros((8, 8, 3), np.uint8), np.ones((8, 8)),
                     skip=("normals",))  # fmt: skip
    with pytest.raises(ValueError, match="normals"):
        loaders.load_syn_mirror(tmp_path)
