"""Rule tasks: what a task is, the registry, and the four geometric tasks of the paper.

    base        ``RuleTask`` (draw -> primitives -> render -> measure -> rule) and the registry
    render      exact-area anti-aliased rectangles and disks, HSV colour boxes
    measure     colour segmentation and sub-pixel recovery of rectangles and disks
    geometric   tasks A-D (registered on import)

``rulelib.tasks.get("A")``, ``names()`` and ``register(task)`` are the registry; a user's own file
of tasks is loaded with ``load_tasks_from`` (the command line's ``--tasks-from``).
"""

from rulelib.tasks import geometric  # noqa: F401  (registers tasks A-D)
from rulelib.tasks.base import RuleTask, get, names, register

__all__ = ["RuleTask", "get", "names", "register"]
