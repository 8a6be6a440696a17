"""Closed-form denoisers computed from a task's training images.

Each is a callable ``eps_fn(x_t, t) -> eps`` for ``rulelib.diffusion.sample.sample``: it computes a
clean-image estimate x0_hat(x_t, t) and returns the noise estimate that goes with it,

    eps = (x_t - sqrt(ab_t) x0_hat) / sqrt(1 - ab_t)                 (Ho et al. 2020, eq. 4/15)

(ab = alpha-bar).  Under the forward process x_t = sqrt(ab) x_0 + sqrt(1 - ab) eps, the DSM loss
E || eps - eps_theta(x_t, t) ||^2 is minimised over a class of functions by the eps of the best
x0 estimate in that class, so the four classes run from memorising to local:

* ``EmpiricalDenoiser`` -- the exact DSM minimiser for the training set {y_i}: the posterior mean
  under the empirical distribution,
      x0_hat = sum_i w_i y_i,  w = softmax_i( -||x_t - sqrt(ab) y_i||^2 / (2 (1 - ab)) ).
  Sampling with it reproduces training images (the memorising end).
* ``GaussianDenoiser`` -- the DSM minimiser over affine denoisers: with the training images'
  mean mu and covariance S (1/N, the empirical distribution's own),
      x0_hat = mu + sqrt(ab) S (ab S + (1 - ab) I)^-1 (x_t - sqrt(ab) mu),
  evaluated in S's eigenbasis (the linear class of notebook 01, on images).
* ``LocalDenoiser`` -- the local score machine of Kamb & Ganguli (2025, "An analytic theory of
  creativity in convolutional diffusion models"): each pixel p is the posterior mean of the
  centre pixel over training patches, given the P x P patch of x_t around p,
      x0_hat[p] = sum_j w_j(p) y_j[centre],  w(p) = softmax_j( -||x_t[patch p] - sqrt(ab) y_j||^2
                                                               / (2 (1 - ab)) ),
  with the patches y_j taken at the same location p from every training image (``equivariant=
  False``: the patch-local class) or from every location of every training image (``True``: the
  translation-equivariant ELS machine).  Outside the canvas both x_t and the training images are
  padded with the background (``pad``, white = +1 in clean units, sqrt(ab) * pad for x_t), so for
  the same-location machine padded pixels cancel, and with P >= 2 H - 1 every patch is the whole
  image: the machine is then exactly the empirical optimum (a test checks this).

Speed.  Same location: the per-pixel terms of ||x - sqrt(ab) y||^2 = ||x||^2 + ab ||y||^2 -
2 sqrt(ab) x.y (summed over the channels) are summed over P x P windows by a separable box filter
(two banded matrix products: the cost does not grow with P), softmaxed over the N training images
at every pixel, and contracted with the training pixels, the training images in chunks with an
online softmax so the (b, chunk, H, W) tensors stay in cache.  The
equivariant machine compares every patch of a query with a pool of training patches through one
matrix product per block; with more patches than ``pool`` (N H W of them in all) it uses a random
sample of ``pool`` patches (seeded) -- a Monte Carlo version of the machine, exact when
pool >= N H W.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from rulelib.diffusion.schedule import Schedule, images_to_tensor


def _train_tensor(images) -> torch.Tensor:
    """uint8 (N, H, W, C) or float (N, C, H, W) in [-1, 1] -> float32 (N, C, H, W)."""
    if isinstance(images, torch.Tensor):
        y = images.detach().float().cpu()
    else:
        a = np.asarray(images)
        y = images_to_tensor(a) if a.dtype == np.uint8 else torch.from_numpy(a).float()
    if y.ndim != 4 or y.shape[0] < 1:
        raise ValueError(f"training images must be a non-empty batch (N, C, H, W), got "
                         f"{tuple(y.shape)}")  # fmt: skip
    return y.contiguous()


class _Denoiser:
    """Common part: the schedule's coefficients and x0_hat -> eps."""

    name = ""

    def __init__(self, train, schedule: Schedule | None = None, block: int = 16):
        self.y = _train_tensor(train)
        self.schedule = schedule or Schedule()
        if block < 1:
            raise ValueError(f"block must be >= 1 query image, got {block}")
        self.block = block

    def _coef(self, t: torch.Tensor) -> tuple[float, float]:
        t = torch.as_tensor(t).reshape(-1)
        if not bool((t == t[0]).all()):
            raise ValueError("a closed-form denoiser takes one noise level per call (all t equal)")
        ab = float(self.schedule.alpha_bars_f64[int(t[0])])
        return math.sqrt(ab), 1.0 - ab

    def x0(self, x_t: torch.Tensor, t) -> torch.Tensor:
        s, v = self._coef(t)
        x = x_t.float()
        return torch.cat([self._x0(x[i : i + self.block], s, v)
                          for i in range(0, x.shape[0], self.block)])  # fmt: skip

    def _x0(self, x: torch.Tensor, s: float, v: float) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x_t: torch.Tensor, t) -> torch.Tensor:
        s, v = self._coef(t)
        return (x_t.float() - s * self.x0(x_t, t)) / math.sqrt(v)


