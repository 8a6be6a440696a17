"""The two rulers a measured image can be read with, behind one dispatch point.

    exact   ``task.measure``: sub-pixel scene-model fits of the 32x32 image (rulelib.tasks.measure)
    paper   the paper's OpenCV contours on a 128-px area upscale (rulelib.tasks.paper_ruler),
            tasks A-D only

Both return (features, ok) in the same units (fractions of the canvas side W) under the task's
feature names, and fill ``reasons`` alike, so ``task.rule_xy`` and every metric of
``rulelib.metrics`` take either.  The paper's ruler is read with the paper's fit (2.5-97.5
percentile trimming of x and y): ``TRIM[ruler]`` is the trimming each ruler's metrics use.
"""

from __future__ import annotations

import inspect

from rulelib.tasks import paper_ruler
from rulelib.tasks.base import RuleTask

RULERS = ("exact", "paper")
# the line-fit trimming each ruler is read with (rulelib.metrics.rules._trim_mask)
TRIM = {"exact": "residuals", "paper": paper_ruler.PAPER_TRIM}
# the key each ruler's numbers live under in metrics.json (exact: where they always were)
METRICS_KEY = {"exact": None, "paper": "paper_ruler"}


MEASUREMENTS = (*RULERS, "both")  # the commands' --measurement choices


def rulers_for(task: RuleTask, measurement: str) -> tuple[str, ...]:
    """The rulers a ``--measurement`` choice reads ``task`` with, the primary (the one whose
    numbers sit at metrics.json's top level) first.  "both" on a task the paper's ruler does not
    know gives the exact ruler alone; "paper" on such a task is a ValueError."""
    if measurement not in MEASUREMENTS:
        raise ValueError(f"measurement must be one of {MEASUREMENTS}, got {measurement!r}")
    if measurement == "both":
        return RULERS if supports(task, "paper") else ("exact",)
    if not supports(task, measurement):
        raise ValueError(
            f"measurement 'paper': the paper's ruler measures tasks {paper_ruler.TASKS} only, "
            f"not task {getattr(task, 'name', task)!r}; use --measurement exact"
        )
    return (measurement,)


def check_ruler(ruler) -> str:
    """The ruler's name, or ValueError naming the bad value."""
    if ruler not in RULERS:
        raise ValueError(f"unknown ruler {ruler!r}; expected one of {RULERS}")
    return ruler


def supports(task: RuleTask, ruler: str) -> bool:
    """Whether ``ruler`` can measure ``task`` (the paper's ruler knows tasks A-D only)."""
    check_ruler(ruler)
    return ruler == "exact" or getattr(task, "name", None) in paper_ruler.TASKS


def measure(task: RuleTask, images, ruler: str = "exact", reasons=None, options=None):
    """(features, ok) of ``images`` read with ``ruler``; ``reasons``, if a dict, receives
    {check: (n,) bool failed}.  ``options``: ``paper_ruler.PaperRulerOptions`` for the paper's
    ruler (default: its documented default); the exact ruler takes none."""
    check_ruler(ruler)
    if ruler == "exact":
        if options is not None:
            raise ValueError(f"the exact ruler takes no options, got {options!r}")
        if reasons is not None and "reasons" in inspect.signature(task.measure).parameters:
            return task.measure(images, reasons)
        return task.measure(images)
    if not supports(task, ruler):
        raise ValueError(
            f"ruler 'paper' measures tasks {paper_ruler.TASKS} only, not task "
            f"{getattr(task, 'name', task)!r}; use ruler='exact'"
        )
    return paper_ruler.measure(task, images, reasons=reasons, options=options)
