"""Images made elsewhere (`python -m rulelib evaluate --images`, `filter --images`): read and check.

`load_images` takes an .npz (key 'images', else its only 4-D array), an .npy, one PNG or a folder
of PNGs (sorted by name) and returns uint8 (n, 32, 32, 3); float arrays in [0, 1] are scaled to
uint8.  Every refusal is a ValueError (FileNotFoundError for a missing path) naming the file and
what was expected: a file that is not an image, a PNG of another size, an array of another shape.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

SHAPE = (32, 32, 3)
IMAGE_BYTES = 32 * 32 * 3  # one uint8 image of the tasks


def load_images(path) -> np.ndarray:
    """uint8 (n, 32, 32, 3) images from an .npz, .npy, .png or a folder of PNGs (see the module)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; expected an .npz/.npy file or PNG folder")
    suffix = path.suffix.lower()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".png")
        if not files:
            raise ValueError(f"{path} holds no .png files")
        arr = np.stack([_read_png(p) for p in files])
    elif suffix == ".png":
        arr = _read_png(path)[None]
    elif suffix in (".npz", ".npy"):
        arr = _read_array(path)
    else:
        raise ValueError(f"{path}: unsupported file type; expected .npz, .npy, .png or a folder")
    return _to_uint8(arr, path)


def _read_array(path: Path) -> np.ndarray:
    """The images array of an .npy or .npz; ValueError naming the file when it is not a numpy
    file (a text file, say), holds Python objects (never unpickled: a file from elsewhere could
    run code) or has no single images array."""
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        # numpy's own words for both a text file and an object array are advice to unpickle it
        numpy_file = zipfile.is_zipfile(path) or path.read_bytes()[:6] == b"\x93NUMPY"
        what = ("it holds Python objects, which are never unpickled (a file from elsewhere "
                "could run code)" if isinstance(e, ValueError) and numpy_file
                else f"not a numpy file ({type(e).__name__})")  # fmt: skip
        raise ValueError(
            f"{path}: {what}; expected an .npz/.npy holding uint8 or float images of shape "
            "(n, 32, 32, 3)"
        ) from e
    if "images" in arrays:
        return arrays["images"]
    four_d = [k for k, v in arrays.items() if v.ndim == 4]
    if len(four_d) != 1:
        raise ValueError(
            f"{path} has no 'images' array and {len(four_d)} 4-D arrays ({list(arrays)}); "
            "expected one array of shape (n, 32, 32, 3)"
        )
    return arrays[four_d[0]]


def _read_png(path: Path) -> np.ndarray:
    """One PNG as uint8 (32, 32, 3); ValueError naming the file when it is not an image or of
    another size (checked from its header, before its pixels are decoded: a huge image is
    refused, not decompressed).  16-bit images are scaled to 8 bits (v / 257), not clipped."""
    try:
        with Image.open(path) as im:
            if im.size != SHAPE[:2]:
                raise ValueError(
                    f"{path}: a {im.size[0]}x{im.size[1]} image; expected 32x32 pixels like the "
                    "images of the tasks"
                )
            arr = _rgb8(im, path)
    except Image.DecompressionBombError as e:  # raised by open() itself, from the header
        raise ValueError(f"{path}: a huge image ({e}); expected 32x32 pixels") from e
    except (UnidentifiedImageError, OSError, SyntaxError) as e:  # PIL raises all three
        raise ValueError(f"{path}: not a readable image ({type(e).__name__}: {e})") from e
    return arr


def _rgb8(im: Image.Image, path: Path) -> np.ndarray:
    """uint8 RGB pixels of a PIL image.  PIL's convert("RGB") clips the 16-bit (and 32-bit
    integer) grey modes at 255, which turns a 16-bit PNG white; they are scaled here instead."""
    if im.mode.startswith("I"):  # "I;16", "I;16B", "I" (16-bit PNGs open as one of these)
        grey = np.asarray(im).astype(np.float64)
        if grey.min() < 0 or grey.max() > 65535:
            raise ValueError(f"{path}: pixel values outside 0..65535 in a {im.mode} image")
        grey = np.round(grey / 257).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(im.convert("RGB"))


def _to_uint8(arr: np.ndarray, path) -> np.ndarray:
    if arr.ndim == 4 and arr.shape[1] == 3 and arr.shape[-1] != 3:  # (n, 3, H, W) -> (n, H, W, 3)
        arr = arr.transpose(0, 2, 3, 1)
    if arr.ndim != 4 or arr.shape[1:] != SHAPE:
        raise ValueError(f"{path}: expected images of shape (n, 32, 32, 3), got {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise ValueError(f"{path}: float images must be finite and in [0, 1]")
        return np.round(arr * 255).astype(np.uint8)
    raise ValueError(f"{path}: expected uint8 or float images, got {arr.dtype}")


def check_images(images) -> np.ndarray:
    """uint8 (n, 32, 32, 3) images given in memory, else ValueError saying what they are."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != SHAPE:
        raise ValueError(
            f"expected uint8 images of shape (n, 32, 32, 3), got {images.dtype} {images.shape}"
        )
    return images


def memory_bytes() -> int:
    """The machine's physical memory in bytes (0 where the system does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not POSIX
        return 0


def check_image_count(n: int) -> int:
    """n images must fit in memory twice (the samples are gathered into one array, then
    written): ValueError naming n and the machine's memory otherwise.  Returns n."""
    have = memory_bytes()
    need = 2 * int(n) * IMAGE_BYTES
    if have and need > have:
        raise ValueError(
            f"{n} images of 32x32x3 need {need / 2**30:.1f} GiB in memory, more than this "
            f"machine's {have / 2**30:.1f} GiB; expected at most {have // (2 * IMAGE_BYTES)}"
        )
    return int(n)
