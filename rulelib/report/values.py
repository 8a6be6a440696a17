"""Reading one metric out of a rule_report: (value, CI low, CI high), Nones where absent."""

from __future__ import annotations

import math
from collections.abc import Mapping


def metric_triplet(
    report: Mapping | None, key: str
) -> tuple[float | None, float | None, float | None]:
    """(value, ci_lo, ci_hi) of one metric of a rule_report; Nones when absent."""
    if not report or key not in report:
        return None, None, None
    m = report[key]
    if isinstance(m, Mapping):
        ci = m.get("ci") or [None, None]
        return _num(m.get("value")), _num(ci[0]), _num(ci[1])
    return _num(m), None, None


def _num(v):
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None
