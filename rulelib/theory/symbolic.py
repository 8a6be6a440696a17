"""Symbolic derivations (sympy) of the theory's closed forms; notebook 01 and the tests call these.

Each function returns sympy expressions (or a small dict of them), never numbers, so that the
notebook prints the derived result and the tests compare it with Monte Carlo.  Notation as in
`rulelib.theory`: a ~ U[a1, a2], Delta = a2 - a1, b = f(a); s, sigma are s_t, sigma_t of the forward
process x_t = s x_0 + sigma eps.

    patch_local_loss_expr / mixed_ab_monomials   no monomial of the patch-local loss mixes a and b
    full_input_loss_expr                         ... while a network reading both patches has them
    gaussian_expectation, marginal_moment_form   E over the DSM noise; what is left: E a^k, E b^k
    blind_rule_error                             R = 2 Var f(a) (linear: gamma^2 Delta^2 / 6)
    independent_rule_error_bound                 R >= (sigma_f - eps_b)^2 + (sigma_f - eps_f)^2
    fine_rule_eigenvalue                         c2^2 Delta^4 / (180 (1 + beta^2)) + O(r^2)
    ratio_mean_error                             E|b_hat/a_hat - gamma| for independent a_hat, b_hat
    affine_dsm_optimum                           A = sigma (s^2 Sigma + sigma^2 I)^-1, c = -A s mu
    gaussian_rule_error                          R of the fitted Gaussian: 0, 7 c2^2 Delta^4/360
    fisher_gap_gaussian_linear                   the loss gap of the rule-blind score, <= 1
    alignment_law                                cos^2 ~ n SNR^2 / (n SNR^2 + 4)
"""

from __future__ import annotations

import sympy as sp

__all__ = [
    "patch_local_loss_expr",
    "full_input_loss_expr",
    "mixed_ab_monomials",
    "gaussian_expectation",
    "marginal_moment_form",
    "blind_rule_error",
    "ratio_mean_error",
    "independent_rule_error_bound",
    "fine_rule_eigenvalue",
    "affine_dsm_optimum",
    "gaussian_rule_error",
    "fisher_gap_gaussian_linear",
    "alignment_law",
]

a, b = sp.symbols("a b", real=True)
a1, a2, Delta = sp.symbols("a1 a2 Delta", positive=True)
s, sig = sp.symbols("s sigma", positive=True)


def _poly_activation(degree: int):
    """sigma(z) = k1 z + ... + k_degree z^degree, symbolic coefficients (a general polynomial)."""
    if not isinstance(degree, int) or degree < 1:
        raise ValueError(f"activation degree={degree!r} must be a positive integer")
    ks = sp.symbols(f"k1:{degree + 1}", real=True)
    return (lambda z: sum(k * z ** (j + 1) for j, k in enumerate(ks))), ks


def patch_local_loss_expr(m: int = 1, degree: int = 2) -> dict:
    """The single-sample DSM loss of a patch-local, weight-shared two-layer denoiser in closed form.

    d = 2 per patch, u = e1 (patch 1), v = e2 (patch 2); x_t^(1) = (s a + sigma e11, sigma e12),
    x_t^(2) = (sigma e21, s b + sigma e22); eps^(p) = (1/m) sum_r sigma(<w_r, x^(p)> + c_r) w_r with
    sigma a general polynomial of the given degree.  Loss = sum_p ||eps^(p) - e^(p)||^2.
    Returns {"loss", "noise" (the four e's), "params"}."""
    if not isinstance(m, int) or m < 1:
        raise ValueError(f"width m={m!r} must be a positive integer")
    act, ks = _poly_activation(degree)
    e = sp.symbols("e11 e12 e21 e22", real=True)
    W = [sp.symbols(f"w{r}_1 w{r}_2", real=True) for r in range(m)]
    c = sp.symbols(f"c0:{m}", real=True)
    patches = [(s * a + sig * e[0], sig * e[1]), (sig * e[2], s * b + sig * e[3])]
    noises = [(e[0], e[1]), (e[2], e[3])]
    loss = 0
    for x, en in zip(patches, noises):
        out = [0, 0]
        for w, cr in zip(W, c):
            h = act(w[0] * x[0] + w[1] * x[1] + cr)
            out = [out[i] + h * w[i] / m for i in range(2)]
        loss += sum((out[i] - en[i]) ** 2 for i in range(2))
    params = tuple(ks) + tuple(c) + tuple(x for w in W for x in w)
    return {"loss": sp.expand(loss), "noise": e, "params": params}


