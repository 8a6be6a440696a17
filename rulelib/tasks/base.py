"""The rule-task base class and the registry of tasks by name.

A rule task draws scene parameters, turns them into primitives (``rulelib.tasks.render``),
renders 32x32 uint8 images on white, reads the features back and states its rule.  The four tasks
of the paper live in ``rulelib.tasks.geometric``; ``rulelib.tasks`` (the package) says how to
define one of your own.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path

import numpy as np

from rulelib.tasks import render

W = float(render.SIZE)  # canvas side in pixels; features are lengths divided by W
PX = 1.0 / W  # one pixel in units of W
GAP = 1.0 / W  # white margin kept between distinct objects (ours)
COARSE_MARGIN = 1.05  # under dependent_scale, C's disk 2 / D's bottom square stay >= 5 % larger


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return int(n)


class RuleTask:
    """One rule task.  Subclasses set the class attributes and implement the five methods below.

    Subclass hooks (parameters in units of W, arrays of shape (n,), colours (n, 3) RGB):

    * ``draw(idx, rng, scale) -> dict``: scene parameters for the images ``idx`` (their positions
      in the batch; task A uses them for its cyclic sun intervals).  ``scale`` (len(idx),)
      multiplies the dependent feature (1.0 for ordinary data): use ``scale_dependent``, which
      clips to ``dependent_bounds``, and store its flag as ``clipped``.
    * ``primitives(params) -> list`` of ``render.Rect`` / ``render.Disk`` in pixels.
    * ``measure(images) -> (features, ok)``; ``rule_xy(features) -> (x, y)``;
      ``coarse_ok(features) -> bool array``.
    * optional ``valid(params) -> bool array``: geometric constraints (default: all valid).
    """

    name: str = ""
    title: str = ""
    feature_names: tuple[str, ...] = ()
    k: float = 1.0
    train_size: int = 2000
    paper_epochs: int = 0
    x_label: str = "x"
    y_label: str = "y"
    dependent: str = ""  # the feature that dependent_scale multiplies
    max_rounds: int = 1000  # safety cap on redraw rounds

    def __init__(self):
        self.last_redraws = 0

    # ---- hooks -------------------------------------------------------------------------------
    def draw(self, idx: np.ndarray, rng: np.random.Generator, scale: np.ndarray) -> dict:
        raise NotImplementedError

    def primitives(self, params: dict) -> list:
        raise NotImplementedError

    def measure(self, images: np.ndarray, reasons: dict | None = None) -> tuple[dict, np.ndarray]:
        """Features (dict of (n,) arrays, NaN where not measurable) and ok (n,) bool.

        ``reasons``: an optional dict that receives, per failed check, the images that failed it.
        """
        raise NotImplementedError

    def data_source(self) -> str:
        """Where the task's images come from; a run folder records it and refuses another (tasks
        that can read real files, like ``pairs`` and ``mirror``, say which)."""
        return "rendered by rulelib"

    def measure_with_reasons(self, images: np.ndarray) -> tuple[dict, np.ndarray, dict]:
        """``measure`` plus the reasons of every rejection ({check: (n,) bool failed}); a task
        whose ``measure`` takes no ``reasons`` (a user's own, say) gives an empty dict."""
        reasons: dict = {}
        if "reasons" in inspect.signature(self.measure).parameters:
            features, ok = self.measure(images, reasons)
        else:
            features, ok = self.measure(images)
        return features, ok, reasons

    def rule_xy(self, features: dict) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def coarse_ok(self, features: dict) -> np.ndarray:
        raise NotImplementedError

    def valid(self, params: dict) -> np.ndarray:
        n = len(next(iter(params.values())))
        return np.ones(n, dtype=bool)

    def dependent_bounds(self, params: dict) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bound (units of W) of the dependent feature under dependent_scale."""
        raise NotImplementedError

    # ---- shared machinery --------------------------------------------------------------------
    def scale_dependent(self, value, scale, params):
        """Multiply the dependent feature by dependent_scale and clip it to ``dependent_bounds``.

        Returns (value, clipped as 0.0 / 1.0).  Images with scale 1 keep the rule's value.
        """
        if np.all(scale == 1.0):
            return value, np.zeros_like(value)
        lo, hi = self.dependent_bounds(params)
        v = value * scale
        out = np.where(scale == 1.0, value, np.clip(v, lo, hi))  # unscaled images stay on the rule
        return out, (out != v).astype(np.float64)

    def has_full_pixel(self, params: dict) -> np.ndarray:
        """True where every object fully covers at least one pixel (the redraw rule, ours)."""
        n = len(next(iter(params.values())))
        ok = np.ones(n, dtype=bool)
        for prim in self.primitives(params):
            if hasattr(prim, "has_full_pixel"):  # closed form (render.Rect, render.Disk)
                ok &= prim.has_full_pixel()
            else:
                ok &= prim.coverage().reshape(n, -1).max(1) >= 1.0 - 1e-9
        return ok

    def scene(self, n: int, seed: int, *, dependent_scale=None) -> dict:
        """Scene parameters (units of W, colours included) of n images, deterministic for a seed."""
        n = _check_n(n)
        if dependent_scale is None:
            scale = np.ones(n)
        else:
            scale = np.broadcast_to(np.asarray(dependent_scale, dtype=np.float64), (n,)).copy()
            if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
                raise ValueError(
                    f"dependent_scale must be positive and finite (a float or an array of {n}), "
                    f"got values in [{scale.min()}, {scale.max()}]"
                )
        rng = np.random.default_rng(seed)
        params = self.draw(np.arange(n), rng, scale)
        redraws = np.zeros(n)
        pending = np.arange(n)  # images whose latest draw is not yet checked
        for _ in range(self.max_rounds):
            sub = {k: v[pending] for k, v in params.items()}
            geom_ok = self.valid(sub)  # geometric rejection: not counted as a redraw
            size_ok = np.ones(len(pending), dtype=bool)
            if geom_ok.any():
                size_ok[geom_ok] = self.has_full_pixel({k: v[geom_ok] for k, v in sub.items()})
            redraws[pending[geom_ok & ~size_ok]] += 1
            pending = pending[~(geom_ok & size_ok)]
            if len(pending) == 0:
                break
            new = self.draw(pending, rng, scale[pending])
            for key in params:
                params[key][pending] = new[key]
        else:
            raise RuntimeError(
                f"task {self.name}: scenes still invalid after {self.max_rounds} rounds"
            )
        params["n_redraws"] = redraws
        self.last_redraws = int(redraws.sum())
        return params

    def render(self, params: dict, size: int = render.SIZE) -> np.ndarray:
        """uint8 images (n, size, size, 3) of the given scene parameters (32 px by default; a
        larger ``size`` draws the same scene on a larger canvas, every length scaled)."""
        n = len(next(iter(params.values())))
        if size == render.SIZE:
            return render.render(self.primitives(params), n)
        if isinstance(size, bool) or not isinstance(size, int) or size < 8:
            raise ValueError(f"size must be an int >= 8 pixels, got {size!r}")
        prims = [render.scaled(p, size / render.SIZE) for p in self.primitives(params)]
        chunk = max(1, 1024 * render.SIZE**2 // size**2)  # the same memory per block as at 32 px
        return render.render(prims, n, size, chunk=chunk)

    def sample(self, n: int, seed: int, *, dependent_scale=None):
        """n images (uint8 (n, 32, 32, 3)) and their truth (dict of float64 (n,) arrays)."""
        params = self.scene(n, seed, dependent_scale=dependent_scale)
        truth = {k: np.asarray(v, dtype=np.float64) for k, v in params.items() if np.ndim(v) == 1}
        return self.render(params), truth

    def dataset(self, seed: int = 0):
        """The training set: ``sample(train_size, seed)``."""
        return self.sample(self.train_size, seed)

    def __repr__(self):
        return f"<RuleTask {self.name}: {self.title}>"


_REGISTRY: dict[str, RuleTask] = {}


def register(task: RuleTask) -> RuleTask:
    """Add a task to the registry under ``task.name`` (replacing any task of that name)."""
    if not isinstance(task, RuleTask) or not task.name:
        raise ValueError(f"expected a RuleTask instance with a name, got {task!r}")
    _REGISTRY[task.name] = task
    return task


def names() -> list[str]:
    """Names of the registered tasks, sorted ("A".."D" plus any user-registered ones)."""
    return sorted(_REGISTRY)


def get(name: str) -> RuleTask:
    """The registered task called ``name`` (e.g. "A")."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; valid names are {names()}")
    return _REGISTRY[name]


