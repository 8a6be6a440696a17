"""Readers for the real data behind the paper's non-geometric rules, in their published formats.

    load_cifar10(folder)        CIFAR-10 "binary version": ``data_batch_*.bin`` (and test_batch.bin)
    load_mnist(folder, split)   MNIST IDX files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``,
                                gzipped or not
    read_idx(path)              any IDX file (the MNIST container format)
    load_syn_mirror(folder)     Syn Mirror renders: one HDF5 file per view with ``colors``,
                                ``category_id_segmaps`` (1 = mirror, 2 = object), ``depth``,
                                ``normals``, ``cam_states``; cropped around mirror and object and
                                resized to the training size (needs h5py: ``rulelib[mirror]``)

No pickles are read (CIFAR-10's Python version is a pickle; its binary version carries the same
images).  Formats:

* CIFAR-10 binary: records of 1 + 3072 bytes, a label byte (0-9) then the 32x32 image as 1024 red,
  1024 green, 1024 blue bytes, rows top to bottom (https://www.cs.toronto.edu/~kriz/cifar.html).
* IDX: 2 zero bytes, a type byte (0x08 = unsigned byte), a byte with the number of dimensions d,
  then d big-endian int32 sizes and the data in C order (http://yann.lecun.com/exdb/mnist/).
* Syn Mirror: the BlenderProc HDF5 layout, one frame per file: ``colors`` (H, W, 3) uint8,
  ``category_id_segmaps`` (H, W) integers, ``depth`` (H, W) float, ``normals`` (H, W, 3) float,
  ``cam_states`` (the camera, kept as read).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
CIFAR_RECORD = 1 + 3 * 32 * 32
IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
SYN_MIRROR_KEYS = ("colors", "category_id_segmaps", "depth", "normals", "cam_states")
MIRROR, OBJECT = 1, 2  # Syn Mirror's category ids


def _folder(folder, what: str) -> Path:
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder {str(path)!r} does not exist or is not a folder")
    return path


# ----------------------------------------------------------------------------------------------
# CIFAR-10


def read_cifar10_batch(path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 binary batch: images uint8 (n, 32, 32, 3) and labels uint8 (n,)."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % CIFAR_RECORD:
        raise ValueError(
            f"{path}: {raw.size} bytes is not a whole number of CIFAR-10 records of "
            f"{CIFAR_RECORD} bytes (a label byte and 3072 pixel bytes); is it the binary version?"
        )
    rec = raw.reshape(-1, CIFAR_RECORD)
    labels = rec[:, 0].copy()
    if labels.max() > 9:
        raise ValueError(f"{path}: label {int(labels.max())} found; CIFAR-10 labels are 0-9")
    images = rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # planes -> HWC
    return np.ascontiguousarray(images), labels


def load_cifar10(folder, pattern: str = "data_batch_*.bin") -> tuple[np.ndarray, np.ndarray]:
    """All batches matching ``pattern`` in ``folder`` (sorted by name), concatenated.

    ``pattern="test_batch.bin"`` reads the test set.  Returns (images (n, 32, 32, 3), labels (n,)).
    """
    path = _folder(folder, "CIFAR-10")
    files = sorted(path.glob(pattern))
    if not files:
        raise FileNotFoundError(
            f"no {pattern} in {path}; expected CIFAR-10's binary batches "
            "(cifar-10-binary.tar.gz unpacks to cifar-10-batches-bin/data_batch_1.bin ...)"
        )
    parts = [read_cifar10_batch(f) for f in files]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# ----------------------------------------------------------------------------------------------
# MNIST (IDX)


def read_idx(path) -> np.ndarray:
    """An IDX file (gzipped when its name ends in .gz): an array of its declared type and shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (expected the magic bytes 00 00 <type> <ndim>)")
    dtype, ndim = IDX_TYPES.get(data[2]), data[3]
    if dtype is None:
        raise ValueError(f"{path}: unknown IDX type byte 0x{data[2]:02x}; expected {IDX_TYPES}")
    shape = tuple(int(v) for v in np.frombuffer(data, ">i4", ndim, offset=4))
    offset = 4 + 4 * ndim
    count = int(np.prod(shape))
    itemsize = np.dtype(dtype).itemsize
    if len(data) - offset != count * itemsize:
        raise ValueError(
            f"{path}: header says shape {shape} ({count * itemsize} bytes of data) but the file "
            f"holds {len(data) - offset}; truncated or not IDX"
        )
    arr = np.frombuffer(data, dtype, count, offset=offset).reshape(shape)
    return arr.astype(np.dtype(dtype).newbyteorder("="))


def _idx_file(folder: Path, stem: str) -> Path:
    # "train-images-idx3-ubyte", its .gz, and the common "train-images.idx3-ubyte" spelling
    hits = sorted(folder.glob(f"{stem[0]}-{stem[1]}*{stem[2]}-ubyte*"))
    if not hits:
        raise FileNotFoundError(
            f"no {stem[0]}-{stem[1]}-{stem[2]}-ubyte[.gz] in {folder}; expected MNIST's IDX files"
        )
    return hits[0]


