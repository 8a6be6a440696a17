# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/rulelib/rulelib/blob/main/notebooks/01_theory_dsm_rule_error.ipynb)
#
# **Set-up.** Run the next cell first. With rulelib installed (`make setup`) it does nothing; on
# Colab it clones the repository and installs it (about a minute), from https://github.com/rulelib/rulelib.
#
# If that address cannot be reached, the cell stops and says so. Then put the address of a copy
# you can reach (your fork) in its `REPO_URL` field or in the environment variable `RULELIB_REPO_URL`,
# or upload the repository as a folder named `rulelib-repo` next to this notebook (Colab: the
# Files pane), and run the cell again.

# %%
# Set-up: uses the installed rulelib; on Colab (or any kernel without it) clones and installs it.
# REPO_URL comes from pyproject.toml's [project.urls]; a fork sets it in the form field (Colab)
# or in the environment variable RULELIB_REPO_URL.
import os
import subprocess
import sys

REPO_URL = "https://github.com/rulelib/rulelib"  # @param {type:"string"}
REPO_URL = os.environ.get("RULELIB_REPO_URL", REPO_URL)
try:
    import rulelib
except ImportError:
    if not os.path.isdir("rulelib-repo"):
        clone = subprocess.run(["git", "clone", "--depth", "1", REPO_URL, "rulelib-repo"])
        if clone.returncode != 0:
            raise SystemExit(
                f"could not clone {REPO_URL}: put an address you can reach (your fork) in "
                "REPO_URL above or in the environment variable RULELIB_REPO_URL, or upload the "
                "repository as a folder named rulelib-repo next to this notebook; then run this "
                "cell again"
            ) from None
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "rulelib-repo"], check=True)
    sys.path.insert(0, os.path.abspath("rulelib-repo"))
    import rulelib

# %% [markdown]
# # 01 · Which denoisers keep a constant error on a hidden fine rule, and why
#
# Han et al. (ICML 2025) find that diffusion models learn the **coarse** part of a hidden
# inter-feature rule (a sign, an order) but not the **fine** part (the exact curve). In a model
# small enough to solve (`docs/paper.md` section 6) this notebook shows that a constant fine-rule error
# is a property of the **function class** a denoiser is trained in, not of denoising score
# matching (DSM) as such: the unrestricted DSM optimum on n points memorises them and has R ≈ 0.
# Every closed form and every algebraic step of the bound is **derived in sympy**; the two steps
# sympy cannot take (the optimality of the monotone coupling in 1-D, and that a patch-local
# network's ODE maps independent noises to independent patches) are marked **in prose**.
# Identities (statements true by construction) are labelled as such and are not counted as
# evidence; each empirical claim is **checked by simulation** with an `assert` whose tolerance is
# stated beside it and could fail; the notebook ends on a conclusion, computed from its own
# numbers, listing what is proved, what is conditional and what is measured:
#
# 1. set-up and notation; the four image tasks' rules as (x, y, f);
# 2. a *patch-local* denoiser's DSM loss sees only the marginals (it trains identically on
#    shuffled data), so its samples have independent patches;
# 3. **a conditional theorem**: every generator with independent features has
#    R ≥ (σ_f − ε_b)₊² + (σ_f − ε_f)₊², with ε the W₂ errors of its marginals (sharp; → 2·Var f(a)
#    as ε → 0); whether training makes ε small is *not* proved, and the trained networks show it
#    does not here;
# 4. the *affine* class keeps R = 7·c₂²·Δ⁴/360 on a quadratic rule, flat in n and in GD steps;
# 5. **the class question**: exact score, memorising empirical score, affine, patch-local and a
#    width-limited network on the whole input, in one table and one figure;
# 6. the *weak signal* as a sample-size statement; 7. corrections of earlier overstatements;
#    8. what carries from this model to the image tasks, and what does not; 9. **the ruler**: a
#    measured rule error is the model's error seen through a ruler with its own, derived and
#    checked on rendered images; conclusion.
#
# The library is `rulelib.theory` (numerics, torch float64; `rulelib.theory.symbolic` for sympy);
# `tests/test_theory*.py` check the same results.

# %%
import json
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import sympy as sp
import torch

from rulelib import tasks
from rulelib import theory as th
from rulelib.notebook import stamp, test_size
from rulelib.theory import ruler as ru
from rulelib.theory import symbolic as ts

T0 = time.time()
TEST = test_size()  # small settings under the test command; every assert holds at both sizes
torch.set_num_threads(1)  # the tensors here are small: one thread avoids the spin overhead


def ci_str(r, key="R", nd=4):
    v, (lo, hi) = r[key]["value"], r[key]["ci"]
    return f"{v:.{nd}f} [{lo:.{nd}f}, {hi:.{nd}f}]"


# %% [markdown]
# ## 1 · Set-up and notation
#
# **Data.** Two patches in ℝ^d, with orthonormal feature directions u, v:
# x = [ a·u + ξ₁ ; b·v + ξ₂ ], a ~ U[a₁, a₂], b = f(a) (the hidden rule), ξ optional background
# noise in the complement of span(u, v) within each patch (d − 2 coordinates per patch, **2d − 4**
# in all). Features are read back by projection, â = ⟨x⁽¹⁾, u⟩, b̂ = ⟨x⁽²⁾, v⟩, and the **rule
# error** of a generator is R = E(b̂ − f(â))². The **shuffled twin** of a data set pairs each
# patch 1 with the patch 2 of another sample: same marginals, no rule.
#
# **Diffusion.** x_t = s_t·x₀ + σ_t·ε, s_t = e^{−t}, σ_t² = 1 − e^{−2t}; the ε-prediction DSM loss
# L(t) = E‖ε_θ(x_t, t) − ε‖². Samplers: probability-flow ODE (Heun) with a final Tweedie step.
#
# **The image tasks in this language** (`docs/paper.md` section 3):
#
# | task | x | y | f | kind | coarse rule |
# |---|---|---|---|---|---|
# | A light–shadow | l1·h2 | l2·h1 | y = x | ratio (products of features) | shadow opposite the sun |
# | B perspective | l1·h1 | l2·h2 | h2 = l1·h1 / l2 | inverse | the farther rectangle is shorter |
# | C two circles | r1 | r2 | y = √2·x | ratio / linear | disk 2 larger |
# | D two squares | l1 | l2 | y = 1.5·x | ratio / linear | bottom square larger |

# %% [markdown]
# ## 2 · A patch-local denoiser's loss sees only the marginals
#
# The denoiser of the feature-learning analyses is two-layer, patch-local and weight-shared:
# ε_W(x_t)⁽ᵖ⁾ = (1/m) Σ_r σ(⟨w_r, x_t⁽ᵖ⁾⟩ + c_r)·w_r. **Derivation**: expand its loss for a general
# quadratic activation and list the monomials that contain both a and b; average the noise.

# %%
# NBVAL_CHECK_OUTPUT
pl = ts.patch_local_loss_expr(m=1, degree=2)
print("patch-local loss: terms =", len(sp.Add.make_args(pl["loss"])))
print("monomials mixing a and b:", ts.mixed_ab_monomials(pl["loss"]))
moment_form = ts.marginal_moment_form(ts.gaussian_expectation(pl["loss"], pl["noise"]))
print(
    "after E over the noise, it depends on the data through:",
    sorted((str(x) for x in moment_form.free_symbols if str(x).startswith("E")), key=str),
)
full = ts.full_input_loss_expr(degree=1)
print("a neuron reading both patches has mixed monomials:", ts.mixed_ab_monomials(full["loss"]))

# %% [markdown]
# So the expected loss depends on the joint law of (a, b) only through the marginals (for any
# activation: the loss is a sum over patches). **The decoupling identity** (an identity, not a
# test of the claim: the empirical loss is a sum of per-patch terms, and shuffling the pairs only
# permutes them, so the two runs must agree; the check below tests the *code* for a hidden
# coupling). The same network trained on the rule data and on its shuffled twin (each patch
# keeping its noise draws) follows the same trajectory to rounding, by full-batch GD and Adam.

# %%
d = 4
model = th.TwoPatchModel(d=d, rule=th.Rule("linear", {"gamma": 1.0}), a_range=(1.0, 2.0))
times = th.time_grid(12 if TEST else 16, t_min=5e-3, t_max=4.0)
data = model.sample(128, seed=0)
noise = th.draw_noise(128, d, times, n_noise=2, seed=1)
twin, noise_twin = th.shuffle_pairs(data, seed=2, noise=noise)
assert float((twin.b != data.b).float().mean()) > 0.99  # the shuffle did change the pairs
BASE = dict(m=16, lr=0.03, init_std=0.5, steps=100 if TEST else 300)
for opt, lr in (("gd", 0.5), ("adam", 0.03)):
    cfg = th.PatchLocalConfig(**{**BASE, "optimizer": opt, "lr": lr, "steps": 50})
    _, h1 = th.train_patch_local(data, times, cfg, noise, record_every=10)
    _, h2 = th.train_patch_local(twin, times, cfg, noise_twin, record_every=10)
    dw = max(float((w1 - w2).abs().max()) for w1, w2 in zip(h1["W"], h2["W"]))
    print(
        f"{opt}: loss {h1['loss'][0]:.2f} -> {h1['loss'][-1]:.3f}; max |W_rule - W_shuf| = {dw:.1e}"
    )
    assert h1["loss"][-1] < h1["loss"][0] and dw < 1e-10