def full_input_loss_expr(degree: int = 2) -> dict:
    """The same loss for one neuron reading the whole input (both patches, d = 4): the
    contrast case, whose loss does contain monomials mixing a and b."""
    act, ks = _poly_activation(degree)
    e = sp.symbols("e11 e12 e21 e22", real=True)
    w = sp.symbols("w1:5", real=True)
    x = (s * a + sig * e[0], sig * e[1], sig * e[2], s * b + sig * e[3])
    h = act(sum(wi * xi for wi, xi in zip(w, x)))
    loss = sum((h * wi - ei) ** 2 for wi, ei in zip(w, e))
    return {"loss": sp.expand(loss), "noise": e, "params": tuple(ks) + w}


def mixed_ab_monomials(expr, x=a, y=b) -> list:
    """The monomials of expr (a polynomial in x, y) containing both x and y, as (i, j) powers."""
    poly = sp.Poly(sp.expand(expr), x, y)
    return sorted({(i, j) for (i, j) in poly.monoms() if i > 0 and j > 0})


def gaussian_expectation(expr, noise) -> sp.Expr:
    """E over independent standard normals ``noise``: e^k -> (k-1)!! for k even, 0 for k odd."""
    poly = sp.Poly(sp.expand(expr), *noise)
    out = 0
    for powers, coeff in poly.terms():
        mom = 1
        for k in powers:
            mom *= 0 if k % 2 else sp.factorial2(k - 1)
        out += coeff * mom
    return sp.expand(out)


def marginal_moment_form(expr, x=a, y=b) -> sp.Expr:
    """Replace x^i -> E[x^i] and y^j -> E[y^j] (symbols Ea^i, Eb^j): the expectation of an
    expression with no mixed monomial over ANY joint law of (x, y): only the marginals enter."""
    if mixed_ab_monomials(expr, x, y):
        raise ValueError("expression has mixed monomials; its expectation depends on the joint law")
    poly = sp.Poly(sp.expand(expr), x, y)
    out = 0
    for (i, j), coeff in poly.terms():
        term = coeff
        if i:
            term *= sp.Symbol(f"E{x}^{i}")
        if j:
            term *= sp.Symbol(f"E{y}^{j}")
        out += term
    return out


def _uniform_mean(expr, var=a):
    return sp.integrate(expr, (var, a1, a2)) / (a2 - a1)


def blind_rule_error(f=None) -> dict:
    """R of a generator with independent patches and exact marginals: a_hat ~ U[a1, a2],
    b_hat ~ f(a), so R = E(b_hat - f(a_hat))^2 = 2 Var f(a).  This is an equality for that one
    generator, not a floor: `independent_rule_error_bound` gives the floor for inexact marginals.
    Default f = gamma*a + c0, whose R simplifies to gamma^2 Delta^2 / 6.
    Returns {"R", "var_f", "R_Delta"} (R_Delta: R with a2 = a1 + Delta)."""
    gamma, c0 = sp.symbols("gamma c0", real=True)
    f = gamma * a + c0 if f is None else f
    mean_f = _uniform_mean(f)
    var_f = sp.simplify(_uniform_mean(f**2) - mean_f**2)
    R = sp.factor(sp.simplify(2 * var_f))
    return {"R": R, "var_f": var_f, "R_Delta": sp.factor(sp.simplify(R.subs(a2, a1 + Delta)))}