class EmpiricalDenoiser(_Denoiser):
    """The exact DSM minimiser for the training set: the posterior mean over training images."""

    name = "empirical"

    def __init__(self, train, schedule=None, block: int = 256):
        super().__init__(train, schedule, block)
        self.yf = self.y.reshape(self.y.shape[0], -1)
        self.yy = (self.yf * self.yf).sum(1)

    def _x0(self, x, s, v):
        xf = x.reshape(x.shape[0], -1)
        # ||x - s y||^2 = ||x||^2 + s^2 ||y||^2 - 2 s x.y; ||x||^2 is constant over i (drops out
        # of the softmax), so the logits need only the last two terms.
        logits = (2 * s * (xf @ self.yf.T) - s * s * self.yy[None]) / (2 * v)
        w = torch.softmax(logits.double(), dim=1).float()
        return (w @ self.yf).reshape(x.shape)


class GaussianDenoiser(_Denoiser):
    """The DSM minimiser over affine denoisers: the posterior mean under N(mu, S) of the
    training images (S with 1/N: the empirical distribution's covariance)."""

    name = "gaussian"

    def __init__(self, train, schedule=None, block: int = 1024):
        super().__init__(train, schedule, block)
        yf = self.y.reshape(self.y.shape[0], -1).double()
        self.mu = yf.mean(0)
        # S = U diag(lam) U^T (rank <= N - 1; on the rest of the space lam = 0 and the affine
        # optimum returns mu).  From the N x N Gram matrix of the centred data, Yc Yc^T = V E V^T:
        # U = Yc^T V E^-1/2, lam = E / N -- an N x N eigenproblem instead of a D x D one.
        yc = yf - self.mu
        e, vec = torch.linalg.eigh(yc @ yc.T)
        keep = e > e.max() * 1e-10
        e, vec = e[keep], vec[:, keep]
        self.lam = e / yf.shape[0]
        self.u = (yc.T @ vec) / e.sqrt()  # (D, r), orthonormal columns

    def _x0(self, x, s, v):
        xf = x.reshape(x.shape[0], -1).double() - s * self.mu
        gain = s * self.lam / (s * s * self.lam + v)  # sqrt(ab) S (ab S + (1-ab) I)^-1, diagonal
        out = self.mu + ((xf @ self.u) * gain) @ self.u.T
        return out.float().reshape(x.shape)


def box_sum(d: torch.Tensor, p: int) -> torch.Tensor:
    """Sum of d (..., H, W) over the p x p window centred at each pixel, zero outside (p odd).

    Separable: B_H d B_W with the banded 0/1 matrices B[i, j] = 1 where |i - j| <= p // 2, two
    small matrix products (H + W multiply-adds per pixel whatever p; on a CPU faster than
    cumulative sums, which do not vectorise along the summed axis)."""
    if p < 1 or p % 2 == 0:
        raise ValueError(f"patch size must be an odd integer >= 1, got {p}")
    h, w = d.shape[-2:]
    return _band(h, p, d.dtype) @ d @ _band(w, p, d.dtype)