# %% [markdown]
# Sampled by the ODE, patch p of a patch-local model is a function of the initial noise of patch p
# alone, so **â and b̂ are independent by construction** (in prose: the network's output on patch
# p reads patch p only, and the ODE integrates each patch separately). What independence implies
# for R is §3; §3 also checks the independence on the samples, with a test that a coupled
# generator fails.
#
# ## 3 · A conditional theorem: independent features keep R above their marginals' spread
#
# Earlier versions of this notebook said "R = 2·Var f(a) at best" for such models. That is
# false: a trained patch-local network below reaches R < 2·Var f(a), and a *collapsed* one
# (tiny initialisation, untrained) has R ≈ 0 — it outputs the mean of each patch, and the linear
# rule holds at the means. What is true is conditional on how well the marginals are learned:
#
# > **Theorem.** Let a generator draw features (â, b̂) with â and b̂ **independent** and finite
# > second moments. Let σ_f = sd f(a) = sd b under the data law, ε_b = W₂(law b̂, law b) and
# > ε_f = W₂(law f(â), law f(a)). Then R = E(b̂ − f(â))² ≥ (σ_f − ε_b)₊² + (σ_f − ε_f)₊², and the
# > bound is attained (by rescaled copies of the data's marginals).
#
# *Assumptions*: independence (true by construction for the patch-local class, above) and finite
# second moments; nothing about training. The theorem does **not** say that a patch-local model
# has R near 2·Var f(a): that needs ε_b, ε_f → 0, i.e. a class wide enough to represent the
# marginal scores, enough data for the empirical marginals to converge (W₂ of an empirical law
# shrinks like n^(−1/2) in 1-D for these bounded laws), and training long enough to reach the DSM
# optimum. None of the three is proved here for the two-layer patch-local class; the trained
# networks below measure how large ε stays.
#
# **Derivation**, step by step (X = b̂, Y = f(â); B = b; ρ = corr(X, B) under a coupling):

# %%
# NBVAL_CHECK_OUTPUT
bd = ts.independent_rule_error_bound()
print("(i)   R for independent X, Y                    =", bd["R_independent"])
print(
    "(ii)  min over lambda of Var(X - lambda B)      =", bd["cauchy_schwarz"], " >= 0: c^2 <= vX vB"
)
print("(iii) E(X-B)^2 - (mX-mB)^2 - (sX-sB)^2          =", bd["gelbrich_slack"])
print(
    "      with rho = 1 - r (r >= 0 by (ii))         =",
    bd["slack_rho"],
    " >= 0:",
    bd["slack_nonnegative"],
)
print(
    "(iv)  sX^2 - t^2 for sX = t + w, t, w >= 0       =",
    bd["positive_part"],
    " >= 0:",
    bd["positive_part_nonnegative"],
)
print("(v)   R >=", bd["bound"], "  (a term is 0 where eps > sigma_f)")
print("sharp: X = m + k (B - m) comonotone with B has E(X-B)^2 =", bd["w2_scaled"])
print("       two such, independent, equal means: R =", bd["R_scaled"])
print(
    "       R - bound =", bd["attained"], "; as eps -> 0 the bound is", bd["limit"], "= 2 Var f(a)"
)
assert bd["slack_nonnegative"] and bd["positive_part_nonnegative"] and bd["attained"] == 0

# %% [markdown]
# (i) is R under independence; (ii) is Cauchy–Schwarz; (iii) drops the mean term and the
# coupling term, both ≥ 0, so every coupling has E(X − B)² ≥ (σ_X − σ_B)² and W₂(X, B) ≥ |σ_X − σ_B|
# (Gelbrich's bound in 1-D); (iv) turns σ_X ≥ σ_f − ε_b into σ_X² ≥ (σ_f − ε_b)₊²; (v) combines
# them. Sharpness: the scaled X is at W₂ distance (1 − k)σ_f from B **because the comonotone
# coupling is optimal in 1-D** (in prose: the monotone-rearrangement theorem, Villani 2003,
# Thm 2.18), so k = 1 − ε/σ_f, and R of two such is the bound.
#
# **Checks** on the linear rule (2·Var f(a) = γ²Δ²/6 = 1/6): trained patch-local models over n
# and training steps, the collapsed one, the exact score of the product of the marginals, and —
# as the contrast a test must fail on — the exact score of the data (coupled); ε measured as the
# exact W₂ between the generated marginals and the data law (quadrature).

# %%
n_gen = 1500 if TEST else 3000
var_b = th.var_f(model)
floor = 2 * var_b
blind_score = th.ExactTwoPatchDenoiser(model, coupled=False, n_grid=1000)
fine_grid = th.time_grid(30 if TEST else 60, t_min=1e-4, t_max=6.0)


def bound_row(name, x):
    a_hat, b_hat = model.read(x)
    rep = th.rule_error(a_hat, b_hat, model.rule, n_boot=300, seed=0)
    return {"name": name, "rep": rep, "x": x, **th.marginal_bound(a_hat, b_hat, model)}


def train_patch(n, steps, init_std=BASE["init_std"], seed=0, mdl=model, grid=times):
    dat = mdl.sample(n, seed=seed)
    nz = th.draw_noise(n, mdl.d, grid, n_noise=2, seed=seed + 1)
    cfg = th.PatchLocalConfig(**{**BASE, "steps": steps, "init_std": init_std, "seed": seed})
    return th.train_patch_local(dat, grid, cfg, nz)[0]


ns_pl = [64, 256] if TEST else [64, 256, 1024]
steps_pl = [30, 100] if TEST else [30, 100, 300]
bound_rows = [
    bound_row(
        f"patch-local n={n}, {s} steps",
        th.sample(train_patch(n, s), n_gen, (2, d), times, method="heun", seed=2),
    )
    for n in ns_pl
    for s in steps_pl
]
collapsed = train_patch(256, 0, init_std=1e-4)
bound_rows.append(
    bound_row(
        "collapsed (init 1e-4, 0 steps)",
        th.sample(collapsed, n_gen, (2, d), times, method="heun", seed=3),
    )
)
bound_rows.append(
    bound_row(
        "exact product-of-marginals score",
        th.sample(blind_score, n_gen, (2, d), fine_grid, method="heun", seed=4),
    )
)
# the contrast: the exact score of the data couples the patches (R ~ 0, far below R_product)
coupled_row = bound_row(
    "exact score (coupled)",
    th.sample(
        th.ExactTwoPatchDenoiser(model, coupled=True, n_grid=1000),
        n_gen,
        (2, d),
        fine_grid,
        method="heun",
        seed=5,
    ),
)
# a generator built to attain the bound: independent rescaled copies of the data's marginals,
# b_hat = m + k_b (b' - m), f(a_hat) = m + k_f (f(a) - m) (linear f: rescale a about its mean)
K_B, K_F, n_att = 0.6, 0.8, 20_000
g_att = torch.Generator().manual_seed(6)
a_att, a_other = model.sample_a(n_att, g_att), model.sample_a(n_att, g_att)
b_other = model.rule(a_other)
attain_row = bound_row(
    f"rescaled marginals (k_b {K_B}, k_f {K_F})",
    torch.stack(
        [
            (a_att.mean() + K_F * (a_att - a_att.mean()))[:, None] * model.u,
            (b_other.mean() + K_B * (b_other - b_other.mean()))[:, None] * model.v,
        ],
        1,
    ),
)


def cov_z(r):
    """R - R_product = -2 Cov(b_hat, f(a_hat)) exactly (ddof 0): its z-score, normal theory."""
    a_hat, b_hat = model.read(r["x"])
    bb, ff = b_hat.numpy(), model.rule(a_hat).numpy()
    prod = (bb - bb.mean()) * (ff - ff.mean())
    return float(prod.mean() / (prod.std() / np.sqrt(len(prod))))


print(f"2 Var f(a) = {floor:.4f}, sigma_f = {np.sqrt(var_b):.4f}")
print(f"{'generator':38s} {'R [95% CI]':26s} R_product  z(cov)  eps_b   eps_f   bound")
for r in [*bound_rows, coupled_row, attain_row]:
    print(
        f"{r['name']:38s} {ci_str(r['rep']):26s} {r['R_product']:.4f}   {cov_z(r):+6.1f}  "
        f"{r['eps_b']:.3f}  {r['eps_f']:.3f}  {r['bound']:.4f}"
    )