def ratio_mean_error() -> dict:
    """The ratio rule b = gamma a: mean ratio error E|b_hat/a_hat - gamma| for independent a_hat, a'
    ~ U[a1, a2], b_hat = gamma a'.  Inner integral split at a' = a to remove the absolute value.
    Returns {"derived", "paper": gamma [(a1^2 + a2^2) ln(a2/a1) - (a2^2 - a1^2)] / (2 Delta^2),
    "difference" (simplifies to 0)}."""
    gamma = sp.symbols("gamma", positive=True)
    ap = sp.symbols("a_p", positive=True)
    A = sp.symbols("A", positive=True)  # the a_hat in the denominator, inside [a1, a2]
    inner = sp.integrate(A - ap, (ap, a1, A)) + sp.integrate(ap - A, (ap, A, a2))
    derived = gamma * sp.integrate(sp.expand(inner / A), (A, a1, a2)) / (a2 - a1) ** 2
    derived = sp.simplify(sp.expand_log(derived, force=True))
    paper = gamma * ((a1**2 + a2**2) * sp.log(a2 / a1) - (a2**2 - a1**2)) / (2 * (a2 - a1) ** 2)
    diff = sp.simplify(sp.expand_log(derived - paper, force=True))
    return {"derived": derived, "paper": paper, "difference": diff, "symbols": (gamma, a1, a2)}


