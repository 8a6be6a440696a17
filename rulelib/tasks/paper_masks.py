"""The paper's ruler, part 1: its options, input checks, the area upscale and the object masks.

docs/paper.md section 3a, steps 1-2, with OpenCV itself (``cv2``, opencv-python-headless):

1. Upscale every image to the analysis size (128 px by default) with ``cv2.resize(...,
   INTER_AREA)``.  For an integer factor this replicates each source pixel into a factor x factor
   block (and, downscaling, averages whole blocks), so a batch stacked into one tall image is
   resized in a single call with the same result as image by image (checked in the tests).
2. One binary mask of the objects: the union of HSV colour boxes in OpenCV's convention (H 0-180,
   S and V 0-255, ``cv2.cvtColor(..., COLOR_RGB2HSV)``, ``cv2.inRange``), or a "not white" mask
   (some channel at most 255 - threshold).  Task A keeps one mask per object (sun, pole, shadow).

What is uncertain in the reconstruction (the exact boxes and thresholds of the authors' scripts,
the analysis size 128 vs 256) is an option of ``PaperRulerOptions``; ``DEFAULT`` is the paper's
stated procedure for generated samples (widened colour boxes at 128 px) and ``VARIANTS`` the
alternatives a sensitivity band runs over (``rulelib.tasks.paper_ruler.sensitivity``).

The boxes (OpenCV units; docs/paper.md section 3a step 2, "widened boxes for generated images"):

=============  =============================  ==============================================
mask           H (0-180)   S (0-255)  V       used for
=============  =============================  ==============================================
yellow / sun   0-60        >= 50      >= 200  A's sun; B, C, D object 1
blue / pole    90-150      >= 50      >= 50   A's pole; B, C, D object 2
shadow         any         <= 150     <= 220  A's shadow (less the sun and pole masks, ours)
red            160-180     >= 50      >= 50   D only
purple         130-160     >= 50      >= 50   D only
near-black     any         any        <= 50   D only, plus grey level < 128 (inverted threshold)
=============  =============================  ==============================================
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MASKS = ("boxes", "notwhite")
SIZES = (128, 256, 512)  # analysis sizes: 128 for generated samples, larger for training images

# HSV boxes in OpenCV units: (lower, upper) inclusive, for cv2.inRange
SUN = ((0, 50, 200), (60, 255, 255))
POLE = ((90, 50, 50), (150, 255, 255))
SHADOW = ((0, 0, 0), (180, 150, 220))
RED = ((160, 50, 50), (180, 255, 255))
PURPLE = ((130, 50, 50), (160, 255, 255))
BLACK = ((0, 0, 0), (180, 255, 50))
GREY_BELOW = 128  # D: grey level below this is object (the inverted threshold)
CHROMA_MIN = 50  # notwhite for A: a not-white pixel is sun / pole if its hue is and S >= this


@dataclass(frozen=True)
class PaperRulerOptions:
    """The reconstruction's uncertain steps (docs/paper.md section 3a).

    mask: "boxes" (the union of the HSV colour boxes, the paper's stated procedure) or
        "notwhite" (a pixel is object when some channel is at most 255 - ``threshold``).
    threshold: the not-white threshold in grey levels (1-254); ignored for "boxes".
    size: the analysis size in pixels the images are resized to with INTER_AREA (128 as for the
        paper's generated samples; 256 or 512 for its training images).
    """

    mask: str = "boxes"
    threshold: int = 30
    size: int = 128

    def __post_init__(self):
        if self.mask not in MASKS:
            raise ValueError(f"paper ruler: mask must be one of {MASKS}, got {self.mask!r}")
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, int | np.integer) or not 1 <= t <= 254:
            raise ValueError(f"paper ruler: threshold must be an int in 1..254, got {t!r}")
        s = self.size
        if isinstance(s, bool) or not isinstance(s, int | np.integer) or not 32 <= s <= 1024:
            raise ValueError(f"paper ruler: size must be an int in 32..1024 px, got {s!r}")

    @property
    def label(self) -> str:
        """Short name, e.g. "boxes@128", "notwhite30@128"."""
        m = "boxes" if self.mask == "boxes" else f"notwhite{self.threshold}"
        return f"{m}@{self.size}"


DEFAULT = PaperRulerOptions()
# the alternatives a sensitivity band runs over (the default first)
VARIANTS = (
    DEFAULT,
    PaperRulerOptions("notwhite", 15),
    PaperRulerOptions("notwhite", 30),
    PaperRulerOptions("notwhite", 60),
    PaperRulerOptions("boxes", size=256),
)


def as_uint8(images) -> np.ndarray:
    """Validate a batch of square RGB images (n, S, S, 3), S >= 8, uint8 (0-255) or float (0-1),
    and return it as uint8 (floats rounded); anything else raises ValueError naming the value."""
    if isinstance(images, list | tuple):
        images = np.asarray(images)
    if not isinstance(images, np.ndarray):
        raise ValueError(
            f"paper ruler: images must be a numpy array (n, S, S, 3), got {type(images).__name__}"
        )
    a = images
    if a.ndim == 3 and a.shape[-1] == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3 or a.shape[1] != a.shape[2] or a.shape[1] < 8:
        raise ValueError(
            f"paper ruler: images must have shape (n, S, S, 3) with S >= 8, got {images.shape}"
        )
    if a.shape[0] == 0:
        raise ValueError(f"paper ruler: images are empty (shape {a.shape}); expected n >= 1")
    if a.dtype == np.uint8:
        return a
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"paper ruler: images must be uint8 or float (0-1), got dtype {a.dtype}")
    lo, hi = float(np.min(a)), float(np.max(a))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("paper ruler: images contain NaN or inf values")
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"paper ruler: float images must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]")
    return np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)


def upscale(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (n, size, size, 3): each image resized with ``cv2.INTER_AREA`` (step 1).

    Integer factors (either way) resize the batch stacked into one tall image in one call (blocks
    never straddle two images, so the result is that of each image alone); others image by image.
    """
    n, s = images.shape[:2]
    if s == size:
        return images
    if size % s == 0 or s % size == 0:
        tall = np.ascontiguousarray(images).reshape(n * s, s, 3)
        out = cv2.resize(tall, (size, n * size), interpolation=cv2.INTER_AREA)
        return out.reshape(n, size, size, 3)
    return np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in images])


