"""Pure tensor functions for LoKr extraction and resizing (no files, no names).

- ``nearest_kronecker``: the best single Kronecker product W1 ⊗ W2 to a weight difference, by the
  Van Loan-Pitsianis rearrangement (ΔW -> R so that kron(W1, W2) becomes the rank-1 matrix
  vec(W1) vec(W2)^T; the top singular pair of R gives both factors).
- ``lowrank_split``: truncated SVD of a matrix as a balanced split (a (m, r), b (r, n)).
- ``tucker2``: Tucker-2 (HOSVD) of a conv W2 (out_k, in_n, kh, kw) in LoKr's Tucker layout (docs/math.md, Shapes).
- ``plan_layout`` / ``factors_from_delta``: the LoKr module LyCORIS would build for a weight of this
  shape at this rank, filled so it reproduces ΔW best (alpha = rank, so the LyCORIS scale is 1).
- ``resize_factors``: a lower-rank module keeping ΔW best, scale preserved.
- ``lora_error_at_params``: the error of a LoRA (truncated SVD) with at most the same parameter count.

Every reconstruction goes through ``lokr_core.tensor.kron`` (the one implementation of the math).
Shapes use the names of docs/math.md: W1 (out_l, in_m), W2 (out_k, in_n[, kh, kw]),
ΔW (out_l*out_k, in_m*in_n[, kh, kw]).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ..base.errors import LoKrShapeError
from .factorization import factorization
from .factors import LoKrFactors
from .kron import kron_delta, rebuild_w1, rebuild_w2
from .scale import lycoris_scale

_DIRECT_SVD_MAX = 64
"""Rearranged matrices whose smaller side is at most this use the small Gram matrix's eigenvectors;
larger ones use block power iteration for the top singular pair (a few matrix products; a full
SVD measured 30 s for a 320 x 5760 matrix on this project's 2-core CPU against 0.4 s)."""


# ----------------------------------------------------------------------------- Kronecker fit
def rearrange(delta: torch.Tensor, w1_shape: Sequence[int], w2_shape: Sequence[int]) -> torch.Tensor:
    """R (out_l*in_m, out_k*in_n*K) with R[(a, c), (b, d, k)] = ΔW[a*out_k + b, c*in_n + d, k].

    ``delta`` is (out_l*out_k, in_m*in_n[, k...]); ``w1_shape`` = (out_l, in_m); ``w2_shape`` =
    (out_k, in_n[, k...]). kron(W1, W2) rearranges to vec(W1) vec(W2)^T (rank 1).
    """
    out_l, in_m = (int(s) for s in w1_shape)
    out_k, in_n = (int(s) for s in w2_shape[:2])
    kernel = tuple(int(s) for s in delta.shape[2:])
    ksz = math.prod(kernel)
    want = (out_l * out_k, in_m * in_n, *kernel)
    if tuple(delta.shape) != want or tuple(int(s) for s in w2_shape[2:]) not in ((), kernel):
        raise LoKrShapeError(f"nearest_kronecker: ΔW has shape {tuple(delta.shape)}; expected {want} for "
                             f"W1 {tuple(w1_shape)} and W2 {tuple(w2_shape)}")
    r = delta.reshape(out_l, out_k, in_m, in_n, ksz).permute(0, 2, 1, 3, 4)
    return r.reshape(out_l * in_m, out_k * in_n * ksz)


def top_singular_pair(r: torch.Tensor, *, tol: float = 1e-6, max_iter: int = 40, block: int = 8,
                      direct_max: int = _DIRECT_SVD_MAX) -> tuple[torch.Tensor, float, torch.Tensor]:
    """(u (m,), sigma, v (n,)) of the largest singular value of r (m, n), computed in r's dtype.

    Matrices whose smaller side is at most ``direct_max`` use the eigen-decomposition of the small
    Gram matrix (a full SVD of a very wide matrix is slow on CPU). Larger ones use block power
    (subspace) iteration on the smaller side: U (small, block) starts from the
    ``block`` columns of largest norm (deterministic; no global RNG is touched), B = R^T U, U =
    qr(R B); sigma^2 is the top eigenvalue of B^T B (a block x block matrix), and the loop stops
    when sigma changes by less than ``tol`` relative. The last step is a Rayleigh-Ritz projection.
    """
    m, n = r.shape
    if m > n:
        v, sigma, u = top_singular_pair(r.T, tol=tol, max_iter=max_iter, block=block, direct_max=direct_max)
        return u, sigma, v
    if m <= direct_max:  # small side: eigen-decompose the m x m Gram matrix (float64)
        evals, evecs = torch.linalg.eigh((r @ r.T).double())
        sigma = math.sqrt(max(float(evals[-1]), 0.0))
        u = evecs[:, -1].to(r.dtype)
        return u, sigma, (u @ r) / max(sigma, 1e-30)
    q = min(block, m)
    idx = torch.topk(r.norm(dim=0), q).indices
    basis = torch.linalg.qr(r[:, idx]).Q  # (m, q)
    sigma_old = 0.0
    for step in range(max_iter):
        b = (basis.T @ r).T  # (n, q); faster than r.T @ basis on a row-major r
        evals, evecs = torch.linalg.eigh(b.T @ b)  # ascending; q x q
        sigma = math.sqrt(max(float(evals[-1]), 0.0))
        if abs(sigma - sigma_old) <= tol * max(sigma, 1e-30) or step == max_iter - 1:
            break
        sigma_old = sigma
        basis = torch.linalg.qr(r @ b).Q
    y = evecs[:, -1]
    u = basis @ y
    v = (b @ y) / max(sigma, 1e-30)
    return u, sigma, v


def _fit_kronecker(work: torch.Tensor, w1_shape: Sequence[int], w2_shape: Sequence[int], with_error: bool
                   ) -> tuple[torch.Tensor, torch.Tensor, float]:
    r = rearrange(work, w1_shape, w2_shape)
    total = float(r.norm())
    out_l, in_m = (int(s) for s in w1_shape)
    w2_full_shape = (int(w2_shape[0]), int(w2_shape[1]), *work.shape[2:])
    if total == 0.0:
        return (torch.zeros(out_l, in_m, dtype=work.dtype, device=work.device),
                torch.zeros(w2_full_shape, dtype=work.dtype, device=work.device), 0.0)
    u, sigma, v = top_singular_pair(r)
    root = math.sqrt(sigma)
    w1 = (u * root).reshape(out_l, in_m)
    w2 = (v * root).reshape(w2_full_shape)
    rel = float(torch.addr(r, u, v, alpha=-sigma).norm()) / total if with_error else math.nan
    return w1, w2, rel


def nearest_kronecker(delta: torch.Tensor, w1_shape: Sequence[int], w2_shape: Sequence[int]
                      ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The W1 (out_l, in_m), W2 (out_k, in_n[, k...]) minimising ||ΔW - kron(W1, W2)||_F.

    Returns (w1, w2, rel_error) with rel_error = ||ΔW - kron(W1, W2)||_F / ||ΔW||_F (0 for ΔW = 0)
    measured on the rearranged matrix; sqrt(sigma) goes to each factor. Computed in float32 at
    least (float64 input stays float64), on ``delta``'s device. For a conv ΔW, W2 takes the kernel
    axes and W1 is 2-D (LyCORIS' layout: W1 is unsqueezed to (out_l, in_m, 1, 1) by ``kron``).
    """
    work = delta if delta.dtype == torch.float64 else delta.float()
    return _fit_kronecker(work, w1_shape, w2_shape, with_error=True)


# ----------------------------------------------------------------------------- low-rank parts
def _top_left_singular(mat: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(U (m, k), s (k,)): top-k left singular vectors and values of mat (m, n), descending.

    From the eigen-decomposition of the m x m Gram matrix in float64 (fast for the short-and-wide
    matrices met here, where a full SVD is slow on CPU); results in mat's dtype.
    """
    work = mat.double()
    evals, evecs = torch.linalg.eigh(work @ work.T)
    evals, evecs = evals.flip(0)[:k], evecs.flip(1)[:, :k]
    return evecs.to(mat.dtype), evals.clamp_min(0).sqrt().to(mat.dtype)


def lowrank_split(mat: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Truncated SVD of mat (m, n) as a (m, rank) @ b (rank, n), sqrt of the singular values on each.

    When ``rank`` exceeds min(m, n) (or singular values vanish) the extra columns / rows are zero,
    so the stored shapes are always (m, rank) and (rank, n).
    """
    m, n = mat.shape
    if m > n:
        a, b = lowrank_split(mat.T, rank)
        return b.T.contiguous(), a.T.contiguous()
    k = min(rank, m)
    u, s = _top_left_singular(mat, k)
    keep = s > s[0] * 1e-7 if k else s.bool()
    u, s = u[:, keep], s[keep]
    k = int(s.numel())
    root = s.sqrt()
    a = mat.new_zeros(m, rank)
    b = mat.new_zeros(rank, n)
    a[:, :k] = u * root
    b[:k] = (u.T @ mat) / root[:, None]
    return a, b


def _leading_basis(mat: torch.Tensor, rank: int) -> torch.Tensor:
    """(rank, m): the top-``rank`` left singular vectors of mat (m, n) as rows, zero rows past min(m, n)."""
    k = min(rank, mat.shape[0], mat.shape[1])
    u, _ = _top_left_singular(mat, k)
    out = mat.new_zeros(rank, mat.shape[0])
    out[:k] = u.T
    return out


def tucker2(w2: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tucker-2 of a conv W2 (out_k, in_n, kh, kw) by HOSVD: (t2 (r, r, kh, kw), w2_a (r, out_k), w2_b (r, in_n)).

    W2 ≈ einsum('ijkl,ip,jr->prkl', t2, w2_a, w2_b) (docs/math.md, Shapes). Exact when W2 has multilinear
    rank <= (rank, rank) in its first two modes.
    """
    out_k, in_n = w2.shape[:2]
    w2_a = _leading_basis(w2.reshape(out_k, -1), rank)  # (r, out_k), orthonormal rows
    w2_b = _leading_basis(w2.transpose(0, 1).reshape(in_n, -1), rank)  # (r, in_n)
    t2 = torch.einsum("pr...,ip,jr->ij...", w2, w2_a, w2_b)
    return t2.contiguous(), w2_a, w2_b


# ----------------------------------------------------------------------------- module layout
@dataclass(frozen=True)
class Layout:
    """The LoKr module LyCORIS builds for a weight (out, in[, k...]) at ``rank`` (docs/math.md, Shapes).

    w1_shape (out_l, in_m); w2_shape (out_k, in_n, *kernel); ``split_w1`` / ``full_w2`` / ``tucker``
    say which factors are stored.
    """

    shape: tuple[int, ...]
    w1_shape: tuple[int, int]
    w2_shape: tuple[int, ...]
    rank: int
    split_w1: bool
    full_w2: bool
    tucker: bool

    @property
    def kernel(self) -> tuple[int, ...]:
        return self.shape[2:]


def plan_layout(shape: Sequence[int], rank: int, factor: int = -1, decompose_both: bool = False,
                tucker: bool = True) -> Layout:
    """Decide the factors as LyCORIS' ``LokrModule`` does for a base weight of ``shape``.

    W1 split iff ``decompose_both`` and rank < max(out_l, in_m) / 2; W2 full iff
    rank >= max(out_k, in_n) / 2; Tucker iff ``tucker``, W2 split and a kernel other than 1x1.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or rank < 1:
        raise LoKrShapeError(f"plan_layout: need a weight (out, in[, k...]) and rank >= 1, got {shape}, rank {rank}")
    out_l, out_k = factorization(shape[0], factor)
    in_m, in_n = factorization(shape[1], factor)
    kernel = shape[2:]
    split_w1 = bool(decompose_both and rank < max(out_l, in_m) / 2)
    full_w2 = rank >= max(out_k, in_n) / 2
    use_tucker = bool(tucker and not full_w2 and any(k != 1 for k in kernel))
    return Layout(shape, (out_l, in_m), (out_k, in_n, *kernel), int(rank), split_w1, full_w2, use_tucker)


def factors_for_w(w1: torch.Tensor, w2: torch.Tensor, layout: Layout) -> LoKrFactors:
    """Store W1 (out_l, in_m) and W2 (out_k, in_n, *kernel) as ``layout`` says, alpha = rank.

    Split factors are the truncated SVD of W1 / W2 (W2 flattened to (out_k, in_n*K)), Tucker the
    HOSVD of W2; with alpha = rank the LyCORIS scale (alpha / rank, or 1 for full/full) is 1.
    """
    f = LoKrFactors(alpha=float(layout.rank))
    if layout.split_w1:
        f.w1_a, f.w1_b = lowrank_split(w1, layout.rank)
    else:
        f.w1 = w1.contiguous()
    out_k = layout.w2_shape[0]
    if layout.full_w2:
        f.w2 = w2.reshape(layout.w2_shape).contiguous()
    elif layout.tucker:
        f.t2, f.w2_a, f.w2_b = tucker2(w2.reshape(layout.w2_shape), layout.rank)
    else:
        f.w2_a, f.w2_b = lowrank_split(w2.reshape(out_k, -1), layout.rank)
    return f


def relative_error(delta: torch.Tensor, approx: torch.Tensor) -> float:
    """||ΔW - approx||_F / ||ΔW||_F; 0 when both are zero, inf when only ΔW is zero.

    The difference is summed over blocks of rows (about 4 M entries each, float64 sums), so no
    ΔW-sized temporary is made: extraction's peak memory stays a small multiple of one weight.
    """
    base = float(delta.norm())
    d, a = delta.reshape(delta.shape[0], -1), approx.reshape(approx.shape[0], -1)
    step = max(1, (1 << 22) // max(1, d.shape[1]))
    diff = math.sqrt(sum(float((d[i:i + step] - a[i:i + step]).double().square().sum())
                         for i in range(0, d.shape[0], step)))
    if base == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return diff / base


def factors_from_delta(delta: torch.Tensor, layout: Layout) -> tuple[LoKrFactors, float]:
    """The LoKr module of ``layout`` closest to ΔW (nearest Kronecker product, then low-rank parts).

    Returns (factors in float32 (float64 kept), rel_error measured on kron_delta of the stored
    factors). Given W1, truncating W2 is the best rank-r choice; W1 split (decompose_both) is then
    truncated the same way.
    """
    work = delta if delta.dtype == torch.float64 else delta.float()
    w1, w2, _ = _fit_kronecker(work, layout.w1_shape, layout.w2_shape, with_error=False)
    f = factors_for_w(w1, w2, layout)
    approx = kron_delta(f, layout.shape, 1.0)
    return f, relative_error(work, approx)


# ----------------------------------------------------------------------------- resize
def resize_factors(f: LoKrFactors, rank: int, shape: Sequence[int], scale: float | None = None
                   ) -> tuple[LoKrFactors, float]:
    """Lower the rank of the split parts of ``f`` to ``rank``, keeping ΔW best; (new factors, rel_error).

    ``shape`` is the module's weight shape (out, in[, k...]); ``scale`` the module's current scale
    (default: the LyCORIS rule on ``f``). W2 (and W1 when split) is rebuilt with kron.rebuild_w1 /
    rebuild_w2 and truncated by SVD (Tucker: HOSVD); with W1 fixed this is the best rank-``rank``
    W2. Full factors are kept as they are. The new alpha is ``scale * rank``, so the LyCORIS rule
    (alpha / rank) gives the same scale. rel_error = ||ΔW - ΔW'|| / ||ΔW||. A module whose rank is
    already <= ``rank``, or a full/full module, is returned unchanged (error 0).
    """
    old = f.rank
    shape = tuple(int(s) for s in shape)
    if old is None or old <= rank or rank < 1:
        return f, 0.0
    s_old = lycoris_scale(f) if scale is None else float(scale)
    kernel = shape[2:]
    out_k = (int(f.w2_a.shape[1]) if f.t2 is not None else
             int(f.w2.shape[0]) if f.w2 is not None else int(f.w2_a.shape[0]))
    g = LoKrFactors(dora_scale=f.dora_scale, alpha=s_old * rank)
    if f.w1 is not None:
        g.w1 = f.w1
    else:
        g.w1_a, g.w1_b = lowrank_split(rebuild_w1(f).float(), rank)
    if f.w2 is not None:
        g.w2 = f.w2
    else:
        w2 = rebuild_w2(f, kernel).float()
        if f.t2 is not None:
            g.t2, g.w2_a, g.w2_b = tucker2(w2, rank)
        else:
            g.w2_a, g.w2_b = lowrank_split(w2.reshape(out_k, -1), rank)
    dtype = f.dtype
    g = g.map(lambda t: t.to(dtype) if t.is_floating_point() else t)
    before = kron_delta(f.map(lambda t: t.float()), shape, s_old)
    after = kron_delta(g.map(lambda t: t.float()), shape, lycoris_scale(g))
    return g, relative_error(before, after)


# ----------------------------------------------------------------------------- LoRA comparison
def lora_error_at_params(delta: torch.Tensor, params: int) -> tuple[int, float]:
    """(lora_rank, rel_error) of the best LoRA of ΔW (out, in[, k...]) using at most ``params`` numbers.

    A LoRA of rank r costs r * (out + in*K); its best error is the tail of ΔW's singular values
    (Eckart-Young), taken from the eigenvalues of the smaller Gram matrix (formed in float32,
    eigen-decomposed in float64). r = 0 (the budget buys no rank-1 LoRA) gives error 1.
    """
    mat = delta.reshape(delta.shape[0], -1)
    m, n = mat.shape
    r = min(params // (m + n), min(m, n))
    work = mat.float()
    total = float(work.double().square().sum())
    if total == 0.0:
        return r, 0.0
    if r == 0:
        return 0, 1.0
    gram = (work @ work.T if m <= n else work.T @ work).double()
    ev = torch.linalg.eigvalsh(gram).clamp_min(0)  # ascending
    tail = float(ev[: ev.numel() - r].sum())
    return r, math.sqrt(min(max(tail, 0.0) / total, 1.0))