def independent_rule_error_bound() -> dict:
    """Theorem (conditional on the generator's marginal errors).  For every generator whose two
    features are independent, with finite second moments, eps_b = W2(law b_hat, law b) and
    eps_f = W2(law f(a_hat), law f(a)) (sigma_f = sd f(a) = sd b, since b = f(a) in the data):
        R = E(b_hat - f(a_hat))^2 >= (sigma_f - eps_b)_+^2 + (sigma_f - eps_f)_+^2.
    It bounds R by how well the marginals are learned; it says nothing about how small eps is
    after training (a collapsed generator has eps = sigma_f and bound 0).

    Steps, each derived here (X = b_hat, Y = f(a_hat); B, B' = b, f(a) of the data):
    (i)   independence, E XY = E X E Y:  R = Var X + Var Y + (E X - E Y)^2.
    (ii)  Cauchy-Schwarz, |Cov(X, B)| <= sd X sd B, for any coupling: Var(X - lam B) >= 0 for all
          lam, minimised at lam = c / v_B, leaves v_X - c^2 / v_B >= 0.
    (iii) E(X - B)^2 = (m_X - m_B)^2 + (s_X - s_B)^2 + 2 s_X s_B (1 - rho), rho = c / (s_X s_B) in
          [-1, 1] by (ii): each term >= 0, so dropping the mean term and the last term
          E(X - B)^2 >= (s_X - s_B)^2 for every coupling, hence eps_b = W2 >= |s_X - sigma_f|.
    (iv)  positive part: s_X >= sigma_f - eps_b; if sigma_f - eps_b = t >= 0, s_X = t + w with
          w >= 0 and s_X^2 - t^2 = w (2 t + w) >= 0; if t < 0, s_X^2 >= 0 = (t)_+^2.
    (v)   (i) with the mean term dropped, (iv) for X and for Y: the bound.
    Sharp: X = m + k (B - m), k = 1 - eps/sigma_f in [0, 1], coupled comonotonically with B has
    E(X - B)^2 = (1 - k)^2 sigma_f^2 (derived below); that the comonotone coupling is the optimal
    one in 1-D, so that this is W2^2, is the monotone-rearrangement theorem (stated in prose, not
    derived: Villani 2003, Thm 2.18).  Two such X, Y with equal means, independent, have R = the
    bound (derived below: not an identity, R is computed from the construction's moments).

    Returns {"R_independent" (i), "cauchy_schwarz" (ii: v_X - c^2/v_B at the minimising lam),
    "gelbrich_slack" ((iii): E(X - B)^2 - (m_X - m_B)^2 - (s_X - s_B)^2 = 2 (s_X s_B - c)),
    "slack_nonnegative" ((iii) with rho = 1 - r, r >= 0: sympy's sign of the slack, True),
    "positive_part" ((iv): s_X^2 - t^2 with s_X = t + w, and sympy's sign, True),
    "bound", "w2_scaled" (E(X - B)^2 of the scaled generator), "R_scaled" (its R),
    "attained" (R_scaled - bound, 0), "limit" (eps -> 0), "symbols"}."""
    mx, my, mb, vx, vy, vb = sp.symbols("m_X m_Y m_B v_X v_Y v_B", real=True)
    sx, sb, cov, sf, eb, ef = sp.symbols("sigma_X sigma_B c sigma_f epsilon_b epsilon_f", real=True)
    X, Y, lam = sp.symbols("X Y lambda", real=True)
    # (i): E over independent X, Y of (X - Y)^2, moments E X^2 = v_X + m_X^2, E X = m_X, ...
    poly = sp.Poly(sp.expand((X - Y) ** 2), X, Y)
    moment = {(0, 0): 1, (1, 0): mx, (0, 1): my, (2, 0): vx + mx**2, (0, 2): vy + my**2}
    R_ind = sp.expand(sum(c * moment[m] if m != (1, 1) else c * mx * my
                          for m, c in poly.terms()))  # fmt: skip
    # (ii): Var(X - lam B) = v_X - 2 lam c + lam^2 v_B, minimised over lam
    var_lam = vx - 2 * lam * cov + lam**2 * vb
    lam_star = sp.solve(sp.diff(var_lam, lam), lam)[0]
    cs = sp.factor(sp.simplify(var_lam.subs(lam, lam_star)))
    # (iii): E(X - B)^2 with E XB = c + m_X m_B minus Gelbrich's (m_X - m_B)^2 + (s_X - s_B)^2
    e_xb = sx**2 + mx**2 - 2 * (cov + mx * mb) + sb**2 + mb**2
    slack = sp.factor(sp.expand(e_xb - (mx - mb) ** 2 - (sx - sb) ** 2))
    sxp, sbp, r_ = sp.symbols("sigma_X sigma_B r", positive=True)  # rho = 1 - r, r in [0, 2]
    slack_rho = sp.factor(slack.subs({sx: sxp, sb: sbp, cov: (1 - r_) * sxp * sbp}))
    # (iv): s_X = t + w, t = sigma_f - eps_b >= 0, w >= 0
    t_, w_ = sp.symbols("t w", nonnegative=True)
    pos = sp.factor(sp.expand((t_ + w_) ** 2 - t_**2))
    bound = (sf - eb) ** 2 + (sf - ef) ** 2
    # sharpness, from the construction X = m + k (B - m) coupled with B itself (comonotone):
    # E(X - B)^2 with E B = m, E B^2 = sigma_f^2 + m^2
    k, kb, kf, m0, Bs = sp.symbols("k k_b k_f m B", real=True)
    pb = sp.Poly(sp.expand((m0 + k * (Bs - m0) - Bs) ** 2), Bs)
    mom_b = {0: 1, 1: m0, 2: sf**2 + m0**2}
    w2_scaled = sp.factor(sp.expand(sum(c * mom_b[e[0]] for e, c in pb.terms())))
    # independent X = m + k_b (B - m), Y = m + k_f (B' - m): moments into (i)
    R_scaled = R_ind.subs({mx: m0, my: m0, vx: kb**2 * sf**2, vy: kf**2 * sf**2})
    R_scaled = R_scaled.subs({kb: 1 - eb / sf, kf: 1 - ef / sf})
    return {
        "R_independent": R_ind,
        "cauchy_schwarz": cs,
        "gelbrich_slack": slack,
        "slack_nonnegative": bool(slack_rho.is_nonnegative),
        "slack_rho": slack_rho,
        "positive_part": pos,
        "positive_part_nonnegative": bool(pos.is_nonnegative),
        "bound": bound,
        "w2_scaled": w2_scaled,
        "R_scaled": sp.expand(R_scaled),
        "attained": sp.simplify(R_scaled - bound),
        "limit": sp.simplify(bound.subs({eb: 0, ef: 0})),
        "symbols": {"sigma_f": sf, "epsilon_b": eb, "epsilon_f": ef, "k": k},
    }


