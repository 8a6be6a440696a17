"""Task "pairs": the paper's Cifar-MNIST pairing rule (docs/paper.md section 7), at 32x32.

An image is a 2x2 grid of 16x16 tiles in shuffled quadrants: two object tiles and two digit tiles.
Classes come in five fixed groups (the paper's), an object class pair with a digit pair:

=====  ===================  ======
group  object classes       digits
=====  ===================  ======
1      dog, cat             0, 1
2      automobile, truck    2, 3
3      deer, horse          4, 5
4      airplane, bird       6, 7
5      frog, ship           8, 9
=====  ===================  ======

Each training image shows one group: its two object classes once each and its two digits once each
(**ours**: the paper's "two CIFAR-10 images of a fixed class pair"), in one of the 6 layouts
(which two quadrants hold the objects), drawn uniformly.

**The rule** is categorical.  ``measure`` classifies the four tiles with a tile classifier trained
on clean tiles (20 classes: 10 object, 10 digit; sklearn's MLP) and returns

* ``obj_group``: g in 1..5 when the image has two object tiles and both belong to group g's
  object classes, else 0;
* ``digit_group``: g in 1..5 when both digit tiles belong to group g's digits, else -1.

So ``rule_xy = (obj_group, digit_group)`` with k = 1 gives y = k x exactly when the tiles form one
valid group (the fine rule) and never otherwise (0 and -1 differ, and distinct integers never share
a bin of 0.05 or lie within 10 % of each other): the rule report's "rule-conforming %" and
"within +-5 %" both equal the valid-group share, and its slope is 1 when the object side predicts
the digit side and about 0 when the two are independent.  The coarse rule is the layout: two
object tiles and two digit tiles.  A tile the classifier is unsure of (top probability below
``CONF_MIN``) makes the image not measurable.  The paper (64x64, CIFAR-10 and MNIST, CNN tile
classifiers) found the pairing kept in about 23 % of generated images against about 93 % of
training images (docs/paper.md section 7).

**Data.**  Offline default (no files; a stand-in, not CIFAR-10/MNIST): scikit-learn's bundled
handwritten digits (1797 real 8x8 scans, upsampled to 16x16, white on black like MNIST) and, for
the objects, ten shape classes rendered with ``rulelib.tasks.render`` (class i stands in for
CIFAR-10 class i, ``SHAPE_NAMES``).  ``use_files(cifar_dir=..., mnist_dir=...)`` switches to
CIFAR-10's binary batches and MNIST's IDX files (``rulelib.tasks.loaders``), tiles area-averaged
to 16x16.  Each pool is split (seeded) 80:20: the training images use the 80 %, the classifier
is trained on those tiles and its accuracy reported on the held-out 20 %.

**Contrastive data** (``dependent_scale``) does not apply: there is no continuous dependent
feature to scale; rule-violating negatives of a categorical rule are mismatched groups, which the
three-class "too small / right / too large" design of ``rulelib.mitigation.contrastive`` cannot
express.  ``sample(..., dependent_scale=...)`` raises ValueError.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

from rulelib.tasks import loaders, render
from rulelib.tasks.base import RuleTask, register

TILE = 16
# CIFAR-10 class ids (loaders.CIFAR10_CLASSES) of each group's object pair; digits are 2g, 2g + 1
OBJECT_PAIRS = np.array([[5, 3], [1, 9], [4, 7], [0, 2], [6, 8]])
DIGIT_PAIRS = np.array([[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]])
OBJECT_GROUP = np.empty(10, dtype=np.int64)
OBJECT_GROUP[OBJECT_PAIRS.ravel()] = np.repeat(np.arange(5), 2)
DIGIT_GROUP = np.arange(10) // 2
LAYOUTS = np.array(list(itertools.combinations(range(4), 2)))  # quadrants of the two objects
SHAPE_NAMES = (
    "disk", "square", "wide bar", "tall bar", "two disks", "two stacked disks", "cross",
    "L", "disk over bar", "four squares",
)  # fmt: skip
CONF_MIN = 0.5  # a tile whose top class probability is below this is unreadable
HOLDOUT = 0.2  # share of each pool kept out of the training images, to test the classifier


def groups_table() -> list[str]:
    """The valid groups as text, e.g. '1: dog + cat with 0 + 1'."""
    names = loaders.CIFAR10_CLASSES
    return [
        f"{g + 1}: {names[a]} + {names[b]} with {c} + {d}"
        for g, ((a, b), (c, d)) in enumerate(zip(OBJECT_PAIRS, DIGIT_PAIRS))
    ]


# ----------------------------------------------------------------------------------------------
# Tiles


def _shape_primitives(c: int, cx, cy, s, col) -> list:
    """Primitives (pixels, y up, 16x16 canvas) of stand-in object class c, vectorised."""
    R, D = render.Rect, render.Disk
    table = {
        0: lambda: [D(cx, cy, 5 * s, col)],
        1: lambda: [R(cx - 4.5 * s, cx + 4.5 * s, cy - 4.5 * s, cy + 4.5 * s, col)],
        2: lambda: [R(cx - 6 * s, cx + 6 * s, cy - 2 * s, cy + 2 * s, col)],
        3: lambda: [R(cx - 2 * s, cx + 2 * s, cy - 6 * s, cy + 6 * s, col)],
        4: lambda: [D(cx - 3.5 * s, cy, 2.8 * s, col), D(cx + 3.5 * s, cy, 2.8 * s, col)],
        5: lambda: [D(cx, cy - 3.5 * s, 2.8 * s, col), D(cx, cy + 3.5 * s, 2.8 * s, col)],
        6: lambda: [  # a cross of three touching bars (no overlap: composite adds inks)
            R(cx - 6 * s, cx + 6 * s, cy - 1.5 * s, cy + 1.5 * s, col),
            R(cx - 1.5 * s, cx + 1.5 * s, cy + 1.5 * s, cy + 6 * s, col),
            R(cx - 1.5 * s, cx + 1.5 * s, cy - 6 * s, cy - 1.5 * s, col),
        ],
        7: lambda: [
            R(cx - 5 * s, cx - 2 * s, cy - 5 * s, cy + 5 * s, col),
            R(cx - 2 * s, cx + 5 * s, cy - 5 * s, cy - 2 * s, col),
        ],
        8: lambda: [
            D(cx, cy + 2.5 * s, 3 * s, col),
            R(cx - 6 * s, cx + 6 * s, cy - 5.5 * s, cy - 3 * s, col),
        ],
        9: lambda: [
            R(
                cx + dx * s - 1.75 * s,
                cx + dx * s + 1.75 * s,
                cy + dy * s - 1.75 * s,
                cy + dy * s + 1.75 * s,
                col,
            )
            for dx in (-3, 3)
            for dy in (-3, 3)
        ],  # fmt: skip
    }
    return table[c]()


def shape_tiles(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stand-in object tiles: uint8 (10 n, 16, 16, 3) and labels 0-9 (``SHAPE_NAMES``).

    Each tile: scale U(0.75, 1), centre jittered U(-1.5, 1.5) px, colour from the yellow or the
    blue/green box of docs/paper.md section 2, on white.
    """
    rng = np.random.default_rng(seed)
    tiles, labels = [], []
    for c in range(10):
        n = n_per_class
        s = rng.uniform(0.75, 1.0, n)
        cx, cy = TILE / 2 + rng.uniform(-1.5, 1.5, (2, n))
        boxes = rng.integers(0, 2, n)
        col = np.where(
            boxes[:, None] == 0,
            render.sample_colors("yellow", n, rng),
            render.sample_colors("blue", n, rng),
        )
        img = render.composite(_shape_primitives(c, cx, cy, s, col), n, TILE)
        tiles.append(render.to_uint8(img))
        labels.append(np.full(n, c))
    return np.concatenate(tiles), np.concatenate(labels)


