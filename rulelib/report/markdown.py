"""report.md of a task and of a run: our numbers beside the paper's, the mitigation embedded."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from rulelib import atomic, provenance
from rulelib.metrics import format_table
from rulelib.mitigation import tables as mitigation_tables


def metrics_tables(entries: Mapping[str, Mapping], ruler_key: str | None = None) -> str:
    """Our numbers beside the paper's (rulelib.metrics.format_table): generated, then training.

    `entries` maps task name -> metrics.json payload ("generated", "train": rule_reports);
    ruler_key: read them under entry[ruler_key] instead ("paper_ruler": the paper's ruler).
    """
    parts = []
    if ruler_key is not None:
        entries = {t: e[ruler_key] for t, e in entries.items() if e.get(ruler_key)}
        if not entries:
            return ""
    for kind, heading in (("generated", "Generated images"), ("train", "Training images")):
        reports = {t: e[kind] for t, e in entries.items() if e.get(kind)}
        if reports:
            parts += [
                f"**{heading}** (ours [95 % CI] beside the paper's)",
                "",
                format_table(reports, kind=kind),
                "",
            ]
    return "\n".join(parts)


_MD_LINK = re.compile(r"(\]\()([^)\s]+)(\))")  # the target of [text](target) / ![alt](target)


def mitigation_markdown(task_dir, figure_prefix: str = "") -> str:
    """task_dir/mitigation/mitigation.md (rulelib.mitigation.pipeline) as a section of a report.md,
        or ''
    when there is none.

    Its headings go one level down (they sit under "## Task X") and its relative links, written
    relative to the mitigation folder, are re-rooted at the report: `figure_prefix` + "mitigation/"
    (figure_prefix is the task folder relative to the report, as in task_markdown)."""
    md = Path(task_dir) / "mitigation" / "mitigation.md"
    if not md.is_file():
        return ""
    base = f"{figure_prefix}mitigation/"

    def reroot(m: re.Match) -> str:
        target = m.group(2)
        if "://" in target or target.startswith(("/", "#")):
            return m.group(0)
        return f"{m.group(1)}{base}{target}{m.group(3)}"

    body = []
    for line in md.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            line = "#" + line
        body.append(_MD_LINK.sub(reroot, line))
    heading = body.pop(0) if body and body[0].startswith("#") else "### Mitigation"
    link = f"[{base}mitigation.md]({base}mitigation.md)"
    intro = f"(contrastive classifiers, filtering, guidance; the full file: {link})"
    return "\n".join([heading, "", intro, *body])


def task_markdown(
    entry: Mapping, figure_prefix: str = "", tables: bool = True, task_dir=None
) -> str:
    """The per-task section of report.md: settings, provenance, the table, the figures, and the
    mitigation's results when task_dir/mitigation/mitigation.md exists.

    `figure_prefix` is the task folder relative to the report ("A/" in the run's report.md);
    `task_dir` the task folder on disk (None: only a link to the mitigation, if the entry lists
    one)."""
    t = entry["task"]
    s = entry.get("sampling", {})
    cfg = entry.get("train_config", {})
    steps = s.get("steps") or "all"
    lines = [
        f"## Task {t} ({entry.get('title', '')})",
        "",
        f"- profile `{entry.get('profile')}`; trained {entry.get('epoch')} epochs "
        f"({cfg.get('preset')} preset, batch "
        f"{cfg.get('batch_size')}, lr {cfg.get('lr')}), "
        f"{s.get('weights')} weights, {s.get('method')} sampler ({steps} steps, "
        f"eta {s.get('eta')}), "
        f"{entry.get('generated', {}).get('n')} samples, seed {entry.get('seed')}",
        f"- machine: {provenance.machine_summary(entry.get('machine', {}))}",
        f"- command: `{entry.get('command')}`; git commit `{entry.get('git_commit')}`; "
        f"written {entry.get('created')}",
    ]
    if cfg.get("epochs") and entry.get("epoch") is not None and entry["epoch"] < cfg["epochs"]:
        lines.append(
            f"- **training incomplete**: these samples come from epoch {entry['epoch']} of the "
            f"profile's {cfg['epochs']} (training was stopped early, e.g. by --time-limit)"
        )
    trainer = entry.get("trainer")
    if trainer:  # the trainer's train_summary.json (rulelib.run.stages.train)
        rate = trainer.get("images_per_s_steady")
        levers = trainer.get("levers") or (
            f"{trainer.get('precision')}, {'compiled' if trainer.get('compile') else 'eager'}"
        )
        how = {"timed": "timed on this machine", "cached": "timed earlier on this machine",
               "rule": "by rule", "config": "as configured",
               "resumed": "kept from the run's start"}  # fmt: skip
        lines.append(
            f"- trainer on {trainer.get('device')}: {levers}"
            + (f" ({how.get(trainer.get('levers_how'), trainer.get('levers_how'))})"
               if trainer.get("levers_how") else "")
            + (f", {trainer['threads']} thread(s)" if trainer.get("threads") else "")
            + (f", {rate:.0f} images/s" if rate else "")
        )  # fmt: skip
    timings = entry.get("timings_s") or {}
    if timings:
        lines.append(
            "- wall time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items() if v)
        )
    gen = entry.get("generated", {})
    rejections = gen.get("rejections") or {}
    if rejections:  # why generated images were unmeasurable: the selection behind every metric
        lines.append(
            f"- {gen.get('n', 0) - gen.get('n_measurable', 0)} of {gen.get('n')} generated images "
            "unmeasurable; checks failed: "
            + ", ".join(f"{check} {count}" for check, count in rejections.items())
        )
    mem = entry.get("memorisation")
    if mem:  # copies follow the rule for free: the claim is about the novel images
        cr, ref = mem["copy_rate"], mem.get("reference", {})
        ci = cr.get("ci") or [None, None]
        novel = entry.get("generated_novel") or {}
        conf = (novel.get("conforming_pct") or {}).get("value")
        lines.append(
            f"- memorisation: {100 * cr['value']:.1f} % copies"
            + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci[0] is not None else "")
            + f" (nearest / second-nearest training distance below {mem['copy_ratio']:.2g}); "
            f"median nearest-training distance {mem['nearest']['median']:.2f}"
            + (f" against {ref['nearest']['median']:.2f} for fresh task images" if ref else "")
            + (f"; novel images rule-conforming {conf:.1f} %" if conf is not None else "")
        )
    lines.append("")
    if tables:
        lines.append(metrics_tables({t: entry}))
        lines.append(paper_ruler_tables({t: entry}))
    for name, caption in (
        ("scatter.png", "training (blue) vs generated (red)"),
        ("scatter_paper.png", "the same, read with the paper's ruler"),
        ("samples.png", "generated samples"),
        ("sweep.png", "rule metrics against training epoch"),
    ):
        if name in entry.get("files", ()):
            lines.append(f"![{caption}]({figure_prefix}{name})")
    mitigation = mitigation_markdown(task_dir, figure_prefix) if task_dir is not None else ""
    if mitigation:
        lines += ["", mitigation]
    elif "mitigation/mitigation.md" in entry.get("files", ()):
        lines.append(
            f"\nMitigation (contrastive classifiers, filtering, guidance): "
            f"[{figure_prefix}mitigation/mitigation.md]({figure_prefix}mitigation/mitigation.md)"
        )
    return "\n".join(lines) + "\n"


def report_markdown(
    entries: Mapping[str, Mapping], limits: str = "", title: str = "", run_dir=None
) -> str:
    """The report.md of a run: header, tables for every task, the honest paragraph, sections.

    `run_dir`: the run folder, to embed each task's mitigation/mitigation.md (None: links only)."""
    first = next(iter(entries.values()), {})
    out = [
        f"# {title or 'Rule learning of DDPM: our reproduction beside the paper'}",
        "",
        "Han et al., *Can Diffusion Models Learn Hidden Inter-Feature Rules Behind Images?* "
        "(ICML 2025).",
        f"Profile `{first.get('profile')}` on "
        f"{provenance.machine_summary(first.get('machine', {}))}; "
        f"command `{first.get('command')}`; git commit `{first.get('git_commit')}`.",
        "",
        "Ours with a bootstrap 95 % confidence interval in brackets; the paper's from its unguided "
        "DDPM at paper epochs (– where the paper gives none, ≈ where only roughly). The measurable "
        "rate is over all images, every other metric over the measurable ones. Training images are "
        "measured by the same sub-pixel measurement as the generated ones.",
        "",
        metrics_tables(entries),
        paper_ruler_tables(entries),
    ]
    if limits:
        out += ["## What this profile can and cannot show", "", limits, ""]
    summary = mitigation_summary(run_dir, entries) if run_dir is not None else ""
    if summary:
        out += ["## Mitigation at a glance", "", summary, ""]
    for entry in entries.values():
        tdir = None if run_dir is None else Path(run_dir) / entry["task"]
        out.append(
            task_markdown(entry, figure_prefix=f"{entry['task']}/", tables=False, task_dir=tdir)
        )
    return "\n".join(out)


def paper_ruler_tables(entries: Mapping[str, Mapping]) -> str:
    """The tables of the same images read with the paper's ruler (metrics.json's "paper_ruler",
    rulelib.tasks.paper_ruler), under a heading that says so; '' when no entry has them."""
    body = metrics_tables(entries, ruler_key="paper_ruler")
    if not body:
        return ""
    return (
        "### Read with the paper's ruler\n\n"
        "The same images measured as the paper measured them (OpenCV contours on a 128 px area "
        "upscale, docs/rulers.md) and fitted as it did (2.5–97.5 % trimming of x and y); "
        "images it does not find are dropped.\n\n" + body
    )


def mitigation_summary(run_dir, entries: Mapping) -> str:
    """rulelib.mitigation.tables.summary_markdown over the tasks of a run that have a
    mitigation.json."""
    results = {}
    for name in entries:
        f = Path(run_dir) / name / "mitigation" / "mitigation.json"
        if f.exists():
            results[name] = atomic.read_json(f)
    if not results:
        return ""
    return mitigation_tables.summary_markdown(results)


def write_task_report(task_dir, entry: Mapping, limits: str = "") -> Path:
    """task_dir/metrics.json and task_dir/report.md for one task."""
    task_dir = Path(task_dir)
    atomic.write_json(task_dir / "metrics.json", entry)
    text = task_markdown(entry, task_dir=task_dir)
    if limits:
        text += "\n### What this profile can and cannot show\n\n" + limits + "\n"
    return atomic.write_text(task_dir / "report.md", text)


def write_run_report(run_dir, limits: str = "", title: str = "") -> Path | None:
    """run_dir/report.md from every task_dir/metrics.json found (tasks in A-D order)."""
    run_dir = Path(run_dir)
    entries = {}
    for task_dir in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        mfile = task_dir / "metrics.json"
        if mfile.exists():
            entry = atomic.read_json(mfile)
            entries[entry.get("task", task_dir.name)] = entry
    if not entries:
        return None
    text = report_markdown(entries, limits, title, run_dir=run_dir)
    return atomic.write_text(run_dir / "report.md", text)
