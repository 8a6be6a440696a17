"""Score the trained pairing and mirror models of a run into results/rules (committed).

    OMP_NUM_THREADS=1 .venv/bin/python tools/score_rules.py [--run runs/rules] [--to DIR]

The run is `python -m rulelib reproduce --task pairs|mirror --profile quick --out runs/rules`
(results/rules/README.md gives the commands).  Per task this writes into `<to>/<task>/`:

* the run's export (``rulelib.report.export``): metrics.json (rule_report of generated and
  training images with 95 % CIs, copy rate, the sweep over checkpoints), report.md,
  samples.npz (uint8), samples.png, scatter.png, sweep.csv / sweep.png, config/profile/timings;
* ``ema.safetensors``: the final checkpoint's EMA weights, the ones the samples were drawn from;
* ``rules.json``: the rule shares of the categorical reports (``rulelib.metrics.categorical``)
  with percentile-bootstrap 95 % CIs, for the generated and the training images: of the
  measurable images and of all images, beside the paper's numbers where it has them (pairs:
  ``rulelib.paper.PAIRING_KEPT``); the sweep's measurable share per checkpoint; and, where
  ``python -m rulelib filter`` ran, the filtered samples against all samples with a
  paired-bootstrap CI of each metric's change (``rulelib.metrics.paired_difference``: the kept
  images are a subset of the same samples).

Then ``<to>/rules.md``: the tables results/rules/README.md quotes.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from rulelib import atomic, paper, tasks  # noqa: E402
from rulelib.diffusion import checkpoint  # noqa: E402
from rulelib.diffusion import sample as sampler  # noqa: E402
from rulelib.metrics import categorical, paired_difference  # noqa: E402
from rulelib.mitigation import classifiers, filtering  # noqa: E402
from rulelib.report.export import export_results  # noqa: E402
from rulelib.run import profiles  # noqa: E402
from rulelib.tasks import mirror  # noqa: E402

N_BOOT = 1000
SEED = 0
FLAGS = {
    "pairs": ("valid_group", "layout", "complete"),
    "mirror": ("height", "alignment", "position", "colour"),
}


def shares(task, feats, ok) -> dict:
    """Categorical shares of the measurable images and of all images (an image that is not
    measurable counts as not keeping the rule), each with a 95 % CI."""
    ok = np.asarray(ok, bool)
    if task.name == "pairs":
        of_measured = categorical.pairing_report(task, feats, ok, n_boot=N_BOOT, seed=SEED)
        flags = {
            "valid_group": task.valid_group(feats),
            "layout": task.coarse_ok(feats),
            "complete": np.asarray(feats["complete"]) == 1,
        }
    else:
        of_measured = categorical.reflection_report(feats, ok, n_boot=N_BOOT, seed=SEED)
        flags = mirror.consistency_flags(feats)  # (not measurable: NaN features, False)
    everyone = np.ones(len(ok), bool)
    of_all = categorical.share_report(
        {k: np.asarray(v, bool) & ok for k, v in flags.items()}, everyone, n_boot=N_BOOT, seed=SEED
    )
    return {"of_measurable": of_measured, "of_all": of_all}


def filtered(task, tdir: Path, imgs, feats, ok) -> dict | None:
    """The filter's effect (mitigation/filter_<arch>.json of `python -m rulelib filter`, its
    classifier mitigation/clf_<arch>.safetensors): each rule metric of the kept samples minus
    that of all samples, with a paired-bootstrap CI (the kept images are a subset of the same
    samples; the kept set's measurable_rate counts the dropped images as not measurable)."""
    out = {}
    for path in sorted((tdir / "mitigation").glob("filter_*.json")):
        rep = atomic.read_json(path)
        arch = path.stem[len("filter_") :]
        model, _ = classifiers.load_classifier(
            tdir / "mitigation" / f"clf_{arch}.safetensors", task=task, kind="pixel"
        )
        keep, _ = filtering.filter_mask(model, imgs, threshold=rep["threshold"])
        if int(keep.sum()) != rep["kept"]:
            raise RuntimeError(f"{path}: {rep['kept']} kept, the classifier now keeps {keep.sum()}")
        out[arch] = {k: rep[k] for k in ("n", "kept", "kept_share", "threshold", "before", "after")}
        out[arch]["change"] = paired_difference(
            task, (feats, ok), (feats, ok & keep), n_boot=N_BOOT, seed=SEED
        )
    return out or None


def score(run: Path, to: Path, name: str) -> dict:
    task = tasks.get(name)
    tdir = run / name
    imgs, meta = sampler.load_samples(tdir / "samples.npz")
    feats, ok = task.measure(imgs)
    train_imgs, _ = profiles.get("quick").training_set(name, SEED)
    tfeats, tok = task.measure(train_imgs)
    ckpts = checkpoint.list_checkpoints(tdir)
    epoch, last = ckpts[-1]
    shutil.copyfile(last / "ema.safetensors", to / name / "ema.safetensors")
    metrics = atomic.read_json(tdir / "metrics.json")
    out = {
        "task": name,
        "run": str(run / name),
        "epoch": epoch,
        "samples_epoch": meta.get("epoch"),
        "n_generated": int(len(ok)),
        "n_train": int(len(tok)),
        "generated": shares(task, feats, ok),
        "train": shares(task, tfeats, tok),
        "measurable": {
            "generated": metrics["generated"]["measurable_rate"],
            "train": metrics["train"]["measurable_rate"],
        },
        "copy_rate": metrics.get("memorisation", {}).get("copy_rate"),
        "sweep": [
            {
                k: r[k]
                for k in (
                    "epoch",
                    "n",
                    "measurable_rate",
                    "measurable_rate_lo",
                    "measurable_rate_hi",
                )
            }
            for r in metrics.get("sweep", [])
        ],  # fmt: skip
        "filter": filtered(task, tdir, imgs, feats, ok),
    }
    if name == "pairs":
        out["paper"] = {"kept": paper.PAIRING_KEPT, "source": "docs/paper.md section 7"}
        out["tile_accuracy"] = task.accuracy
    atomic.write_json(to / name / "rules.json", out)
    return out


def _fmt(v, pct=True) -> str:
    if v is None or v.get("value") is None:
        return "n/a"
    f = 100.0 if pct else 1.0
    lo, hi = v["ci"] or (np.nan, np.nan)
    return f"{f * v['value']:.1f} [{f * lo:.1f}, {f * hi:.1f}]"


def markdown(results: dict) -> str:
    lines = ["# Rule shares of the trained pairing and mirror models (tools/score_rules.py)", ""]
    for name, r in results.items():
        lines += [
            f"## {name} (epoch {r['epoch']}; {r['n_generated']} samples, {r['n_train']} "
            "training images)",
            "",
            f"measurable: generated {_fmt(r['measurable']['generated'])} %, training "
            f"{_fmt(r['measurable']['train'])} %",
            "",
            "| share (%, 95 % CI) | generated, of measurable | generated, of all | "
            "training, of measurable | training, of all |",
            "|---|---:|---:|---:|---:|",
        ]
        for key in FLAGS[name]:
            g, t = r["generated"], r["train"]
            lines.append(
                f"| {key} | {_fmt(g['of_measurable'][key])} | {_fmt(g['of_all'][key])} | "
                f"{_fmt(t['of_measurable'][key])} | {_fmt(t['of_all'][key])} |"
            )
        lines.append("")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/rules")
    ap.add_argument("--to", default="results/rules")
    ap.add_argument("--task", nargs="+", default=["pairs", "mirror"])
    args = ap.parse_args()
    run, to = Path(args.run), Path(args.to)
    export_results(run, to)
    results = {name: score(run, to, name) for name in args.task}
    atomic.write_text(to / "rules.md", markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