# %%
exact_blind_row, collapsed_row = bound_rows[-1], bound_rows[-2]
trained_rows = bound_rows[:-2]
sigma_f = np.sqrt(var_b)
# (identity, not evidence) R_product >= bound holds for any two empirical laws (Gelbrich with
# ddof 0): it checks the code of marginal_bound, not the theorem
assert all(r["R_product"] >= r["bound"] - 1e-12 for r in bound_rows + [coupled_row])
# (a) independence of the generated features: R - R_product = -2 Cov(b_hat, f(a_hat)) must be 0
# within sampling error, |z| < 3.1 (a two-sided 95 % test Bonferroni-corrected over the 11 rows)
# -- and it must fail for the coupled generator (R near 0, R_product near 2 Var f)
Z_CRIT = 3.1
assert all(abs(cov_z(r)) < Z_CRIT for r in bound_rows), [f"{cov_z(r):.1f}" for r in bound_rows]
assert abs(cov_z(coupled_row)) > 10 * Z_CRIT and coupled_row["R"] < 0.05 * coupled_row["R_product"]
# (b) the bound is attained by the generator built for it: R's 95 % CI contains the bound
lo, hi = attain_row["rep"]["R"]["ci"]
assert lo <= attain_row["bound"] <= hi, (lo, attain_row["bound"], hi)
# (c) "R = 2 Var f(a) at best" is false: trained models get below it, the collapsed one to ~0
assert min(r["rep"]["R"]["ci"][1] for r in trained_rows) < floor
assert collapsed_row["R"] < 0.01 * floor and collapsed_row["bound"] < 0.01 * floor
# (d) the exact rule-blind score (the class's DSM optimum) learns the marginals and reaches 2 Var f
assert exact_blind_row["bound"] > 0.8 * floor
lo, hi = exact_blind_row["rep"]["R"]["ci"]
assert 0.97 * lo < floor < 1.03 * hi  # its R is 2 Var f(a) (CI widened 3 % for t_min = 1e-4)
# (e) the condition of the constant fails for the trained networks: their marginal errors stay
# above 30 % of sigma_f and their bound is below half of 2 Var f(a)
eps_rel = [max(r["eps_b"], r["eps_f"]) / sigma_f for r in trained_rows]
assert min(eps_rel) > 0.3
assert max(r["bound"] for r in trained_rows) < 0.5 * floor
# (f) the slack R - bound, split into its parts (bookkeeping: they add up to the slack exactly):
# the coupling term R - R_product, the bias (E b_hat - E f(a_hat))^2, and for each marginal the
# part of its variance above the bound's (sigma - eps)_+^2 -- which is there because eps also
# counts the mean shift and the shape error of that marginal, not only its lost spread
# -- and each eps^2 split as Gelbrich's identity splits it: mean shift^2 + lost spread^2 + shape
# (the rest, >= 0: what a rescaling of the data's law cannot produce)
nodes_q, logw_q = model.latent_grid(20000)
m_f = float((logw_q.exp() * model.rule(nodes_q)).sum())


def eps_split(values, eps):
    v = np.asarray(values, dtype=np.float64)
    mean2, spread2 = (v.mean() - m_f) ** 2, (sigma_f - v.std()) ** 2
    return mean2 / eps**2, spread2 / eps**2, 1 - (mean2 + spread2) / eps**2


print(
    f"{'trained generator':34s} slack  = coupling + bias^2 + excess_b + excess_f  (slack / R)"
    "   eps_b^2, eps_f^2 as mean / spread / shape"
)
slack_parts, spread_share = [], []
for r in trained_rows:
    rep_ = r["rep"]
    ex_b = rep_["var_b_hat"]["value"] - max(sigma_f - r["eps_b"], 0) ** 2
    ex_f = rep_["var_f_a_hat"]["value"] - max(sigma_f - r["eps_f"], 0) ** 2
    parts = (r["R"] - r["R_product"], rep_["bias2"]["value"], ex_b, ex_f)
    slack_parts.append(parts)
    assert abs(sum(parts) - (r["R"] - r["bound"])) < 1e-9  # bookkeeping
    a_hat, b_hat = model.read(r["x"])
    sp_b = eps_split(b_hat, r["eps_b"])
    sp_f = eps_split(model.rule(a_hat), r["eps_f"])
    spread_share += [sp_b[1], sp_f[1]]
    print(
        f"{r['name']:34s} {r['R'] - r['bound']:.4f} = {parts[0]:+.4f} + {parts[1]:.4f} + "
        f"{parts[2]:.4f} + {parts[3]:.4f}  ({(r['R'] - r['bound']) / r['R']:.0%})   "
        + ", ".join("/".join(f"{x:.0%}" for x in sp_) for sp_ in (sp_b, sp_f))
    )
slack_share = [(r["R"] - r["bound"]) / r["R"] for r in trained_rows]
excess_share = [(p[2] + p[3]) / sum(p) for p in slack_parts]
assert min(slack_share) > 0.03  # the bound is not attained by the trained models ...
assert min(excess_share) > 0.8  # ... and the marginals' excess variance is most of the slack
assert min(spread_share) > 0.6  # their W2 errors are mostly lost spread (under-dispersion)
print(
    f"slack R - bound: {min(slack_share):.0%}-{max(slack_share):.0%} of R; the marginals' excess "
    f"variance is {min(excess_share):.0%}-{max(excess_share):.0%} of it; lost spread is "
    f"{min(spread_share):.0%}-{max(spread_share):.0%} of eps^2; max(eps)/sigma_f "
    f"{min(eps_rel):.2f}-{max(eps_rel):.2f}; bound / 2 Var f "
    f"{min(r['bound'] for r in trained_rows) / floor:.2f}-{max(r['bound'] for r in trained_rows) / floor:.2f}"
)

# %% [markdown]
# What the checks show. (a) The generated features are independent to within sampling error
# (|z| of their covariance below the Bonferroni threshold for every patch-local row), while the
# coupled exact score fails the same test by a wide margin — so the test can tell. (b) The
# generator built to attain the bound does, within its CI. (c) The trained models sit below
# 2·Var f(a), the collapsed one at R ≈ 0: its ε is the full spread σ_f and its bound 0 — the
# theorem does not forbid R ≈ 0 to a model that has not learned its marginals. (d) The exact
# rule-blind score (the class's DSM optimum) has ε ≈ 0 and R = 2·Var f(a). (e) **The step to a
# constant is conditional and fails here**: the trained networks keep marginal errors of 40–50 %
# of σ_f (the larger of ε_b, ε_f; printed above; under-dispersed marginals: the tied two-layer
# network is the gradient of a convex potential and fits the sharp low-noise posterior means
# slowly), not falling from 100 to 300 steps, so their bound is only a third to a half of
# 2·Var f(a). (f) The bound does not account for all of
# their distance below 2·Var f(a): the slack R − bound printed above is part of R, and almost all
# of it is the marginals' excess variance over (σ_f − ε)₊². Its cause is in the split of each ε²
# (Gelbrich's identity: mean shift² + lost spread² + shape): the bound credits the whole of ε as
# lost spread, while the trained marginals' ε² is only about 70–90 % lost spread, the rest shape
# (and a little mean shift) — error that does not shrink the variance. The bias term is small and
# the coupling term is sampling noise.
#
# ## 4 · The affine class keeps a curved fine rule's error, 7·c₂²Δ⁴/360
#
# Over affine denoisers ε(x_t) = A·x_t + c on the whole input the DSM minimiser is:

# %%
# NBVAL_CHECK_OUTPUT
aff = ts.affine_dsm_optimum(2)
print("A* = sigma (s^2 Sigma + sigma^2 I)^-1 :", aff["A_difference"] == sp.zeros(2, 2))
print("c* = -s A* mu                        :", aff["c_difference"] == sp.zeros(2, 1))
q_lin, q_quad = ts.gaussian_rule_error("linear"), ts.gaussian_rule_error("quadratic")
print("R of its samples, linear rule:   ", q_lin["R"])
print("R of its samples, quadratic rule:", q_quad["R"])
ev = ts.fine_rule_eigenvalue()
print("residual variance r =", ev["r"])
print("smallest eigenvalue of Cov(a, b) =", ev["leading"] + ev["next"], "+ O(r^3)")

# %% [markdown]
# This is the LMMSE estimator, the exact denoiser of N(μ, Σ): its sampler draws N(μ, Σ) as
# t_min → 0, so it reproduces the correlation (the coarse trend) and any linear rule, but on a
# quadratic rule it keeps R = 7c₂²Δ⁴/360. The fine rule lives in the covariance's smallest
# eigenvalue r/(1 + β²) = c₂²Δ⁴/(180(1 + β²)) (β = c₁ + 2c₂·mean a, the slope of the trend), so
# the final Tweedie step leaves it only once σ²/s² ≈ 2·t_min is well below it.
# **Checks** (f = a², a ~ U[1, 2]; 7/360 = 0.01944 and the nearest simple alternative 1/48 =
# 0.02083 differ by 7 %, so a check that claims to tell them apart needs a tolerance under 3.5 %):
# (a) exact Gaussian moments of the population fit (1 %) and 10⁶ direct draws (95 % CI widened
# 1.5 %), which exclude 1/48; (b) the ODE sampler at t_min = 10⁻⁶ (the same); (c) R of the DSM
# optimum fitted to n points, against n: each within its 95 % CI of the closed form plus 3 %, and
# 1/48 excluded only from n = 1024 up — at n = 64 and 256 the CI's half-width is 13 % and 7 % of
# 7/360 and holds both (at n = 64 the mean is even nearer 1/48), so no claim about 7/360 against
# 1/48 is made there; (d)
# R of the affine denoiser after k full-batch GD steps on the empirical DSM loss
# (`affine_gd_denoiser`, GD iterates in closed form): 10× the closed form after 10 steps, the last
# two step counts within 1 %, the last CI (widened 3 % for the finite n = 4096) holding 7/360,
# and no step count's CI entirely below 7/360.