def gray_tiles(images: np.ndarray, bilinear: bool = False) -> np.ndarray:
    """Grey images (n, H, W) uint8 -> RGB tiles (n, 16, 16, 3) (area average, or bilinear for
    upsampling)."""
    if bilinear:
        method = Image.Resampling.BILINEAR
        small = np.stack(
            [np.asarray(Image.fromarray(im).resize((TILE, TILE), method)) for im in images]
        )
    else:
        small = loaders.resize(images, TILE)
    return np.repeat(small[..., None], 3, axis=-1)


def sklearn_digit_tiles() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits (1797 scans, 8x8, 0-16) as 16x16 white-on-black tiles."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    d = load_digits()
    grey = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return gray_tiles(grey, bilinear=True), d.target.astype(np.int64)


@dataclass
class TileSource:
    """Object and digit tiles (uint8 (n, 16, 16, 3), labels 0-9), split into train / held-out."""

    description: str
    objects: np.ndarray
    object_labels: np.ndarray
    digits: np.ndarray
    digit_labels: np.ndarray
    seed: int = 0

    def __post_init__(self):
        rng = np.random.default_rng(self.seed)
        self.split = {}
        for kind, labels in (("objects", self.object_labels), ("digits", self.digit_labels)):
            missing = sorted(set(range(10)) - set(np.unique(labels).tolist()))
            if missing:
                raise ValueError(f"{self.description}: no {kind} of classes {missing}")
            perm = rng.permutation(len(labels))
            n_out = int(round(HOLDOUT * len(labels)))
            test, train = np.sort(perm[:n_out]), perm[n_out:]
            train = train[np.argsort(labels[train], kind="stable")]  # grouped by class
            counts = np.bincount(labels[train], minlength=10)
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            self.split[kind] = {"train": train, "test": test, "counts": counts, "starts": starts}

    def pick(self, kind: str, classes: np.ndarray, rng) -> np.ndarray:
        """A random training-part tile (its index into the pool) of each requested class."""
        sp = self.split[kind]
        u = rng.random(len(classes))
        pos = sp["starts"][classes] + np.floor(u * sp["counts"][classes]).astype(np.int64)
        return sp["train"][pos]

    def tiles(self, part: str) -> tuple[np.ndarray, np.ndarray]:
        """Tiles and 20-class labels (objects 0-9, digits 10-19) of "train" or "test"."""
        o, d = self.split["objects"][part], self.split["digits"][part]
        x = np.concatenate([self.objects[o], self.digits[d]])
        y = np.concatenate([self.object_labels[o], 10 + self.digit_labels[d]])
        return x, y