def fine_rule_eigenvalue() -> dict:
    """The smallest eigenvalue of the covariance of (a, b) for the quadratic rule, where the
    affine class keeps the fine rule.  With V = Var a = Delta^2/12, beta = Cov(a, b)/V and the
    residual variance r = Var b - beta^2 V (= c2^2 Delta^4 / 180, the variance of the curvature),
    Sigma = [[V, beta V], [beta V, beta^2 V + r]], det = V r, and
        lambda_min = r / (1 + beta^2) + O(r^2 / V)  (not r = c2^2 Delta^4 / 180: the residual
    direction (-beta, 1) is tilted).  Returns {"r", "lambda_min" (exact), "leading", "next"
    (the O(r^2) term), "symbols"}."""
    V, beta, r = sp.symbols("V beta r", positive=True)
    c0, c1, c2, m, z = sp.symbols("c0 c1 c2 m z", real=True)
    f = sp.expand((c0 + c1 * a + c2 * a**2).subs(a, m + z))
    Ez = lambda e: sp.integrate(e, (z, -Delta / 2, Delta / 2)) / Delta  # noqa: E731
    Vz = Delta**2 / 12
    beta_q = sp.simplify(Ez(z * f) / Vz)
    r_q = sp.factor(sp.simplify(Ez(f**2) - Ez(f) ** 2 - beta_q**2 * Vz))
    Sigma = sp.Matrix([[V, beta * V], [beta * V, beta**2 * V + r]])
    lam_min = min(Sigma.eigenvals(), key=lambda e: e.subs({V: 1, beta: 1, r: sp.Rational(1, 100)}))
    series = sp.series(lam_min, r, 0, 3).removeO()

    def tidy(e):  # sqrt((1 + beta^2)^2) -> 1 + beta^2 (beta > 0 is no loss: only beta^2 enters)
        e = e.replace(
            lambda x: x.is_Pow and x.exp == sp.S.Half, lambda x: sp.sqrt(sp.factor(x.base))
        )
        return sp.factor(sp.simplify(e))

    return {
        "r": r_q,
        "beta": beta_q,
        "lambda_min": lam_min,
        "leading": tidy(series.coeff(r, 1)) * r,
        "next": tidy(series.coeff(r, 2)) * r**2,
        "symbols": (V, beta, r),
    }