# %%
c2 = 1.0
mq = th.TwoPatchModel(d=2, rule=th.Rule("quadratic", {"c2": c2}), a_range=(1.0, 2.0))
closed_q = 7 * c2**2 / 360
pop = mq.sample(400_000, seed=7).x0
gauss = th.GaussianDenoiser.fit(pop)
mu2, cov2 = gauss.mu[[0, 3]], gauss.Sigma[[0, 3]][:, [0, 3]]  # (a, b) = coordinates 0 and 3
R_moments = th.gaussian_law_rule_error(mu2, cov2, mq.rule)
torch.manual_seed(13)  # the draws below use torch's global generator: seed it here
draws = torch.distributions.MultivariateNormal(mu2, cov2).sample((1_000_000,))
grid_q = th.time_grid(100, t_min=1e-6, t_max=8.0)
x_ode = mq.read(th.sample(gauss, 50_000, (2, 2), grid_q, method="heun", seed=8))


def r_normal_ci(a_hat, b_hat):
    """R = mean of (b_hat - f(a_hat))^2 with a normal-theory 95 % interval (n large)."""
    sq = (b_hat - mq.rule(a_hat)) ** 2
    half = 1.96 * float(sq.std()) / np.sqrt(len(sq))
    return {
        "R": {"value": float(sq.mean()), "ci": [float(sq.mean()) - half, float(sq.mean()) + half]}
    }


r_draw, r_ode = r_normal_ci(draws[:, 0], draws[:, 1]), r_normal_ci(*x_ode)
ev_num = float(torch.linalg.eigvalsh(cov2)[0])
beta_num = float(cov2[0, 1] / cov2[0, 0])
print(
    f"closed form {closed_q:.5f}; exact moments {R_moments:.5f}; 1e6 draws {ci_str(r_draw, nd=5)}"
)
print(f"PF-ODE (Heun, 100 steps, t_min 1e-6, 50 000 samples): {ci_str(r_ode, nd=5)}")
print(
    f"smallest eigenvalue {ev_num:.3e}; r/(1+beta^2) = {1 / 180 / (1 + beta_num**2):.3e}; r = {1 / 180:.3e}"
)
assert abs(R_moments / closed_q - 1) < 0.01
for rep in (r_draw, r_ode):
    lo, hi = rep["R"]["ci"]
    assert 0.985 * lo <= closed_q <= 1.015 * hi and not (0.985 * lo <= 1 / 48 <= 1.015 * hi)
assert abs(ev_num * 180 * (1 + beta_num**2) - 1) < 0.02 and ev_num < 0.2 / 180

# %%
ns_aff = [64, 256, 1024, 4096] if TEST else [64, 256, 1024, 4096, 16384, 65536]
R_aff_n = []
for n in ns_aff:
    vals = []
    for rep_seed in range(8):
        g_n = th.GaussianDenoiser.fit(mq.sample(n, seed=100 + rep_seed).x0)
        vals.append(
            th.gaussian_law_rule_error(g_n.mu[[0, 3]], g_n.Sigma[[0, 3]][:, [0, 3]], mq.rule)
        )
    R_aff_n.append((np.mean(vals), 1.96 * np.std(vals, ddof=1) / np.sqrt(len(vals))))
steps_aff = [10, 100, 1000, 10**4, 10**5, 10**6]
x_aff = mq.sample(4096, seed=11).x0
R_aff_k = []
for k in steps_aff:
    xk = th.sample(
        th.affine_gd_denoiser(x_aff, grid_q, k), 20_000, (2, 2), grid_q, method="heun", seed=12
    )
    R_aff_k.append(th.rule_error(*mq.read(xk), mq.rule, n_boot=200))
for n, (m_, h_) in zip(ns_aff, R_aff_n):
    print(f"affine DSM optimum on n = {n:6d}: R = {m_:.5f} +- {h_:.5f} (8 training sets)")
for k, r in zip(steps_aff, R_aff_k):
    print(f"affine, {k:8d} GD steps (n = 4096): R = {ci_str(r, nd=5)}")
# flat in n: every n within its interval (+3 %) of the closed form, none near 0; 1/48 excluded
# by the interval from n = 1024 up (below, the interval is too wide to tell the two)
for n, (m_, h_) in zip(ns_aff, R_aff_n):
    assert abs(m_ - closed_q) < h_ + 0.03 * closed_q
    if n >= 1024:
        assert abs(m_ - 1 / 48) > h_, n
# in GD steps: falls to the closed form and stays (the last two step counts agree to 1 %)
assert R_aff_k[0]["R"]["value"] > 10 * closed_q
assert abs(R_aff_k[-1]["R"]["value"] / R_aff_k[-2]["R"]["value"] - 1) < 0.01
lo, hi = R_aff_k[-1]["R"]["ci"]
assert 0.97 * lo <= closed_q <= 1.03 * hi
assert min(r["R"]["ci"][1] for r in R_aff_k) > closed_q  # no CI entirely below it on the way

# %% [markdown]
# ## 5 · The class question: whose fine-rule error is constant?
#
# The same quadratic rule, five classes, each sampled by the PF-ODE (Heun) with a final Tweedie
# step: the **exact score** of the data; the **empirical score** of n training points (the
# minimiser of the empirical DSM loss over all functions — it memorises); the **affine** class
# (§4); the **patch-local** class (§2–3, trained by Adam on n points); and a **width-limited MLP
# on the whole input** (2 hidden layers of 32 SiLU units, EDM preconditioning, Adam on n points
# with fresh noise each step; `rulelib.theory.network`), R against n and against training steps.
#
# The same classes on the task images (the empirical, Gaussian and local machines, against the
# trained U-Nets) are notebook 05's model-class table and `results/analytic/`; here the
# comparison stays on the two-patch model.

# %%
grid_c = th.time_grid(30, t_min=1e-3, t_max=6.0)
n_cls = 1000 if TEST else 2000


fresh_q = mq.sample(2000, seed=99).x0.reshape(2000, -1)  # new data, for the memorisation ratio


def r_of(eps_fn, grid, seed, n=n_cls, train=None):
    """R of n samples; with the training points also the memorisation ratio: median distance of a
    sample to its nearest training point over that of fresh data (< 1: the samples crowd onto the
    training points; R alone cannot tell, since training points obey the rule)."""
    with torch.no_grad():
        x = th.sample(eps_fn, n, (2, 2), grid, method="heun", seed=seed)
    rep = th.rule_error(*mq.read(x), mq.rule, n_boot=300, seed=0)
    if train is not None:
        tr = train.reshape(len(train), -1)
        near = torch.cdist(x.reshape(n, -1), tr).min(1).values.median()
        rep["nn_ratio"] = float(near / torch.cdist(fresh_q, tr).min(1).values.median())
    return rep


floor_q = 2 * th.var_f(mq)
cls = {}
cls["exact score"] = [("—", r_of(th.ExactTwoPatchDenoiser(mq, True, 500), grid_c, 20, n=500))]
cls["empirical score"] = [
    (
        n,
        r_of(
            th.EmpiricalDenoiser(mq.sample(n, seed=21).x0),
            grid_c,
            22,
            train=mq.sample(n, seed=21).x0,
        ),
    )
    for n in ([16, 256] if TEST else [16, 256, 1024])
]
ns_mlp = [64, 1024] if TEST else [64, 256, 1024, 4096]
steps_mlp = [300, 1000] if TEST else [300, 1000, 3000]
S_FIX, N_FIX = 1000, 1024
mlp = {}
for n in ns_mlp:
    x_tr = mq.sample(n, seed=23).x0
    net, _ = th.train_whole_input(x_tr, th.WholeInputConfig(steps=S_FIX))
    mlp[("n", n)] = r_of(net, grid_c, 24, train=x_tr)
for s in steps_mlp:
    if ("n", N_FIX) in mlp and s == S_FIX:
        mlp[("steps", s)] = mlp[("n", N_FIX)]
        continue
    x_tr = mq.sample(N_FIX, seed=23).x0
    net, _ = th.train_whole_input(x_tr, th.WholeInputConfig(steps=s))
    mlp[("steps", s)] = r_of(net, grid_c, 24, train=x_tr)
grid_pl = th.time_grid(12 if TEST else 16, t_min=5e-3, t_max=4.0)
pl_q = {}
for n, s in (
    [(256, 100), (1024, 100)] if TEST else [(256, 300), (1024, 300), (1024, 100), (1024, 30)]
):
    net = train_patch(n, s, mdl=mq, grid=grid_pl)
    with torch.no_grad():
        xq = th.sample(net, n_cls, (2, 2), grid_pl, method="heun", seed=25)
    pl_q[(n, s)] = (
        th.rule_error(*mq.read(xq), mq.rule, n_boot=300),
        th.marginal_bound(*mq.read(xq), mq),
    )
print(f"quadratic rule f = a^2, a ~ U[1, 2]: 2 Var f(a) = {floor_q:.4f}, 7/360 = {closed_q:.4f}")
print(f"{'class':34s} {'n':>6s} {'steps':>7s}  R [95 % CI]   (memorisation ratio)")
print(f"{'exact score':34s} {'—':>6s} {'—':>7s}  {ci_str(cls['exact score'][0][1], nd=6)}")
for n, r in cls["empirical score"]:
    print(f"{'empirical score':34s} {n:6d} {'—':>7s}  {ci_str(r, nd=6)}  ({r['nn_ratio']:.2f})")
