"""The theory beside the images: the two-patch model of a fine rule and what denoisers learn of it.

    twopatch      two-patch data, its shuffled twin, the forward process and the DSM loss
    patchlocal    the patch-local, weight-shared two-layer denoiser and its training
    scores        the affine DSM optimum (and GD towards it), exact and empirical scores
    network       a width-limited network on the whole input, trained by DSM
    sampling      samplers, the rule error R, W2 distances and the lower bound's premises
    weak_signal   the fine rule's DSM loss gap against the sampling noise of the loss
    contrastive   the contrastive linear classifier, its alignment law, guidance with it
    symbolic      the sympy derivations (closed forms and the bound the numerics are checked
                  against)
    ruler         a measured rule error as the model's error seen through a ruler: derived
                  (observed^2 = model^2 + floor^2) and checked on rendered images

`from rulelib import theory` gives the modules' public names (their ``__all__``) in one namespace,
except ``ruler``'s (import ``rulelib.theory.ruler``: it renders and measures task images, so it
imports rulelib.tasks, which the two-patch model does not need).
"""

from rulelib.theory.contrastive import *  # noqa: F403
from rulelib.theory.network import *  # noqa: F403
from rulelib.theory.patchlocal import *  # noqa: F403
from rulelib.theory.sampling import *  # noqa: F403
from rulelib.theory.scores import *  # noqa: F403
from rulelib.theory.symbolic import *  # noqa: F403
from rulelib.theory.twopatch import *  # noqa: F403
from rulelib.theory.weak_signal import *  # noqa: F403