def affine_dsm_optimum(dim: int = 2) -> dict:
    """Minimise the population DSM loss of eps(x_t) = A x_t + c for x_0 with mean mu and
    covariance Sigma (symbolic dim x dim, symmetric):  L = E||A (s x0 + sigma eps) + c - eps||^2
        = tr(A (s^2 (Sigma + mu mu^T) + sigma^2 I) A^T) + 2 s c^T A mu + |c|^2 - 2 sigma tr A + dim.
    Solving grad L = 0 gives A, c; returns them with the claimed closed form and their difference
    (zero matrices): A = sigma (s^2 Sigma + sigma^2 I)^-1, c = -s A mu."""
    if not isinstance(dim, int) or not 1 <= dim <= 3:
        raise ValueError(f"dim={dim!r} must be 1, 2 or 3 (symbolic inversion grows fast)")
    mu = sp.Matrix(sp.symbols(f"mu1:{dim + 1}", real=True))
    S = sp.Matrix(dim, dim, lambda i, j: sp.Symbol(f"S{min(i, j) + 1}{max(i, j) + 1}", real=True))
    A = sp.Matrix(dim, dim, lambda i, j: sp.Symbol(f"A{i + 1}{j + 1}", real=True))
    c = sp.Matrix(sp.symbols(f"c1:{dim + 1}", real=True))
    second = s**2 * (S + mu * mu.T) + sig**2 * sp.eye(dim)  # E[x_t x_t^T]
    L = (A * second * A.T).trace() + 2 * s * (c.T * A * mu)[0] + (c.T * c)[0] - 2 * sig * A.trace()
    unknowns = list(A) + list(c)
    sol = sp.solve([sp.diff(L, u) for u in unknowns], unknowns, dict=True)[0]
    A_opt, c_opt = A.subs(sol), c.subs(sol)
    A_claim = sig * (s**2 * S + sig**2 * sp.eye(dim)).inv()
    c_claim = -s * A_claim * mu
    return {
        "A": A_opt,
        "c": c_opt,
        "A_claim": A_claim,
        "c_claim": c_claim,
        "A_difference": sp.simplify(A_opt - A_claim),
        "c_difference": sp.simplify(c_opt - c_claim),
    }


def gaussian_rule_error(kind: str = "quadratic") -> dict:
    """R of the affine-DSM optimum's samples: the Gaussian N(mu, Sigma) with the mean and covariance
    of (a, f(a)), a ~ U[a1, a2].  Write a = m + z, z ~ U[-Delta/2, Delta/2]; the Gaussian has
    a_hat = m + z_hat, z_hat ~ N(0, V), V = Delta^2/12, and b_hat = E b + beta z_hat + eta,
    beta = Cov(a, b)/V, eta ~ N(0, Var b - beta^2 V) independent.  Then R = E(b_hat - f(a_hat))^2
    with Gaussian moments.  kind "linear" (f = c0 + c1 a): R = 0, the linear rule is learned
    exactly; "quadratic" (f = c0 + c1 a + c2 a^2): R = 7 c2^2 Delta^4 / 360.  Also returns the
    correlation of (a_hat, b_hat), equal to that of (a, b): the coarse trend is exact."""
    if kind not in ("linear", "quadratic"):
        raise ValueError(f"kind={kind!r} must be 'linear' or 'quadratic'")
    c0, c1, c2, m = sp.symbols("c0 c1 c2 m", real=True)
    z, zh, eta = sp.symbols("z z_hat eta", real=True)
    V = Delta**2 / 12
    f = c0 + c1 * a + (c2 * a**2 if kind == "quadratic" else 0)
    fz = sp.expand(f.subs(a, m + z))
    Ez = lambda e: sp.integrate(e, (z, -Delta / 2, Delta / 2)) / Delta  # noqa: E731
    Eb = Ez(fz)
    var_b = sp.simplify(Ez(fz**2) - Eb**2)
    beta = sp.simplify(Ez(z * fz) / V)
    var_eta = sp.simplify(var_b - beta**2 * V)
    resid = sp.expand(Eb + beta * zh + eta - fz.subs(z, zh))
    # E over z_hat ~ N(0, V) and eta ~ N(0, var_eta), independent: scale standard normals
    g1, g2 = sp.symbols("g1 g2", real=True)
    R = gaussian_expectation(
        resid.subs({zh: sp.sqrt(V) * g1, eta: sp.sqrt(var_eta) * g2}) ** 2, (g1, g2)
    )
    corr_data = beta * sp.sqrt(V) / sp.sqrt(var_b)
    return {
        "R": sp.factor(sp.simplify(R)),
        "var_b": var_b,
        "beta": beta,
        "corr": sp.simplify(corr_data),
    }