for n, (m_, h_) in zip(ns_aff, R_aff_n):
    print(f"{'affine (DSM optimum)':34s} {n:6d} {'∞':>7s}  {m_:.6f} ± {h_:.6f}")
for (n, s), (r, b) in pl_q.items():
    print(
        f"{'patch-local (bound ' + format(b['bound'], '.3f') + ')':34s} {n:6d} {s:7d}  {ci_str(r)}"
    )
for (kind, v), r in mlp.items():
    n, s = (v, S_FIX) if kind == "n" else (N_FIX, v)
    print(
        f"{'whole-input MLP, width 32':34s} {n:6d} {s:7d}  {ci_str(r, nd=5)}  ({r['nn_ratio']:.2f})"
    )

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
ax = axes[0]
for label, pts, style in (
    ("empirical score", [(n, r["R"]) for n, r in cls["empirical score"]], "o-"),
    ("whole-input MLP", [(n, mlp[("n", n)]["R"]) for n in ns_mlp], "s-"),
):
    xs = [p[0] for p in pts]
    v = np.array([p[1]["value"] for p in pts])
    c = np.array([p[1]["ci"] for p in pts]).T
    ax.errorbar(xs, v, yerr=[v - c[0], c[1] - v], fmt=style, capsize=3, label=label)
m_aff = np.array([m for m, _ in R_aff_n])
ax.errorbar(
    ns_aff,
    m_aff,
    yerr=[h for _, h in R_aff_n],
    fmt="^-",
    capsize=3,
    label="affine (8 sets, 95 % CI)",
)
pl_n = [(n, r) for (n, s), (r, _) in pl_q.items() if s == max(s_ for _, s_ in pl_q)]
v = np.array([r["R"]["value"] for _, r in pl_n])
c = np.array([r["R"]["ci"] for _, r in pl_n]).T
ax.errorbar(
    [n for n, _ in pl_n], v, yerr=[v - c[0], c[1] - v], fmt="v-", capsize=3, label="patch-local"
)
ax.set_xlabel("training points n")
ax.set_title(f"R against n (MLP {S_FIX} steps)", fontsize=10)
ax = axes[1]
v = np.array([mlp[("steps", s)]["R"]["value"] for s in steps_mlp])
c = np.array([mlp[("steps", s)]["R"]["ci"] for s in steps_mlp]).T
ax.errorbar(
    steps_mlp,
    v,
    yerr=[v - c[0], c[1] - v],
    fmt="s-",
    capsize=3,
    color="C1",
    label=f"whole-input MLP, n = {N_FIX}",
)
v = np.array([r["R"]["value"] for r in R_aff_k])
c = np.array([r["R"]["ci"] for r in R_aff_k]).T
ax.errorbar(
    steps_aff,
    v,
    yerr=[v - c[0], c[1] - v],
    fmt="^-",
    capsize=3,
    color="C2",
    label="affine, GD, n = 4096",
)
pl_s = sorted((s, r) for (n, s), (r, _) in pl_q.items() if n == 1024)
ax.plot(
    [s for s, _ in pl_s],
    [r["R"]["value"] for _, r in pl_s],
    "v-",
    color="C3",
    label="patch-local, n = 1024",
)
ax.set_xlabel("training steps")
ax.set_title("R against training steps", fontsize=10)
for ax in axes:
    ax.axhline(closed_q, color="g", ls="--", lw=1, label="7 c₂²Δ⁴/360")
    ax.axhline(floor_q, color="r", ls=":", lw=1, label="2 Var f(a)")
    ax.axhline(
        cls["exact score"][0][1]["R"]["value"], color="k", ls="-.", lw=1, label="exact score"
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
axes[0].set_ylabel("rule error R (95 % CI)")
axes[1].legend(fontsize=7)
axes[0].legend(fontsize=7)
fig.suptitle(
    "Quadratic rule b = a²: the fine-rule error by model class (all samples measured)", fontsize=11
)
plt.tight_layout()
plt.show()

# %%
R_exact_c = cls["exact score"][0][1]["R"]["ci"][1]
assert R_exact_c < 1e-3 * closed_q  # the exact score learns the fine rule
assert all(r["R"]["ci"][1] < 1e-3 * closed_q for _, r in cls["empirical score"])  # memorises
assert cls["empirical score"][0][1]["nn_ratio"] < 0.5  # ... crowding onto its 16 points
assert all(r["nn_ratio"] > 1 for r in mlp.values())  # the MLP's samples do not
for r, b in pl_q.values():  # patch-local: far above the affine error (R_product >= bound is
    assert b["R_product"] >= b["bound"] - 1e-12 and r["R"]["ci"][0] > 5 * closed_q  # an identity)
mlp_first, mlp_last = mlp[("steps", steps_mlp[0])]["R"], mlp[("steps", steps_mlp[-1])]["R"]
assert mlp_last["ci"][1] < mlp_first["ci"][0]  # the whole-input MLP's R falls with training
assert mlp_last["ci"][1] < 0.5 * closed_q  # ... below the affine class's constant
assert all(mlp[("n", n)]["R"]["ci"][1] < closed_q for n in ns_mlp)  # at every n tried
R_by_n = [mlp[("n", n)]["R"]["value"] for n in ns_mlp]
assert max(R_by_n) < 3 * min(R_by_n)  # flat in n at a fixed number of steps

# %% [markdown]
# **The title claim as a claim about classes.** A constant fine-rule error is not a property of
# DSM: the unrestricted empirical DSM optimum memorises its n points (R ≈ 0 at every n) and the
# exact score has R ≈ 0. It is a property of the class: the **patch-local** class cannot couple
# the patches, so its R is bounded below by the spread of the marginals it learned (§3: a bound
# conditional on their W₂ errors, not a constant); the **affine** class
# learns the trend but not the curvature and keeps 7c₂²Δ⁴/360 at every n and every number of GD
# steps; a **width-limited network on the whole input** has neither restriction and its R keeps
# falling with training, far below the affine constant, at every n from 64 up — and its samples
# lie no closer to the training points than fresh data do (memorisation ratio > 1, printed beside
# R), so it learned the curve rather than the points. In this small model the whole-input network is limited by
# optimisation (R against steps), not by data (R against n is flat). The image
# U-Net mixes the two mechanisms — local convolutions (patch-local-like at the scale of the
# objects) with a few global layers — so in this model its fine-rule error would be set by how
# much of the objects' relation the global part represents, not by DSM; which class it resembles
# on the task images is for the model-class table (notebook 05) to say.
#
# ## 6 · The weak signal, as a sample size
#
# How much DSM loss is the fine rule worth? For a Gaussian latent and a linear rule the loss gap
# of the rule-blind score is a Fisher divergence, derived here and at most 1:

# %%
# NBVAL_CHECK_OUTPUT
fg = ts.fisher_gap_gaussian_linear()
print("gap =", fg["gap_A"])
print("limit t -> 0:", fg["limit_t0"])
print("1 - gap =", fg["one_minus_gap"])
print("optimal loss per background coordinate:", fg["optimal_loss_per_dim"])

# %%
sym_s, sym_sig, sym_V, sym_gamma = sp.symbols("s sigma V gamma", positive=True)
gap_fn = sp.lambdify((sym_s, sym_sig, sym_V, sym_gamma), fg["gap"])
C = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=th.DTYPE)
joint = th.GaussianDenoiser(torch.zeros(2, dtype=th.DTYPE), C)
blind = th.GaussianDenoiser(torch.zeros(2, dtype=th.DTYPE), torch.diag(torch.diag(C)))
gen_ = torch.Generator().manual_seed(11)
n_fg = 100_000 if TEST else 400_000
a_lat = torch.randn(n_fg, generator=gen_, dtype=th.DTYPE)
x0_lat = torch.stack([a_lat, a_lat], 1)
eps_lat = torch.randn(x0_lat.shape, generator=gen_, dtype=th.DTYPE)
for t in (0.1, 0.3, 1.0):
    diff = ((blind(x0_lat * th.s_sigma(t)[0] + th.s_sigma(t)[1] * eps_lat, t) - eps_lat) ** 2).sum(
        1
    ) - ((joint(x0_lat * th.s_sigma(t)[0] + th.s_sigma(t)[1] * eps_lat, t) - eps_lat) ** 2).sum(1)
    closed = gap_fn(*th.s_sigma(t), 1.0, 1.0)
    se = float(diff.std()) / np.sqrt(n_fg)
    print(f"t = {t}: closed {closed:.4f}, Monte Carlo {float(diff.mean()):.4f} ± {1.96 * se:.4f}")
    assert abs(float(diff.mean()) - closed) < 4 * se

# %% [markdown]
# That is the gap of the *whole* rule. The gap that matters for the fine rule is between the
# exact score and one that knows only the coarse rule (b = g(a), the rule's best linear
# approximation: same trend, no curvature). `fine_rule_loss_gap` measures, on the quadratic rule
# with background noise σ_ξ = 1 in the 2d − 4 other coordinates, the per-image integrated DSM
# loss L of the three exact scores on the same draws, the fine-rule gap E(L_coarse − L_exact), and
# the training-set size at which that gap clears 2 standard errors of the empirical loss:
# n_loss = (2·sd L / gap)² for the loss value itself, n_paired for two scores compared on the same
# noise draws (which a training run never does).