def _band(n: int, p: int, dtype) -> torch.Tensor:
    i = torch.arange(n)
    return ((i[:, None] - i[None, :]).abs() <= p // 2).to(dtype)


class LocalDenoiser(_Denoiser):
    """Kamb & Ganguli's local score machine (patch size ``patch``, odd), same-location or
    translation-equivariant; ``patch`` may also be a function t -> patch size.

    box_chunk: training images per chunk of the box-filter path (default: ~16 MB tensors).
    memory: bytes allowed for the same-location machine's table of training patches (L, P*P*C, N);
    within it the patch distances are one batched matrix product per block of queries, above it
    (and by default) they come from per-pixel products and a box filter: the same numbers, and on
    the 2-core EPYC as fast at P = 3 and faster from P = 5 (Task B, 2000 training images, a block
    of 64 queries: 2.4 s at P = 5 and 2.6 s at P = 15 against 4-5 s for the table's product at
    P = 5, one shared core), without the table (1.2 GB at P = 7).  The table path stays as the
    cross-check of the tests.
    """

    def __init__(self, train, schedule=None, *, patch=5, equivariant=False, pool=16384,
                 pad=1.0, seed=0, block=None, memory=0.0, box_chunk=None):  # fmt: skip
        super().__init__(train, schedule, block or (2 if equivariant else 64))
        self.patch, self.equivariant, self.pad = patch, bool(equivariant), float(pad)
        self.name = "equivariant" if equivariant else "local"
        self.yy = (self.y * self.y).sum(1)  # (N, H, W) per-pixel squared norms
        self.pool, self.seed, self.memory = int(pool), int(seed), float(memory)
        self.box_chunk, self._yy_boxed = box_chunk, (None, None)
        self._tables: dict = {}
        if self.pool < 1:
            raise ValueError(f"pool must be >= 1 patch, got {pool}")

    def patch_at(self, t) -> int:
        p = int(self.patch(int(torch.as_tensor(t).reshape(-1)[0])) if callable(self.patch)
                else self.patch)  # fmt: skip
        if p < 1 or p % 2 == 0:
            raise ValueError(f"patch size must be an odd integer >= 1, got {p}")
        return p

    def x0(self, x_t, t):
        self._p = self.patch_at(t)
        return super().x0(x_t, t)

    def _x0(self, x, s, v):
        if self.equivariant:
            return self._equivariant(x, s, v)
        n, c, h, w = self.y.shape
        if h * w * c * self._p**2 * n * 4 <= self.memory:
            return self._same_location_gemm(x, s, v)
        return self._same_location_box(x, s, v)

    def _unfold(self, x: torch.Tensor, p: int, value: float) -> torch.Tensor:
        """(b, C, H, W) -> (b, H W, C p p): the p x p patch around every pixel, padded."""
        r = p // 2
        return F.unfold(F.pad(x, (r, r, r, r), value=value), p).transpose(1, 2)

    def _same_location_box(self, x, s, v):
        """The same-location machine for any patch size at a cost that does not grow with it:
        logits_i = (2 s box(x . y_i) - s^2 box(|y_i|^2)) / (2 v) at every pixel (||x||^2 is the
        same for every i and drops out of the softmax; both images are padded with the
        background, so the distance is zero outside the canvas), the per-pixel products summed
        over P x P windows by `box_sum`.  Training images go through in chunks with a running
        log-sum-exp (an online softmax), so each chunk's (b, k, H, W) tensors stay in cache
        instead of one (b, N, H, W) tensor per pass through memory."""
        y, p = self.y, self._p
        n, c, h, w = y.shape
        b = x.shape[0]
        k = self.box_chunk or max(1, (1 << 22) // (b * h * w))  # ~16 MB per chunk tensor
        yyb = self._box_yy(p)
        m = torch.full((b, 1, h, w), -math.inf)
        z, acc = torch.zeros(b, 1, h, w), torch.zeros(b, c, h, w)
        for i0 in range(0, n, k):
            yc = y[i0 : i0 + k]
            xy = x[:, None, 0] * yc[None, :, 0]  # per-pixel x . y_i, summed over the channels
            for ch in range(1, c):
                xy.addcmul_(x[:, None, ch], yc[None, :, ch])
            logit = (box_sum(xy, p).mul_(2 * s).sub_(yyb[None, i0 : i0 + k], alpha=s * s)
                     .div_(2 * v))  # fmt: skip
            m_new = torch.maximum(m, logit.amax(1, keepdim=True))
            scale = torch.exp(m - m_new)
            e = logit.sub_(m_new).exp_()
            z = z * scale + e.sum(1, keepdim=True)
            acc = acc * scale + torch.stack([(e * yc[None, :, ch]).sum(1) for ch in range(c)], 1)
            m = m_new
        return acc / z

    def _box_yy(self, p: int) -> torch.Tensor:
        """box(|y_i|^2) per training image (N, H, W), cached per patch size."""
        if self._yy_boxed[0] != p:
            self._yy_boxed = (p, box_sum(self.yy, p))
        return self._yy_boxed[1]

    def _table(self, p: int):
        """Same-location patches of the training images, (L, C p p, N), their squared norms
        (L, N) and the centre pixels (L, N, C); cached per patch size."""
        key = ("local", p)
        if key not in self._tables:
            n, c, h, w = self.y.shape
            cols = self._unfold(self.y, p, self.pad)  # (N, L, K)
            self._tables = {
                key: (
                    cols.permute(1, 2, 0).contiguous(),
                    (cols * cols).sum(2).T.contiguous(),
                    self.y.permute(2, 3, 0, 1).reshape(h * w, n, c).contiguous(),
                )
            }
        return self._tables[key]  # fmt: skip

    def _same_location_gemm(self, x, s, v):
        b, c, h, w = x.shape
        cols, cc, centre = self._table(self._p)
        xq = self._unfold(x, self._p, s * self.pad).transpose(0, 1).contiguous()  # (L, b, K)
        out = torch.empty(h * w, b, c)
        # locations in chunks, all queries of the block at once: the table (L, K, N) is read once
        # per block, and a chunk's logits (128, b, N) stay a few tens of MB
        for l0 in range(0, h * w, 128):
            sl = slice(l0, l0 + 128)
            # ||xq - s y||^2 / (2 v) without ||xq||^2, which is constant over the training images
            logits = torch.baddbmm(cc[sl, None, :], xq[sl], cols[sl], beta=-s * s, alpha=2 * s)
            out[sl] = torch.bmm(torch.softmax(logits / (2 * v), dim=2), centre[sl])
        return out.permute(1, 2, 0).reshape(b, c, h, w)

    def _patches(self, p: int):
        """Pool of training patches from every location (M, C p p) with their centre pixels,
        squared norms and log multiplicities; cached per p.  With more than ``pool`` patches, a
        seeded random sample of ``pool`` of them; identical patches (the white background) are
        merged into one row whose weight is multiplied by its count (log count in the logits)."""
        key = ("pool", p)
        if key not in self._tables:
            n, c, h, w = self.y.shape
            cols = self._unfold(self.y, p, self.pad).reshape(n * h * w, c * p * p)
            centre = self.y.permute(0, 2, 3, 1).reshape(n * h * w, c)
            if cols.shape[0] > self.pool:
                g = torch.Generator().manual_seed(self.seed)
                keep = torch.randperm(cols.shape[0], generator=g)[: self.pool]
                cols, centre = cols[keep], centre[keep]
            both = torch.cat([cols, centre], 1)  # the centre is inside the patch; kept for clarity
            uniq, inv, counts = torch.unique(both, dim=0, return_inverse=True, return_counts=True)
            del inv
            cols, centre = uniq[:, : cols.shape[1]], uniq[:, cols.shape[1] :]
            self._tables[key] = (cols.contiguous(), centre.contiguous(), (cols * cols).sum(1),
                                 counts.double().log().float())  # fmt: skip
        return self._tables[key]

    def _equivariant(self, x, s, v):
        p = self._p
        b, c, h, w = x.shape
        cols, centre, cc, logn = self._patches(p)
        xq = self._unfold(x, p, s * self.pad).reshape(b * h * w, -1)
        logits = torch.addmm(cc[None], xq, cols.T, beta=-s * s, alpha=2 * s) / (2 * v) + logn
        out = torch.softmax(logits, dim=1) @ centre  # (b h w, C)
        return out.reshape(b, h, w, c).permute(0, 3, 1, 2).contiguous()


def make(name: str, train, schedule=None, **kw) -> _Denoiser:
    """A denoiser by name: "empirical", "gaussian", "local" or "equivariant"."""
    if name == "empirical":
        return EmpiricalDenoiser(train, schedule, **kw)
    if name == "gaussian":
        return GaussianDenoiser(train, schedule, **kw)
    if name in ("local", "equivariant"):
        return LocalDenoiser(train, schedule, equivariant=name == "equivariant", **kw)
    raise ValueError(f"unknown denoiser {name!r}; expected one of {list(NAMES)}")


NAMES = ("empirical", "gaussian", "local", "equivariant")


def pixel_r2(a, b) -> np.ndarray:
    """Per-image r^2 of images a against b (uint8 or float, same shape): 1 - sum (a - b)^2 /
    sum (b - mean b)^2 over each image's pixels (Kamb & Ganguli's agreement measure)."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    ss = ((b - b.mean(1, keepdims=True)) ** 2).sum(1)
    return 1.0 - ((a - b) ** 2).sum(1) / np.where(ss > 0, ss, np.nan)