def offline_source(seed: int = 0, n_per_class: int = 200) -> TileSource:
    """The stand-in: rendered shapes (objects) and scikit-learn's digits; no files needed."""
    objects, olab = shape_tiles(n_per_class, seed)
    digits, dlab = sklearn_digit_tiles()
    return TileSource(
        "offline stand-in: rendered shapes for CIFAR-10, scikit-learn digits for MNIST",
        objects, olab, digits, dlab, seed,
    )  # fmt: skip


def _cap(labels: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """Indices of at most per_class images of each class (seeded choice), sorted."""
    if per_class is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(10)]
    return np.sort(np.concatenate(keep))


def files_source(cifar_dir=None, mnist_dir=None, *, max_per_class: int | None = 1000, seed=0):
    """Tiles from CIFAR-10 binary batches and/or MNIST IDX files; the stand-in fills the side not
    given.  ``max_per_class`` bounds each pool (classifier training time); None keeps all."""
    base = None if (cifar_dir and mnist_dir) else offline_source(seed)
    parts = []
    if cifar_dir:
        imgs, lab = loaders.load_cifar10(cifar_dir)
        keep = _cap(lab, max_per_class, seed)
        objects, olab = loaders.resize(imgs[keep], TILE), lab[keep].astype(np.int64)
        parts.append(f"CIFAR-10 from {cifar_dir}")
    else:
        objects, olab = base.objects, base.object_labels
        parts.append("rendered shapes for CIFAR-10")
    if mnist_dir:
        imgs, lab = loaders.load_mnist(mnist_dir, "train")
        keep = _cap(lab, max_per_class, seed)
        digits, dlab = gray_tiles(imgs[keep]), lab[keep].astype(np.int64)
        parts.append(f"MNIST from {mnist_dir}")
    else:
        digits, dlab = base.digits, base.digit_labels
        parts.append("scikit-learn digits for MNIST")
    return TileSource(", ".join(parts), objects, olab, digits, dlab, seed)


# ----------------------------------------------------------------------------------------------
# The tile classifier


def _features(tiles: np.ndarray) -> np.ndarray:
    return tiles.reshape(len(tiles), -1).astype(np.float32) / 255.0 - 0.5


