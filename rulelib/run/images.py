"""Images made elsewhere (`python -m rulelib evaluate --images`, `filter --images`): read and check.

`load_images` takes an .npz (key 'images', else its only 4-D array), an .npy, one PNG or a folder
of PNGs (sorted by name) and returns uint8 (n, 32, 32, 3); float arrays in [0, 1] are scaled to
uint8.  Every refusal is a ValueError (FileNotFoundError for a missing path) naming the file and
what was expected: a file that is not an image, a PNG of another size, an array of another shape.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

SHAPE = (32, 32, 3)


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
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as z:
            if "images" in z:
                return z["images"]
            four_d = [k for k in z.files if z[k].ndim == 4]
            if len(four_d) != 1:
                raise ValueError(
                    f"{path} has no 'images' array and {len(four_d)} 4-D arrays "
                    f"({z.files}); expected one array of shape (n, 32, 32, 3)"
                )
            return z[four_d[0]]
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable numpy file ({type(e).__name__}: {e})") from e


def _read_png(path: Path) -> np.ndarray:
    """One PNG as uint8 (32, 32, 3); ValueError naming the file when it is not an image or of
    another size."""
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as e:  # PIL raises all three
        raise ValueError(f"{path}: not a readable image ({type(e).__name__}: {e})") from e
    if arr.shape != SHAPE:
        raise ValueError(
            f"{path}: a {arr.shape[1]}x{arr.shape[0]} image; expected 32x32 pixels like the "
            "images of the tasks"
        )
    return arr


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