def fisher_gap_gaussian_linear() -> dict:
    """The DSM loss gap of the rule-blind score for a Gaussian latent and a linear rule.

    Latent a ~ N(0, V), b = gamma a; noised latents y = s (a, b) + sigma e have covariance
    C = [[p, c], [c, q]], p = s^2 V + sigma^2, q = s^2 gamma^2 V + sigma^2, c = s^2 gamma V.  The
    rule-blind score is that of the product of marginals, covariance D = diag(p, q).  The eps-DSM
    loss of a denoiser exceeds the optimum by E||eps_hat - eps*||^2 = sigma^2 E||grad log q - grad
    log p||^2 (a Fisher divergence), which for Gaussians is
        gap = sigma^2 tr((C^-1 - D^-1)^2 C) = sigma^2 (1/p + 1/q) rho^2 / (1 - rho^2).
    Returns {"gap" (in s, sigma, V, gamma), "gap_A" (in A = s^2 V; sigma left free),
    "limit_t0" (sigma -> 0: 1), "one_minus_gap" (factored; numerator and denominator have
    only positive terms, so gap <= 1), "optimal_loss_per_dim" (background dim of variance
    sigma_xi^2: s^2 sigma_xi^2 / (s^2 sigma_xi^2 + sigma^2), so the total loss grows like d)}."""
    V, gamma, A, sxi = sp.symbols("V gamma A sigma_xi", positive=True)
    p = s**2 * V + sig**2
    q = s**2 * gamma**2 * V + sig**2
    cc = s**2 * gamma * V
    C = sp.Matrix([[p, cc], [cc, q]])
    Dinv = sp.diag(1 / p, 1 / q)
    M = C.inv() - Dinv
    gap = sp.factor(sp.simplify(sig**2 * (M * M * C).trace()))
    gap_A = sp.factor(sp.simplify(gap.subs(V, A / s**2)))
    limit = sp.limit(gap_A, sig, 0)
    one_minus = sp.factor(sp.simplify(1 - gap_A))
    per_dim = s**2 * sxi**2 / (s**2 * sxi**2 + sig**2)
    return {
        "gap": gap,
        "gap_A": gap_A,
        "limit_t0": limit,
        "one_minus_gap": one_minus,
        "optimal_loss_per_dim": per_dim,
    }


def alignment_law() -> dict:
    """Alignment of a contrastive linear classifier with the rule direction.

    n positives x = mu + xi, n negatives x' = mu + delta v + xi' (the dependent feature shifted by
    delta, same a), xi, xi' ~ N(0, sigma_xi^2 I_D) in D = 2d dimensions (both patches).  The
    classifier direction is the mean difference w = mean(x') - mean(x) = delta v + zeta,
    zeta ~ N(0, (2 sigma_xi^2 / n) I_D) -- the first GD step of any linear loss from zero, and the
    LDA / least-squares direction for isotropic noise.  Then, to leading order in 1/D,
        cos^2(w, v) = delta^2 / |w|^2 ~ delta^2 / (delta^2 + E|zeta|^2) = delta^2 / (delta^2 + 4 d
        sigma_xi^2 / n) = n SNR^2 / (n SNR^2 + 4),   SNR = |delta| / (sigma_xi sqrt d).
    Returns {"cos2" in n, SNR; "cos2_raw" in n, d, delta, sigma_xi; "difference" (0)}."""
    n, d, delta, sxi, snr = sp.symbols("n d delta sigma_xi SNR", positive=True)
    E_zeta2 = 2 * d * (2 * sxi**2 / n)  # D = 2d coordinates, each of variance 2 sigma_xi^2 / n
    raw = delta**2 / (delta**2 + E_zeta2)
    law = n * snr**2 / (n * snr**2 + 4)
    diff = sp.simplify(raw - law.subs(snr, delta / (sxi * sp.sqrt(d))))
    return {"cos2": law, "cos2_raw": raw, "difference": diff, "symbols": (n, d, delta, sxi, snr)}