# %%
ds_ws = [2, 8, 32] if TEST else [2, 8, 32, 128]
ws = []
for dd in ds_ws:
    m_ws = th.TwoPatchModel(
        d=dd, rule=th.Rule("quadratic", {"c2": 1.0}), sigma_xi=1.0 if dd > 2 else 0.0
    )
    ws.append(
        th.fine_rule_loss_gap(m_ws, grid_pl, n_mc=1000 if TEST else 2000, n_grid=400, seed=30)
    )
print("  d  loss(exact)  fine gap         whole-rule gap   sd(L)   n_loss   n_paired")
for r in ws:
    print(
        f"{r['d']:3d}  {r['loss_exact']:9.3f}  {r['gap_fine']:.4f} ± {1.96 * r['gap_fine_se']:.4f}"
        f"  {r['gap_whole']:.4f} ± {1.96 * r['gap_whole_se']:.4f}  {r['sd_loss']:6.3f}"
        f"  {r['n_loss']:7.0f}  {r['n_paired']:7.0f}"
    )
for r in ws:
    assert r["gap_fine"] > 3 * r["gap_fine_se"] and r["gap_whole"] > r["gap_fine"]
# the fine gap does not grow with d while the loss noise does: n_loss grows about like d
assert abs(ws[-1]["gap_fine"] / ws[0]["gap_fine"] - 1) < 0.3
assert ws[-1]["n_loss"] > 5 * ws[1]["n_loss"] > 5 * ws[0]["n_loss"]

# %% [markdown]
# The fine rule is worth a fixed, small amount of integrated loss per image (the table's "fine
# gap", a fraction of the whole rule's gap), whatever the dimension, while the standard deviation
# of an image's loss grows like √d: the n at which the fine rule's gap stands out of the loss's
# sampling noise grows about linearly with d. This is the sense in which the rule is a weak
# signal; it is a statement about estimation, and it does not
# by itself make R constant (§5: the whole-input network does learn the rule here).
#
# ## 7 · Corrections, each with its check
#
# * **Guidance with a linear classifier.** It was said that a linear classifier "cannot couple the
#   patches" because its tilt factorises. The tilt used is σ(linear)^λ, which does not factorise
#   (only exp(λ·linear) would). The mean-difference classifier (the first GD step) points along v
#   plus noise, so its tilt reads b̂ almost alone; the **converged** linear classifier (LDA) points
#   along the residual b − βa, has a u-component, and its guidance couples the patches and lowers R.

# %%
tp = th.TwoPatchModel(d=8, rule=th.Rule("linear", {"gamma": 1.0}))
n_guid = 10_000 if TEST else 20_000
guided = {
    c: th.guided_rule_error(tp, (0.0, 1.0, 3.0), classifier=c, n_samples=n_guid)
    for c in ("linear", "lda")
}
for c, rows_ in guided.items():
    r0 = rows_[0]
    print(
        f"{c:6s}: u-component {r0['u_component']:+.2f}, accuracy {r0['accuracy']:.3f}; "
        + "; ".join(
            f"scale {r['scale']:.0f}: R {r['R']:.3f} [{r['R_ci'][0]:.3f}, {r['R_ci'][1]:.3f}], corr {r['corr']:+.2f}"
            for r in rows_
        )
    )
lda = guided["lda"]
assert abs(lda[0]["u_component"]) > 0.3 and lda[0]["accuracy"] > 0.9
assert min(r["corr"] for r in lda[1:]) > 0.25  # the guided patches are coupled
assert lda[1]["R_ci"][1] < lda[0]["R_ci"][0]  # and R falls
assert all(
    abs(r["corr"]) < 0.05 for r in guided["linear"]
)  # the first-step direction barely couples

# %% [markdown]
# * **The fine rule's eigenvalue** is c₂²Δ⁴/(180(1 + β²)), not c₂²Δ⁴/180 (§4, checked there).
# * **The background** has 2d − 4 coordinates, not 2d − 2: each patch is 0 along the other
#   patch's feature direction. Check: the data covariance has exactly 2 + (2d − 4) non-zero
#   eigenvalues.
# * **"R = 2·Var f(a) at best"** is replaced by the bound of §3; **"an error that training does
#   not remove"** by the class statement of §5.

# %%
for dd in (4, 8):
    mb = th.TwoPatchModel(d=dd, rule=th.Rule("quadratic"), sigma_xi=0.5, basis_seed=1)
    evals = torch.linalg.eigvalsh(torch.cov(mb.sample(20_000, seed=31).x0.flatten(1).T))
    nonzero = int((evals > 1e-8).sum())
    print(f"d = {dd}: non-zero covariance eigenvalues {nonzero} = 2 + (2d - 4) = {2 + 2 * dd - 4}")
    assert nonzero == 2 * dd - 2

# %% [markdown]
# ## 8 · What carries from this model to the image tasks, and what does not
#
# The two-patch model puts the features **linearly** into its input (x = a·u ⊕ b·v). The images
# do not: a radius or a height enters the pixels through the objects' edges, a non-linear map. So
# the model's conclusions split in two.
#
# * **Do not carry**: statements about a class that rely on the features entering linearly. Here
#   the affine class learns any *linear* rule exactly (§4), and tasks C and D are linear rules
#   (r2 = √2·r1, l2 = 1.5·l1) in feature space — but in pixels the affine class is the Gaussian
#   fitted to the images, whose samples are blurred superpositions, not two objects. The project's
#   own closed-form Gaussian machine on the task images (`results/analytic/`, read below) draws
#   **no** measurable C image and few measurable B images, without B's fine rule.
# * **Carry**: statements that depend only on which variables a class can couple. A class that
#   cannot relate the two objects cannot keep the fine rule however well it draws each object
#   (§3's theorem needs only independence); the memorising empirical optimum reproduces its
#   training images and their rule (§5). The local machines on the images (a patch-local class)
#   draw measurable images without the fine rule, and the empirical machine copies.
#
# A generator that learned the two objects' sizes but not their relation (independent features,
# exact marginals) would still pass the coarse check often — computed for C and D with the
# feature ranges of `docs/paper.md` section 2 (this uses only the features, so it carries):

# %%
rat = ts.ratio_mean_error()
g_, A1, A2 = rat["symbols"]
task_rows = []
for name, k, lo, hi in [
    ("C two circles", np.sqrt(2), 0.05, 0.175),
    ("D two squares", 1.5, 0.10, 0.28),
]:
    m_task = th.TwoPatchModel(d=2, rule=th.Rule("ratio", {"gamma": float(k)}), a_range=(lo, hi))
    xh, yh = m_task.read(m_task.sample(200_000, seed=12, coupled=False).x0)
    coarse = float((yh > xh).double().mean())
    closed_ratio = float(rat["paper"].subs({g_: float(k), A1: lo, A2: hi}))
    mc_ratio = float((yh / xh - k).abs().mean())
    within5 = float(((yh / (k * xh) - 1).abs() < 0.05).double().mean())
    task_rows.append((name, coarse, closed_ratio / k, within5))
    print(
        f"{name}: rule-blind keeps the coarse rule in {coarse:.0%}; mean relative ratio error "
        f"{closed_ratio / k:.3f} (Monte Carlo {mc_ratio / k:.3f}); within 5 % of the rule: {within5:.0%}"
    )
    assert abs(mc_ratio / closed_ratio - 1) < 0.01  # sympy's ratio error against 2e5 draws

# %% [markdown]
# The closed-form machines on the images (committed in `results/analytic/`; each computed from the
# task's 2000 training images and sampled 256 times; metrics of the measurable images, 95 %
# bootstrap CIs):

# %%
ANALYTIC = Path(rulelib.__file__).resolve().parent.parent / "results" / "analytic"
machines = {}
for task_, cls_ in [
    ("B", "empirical"),
    ("B", "gaussian"),
    ("B", "local"),
    ("B", "local-calibrated"),
    ("C", "empirical"),
    ("C", "gaussian"),
    ("C", "local"),
    ("C", "local-calibrated"),
]:
    path = ANALYTIC / task_ / cls_ / "metrics.json"
    if path.exists():
        machines[(task_, cls_)] = json.loads(path.read_text())
print(f"{'task':4s} {'machine':17s} {'measurable [95% CI]':22s} {'slope [95% CI]':26s} copies")
for (task_, cls_), mj in machines.items():
    g = mj["generated"]
    mr = g["measurable_rate"]
    sl = g.get("slope") or {}
    has_slope = sl.get("value") is not None
    sl_s = f"{sl['value']:.2f} [{sl['ci'][0]:.2f}, {sl['ci'][1]:.2f}]" if has_slope else "—"
    print(
        f"{task_:4s} {cls_:17s} {mr['value']:.1%} [{mr['ci'][0]:.1%}, {mr['ci'][1]:.1%}]"
        f"{'':4s}{sl_s:26s} {mj['memorisation']['copy_rate']['value']:.0%}"
    )