def load_tasks_from(path_or_module) -> list[str]:
    """Import a user's file of tasks (a path to a .py file, or an importable module name such as
    ``my_pkg.tasks``) that registers its tasks with ``register``; returns the names of the tasks
    it defines, sorted.  The command line's ``--tasks-from``.

    ValueError naming the file or module when it does not exist, is a folder, fails to import or
    exits while importing (the cause is kept as ``__cause__``), registers no task, or replaces a
    task registered before it (rulelib's own Task A, say: the registry is then restored)."""
    spec = str(path_or_module)
    before = dict(_REGISTRY)
    path = Path(spec).expanduser()
    if path.is_dir():
        raise ValueError(f"task file {spec} is a folder; expected a .py file or a module name")
    if spec.endswith(".py") or path.exists():
        if not path.is_file():
            raise ValueError(f"task file {spec} does not exist; expected a .py file or a module")
        # one module name per file, so that two task files never replace each other in sys.modules
        digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
        name = f"rulelib_user_tasks_{path.stem}_{digest}"
        loader_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module  # dataclasses and pickling look the module up by name
        try:
            loader_spec.loader.exec_module(module)
        except (Exception, SystemExit) as e:  # sys.exit() in the file is a failure too
            sys.modules.pop(name, None)
            _REGISTRY.clear()
            _REGISTRY.update(before)
            raise ValueError(f"task file {spec} failed to load: {_why(e)}") from e
    else:
        try:
            module = importlib.import_module(spec)
        except ImportError as e:
            raise ValueError(
                f"cannot import task module {spec!r} ({e}); expected a .py file or an importable "
                "module that calls rulelib.tasks.register"
            ) from e
        except (Exception, SystemExit) as e:
            _REGISTRY.clear()
            _REGISTRY.update(before)
            raise ValueError(f"task module {spec!r} failed to import: {_why(e)}") from e
    # what it registered now, and its own tasks (also when it was imported before and did not
    # run again)
    added = sorted(
        n
        for n, t in _REGISTRY.items()
        if before.get(n) is not t or type(t).__module__ == module.__name__
    )
    if not added:
        raise ValueError(f"{spec} registered no task; call rulelib.tasks.register(Task()) in it")
    # a task of this name registered before by someone else (not an earlier load of this file)
    replaced = [n for n in added if n in before and type(before[n]).__module__ != module.__name__]
    if replaced:
        _REGISTRY.clear()
        _REGISTRY.update(before)
        already = ", ".join(repr(before[n]) for n in replaced)
        raise ValueError(
            f"{spec} registers task(s) {replaced}, which name tasks registered before it "
            f"({already}); give your tasks other names"
        )
    return added


def _why(e: BaseException) -> str:
    if isinstance(e, SystemExit):
        return f"it called sys.exit({e.code!r}) while loading"
    return f"{type(e).__name__}: {e}"
