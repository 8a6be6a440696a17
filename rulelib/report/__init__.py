"""Results on disk: metrics JSON, figures and report.md of a run, every write atomic.

A run folder (`python -m rulelib reproduce --out runs/reproduce`) holds one sub-folder per task:

    runs/reproduce/
        report.md            our numbers beside the paper's (docs/paper.md section 3), all tasks
        A/  config.json      the TrainConfig (written by rulelib.diffusion.train)
            profile.json     the profile, sampling settings, seed (written by rulelib.cli)
            checkpoints/     every checkpoint (rulelib.diffusion.train)
            samples.npz      generated uint8 images (n, 32, 32, 3), compressed
            metrics.json     rule_report of training and generated images; machine, command,
                             git commit, wall times
            scatter.png      the paper-style scatter: training (blue) vs generated (red)
            samples.png      a grid of generated images
            sweep.csv/.png   rule metrics against training epoch (one row per checkpoint)
            mitigation/      `reproduce --mitigation` (rulelib.mitigation.pipeline):
            mitigation.json,
                             mitigation.md and figures, classifier weights, guided samples
            report.md        the same tables for this task alone (with mitigation.md embedded)

Every file is written to a temporary file in the same directory and moved into place with
os.replace, so a killed run never leaves a half-written file under a final name.
"""

from rulelib.report.export import EXPORT_FILES, EXPORT_MITIGATION, export_results
from rulelib.report.figures import (
    SWEEP_METRICS,
    image_grid,
    plot_sweep,
    save_sample_grid,
    save_scatter,
    save_sweep,
    sweep_rows,
    write_sweep_csv,
)
from rulelib.report.markdown import (
    metrics_tables,
    mitigation_markdown,
    mitigation_summary,
    report_markdown,
    task_markdown,
    write_run_report,
    write_task_report,
)
from rulelib.report.values import metric_triplet

__all__ = [
    "EXPORT_FILES",
    "EXPORT_MITIGATION",
    "SWEEP_METRICS",
    "export_results",
    "image_grid",
    "metric_triplet",
    "metrics_tables",
    "mitigation_markdown",
    "mitigation_summary",
    "plot_sweep",
    "report_markdown",
    "save_sample_grid",
    "save_scatter",
    "save_sweep",
    "sweep_rows",
    "task_markdown",
    "write_run_report",
    "write_sweep_csv",
    "write_task_report",
]