k_of = {"B": 1.0, "C": float(np.sqrt(2))}
if ("C", "gaussian") in machines and ("B", "gaussian") in machines:
    gC, gB = machines[("C", "gaussian")]["generated"], machines[("B", "gaussian")]["generated"]
    # the affine class on the images: no C image measurable, few B images, B's slope far below 1
    assert gC["measurable_rate"]["ci"][1] < 0.02
    assert gB["measurable_rate"]["ci"][1] < 0.25 and gB["slope"]["ci"][1] < 0.75
    for task_ in ("B", "C"):  # the memorising optimum copies its training images
        assert machines[(task_, "empirical")]["memorisation"]["copy_rate"]["value"] > 0.95
        for cls_ in ("local", "local-calibrated"):  # the local class: no fine rule, no copies
            g = machines[(task_, cls_)]["generated"]
            assert g["slope"]["ci"][0] < 0.5 * k_of[task_] and g["within_5pct"]["value"] < 20
else:
    print("results/analytic is not in this checkout: the image evidence is not shown")

# %% [markdown]
# So on the images the affine class's one success in this model — any linear rule learned
# exactly — is gone: C is a linear rule in its features and the Gaussian machine draws no
# measurable C image; on B it draws a tenth measurable, with a slope far from 1. What carries is
# the class argument: the local machines (which cannot relate the two objects beyond a patch)
# draw measurable images without the fine rule (slopes near 0 against 1 and √2), the empirical
# optimum copies its training images, and a rule-blind generator would still pass the coarse
# check most of the time.

# %% [markdown]
# ## 9 · The ruler in the theory: observed² = model² + floor²
#
# On the images the rule error is not read off exactly: a *ruler* (`rulelib.tasks.rulers`: the
# project's sub-pixel fits, "exact", or the paper's OpenCV contours, "paper") measures each
# image's features with an error of its own. An image's measured residual O = ŷ − k·x̂ is the
# model's residual M = y − k·x plus the ruler's D. **Derivation** (sympy): the variance of the sum,
# the cross term, the inverse, the trimming of the reported statistic, and what a plateau fitted
# to observed errors then means.

# %%
# NBVAL_CHECK_OUTPUT
dec, trim_f, plat = ru.decomposition(), ru.trim_factors(), ru.plateau_meaning()
print("Var(M + D)                     =", dec["var_sum"])
print("cross term                     =", dec["cross"], " (0 for a ruler independent of the model)")
print("independent ruler: observed^2  =", dec["independent"])
print("model = ", dec["model"], "; d model / d observed =", dec["sensitivity"])
print(
    "2.5-97.5 % trim, normal: c^2 =",
    trim_f["normal_c2"],
    f"= {trim_f['normal_c']:.4f}^2 at q = {trim_f['q']:.3f}",
)
print(f"                 uniform: c = {trim_f['uniform_c']:.4f}")
print("plateau: observed(n) =", plat["series_n"], "+ O(u^2),  u = n^-beta")
print("  plateau c =", plat["plateau"], "; model constant =", plat["model_constant"])
print("  plateau - floor for m_inf << f:", plat["lift_small"], "+ O(m_inf^4)")
sM, sD = dec["symbols"]["sigma_M"], dec["symbols"]["sigma_D"]
assert sp.simplify(dec["cross"] - 2 * dec["symbols"]["rho"] * sM * sD) == 0
assert sp.simplify(dec["independent"] - sM**2 - sD**2) == 0
assert abs(trim_f["normal_c"] - 0.8711) < 1e-4 and trim_f["uniform_c"] == 0.95

# %% [markdown]
# So (i) **observed² = model² + floor²** exactly when the ruler's error is uncorrelated with the
# model's (ρ = 0); a correlated ruler adds 2ρ·model·floor. The same holds for the residuals of a
# fitted line (they are a linear projection of the residuals; the fit on x̂ instead of x moves the
# projection by the ruler's x error, a second-order effect — in prose). (ii) **Trimming**: the
# reported residual std keeps the residuals inside their 2.5–97.5 percentiles (`residuals` trim for
# the exact ruler; the paper's trim of x and y for the paper's ruler). For a normal error that
# multiplies the std by c = 0.871, for a uniform one by 0.95; a sum of normal parts is normal, so
# trimmed stds still add in squares, but for parts of different laws the decomposition of trimmed
# stds is approximate (off by at most the factors' spread for a uniform floor; by more for a
# heavy-tailed one). The paper's trim of x and y is another matter: it drops the ends of the
# range, not the large residuals, so while the errors are small against the range it leaves the
# residual std nearly unchanged (factor near 1, as the floors below show). (iii) **A plateau** c fitted to observed errors is √(m∞² + floor²): the
# model's constant is √(c² − floor²), with sensitivity c/m∞ that grows without bound near the floor,
# and a model constant below the floor lifts the plateau only by m∞²/(2·floor): one of 0.46·floor
# lifts it by 10 %.
#
# **Check on rendered images** (`rulelib.theory.ruler.simulate`): each task draws its scenes with
# the dependent feature moved so that y = k·x + e, e ~ N(0, σ²) (through `scene(...,
# dependent_scale=)`; y is linear in the dependent feature for all four tasks), σ from 0 to 0.03 in
# the units of the task's y (W for C and D, W² for A and B); the images are rendered and measured
# with each ruler. The prediction √(model² + floor²) uses the model's residual std on the scenes'
# true features (σ itself untrimmed, to sampling error, where no clipping truncates e; 0.871·σ
# under the residual trim) and the floor measured on the same scenes drawn without error, with
# the same ruler and trim; the observed std, model and floor are bootstrapped jointly (the ratio
# observed / predicted has a 95 % CI). Scenes the task clips to its bounds are left out (their
# model error is the clip, not e; A and B clip 16 % and 32 % of their scenes for any factor ≠ 1,
# since the bounds bind at the rule itself). The nearest alternative — errors adding linearly,
# observed = model + floor — predicts a ratio observed/(model + floor) of 1; where model and floor
# are comparable it and the root sum of squares differ by up to 29 %.

# %%
RULER_SIGMAS = (
    [0, 1e-4, 1e-3, 0.01, 0.03] if TEST else [0, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03]
)
N_RULER = 500 if TEST else 2000
ruler_rows = []
for name in ("A", "B", "C", "D"):
    task = tasks.get(name)
    for ruler_name in ru.available_rulers(task):
        ruler_rows += ru.simulate(
            task, RULER_SIGMAS, n=N_RULER, seed=0, ruler=ruler_name, n_boot=200 if TEST else 400
        )
print(f"{'task':4s} {'ruler':5s} {'trim':9s} {'sigma':>7s} {'n':>5s} {'model':>9s} {'floor':>9s} "
      f"{'observed':>9s}  obs/pred [95% CI]      obs/(model+floor)   corr(M, D)")  # fmt: skip
