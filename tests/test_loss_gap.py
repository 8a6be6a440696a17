"""The paired DSM gap (rulelib.study.loss_gap): exact where it must be, and able to tell a model
that fitted its training set from one that did not."""

import numpy as np
import pytest
import torch

from rulelib.analytic import denoisers as dn
from rulelib.diffusion.schedule import Schedule
from rulelib.study import loss_gap

SCHED = Schedule()


def _images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)


class _PerT:
    """A closed-form denoiser (one noise level per call) applied image by image."""

    def __init__(self, den):
        self.den = den

    def __call__(self, x, t):
        return torch.cat([self.den(x[i : i + 1], t[i : i + 1]) for i in range(len(t))])


def test_per_image_losses_average_to_the_schedule_loss():
    """Eq. 14 per image, averaged over images, is Schedule.loss for the same draw of t and eps."""
    train = torch.from_numpy(_images(6, 0)).permute(0, 3, 1, 2).float() / 127.5 - 1
    model = _PerT(dn.GaussianDenoiser(train, SCHED))
    g = torch.Generator().manual_seed(3)
    ref = float(SCHED.loss(model, train, g))
    g = torch.Generator().manual_seed(3)
    t = torch.randint(0, SCHED.T, (6,), generator=g)
    noise = torch.randn(train.shape, generator=g)
    assert loss_gap.per_image_losses(model, SCHED, train, t, noise).mean() == pytest.approx(ref)


def test_gap_is_exactly_zero_on_the_same_images_and_separates_a_memoriser():
    train, fresh, fresh2 = _images(24, 0), _images(24, 1), _images(24, 2)
    emp = _PerT(dn.EmpiricalDenoiser(train, SCHED))  # the exact DSM minimiser for `train`
    same = loss_gap.dsm_gap(emp, SCHED, train, train.copy(), seed=0, n_boot=200)
    # common t and eps: the same images give the same losses, so no draw noise is left at all
    assert same["value"] == 0.0 and same["ci"] == [0.0, 0.0]
    # the memoriser denoises its own images far better than unseen ones: the CI excludes 0
    mem = loss_gap.dsm_gap(emp, SCHED, train, fresh, seed=0, n_boot=500)
    assert mem["ci"][0] > 0.5 and mem["loss_fresh"] > mem["loss_train"]
    # two sets it has never seen: no gap it can resolve
    none = loss_gap.dsm_gap(emp, SCHED, fresh2, fresh, seed=0, n_boot=500)
    assert none["ci"][0] < 0 < none["ci"][1]
    assert none["ci"][1] < mem["ci"][0]
    assert none["n_pairs"] == 24 and none["draws"] == 2


def test_gap_refuses_unpaired_or_bad_settings():
    a, b = _images(4, 0), _images(5, 1)
    with pytest.raises(ValueError, match="4 training and 5 fresh"):
        loss_gap.dsm_gap(None, SCHED, a, b, seed=0)
    with pytest.raises(ValueError, match="draws=0"):
        loss_gap.dsm_gap(None, SCHED, a, a, seed=0, draws=0)
