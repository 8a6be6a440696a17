"""The theory beside the images: the two-patch model of a fine rule and what denoisers learn of it.

    twopatch      two-patch data, patch-local and affine denoisers, exact scores, samplers
    (numerics)
    symbolic      the sympy derivations (closed forms the numerics are checked against)
    contrastive   the contrastive linear classifier, its alignment law, guidance with it

`from rulelib import theory` gives the three modules' public names in one namespace.
"""

from rulelib.theory.contrastive import *  # noqa: F403
from rulelib.theory.symbolic import *  # noqa: F403
from rulelib.theory.twopatch import *  # noqa: F403
