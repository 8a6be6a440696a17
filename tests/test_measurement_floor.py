"""The exact ruler's own floor (rulelib.metrics.measurement_floor): per-image standard errors
propagated through the rule's residual, on a task whose derivatives are known."""

import types

import numpy as np
import pytest

from rulelib import tasks
from rulelib.metrics import measurement_floor
from rulelib.tasks import rulers

# r = y - k x with x = a and y = b²: dr/da = -k, dr/db = 2b
SQUARE = types.SimpleNamespace(
    feature_names=("a", "b"), k=1.5, rule_xy=lambda f: (f["a"], f["b"] ** 2)
)


def test_residual_se_is_the_first_order_propagation():
    rng = np.random.default_rng(0)
    f = {"a": rng.uniform(1, 2, 50), "b": rng.uniform(1, 2, 50),
         "se_a": rng.uniform(0, 0.01, 50), "se_b": rng.uniform(0, 0.01, 50)}  # fmt: skip
    ok = np.arange(50) % 5 != 0
    got = measurement_floor.residual_se(SQUARE, f, ok)
    want = np.hypot(1.5 * f["se_a"], 2 * f["b"] * f["se_b"])[ok]
    assert got == pytest.approx(want, rel=1e-5)
    fl = measurement_floor.floor(SQUARE, f, ok, trim="none")
    kept = want[want <= np.percentile(want, measurement_floor.SE_KEEP_PCT)]  # the top 2.5 % out
    assert fl["value"] == pytest.approx(np.sqrt(np.mean(kept**2)), rel=1e-5)
    assert fl["ci"][0] < fl["value"] < fl["ci"][1] and fl["n"] == 39
    nothing = np.zeros(50, bool)
    assert measurement_floor.floor(SQUARE, f, nothing, trim="none") is None  # none measurable
    f0 = {**f, "se_a": np.zeros(50), "se_b": np.zeros(50)}
    assert measurement_floor.floor(SQUARE, f0, ok, trim="none") is None  # no uncertainty kept
    # one image in 40 whose se is 1000x the others' does not set the floor
    wild = {**f, "se_a": f["se_a"].copy()}
    wild["se_a"][1] = 10.0
    assert measurement_floor.floor(SQUARE, wild, ok, trim="none")["value"] < 2 * fl["value"]


def test_noisier_images_have_a_higher_floor():
    """On rule-exact Task B renders the floor is small; the same images with pixel noise raise it
    (the reason the study takes each checkpoint's floor from its own samples)."""
    task = tasks.get("B")
    images = task.sample(64, 3)[0]
    noisy = np.clip(images.astype(float) + np.random.default_rng(1).normal(0, 8, images.shape),
                    0, 255).astype(np.uint8)  # fmt: skip
    clean_f, clean_ok = rulers.measure(task, images, "exact")
    noisy_f, noisy_ok = rulers.measure(task, noisy, "exact")
    clean = measurement_floor.floor(task, clean_f, clean_ok)
    noised = measurement_floor.floor(task, noisy_f, noisy_ok)
    assert noised["ci"][0] > clean["ci"][1]
