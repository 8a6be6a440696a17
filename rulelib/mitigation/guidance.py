"""Classifier guidance towards the rule-conforming class (docs/paper.md section 5; Dhariwal &
Nichol 2021).

A noise-aware classifier p(y | x_t, t) (``rulelib.mitigation.classifiers``, kinds ``cheap`` and
``unet``)
trained on the contrastive data (``rulelib.mitigation.contrastive``) tilts the reverse process
towards class 1
(rule-conforming):

* DDPM ancestral (Dhariwal & Nichol, Algorithm 1; the paper's form):

      mu <- mu + w_t * sigma_t^2 * grad_x log p(y = 1 | x, t),   sigma_t^2 = beta_t,

  with the gradient taken at x = x_t (the paper) or at x = mu (``grad_at="mu"``, classifier time t
  - 1). ``rulelib.diffusion.sample.ddpm_step`` computes mu from eps (Ho et al. eq. 11, mu = (x_t -
  beta_t /
    sqrt(1 - abar_t) eps) / sqrt(alpha_t)), so the shift is applied *through* eps: eps <- eps - w_t
    sqrt(alpha_t) sqrt(1 - abar_t) grad, which moves mu by exactly w_t beta_t grad and lets guidance
    reuse the sampler's update rule, seeding and resumable output unchanged.
* DDIM (Dhariwal & Nichol, Algorithm 2, eq. 14): eps <- eps - w_t sqrt(1 - abar_t) grad.

Weight schedules w_t over the 0-based step index t = 0 .. T-1 (``weights``): ``constant`` w_t = s;
``linear`` w_t = s + 3 (1 - t / T) (the paper's); ``last_k`` w_t = s for t < K (the paper's
"guidance only in the last 20 steps"), 0 before.  Where w_t = 0 no gradient is computed, so scale 0
reproduces unguided sampling exactly.

``scale_sweep`` samples each scale from the same seed (paired with the unguided baseline s = 0) and
reports every rule metric, the coarse-rule rate and the measurable rate with bootstrap CIs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from rulelib.diffusion.sample import sample
from rulelib.metrics import paired_difference, rule_report

WEIGHT_SCHEDULES = ("constant", "linear", "last_k")
GRAD_AT = ("x_t", "mu")


def check_scale(scale) -> float:
    """A guidance scale must be a finite number >= 0; returns it as float."""
    try:
        s = float(scale)
    except (TypeError, ValueError):
        raise ValueError(f"guidance scale must be a finite number >= 0, got {scale!r}") from None
    if not math.isfinite(s) or s < 0:
        raise ValueError(f"guidance scale must be a finite number >= 0, got {scale!r}")
    return s


def weights(name: str, scale: float, T: int = 1000, last_k: int = 20) -> np.ndarray:
    """w_t for t = 0 .. T-1 (float64, length T) of the named schedule; see the module docstring."""
    s = check_scale(scale)
    if name not in WEIGHT_SCHEDULES:
        raise ValueError(f"unknown guidance schedule {name!r}; expected one of {WEIGHT_SCHEDULES}")
    t = np.arange(T, dtype=np.float64)
    if name == "constant":
        return np.full(T, s)
    if name == "linear":
        # The paper's w_t = s + 3 (1 - t / T): s at the noisy start, s + 3 at the clean end.
        return s + 3.0 * (1.0 - t / T)
    if isinstance(last_k, bool) or not isinstance(last_k, int) or not 1 <= last_k <= T:
        raise ValueError(f"last_k must be an integer in 1 .. T={T}, got {last_k!r}")
    return np.where(t < last_k, s, 0.0)


def log_prob_grad(classifier, x: torch.Tensor, t: torch.Tensor, target: int = 1) -> torch.Tensor:
    """grad_x log p(y = target | x, t) of a noise-aware classifier, per image (the
    log-probabilities of
    a batch are summed, and image i's only depends on x_i).

    Runs under autograd even when called inside the sampler's ``torch.inference_mode()``: the input
    is cloned outside inference mode first (an inference tensor cannot take part in backward).
    """
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone().float().requires_grad_(True)
        t = t.detach().clone()
        logp = F.log_softmax(classifier(x, t).float(), dim=-1)[:, target].sum()
        (grad,) = torch.autograd.grad(logp, x)
    return grad


class Guidance:
    """Classifier guidance for ``rulelib.diffusion.sample.sample``: ``guidance.eps_fn(model)`` is
        its
    ``eps_fn``.

    Args: classifier: noise-aware p(y | x_t, t), called as classifier(x_t, t) -> logits. schedule:
    the diffusion ``Schedule`` the model was trained with. scale: s >= 0, finite. weight:
    "constant", "linear" (paper) or "last_k". method: "ddpm" (mean shift, the paper's) or "ddim"
    (eps shift). grad_at: "x_t" (paper) or "mu" (DDPM only: at the unguided posterior mean,
    classifier time t - 1). last_k: K of the "last_k" schedule. target: the class guided towards (1
    = rule-conforming).
    """

    def __init__(
        self,
        classifier,
        schedule,
        scale: float,
        *,
        weight: str = "linear",
        method: str = "ddpm",
        grad_at: str = "x_t",
        last_k: int = 20,
        target: int = 1,
    ):
        if method not in ("ddpm", "ddim"):
            raise ValueError(f"method must be 'ddpm' or 'ddim', got {method!r}")
        if grad_at not in GRAD_AT:
            raise ValueError(f"grad_at must be one of {GRAD_AT}, got {grad_at!r}")
        if grad_at == "mu" and method != "ddpm":
            raise ValueError("grad_at='mu' is defined for DDPM ancestral sampling only")
        self.classifier = classifier
        self.schedule = schedule
        self.scale = check_scale(scale)
        self.weight = weight
        self.method = method
        self.grad_at = grad_at
        self.last_k = last_k
        self.target = int(target)
        self.w = weights(weight, self.scale, schedule.T, last_k)
        if hasattr(classifier, "eval"):
            classifier.eval()
            classifier.requires_grad_(False)  # gradients w.r.t. the input only

    def describe(self) -> dict:
        return {
            "scale": self.scale,
            "weight": self.weight,
            "method": self.method,
            "grad_at": self.grad_at,
            "last_k": self.last_k if self.weight == "last_k" else None,
            "target": self.target,
        }

    def shift(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The guided eps for one step (all images of the batch share the step index t)."""
        ti = int(t[0])
        w = float(self.w[ti])
        if w == 0.0:
            return eps  # nothing to add: no classifier call, bit-identical to unguided
        sch = self.schedule
        ab = float(sch.alpha_bars_f64[ti])
        if self.method == "ddim":
            g = log_prob_grad(self.classifier, x_t, t, self.target)
            # Dhariwal & Nichol eq. 14: eps_hat = eps - sqrt(1 - abar_t) grad log p_phi(y | x_t).
            return eps - (w * math.sqrt(1.0 - ab)) * g.to(eps.dtype)
        beta = float(sch.betas_f64[ti])
        if self.grad_at == "mu":
            mu = (x_t - (beta / math.sqrt(1.0 - ab)) * eps) / math.sqrt(1.0 - beta)
            g = log_prob_grad(self.classifier, mu, (t - 1).clamp(min=0), self.target)
        else:
            g = log_prob_grad(self.classifier, x_t, t, self.target)
        # mu + w beta g, written as an eps shift (ddpm_step: mu = (x_t - beta/sqrt(1-ab)
        # eps)/sqrt(alpha)).
        return eps - (w * math.sqrt(1.0 - beta) * math.sqrt(1.0 - ab)) * g.to(eps.dtype)

    def eps_fn(self, model):
        """The ``eps_fn(x_t, t)`` for ``rulelib.diffusion.sample.sample``: the model's eps,
        shifted."""

        def fn(x_t, t):
            return self.shift(x_t, t, model(x_t, t))

        return fn


def guided_sample(
    model, schedule, guidance: Guidance, n: int, *, seed: int, **kwargs
) -> np.ndarray:
    """``rulelib.diffusion.sample.sample`` with classifier guidance.

    ``kwargs`` as there (steps, eta, batch_size, device, out_path, progress, ...).  The guidance
    settings go into the meta of resumable output; a rerun with other settings is refused.
    """
    if hasattr(model, "eval"):
        model.eval()
    meta = dict(kwargs.pop("meta", None) or {})
    meta["guidance"] = guidance.describe()
    device = kwargs.pop("device", None)
    if device is None and hasattr(model, "parameters"):
        device = next(model.parameters()).device
    return sample(
        None,
        schedule,
        n,
        seed=seed,
        method=guidance.method,
        eps_fn=guidance.eps_fn(model),
        device=device,
        meta=meta,
        **kwargs,
    )


def scale_sweep(
    task,
    model,
    schedule,
    classifier,
    scales,
    *,
    n: int,
    seed: int = 0,
    weight: str = "linear",
    method: str = "ddpm",
    steps: int | None = None,
    eta: float = 0.0,
    clip_x0: bool = False,
    grad_at: str = "x_t",
    last_k: int = 20,
    n_boot: int = 1000,
    batch_size: int = 256,
    device=None,
    out_dir=None,
    progress: bool = False,
) -> dict:
    """Guided samples at each scale (0 = the unguided baseline, always included), measured and
    scored.

    Every scale uses the same seed, so the runs differ only by the guidance.  Returns a
    JSON-serialisable dict: settings, and ``rows``: one per scale with ``scale``, the full
    ``rule_report``, and ``vs_unguided``: each metric minus the unguided one with a paired-bootstrap
    CI (``rulelib.metrics.paired_difference``; image i of every scale starts from the same noise,
    so the pairing removes the noise the scales share and leaves the guidance's effect).  With
    ``out_dir``, samples go to ``out_dir/guided_<weight>_s<scale>.npz`` (resumable) and are reused
    on a rerun.  ``clip_x0`` clips each step's clean-image prediction as the run's
    own sampler does (``rulelib.diffusion.sample.clip_eps``), so that scale 0 matches the run's
    samples.
    """
    from pathlib import Path

    scales = sorted({check_scale(s) for s in scales} | {0.0})
    weights(weight, 1.0, schedule.T, last_k)  # validate the schedule name before any sampling
    rows = []
    for s in scales:
        g = Guidance(
            classifier,
            schedule,
            s,
            weight=weight if s > 0 else "constant",
            method=method,
            grad_at=grad_at,
            last_k=last_k,
        )
        out_path = None
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            out_path = Path(out_dir) / f"guided_{weight}_s{s:g}.npz"
        kw = {"eta": eta} if method == "ddim" else {}
        images = guided_sample(
            model,
            schedule,
            g,
            n,
            seed=seed,
            steps=steps,
            batch_size=batch_size,
            device=device,
            out_path=out_path,
            progress=progress,
            clip_x0=clip_x0,
            **kw,
        )
        features, ok = task.measure(images)
        if s == 0:
            unguided = (features, ok)
        rows.append(
            {
                "scale": s,
                "guidance": g.describe(),
                "report": rule_report(task, features, ok, n_boot=n_boot, seed=seed),
                # guided minus unguided on the same starting noise, with a paired-bootstrap CI
                "vs_unguided": paired_difference(
                    task, unguided, (features, ok), n_boot=n_boot, seed=seed
                ),
                "samples": str(out_path) if out_path is not None else None,
            }
        )
    return {
        "task": str(getattr(task, "name", task)),
        "n": n,
        "seed": seed,
        "weight": weight,
        "method": method,
        "steps": steps,
        "eta": eta if method == "ddim" else None,
        "grad_at": grad_at,
        "rows": rows,
    }


SWEEP_METRICS = (
    "measurable_rate",
    "coarse_rate",
    "conforming_pct",
    "within_5pct",
    "bias",
    "resid_std",
)


def format_cell(entry: dict | None, metric: str, *, signed: bool = False) -> str:
    """One table cell: "value [lo, hi]" of a metric entry {"value", "ci"} ("–" when undefined).

    Rates in per cent, bias and residual std to 3 decimals, shares to 1.  signed: a difference
    (with sign), and * when its CI excludes 0."""
    e = entry or {}
    v, ci = e.get("value"), e.get("ci")
    if v is None:
        return "–"
    f = 100.0 if metric in ("measurable_rate", "coarse_rate") else 1.0
    d = 3 if metric in ("bias", "resid_std") else 1
    fmt = f"{'+' if signed else ''}.{d}f"
    star = "*" if signed and ci and (ci[0] > 0 or ci[1] < 0) else ""
    text = f"{f * v:{fmt}}{star}"
    return text + (f" [{f * ci[0]:{fmt}}, {f * ci[1]:{fmt}}]" if ci else "")


def sweep_table(sweep: dict, metrics=SWEEP_METRICS) -> str:
    """Markdown table of a scale sweep: one row per scale, each metric with its 95 % CI."""
    lines = ["| scale | " + " | ".join(metrics) + " |", "|---:|" + "---:|" * len(metrics)]
    for row in sweep["rows"]:
        cells = [format_cell(row["report"].get(m), m) for m in metrics]
        label = f"{row['scale']:g}" + (" (unguided)" if row["scale"] == 0 else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def difference_table(sweep: dict, metrics=SWEEP_METRICS) -> str:
    """Markdown table of each guided scale's effect: metric minus the unguided one, with the
    paired-bootstrap 95 % CI; * marks a CI that excludes 0 (an effect the noise cannot explain)."""
    lines = ["| scale | " + " | ".join(f"Δ {m}" for m in metrics) + " |",
             "|---:|" + "---:|" * len(metrics)]  # fmt: skip
    for row in sweep["rows"]:
        if row["scale"] == 0 or "vs_unguided" not in row:
            continue
        cells = [format_cell(row["vs_unguided"].get(m), m, signed=True) for m in metrics]
        lines.append(f"| {row['scale']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_sweep(sweep: dict, metrics=("conforming_pct", "within_5pct", "bias"), axes=None):
    """Guidance-scale curves: each metric against s with its CI band; the baseline s = 0 dashed."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.0))
    axes = np.atleast_1d(axes)
    s = np.array([r["scale"] for r in sweep["rows"]])
    for ax, m in zip(axes, metrics):
        v = np.array([_val(r["report"], m) for r in sweep["rows"]], dtype=float)
        lo = np.array([_ci(r["report"], m, 0) for r in sweep["rows"]], dtype=float)
        hi = np.array([_ci(r["report"], m, 1) for r in sweep["rows"]], dtype=float)
        ax.plot(s, v, "o-", color="C3")
        ax.fill_between(s, lo, hi, color="C3", alpha=0.2)
        if np.isfinite(v[0]):
            ax.axhline(v[0], ls="--", color="gray", lw=1)
        ax.set_xlabel("guidance scale s")
        ax.set_title(m, fontsize=9)
    axes[0].figure.suptitle(
        f"Task {sweep['task']}: guided {sweep['method']} ({sweep['weight']} weights)", fontsize=10
    )
    axes[0].figure.tight_layout()
    return axes


def _val(report, m):
    v = (report.get(m) or {}).get("value")
    return np.nan if v is None else v


def _ci(report, m, i):
    ci = (report.get(m) or {}).get("ci")
    return np.nan if not ci or ci[i] is None else ci[i]