def train_classifier(source: TileSource, seed: int = 0):
    """A 20-class MLP (768 -> 256 -> 20, sklearn, Adam) on the training tiles.

    Returns (classifier, accuracy dict on the held-out tiles: "all", "objects", "digits",
    "kind" = object-vs-digit)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x, y = source.tiles("train")
    # Adam with early stopping (10 % held out to decide when to stop) on large pools; on a few
    # hundred tiles that stops while the classifier is still unsure of everything, and L-BFGS is
    # sklearn's advice for small data sets
    large = len(y) >= 2000
    clf = MLPClassifier(
        hidden_layer_sizes=(256,), alpha=1e-3, max_iter=200 if large else 100,
        solver="adam" if large else "lbfgs", early_stopping=large, random_state=seed,
    )  # fmt: skip
    with warnings.catch_warnings():  # a capped L-BFGS run on small pools: expected, not news
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(_features(x), y)
    xt, yt = source.tiles("test")
    pred = clf.predict(_features(xt))
    obj = yt < 10
    acc = {
        "all": float(np.mean(pred == yt)),
        "objects": float(np.mean(pred[obj] == yt[obj])),
        "digits": float(np.mean(pred[~obj] == yt[~obj])),
        "kind": float(np.mean((pred < 10) == obj)),
        "n_test": int(len(yt)),
        "iterations": int(clf.n_iter_),
    }
    return clf, acc


def split_tiles(images: np.ndarray) -> np.ndarray:
    """(n, 32, 32, 3) -> (n, 4, 16, 16, 3): quadrants 0 top-left, 1 top-right, 2 bottom-left,
    3 bottom-right."""
    n = len(images)
    t = images.reshape(n, 2, TILE, 2, TILE, 3).transpose(0, 1, 3, 2, 4, 5)
    return t.reshape(n, 4, TILE, TILE, 3)


def groups_of(classes: np.ndarray) -> dict:
    """Features of images from their tiles' 20-class labels (n, 4): n_objects, obj_group (1-5 or
    0), digit_group (1-5 or -1), complete (all four classes of the group shown once)."""
    classes = np.asarray(classes, dtype=np.int64)
    is_obj = classes < 10
    n_obj = is_obj.sum(1)
    layout = n_obj == 2
    grp = np.where(is_obj, OBJECT_GROUP[classes % 10], DIGIT_GROUP[classes % 10])
    og = np.where(is_obj, grp, -1)
    dg = np.where(is_obj, -1, grp)
    # the two groups of each kind, sorted: equal (and not -1) means one group
    og_s, dg_s = np.sort(og, 1)[:, 2:], np.sort(dg, 1)[:, 2:]  # the two largest entries
    obj_one = layout & (og_s[:, 0] == og_s[:, 1]) & (og_s[:, 0] >= 0)
    dig_one = layout & (dg_s[:, 0] == dg_s[:, 1]) & (dg_s[:, 0] >= 0)
    distinct = np.array([len(set(row)) == 4 for row in classes.tolist()])
    complete = distinct & obj_one & dig_one & (og_s[:, 0] == dg_s[:, 0])
    return {
        "n_objects": n_obj.astype(np.float64),
        "obj_group": np.where(obj_one, og_s[:, 0] + 1, 0).astype(np.float64),
        "digit_group": np.where(dig_one, dg_s[:, 0] + 1, -1).astype(np.float64),
        "complete": complete.astype(np.float64),
    }


# ----------------------------------------------------------------------------------------------
# The task


class Pairs(RuleTask):
    """Task "pairs": Cifar-MNIST pairing (module docstring); x = obj_group, y = digit_group."""

    name, title = "pairs", "Cifar-MNIST pairing"
    feature_names = ("obj_group", "digit_group")
    k, train_size, paper_epochs = 1.0, 2000, 1000  # epochs ours: the paper gives none
    x_label, y_label = "group of the object tiles", "group of the digit tiles"
    dependent = ""  # categorical: no dependent feature (module docstring)

    def __init__(self, source: TileSource | None = None, seed: int = 0):
        super().__init__()
        self._source, self.seed = source, seed
        self._clf, self.accuracy = None, None

    @property
    def source(self) -> TileSource:
        if self._source is None:
            self._source = offline_source(self.seed)
        return self._source

    def data_source(self) -> str:
        return self.source.description

    def use_source(self, source: TileSource) -> Pairs:
        """Use these tiles from now on (the classifier is retrained on the next measure)."""
        self._source, self._clf, self.accuracy = source, None, None
        return self

    def draw(self, idx, rng, scale):
        if np.any(np.asarray(scale) != 1.0):
            raise ValueError(
                "task pairs has a categorical rule: dependent_scale (contrastive data) does not "
                f"apply; expected no dependent_scale, got values in [{np.min(scale)}, "
                f"{np.max(scale)}]"
            )
        n = len(idx)
        src = self.source
        group, layout = rng.integers(0, 5, n), rng.integers(0, 6, n)
        so, sd = rng.integers(0, 2, (2, n))
        p = {"group": group + 1.0, "layout": layout.astype(np.float64)}
        for kind, pairs, swap in (("obj", OBJECT_PAIRS, so), ("dig", DIGIT_PAIRS, sd)):
            c1, c2 = pairs[group, swap], pairs[group, 1 - swap]
            pool = "objects" if kind == "obj" else "digits"
            p[f"{kind}_class_1"], p[f"{kind}_class_2"] = c1 * 1.0, c2 * 1.0
            p[f"{kind}_tile_1"] = src.pick(pool, c1, rng) * 1.0
            p[f"{kind}_tile_2"] = src.pick(pool, c2, rng) * 1.0
        p["clipped"] = np.zeros(n)
        return p

    def has_full_pixel(self, params):  # tiles, not primitives: nothing to redraw
        return np.ones(len(params["group"]), dtype=bool)

    def render(self, params: dict) -> np.ndarray:
        src = self.source
        lay = LAYOUTS[params["layout"].astype(np.int64)]  # (n, 2) object quadrants
        n = len(lay)
        quads = np.zeros((n, 4), dtype=np.int64)  # which of the four tiles sits in quadrant q
        quads[np.arange(n), lay[:, 0]], quads[np.arange(n), lay[:, 1]] = 0, 1
        rest = np.array([[q for q in range(4) if q not in row] for row in lay.tolist()])
        quads[np.arange(n), rest[:, 0]], quads[np.arange(n), rest[:, 1]] = 2, 3
        tiles = np.stack([
            src.objects[params["obj_tile_1"].astype(np.int64)],
            src.objects[params["obj_tile_2"].astype(np.int64)],
            src.digits[params["dig_tile_1"].astype(np.int64)],
            src.digits[params["dig_tile_2"].astype(np.int64)],
        ], 1)  # fmt: skip
        grid = tiles[np.arange(n)[:, None], quads]  # (n, 4, 16, 16, 3) in quadrant order
        grid = grid.reshape(n, 2, 2, TILE, TILE, 3).transpose(0, 1, 3, 2, 4, 5)
        return np.ascontiguousarray(grid.reshape(n, 2 * TILE, 2 * TILE, 3))

    def classifier(self):
        """The tile classifier (trained on first use, on this task's training tiles)."""
        if self._clf is None:
            self._clf, self.accuracy = train_classifier(self.source, self.seed)
        return self._clf

    def classify(self, images) -> tuple[np.ndarray, np.ndarray]:
        """20-class labels (n, 4) of each quadrant and the classifier's top probability."""
        tiles = split_tiles(np.asarray(images))
        prob = self.classifier().predict_proba(_features(tiles.reshape(-1, TILE, TILE, 3)))
        prob = prob.reshape(len(tiles), 4, -1)
        return self._clf.classes_[prob.argmax(-1)], prob.max(-1)

    def measure(self, images, reasons=None):
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
            raise ValueError(
                f"expected uint8 images of shape (n, 32, 32, 3), got {images.dtype} {images.shape}"
            )
        classes, conf = self.classify(images)
        ok = conf.min(1) >= CONF_MIN
        if reasons is not None:
            for q in range(4):
                reasons[f"tile {q}: unclear"] = conf[:, q] < CONF_MIN
        feats = groups_of(classes)
        for q in range(4):
            feats[f"tile{q}"] = classes[:, q].astype(np.float64)
        feats["conf_min"] = conf.min(1)
        return {k: np.where(ok, v, np.nan) for k, v in feats.items()}, ok

    def rule_xy(self, f):
        return np.asarray(f["obj_group"]), np.asarray(f["digit_group"])

    def coarse_ok(self, f):
        return np.asarray(f["n_objects"]) == 2

    def valid_group(self, f) -> np.ndarray:
        """The fine rule per image: the four tiles form one valid group (x = y >= 1)."""
        return (np.asarray(f["obj_group"]) >= 1) & (f["obj_group"] == f["digit_group"])


TASK = register(Pairs())


def use_files(cifar_dir=None, mnist_dir=None, *, max_per_class: int | None = 1000, seed: int = 0):
    """Point the registered task "pairs" at CIFAR-10 binary batches and/or MNIST IDX files.

    The side not given keeps the offline stand-in.  Returns the task.  (The command line's
    ``--cifar-dir`` / ``--mnist-dir`` call this before any stage.)"""
    return TASK.use_source(
        files_source(cifar_dir, mnist_dir, max_per_class=max_per_class, seed=seed)
    )