def _in(hsv_tall: np.ndarray, box) -> np.ndarray:
    return cv2.inRange(hsv_tall, np.array(box[0], np.uint8), np.array(box[1], np.uint8))


def _notwhite(rgb_tall: np.ndarray, threshold: int) -> np.ndarray:
    """255 where some channel is at most 255 - threshold (a per-pixel channel minimum)."""
    low = rgb_tall.min(axis=-1)
    return np.where(low <= 255 - threshold, np.uint8(255), np.uint8(0))


def object_mask(up: np.ndarray, task_name: str, options: PaperRulerOptions) -> np.ndarray:
    """The one binary mask (n, size, size) uint8 0/255 of tasks B, C, D (step 2)."""
    n, s = up.shape[:2]
    tall = up.reshape(n * s, s, 3)
    if options.mask == "notwhite":
        return _notwhite(tall, options.threshold).reshape(n, s, s)
    hsv = cv2.cvtColor(tall, cv2.COLOR_RGB2HSV)
    mask = cv2.bitwise_or(_in(hsv, SUN), _in(hsv, POLE))
    if task_name == "D":  # the paper's D script also took red, purple, near-black and dark grey
        for box in (RED, PURPLE, BLACK):
            mask = cv2.bitwise_or(mask, _in(hsv, box))
        grey = cv2.cvtColor(tall, cv2.COLOR_RGB2GRAY)
        _, dark = cv2.threshold(grey, GREY_BELOW - 1, 255, cv2.THRESH_BINARY_INV)
        mask = cv2.bitwise_or(mask, dark)
    return mask.reshape(n, s, s)


def _dilate_each(masks: np.ndarray, grow: int) -> np.ndarray:
    """Each mask (n, s, s) dilated by a (2 grow + 1)^2 square, image by image (separable max)."""
    out = masks.copy()
    for axis in (1, 2):
        src = out.copy()
        for d in range(1, grow + 1):
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[axis], hi[axis] = slice(d, None), slice(None, -d)
            np.maximum(out[tuple(hi)], src[tuple(lo)], out=out[tuple(hi)])
            np.maximum(out[tuple(lo)], src[tuple(hi)], out=out[tuple(lo)])
    return out


def light_shadow_masks(up: np.ndarray, options: PaperRulerOptions):
    """Task A's three masks (sun, pole, shadow), each (n, size, size) uint8 0/255 (step 2).

    The shadow box (S <= 150, V <= 220) also holds dark pole pixels and the pale rims of the
    sun and pole, so the shadow mask is taken less the sun and pole masks (ours).  "notwhite":
    the object extent is the not-white mask; a not-white pixel is sun (pole) when its hue lies in
    the sun (pole) box and S >= CHROMA_MIN, shadow when it is neither and at least one source
    pixel away from both (their pale rims are not-white too).
    """
    n, s = up.shape[:2]
    tall = up.reshape(n * s, s, 3)
    hsv = cv2.cvtColor(tall, cv2.COLOR_RGB2HSV)
    if options.mask == "boxes":
        sun, pole = _in(hsv, SUN), _in(hsv, POLE)
        shadow = cv2.bitwise_and(_in(hsv, SHADOW), cv2.bitwise_not(cv2.bitwise_or(sun, pole)))
    else:
        ink = _notwhite(tall, options.threshold)
        sun = cv2.bitwise_and(ink, _in(hsv, ((SUN[0][0], CHROMA_MIN, 0), (SUN[1][0], 255, 255))))
        pole = cv2.bitwise_and(ink, _in(hsv, ((POLE[0][0], CHROMA_MIN, 0), (POLE[1][0], 255, 255))))
        near = _dilate_each(cv2.bitwise_or(sun, pole).reshape(n, s, s), max(1, s // 32))
        shadow = cv2.bitwise_and(ink, cv2.bitwise_not(near.reshape(n * s, s)))
    return sun.reshape(n, s, s), pole.reshape(n, s, s), shadow.reshape(n, s, s)