def load_mnist(folder, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """MNIST images uint8 (n, 28, 28) and labels uint8 (n,) of ``split`` ("train" or "t10k")."""
    if split not in ("train", "t10k"):
        raise ValueError(f"split must be 'train' or 't10k', got {split!r}")
    path = _folder(folder, "MNIST")
    images = read_idx(_idx_file(path, (split, "images", "idx3")))
    labels = read_idx(_idx_file(path, (split, "labels", "idx1")))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"{path}: MNIST images {images.shape} and labels {labels.shape} do not match; "
            "expected (n, 28, 28) and (n,)"
        )
    if labels.size and labels.max() > 9:
        raise ValueError(f"{path}: label {int(labels.max())} found; MNIST labels are 0-9")
    return images.astype(np.uint8), labels.astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Resizing (PIL: BOX = area average for colours, exact for integer factors; NEAREST for labels)


def resize(images: np.ndarray, size: int, labels: bool = False) -> np.ndarray:
    """Resize (n, H, W[, 3]) uint8 images to (n, size, size[, 3]): area average, or nearest for
    label maps."""
    method = Image.Resampling.NEAREST if labels else Image.Resampling.BOX
    out = [np.asarray(Image.fromarray(im).resize((size, size), method)) for im in images]
    return np.stack(out) if out else np.zeros((0, size, size, *images.shape[3:]), images.dtype)


# ----------------------------------------------------------------------------------------------
# Syn Mirror (HDF5)


def _h5py():
    try:
        import h5py
    except ModuleNotFoundError as e:  # an optional dependency: say how to get it
        raise ModuleNotFoundError(
            "reading Syn Mirror's HDF5 files needs h5py: pip install 'rulelib[mirror]'"
        ) from e
    return h5py


def read_syn_mirror_file(path) -> dict:
    """One Syn Mirror HDF5 file: {"colors", "category_id_segmaps", "depth", "normals",
    "cam_states"} as arrays (cam_states as stored)."""
    h5py = _h5py()
    with h5py.File(path, "r") as f:
        missing = [k for k in SYN_MIRROR_KEYS if k not in f]
        if missing:
            raise ValueError(
                f"{path}: lacks {missing}; a Syn Mirror file holds {list(SYN_MIRROR_KEYS)}"
            )
        out = {k: f[k][()] for k in SYN_MIRROR_KEYS}
    colors, seg = np.asarray(out["colors"]), np.asarray(out["category_id_segmaps"])
    if colors.ndim != 3 or colors.shape[2] != 3 or seg.shape != colors.shape[:2]:
        raise ValueError(
            f"{path}: colors {colors.shape} and category_id_segmaps {seg.shape}; expected "
            "(H, W, 3) and (H, W)"
        )
    if colors.dtype != np.uint8:  # float renders in [0, 1]
        colors = np.clip(np.rint(np.asarray(colors, np.float64) * 255), 0, 255).astype(np.uint8)
    out["colors"], out["category_id_segmaps"] = colors, seg.astype(np.int64)
    return out


def crop_box(seg: np.ndarray, margin: float = 0.1) -> tuple[int, int, int]:
    """Square crop (top, left, side) around the mirror and the object (labels 1 and 2).

    The box is centred on their joint bounding box, its side the longer side times (1 + margin),
    shifted (and if need be shrunk) to stay inside the image.
    """
    rows, cols = np.nonzero((seg == MIRROR) | (seg == OBJECT))
    H, W = seg.shape
    if rows.size == 0:
        raise ValueError("the segmentation holds no mirror (1) or object (2) pixel to crop to")
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    side = min(int(round(max(r1 - r0, c1 - c0) * (1 + margin))), H, W)
    top = int(np.clip(round((r0 + r1 - side) / 2), 0, H - side))
    left = int(np.clip(round((c0 + c1 - side) / 2), 0, W - side))
    return top, left, side


def load_syn_mirror(folder, size: int = 32, pattern: str = "**/*.hdf5", margin: float = 0.1):
    """Every Syn Mirror file under ``folder`` (sorted by path), cropped around mirror and object
    (``crop_box``) and resized to size x size.

    Returns {"images": uint8 (n, size, size, 3), "segmaps": uint8 (n, size, size) (nearest),
    "depth": float32 (n, size, size) (nearest), "paths": [str], "full": [dict of the file]} --
    ``full`` keeps the full-resolution arrays for the reflection measurement.
    """
    path = _folder(folder, "Syn Mirror")
    files = sorted(path.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no {pattern} under {path}; expected Syn Mirror's HDF5 files")
    images, segs, depths, full = [], [], [], []
    for file in files:
        d = read_syn_mirror_file(file)
        top, left, side = crop_box(d["category_id_segmaps"], margin)
        win = (slice(top, top + side), slice(left, left + side))
        images.append(resize(d["colors"][win][None], size)[0])
        segs.append(resize(d["category_id_segmaps"][win].astype(np.uint8)[None], size, True)[0])
        depth = np.asarray(d["depth"], np.float32)[win]
        depths.append(
            np.asarray(Image.fromarray(depth).resize((size, size), Image.Resampling.NEAREST))
        )
        full.append(d)
    return {
        "images": np.stack(images),
        "segmaps": np.stack(segs),
        "depth": np.stack(depths),
        "paths": [str(f) for f in files],
        "full": full,
    }