for r in ruler_rows:
    if r["sigma"] == 0 or r["trim"] == "none":  # the untrimmed rows are checked below, not shown
        continue
    rt, rs, cc = r["ratio"], r["ratio_sum"], r["corr_cross"]
    print(
        f"{r['task']:4s} {r['ruler']:5s} {r['trim']:9s} {r['sigma']:7.0e} {r['n_used']:5d} "
        f"{r['model']['value']:9.2e} {r['floor']['value']:9.2e} {r['observed']['value']:9.2e}  "
        f"{rt['value']:.3f} [{rt['ci'][0]:.3f}, {rt['ci'][1]:.3f}]  {rs['value']:.3f} "
        f"[{rs['ci'][0]:.3f}, {rs['ci'][1]:.3f}]  {cc['value']:+.2f} [{cc['ci'][0]:+.2f}, {cc['ci'][1]:+.2f}]"
    )

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
for ax, ruler_name in zip(axes, ("exact", "paper")):
    for j, name in enumerate("ABCD"):
        rows_ = [
            r
            for r in ruler_rows
            if r["task"] == name and r["ruler"] == ruler_name and r["trim"] != "none"
            and r["sigma"] > 0
        ]  # fmt: skip
        if not rows_:
            continue
        sg = np.array([r["sigma"] for r in rows_])
        ob = np.array([r["observed"]["value"] for r in rows_])
        ci = np.array([r["observed"]["ci"] for r in rows_]).T
        ax.errorbar(sg, ob, yerr=[ob - ci[0], ci[1] - ob], fmt="o", color=f"C{j}", capsize=2,
                    label=f"{name} measured")  # fmt: skip
        ax.plot(sg, [r["predicted"]["value"] for r in rows_], "-", color=f"C{j}", lw=1,
                label=f"{name} √(model² + floor²)")  # fmt: skip
        ax.axhline(rows_[0]["floor"]["value"], color=f"C{j}", ls=":", lw=0.8)
    ax.plot(
        RULER_SIGMAS[1:],
        RULER_SIGMAS[1:],
        "k--",
        lw=0.8,
        label="σ (untrimmed; the residual trim keeps 0.87 σ)",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("model error σ put into y (units of y)")
    ax.set_title(f"{ruler_name} ruler (its own trim; dotted: its floor at σ = 0)", fontsize=10)
axes[0].set_ylabel("measured residual std (95 % CI)")
axes[1].legend(fontsize=7, ncol=2)
plt.tight_layout()
plt.show()

# %%
cells = [r for r in ruler_rows if r["sigma"] > 0]
# agreement: the ratio's 95 % CI meets [0.99, 1.01] (a 1 % margin: far above sigma, where the
# ratio's CI is 1e-4 wide, second-order effects of the fit exclude exactly 1)
in_ci = [r for r in cells if r["ratio"]["ci"][0] <= 1.01 and r["ratio"]["ci"][1] >= 0.99]
# every cell: the measured std is consistent with the prediction to within 6 % (its CI meets
# [0.94, 1.06]); the linear sum is excluded wherever the two predictions differ by over 15 %
for r in cells:
    assert r["ratio"]["ci"][0] <= 1.06 and r["ratio"]["ci"][1] >= 0.94, r
apart = [
    r for r in cells if r["model"]["value"] + r["floor"]["value"] > 1.15 * r["predicted"]["value"]
]
for r in apart:
    assert r["ratio_sum"]["ci"][1] < 0.95, r
rulers_tasks = {(r["task"], r["ruler"]) for r in cells}
assert {(r["task"], r["ruler"]) for r in apart} == rulers_tasks  # each pair has such a cell
# the premise measured: |corr(M, D)| small (< 0.2) in every cell
assert all(abs(r["corr_cross"]["value"]) < 0.2 for r in cells)
off = [r for r in cells if r not in in_ci]
print(
    f"{len(in_ci)} of {len(cells)} cells (both trims) agree with the prediction to 1 % (the ratio's "
    f"95 % CI meets [0.99, 1.01]); all are within 6 %; the linear sum is excluded in all "
    f"{len(apart)} cells where the two predictions differ by > 15 %. Not agreeing to 1 %:"
)
for r in off:
    print(
        f"  off: {r['task']} {r['ruler']} {r['trim']} sigma {r['sigma']:.0e}: ratio "
        f"{r['ratio']['value']:.3f} [{r['ratio']['ci'][0]:.3f}, {r['ratio']['ci'][1]:.3f}], "
        f"corr(M, D) {r['corr_cross']['value']:+.2f} [{r['corr_cross']['ci'][0]:+.2f}, "
        f"{r['corr_cross']['ci'][1]:+.2f}], measurable {r['n_used']} of {r['n']}"
    )
floors = {
    (r["task"], r["ruler"]): r["floor"]["value"]
    for r in ruler_rows
    if r["sigma"] == 0 and r["trim"] != "none"
}
print("floors (residual std at sigma = 0, each ruler's own trim; units of y):")
print("  " + "; ".join(f"{t} {rl} {v:.1e}" for (t, rl), v in sorted(floors.items())))
clip_rates = {
    t: min(r["clipped_rate"] for r in cells if r["task"] == t)
    for t in sorted({r["task"] for r in cells})
}
print("share of scenes clipped (left out) at the smallest sigma:", clip_rates)

# %% [markdown]
# The measured residual std follows √(model² + floor²) for both rulers and all four tasks, from
# σ far below the floor to far above it: the floor is the ruler's std at σ = 0, and the linear sum
# is rejected wherever it differs from the root sum of squares. The cells listed as "off" (if any)
# miss the prediction by a few per cent; beside each is the measured correlation of the model's
# and the ruler's parts and the number of images the ruler could measure — the two things the
# derivation names: a cross term (the paper's ruler reads pixel-quantised contours, whose error
# depends on where an edge falls and so on the size the model drew), and a measurable subset that
# changes with σ (the paper's ruler drops images by contour rules). **What notebook 05 can take
# from this**: a constant error c fitted to measured residual stds is √(m∞² + floor²) for the
# ruler used; with the exact ruler's floors (10⁻⁵–10⁻⁴) any plateau above 10⁻³ is the model's to
# within 1 %; with the paper ruler's floors (≈ 0.006–0.02) a model constant below about half the
# floor is nearly invisible, and m∞ = √(c² − floor²) has a wide interval near the floor.

# %% [markdown]
# ## Conclusion (computed from the results above)

# %%
proved = {
    "patch-local DSM loss sees only the marginals (no monomial mixes a and b)": not ts.mixed_ab_monomials(pl["loss"]),
    "theorem steps (i)-(v) and the bound's sharpness": bd["slack_nonnegative"] and bd["positive_part_nonnegative"] and bd["attained"] == 0,
    "affine DSM optimum and its R = 7 c2^2 Delta^4 / 360": aff["A_difference"] == sp.zeros(2, 2) and sp.simplify(q_quad["R"] - sp.Rational(7, 360) * sp.Symbol("c2", real=True) ** 2 * sp.Symbol("Delta", positive=True) ** 4) == 0,
    "rule-blind loss gap is at most 1": fg["limit_t0"] == 1,
    "observed^2 = model^2 + floor^2 for an independent ruler": sp.simplify(dec["independent"] - sM**2 - sD**2) == 0,
}  # fmt: skip
assert all(proved.values()), proved
print("PROVED (derived in sympy; two steps in prose: the 1-D optimal coupling, and independent")
print("patches under the ODE of a patch-local network):")
for claim in proved:
    print(f"  - {claim}")
print("CONDITIONAL (the theorem's premise holds; its constant does not follow):")
print(
    f"  - R >= 2 Var f(a) = {floor:.3f} for the patch-local class needs eps -> 0 (width, data, "
    f"training): not proved. The exact rule-blind score reaches it (bound "
    f"{exact_blind_row['bound']:.3f}, R = {exact_blind_row['R']:.3f}); the trained networks keep "
    f"max(eps)/sigma_f = {min(eps_rel):.2f}-{max(eps_rel):.2f}, bound only "
    f"{min(r['bound'] for r in trained_rows) / floor:.0%}-{max(r['bound'] for r in trained_rows) / floor:.0%}"
    f" of 2 Var f; a collapsed one has bound {collapsed_row['bound']:.4f} and R = {collapsed_row['R']:.4f}."
)
print("MEASURED (simulation, asserted at the tolerances stated beside each check):")
print(
    f"  - independence of patch-local features: |z(cov)| <= {max(abs(cov_z(r)) for r in bound_rows):.1f}"
    f" (threshold {Z_CRIT}); the coupled exact score fails it (z = {cov_z(coupled_row):.0f}). The "
    f"rescaled generator attains the bound ({attain_row['bound']:.4f} in R's CI "
    f"[{attain_row['rep']['R']['ci'][0]:.4f}, {attain_row['rep']['R']['ci'][1]:.4f}]). Trained models: "
    f"slack R - bound {min(slack_share):.0%}-{max(slack_share):.0%} of R, "
    f"{min(excess_share):.0%}-{max(excess_share):.0%} of it the marginals' excess variance "
    f"(their eps^2 is only {min(spread_share):.0%}-{max(spread_share):.0%} lost spread)."
)
print(
    f"  - affine class, quadratic rule: R = {R_aff_n[-1][0]:.4f} at n = {ns_aff[-1]} and "
    f"{R_aff_k[-1]['R']['value']:.4f} after {steps_aff[-1]:.0e} GD steps, against "
    f"7 c2^2 Delta^4/360 = {closed_q:.4f}; 1e6 draws [{r_draw['R']['ci'][0]:.5f}, "
    f"{r_draw['R']['ci'][1]:.5f}] exclude 1/48 = {1 / 48:.5f}, as do the fits from n = 1024 up."
)
print(
    f"  - classes on the same rule: exact score R = {cls['exact score'][0][1]['R']['value']:.1e}, "
    f"empirical score R <= {max(r['R']['value'] for _, r in cls['empirical score']):.1e}, affine "
    f"{closed_q:.4f}, patch-local >= {min(r['R']['value'] for r, _ in pl_q.values()):.3f}, whole-input "
    f"MLP {mlp_first['value']:.4f} -> {mlp_last['value']:.4f} from {steps_mlp[0]} to {steps_mlp[-1]} steps "
    f"(memorisation ratio {min(r['nn_ratio'] for r in mlp.values()):.1f} or more; the empirical "
    f"score's {cls['empirical score'][0][1]['nn_ratio']:.2f} at n = {cls['empirical score'][0][0]})."
)
print(
    f"  - the fine rule is worth {ws[0]['gap_fine']:.3f} units of DSM loss per image at every d; the "
    f"training-set size to resolve it grows from {ws[0]['n_loss']:.0f} (d = {ws[0]['d']}) to "
    f"{ws[-1]['n_loss']:.0f} (d = {ws[-1]['d']}); converged linear (LDA) guidance couples the "
    f"patches: corr {lda[1]['corr']:+.2f}, R {lda[0]['R']:.3f} -> {lda[1]['R']:.3f}."
)
if ("C", "gaussian") in machines and ("B", "gaussian") in machines:
    print(
        f"  - on the images the affine class does not carry: the Gaussian machine draws "
        f"{gC['measurable_rate']['value']:.0%} measurable C images and "
        f"{gB['measurable_rate']['value']:.0%} on B (slope {gB['slope']['value']:.2f} "
        f"[{gB['slope']['ci'][0]:.2f}, {gB['slope']['ci'][1]:.2f}]); the local machines draw "
        f"images without the fine rule; the empirical optimum copies."
    )
print(
    f"  - the ruler: measured residual std = sqrt(model^2 + floor^2) to 1 % in {len(in_ci)} of "
    f"{len(cells)} cells (95 % CI of the ratio), all within 6 %, for rulers "
    f"{sorted({r['ruler'] for r in cells})} on tasks {sorted({r['task'] for r in cells})}; the "
    f"linear sum excluded in all {len(apart)} cells where it differs by > 15 %; floors "
    + ", ".join(f"{t} {rl} {v:.1e}" for (t, rl), v in sorted(floors.items()))
    + "."
)
print(f"rulelib {rulelib.__version__}:", stamp(T0))
