"""Rule metrics for measured images, with bootstrap confidence intervals (docs/paper.md section 3).

Read in this order:

    rules       features, ok -> the paper's scatter quantities (x, y); the trimmed line fit;
                per-image shares (coarse rule, binned "rule-conforming", within +-1/5/10 %)
    bootstrap   rule_report (every metric with a percentile-bootstrap 95 % CI, bounds over all
                images, rejection reasons) and paired_difference
    tables      PAPER (the paper's numbers) and format_table ("ours vs paper")
    plots       scatter_plot (the paper's figure)

Units.  Lengths are in units of the canvas side W.  Keys ending in ``_rate`` are fractions in
[0, 1] (``measurable_rate``, ``coarse_rate``); ``conforming_pct`` and ``within_{1,5,10}pct`` are
percentages in [0, 100], as the paper prints them.  ``measurable_rate`` is over all images; every
other metric of METRICS is over the measurable images only (the paper dropped unmeasurable images
likewise); the BOUNDS keys (``conforming_pct_all_low`` ... ``within_5pct_all_high``) are over all
images, unmeasurable ones counted as violating (low) or as conforming (high).
"""

from rulelib.metrics.bootstrap import BOUNDS, METRICS, paired_difference, rule_report
from rulelib.metrics.plots import scatter_plot
from rulelib.metrics.rules import (
    BIN_WIDTH,
    TRIM_MODES,
    TRIM_PCT,
    WITHIN_TOLS,
    conforming,
    fit_line,
    measured_xy,
    within,
)
from rulelib.metrics.tables import PAPER, PAPER_APPROX, format_table

__all__ = [
    "BIN_WIDTH",
    "BOUNDS",
    "METRICS",
    "PAPER",
    "PAPER_APPROX",
    "TRIM_MODES",
    "TRIM_PCT",
    "WITHIN_TOLS",
    "conforming",
    "fit_line",
    "format_table",
    "measured_xy",
    "paired_difference",
    "rule_report",
    "scatter_plot",
    "within",
]
