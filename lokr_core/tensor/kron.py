"""Pure tensor functions for LoKr: rebuild W1 / W2, ΔW, in-place merge, bypass products, DoRA.

This is the one implementation of the math (docs/math.md, Shapes) and of DoRA (docs/math.md, DoRA);
layers, file readers, checkpoint merge, ComfyUI patches and extraction all call it. Shapes use the
names of docs/math.md:
W1 (out_l, in_m), W2 (out_k, in_n[, k...]), ΔW (out_l*out_k, in_m*in_n[, k...]).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from .factors import LoKrFactors


def rebuild_w1(f: LoKrFactors) -> torch.Tensor:
    """W1 (out_l, in_m): ``w1``, or ``w1_a @ w1_b``."""
    if f.w1 is not None:
        return f.w1
    return f.w1_a @ f.w1_b


def rebuild_w2(f: LoKrFactors, kernel: Sequence[int] = ()) -> torch.Tensor:
    """W2 (out_k, in_n, *kernel).

    - full ``w2`` is returned as stored, reshaped to ``kernel`` when given (a PEFT Conv1d Tucker or
      full W2 may carry a trailing 1);
    - split: ``w2_a (out_k, r) @ w2_b (r, in_n*prod(kernel))`` reshaped to (out_k, in_n, *kernel)
      (lycoris' functional API stores w2_b as (r, in_n, *kernel): same numbers, flattened here);
    - Tucker: ``einsum('ij...,ip,jr->pr...', t2, w2_a, w2_b)`` with t2 (r, r, k...),
      w2_a (r, out_k), w2_b (r, in_n).
    ``kernel`` is the base weight's trailing shape (``()`` for Linear).
    """
    kernel = tuple(int(k) for k in kernel)
    if f.t2 is not None:
        t2 = f.t2
        w2 = torch.einsum("ij...,ip,jr->pr...", t2, f.w2_a, f.w2_b)
    elif f.w2 is not None:
        w2 = f.w2
    else:
        w2 = f.w2_a @ f.w2_b.reshape(f.w2_b.shape[0], -1)
    if kernel or w2.ndim > 2:
        w2 = w2.reshape(w2.shape[0], -1, *kernel) if kernel else w2.reshape(w2.shape[0], -1)
    return w2


def kron_product(w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """kron(W1, W2) for W1 (out_l, in_m) and W2 (out_k, in_n, *k) -> (out_l*out_k, in_m*in_n, *k).

    The kernel axes of W2 are not multiplied (the true Kronecker product of the layer, LyCORIS'
    layout; see ``peft_conv1d_kron`` for PEFT's Conv1d variant). Formed as one broadcast product
    (the same numbers as ``torch.kron`` with W1 given trailing unit axes, ~1.4x faster on CPU).
    """
    out_l, in_m = w1.shape
    out_k, in_n = w2.shape[:2]
    kernel = tuple(w2.shape[2:])
    product = w1.reshape(out_l, 1, in_m, 1, *([1] * len(kernel))) * w2.reshape(1, out_k, 1, in_n, *kernel)
    return product.reshape(out_l * out_k, in_m * in_n, *kernel)


def peft_conv1d_kron(w1: torch.Tensor, w2: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """PEFT's Conv1d product with a full 3-D W2: ``torch.kron(w1, w2)`` of a 2-D and a 3-D tensor.

    This is *not* the Kronecker product of the layer (docs/math.md, Shapes); it exists only so adapters
    trained through PEFT's layout can be reproduced when asked for explicitly.
    """
    return torch.kron(w1, w2).reshape(tuple(shape))


def kron_delta(f: LoKrFactors, shape: Sequence[int], scale: float = 1.0, *,
               device: torch.device | str | None = None, dtype: torch.dtype | None = None,
               peft_conv1d: bool = False) -> torch.Tensor:
    """ΔW = scale * kron(W1, W2) reshaped to ``shape`` (the base weight's (out, in[, k...])).

    Factors are moved to ``device`` / ``dtype`` first (default: where they are). ``peft_conv1d``
    reproduces PEFT's Conv1d layout for a full 3-D W2 (see ``peft_conv1d_kron``).
    """
    shape = tuple(int(s) for s in shape)
    if device is not None or dtype is not None:
        f = f.map(lambda t: t.to(device=device, dtype=dtype))
    w1 = rebuild_w1(f)
    w2 = rebuild_w2(f, shape[2:])
    if peft_conv1d and len(shape) == 3 and f.w2 is not None and f.w2.ndim == 3:
        delta = peft_conv1d_kron(w1, f.w2, shape)
    else:
        delta = kron_product(w1, w2).reshape(shape)
    if scale != 1.0:
        delta = delta * scale
    return delta


def add_kron_(weight: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Add ``scale * kron(W1, W2)`` to ``weight`` in place, without building ΔW; returns ``weight``.

    weight (out_l*out_k, in_m*in_n, *k) is viewed as (out_l, out_k, in_m, in_n, *k) and updated with
    one broadcast ``addcmul_``. W1 (out_l, in_m), W2 (out_k, in_n, *k). The product is formed in the
    factors' dtype (pass fp32 factors to a half weight to round once, on the write). A
    non-contiguous weight falls back to ``weight.add_(kron)``.
    """
    out_l, in_m = w1.shape
    out_k, in_n = w2.shape[:2]
    kernel = tuple(weight.shape[2:])
    if w2.ndim == 2 and kernel:
        w2 = w2.reshape(out_k, in_n, *kernel)
    if not weight.is_contiguous():
        return weight.add_(kron_product(w1, w2).reshape(weight.shape).to(weight.dtype), alpha=scale)
    extra = (1,) * len(kernel)
    view = weight.view(out_l, out_k, in_m, in_n, *kernel)
    a = w1.reshape(out_l, 1, in_m, 1, *extra)
    b = w2.reshape(1, out_k, 1, in_n, *kernel)
    if a.dtype != weight.dtype or b.dtype != weight.dtype:
        # an in-place op may not promote the weight; do the product in the factor dtype chunk-free
        view.copy_(torch.addcmul(view.to(a.dtype), a, b, value=scale))
    else:
        view.addcmul_(a, b, value=scale)
    return weight


def kron_linear(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """``x @ kron(W1, W2).T`` without building the Kronecker product.

    x (..., in_m*in_n), W1 (out_l, in_m), W2 (out_k, in_n) -> (..., out_l*out_k). Uses
    ``W1 @ X @ W2.T`` with X = x viewed as (..., in_m, in_n).
    """
    out_l, in_m = w1.shape
    out_k, in_n = w2.shape[:2]
    xs = x.reshape(*x.shape[:-1], in_m, in_n)
    y = torch.matmul(torch.matmul(w1, xs), w2.transpose(0, 1))  # (..., out_l, out_k)
    return y.reshape(*x.shape[:-1], out_l * out_k)


def kron_linear_factors(x: torch.Tensor, f: LoKrFactors) -> torch.Tensor:
    """Like ``kron_linear`` but keeps split factors split: x (..., in) -> (..., out).

    ``X @ W2.T`` becomes ``(X @ w2_b.T) @ w2_a.T`` and ``W1 @ Y`` becomes ``w1_a @ (w1_b @ Y)``, so
    a low-rank W2 costs O(r) per element instead of O(in_n).
    """
    out_l, in_m = f.w1_shape
    if f.w2 is not None or f.t2 is not None:
        w2 = rebuild_w2(f)
        w2 = w2.reshape(w2.shape[0], -1)
        out_k, in_n = w2.shape
    else:
        w2_b = f.w2_b.reshape(f.w2_b.shape[0], -1)
        out_k, in_n = int(f.w2_a.shape[0]), int(w2_b.shape[1])
    xs = x.reshape(*x.shape[:-1], in_m, in_n)
    if f.w2 is not None or f.t2 is not None:
        y = torch.matmul(xs, w2.transpose(0, 1))
    else:
        y = torch.matmul(torch.matmul(xs, w2_b.transpose(0, 1)), f.w2_a.transpose(0, 1))
    if f.w1 is not None:
        y = torch.matmul(f.w1, y)
    else:
        y = torch.matmul(f.w1_a, torch.matmul(f.w1_b, y))
    return y.reshape(*x.shape[:-1], out_l * out_k)


def kron_conv1x1(x: torch.Tensor, f: LoKrFactors) -> torch.Tensor:
    """1x1-conv bypass: x (N, in, *spatial) -> (N, out, *spatial) = conv(x, kron(W1, W2)), no ΔW built."""
    y = kron_linear_factors(x.movedim(1, -1), f)
    return y.movedim(-1, 1)


def kron_conv(x: torch.Tensor, f: LoKrFactors, kernel: Sequence[int], stride: Sequence[int] | int = 1,
              padding: Sequence[int] | int = 0, dilation: Sequence[int] | int = 1) -> torch.Tensor:
    """``conv(x, kron(W1, W2))`` for a 1-3-D conv (groups 1) without building ΔW.

    x (N, in_m*in_n, *spatial) -> (N, out_l*out_k, *spatial_out). Since
    ΔW[(a, p), (b, q)] = W1[a, b] * W2[p, q], the input is split into ``in_m`` channel groups, each
    convolved with W2 (out_k, in_n, *kernel) (stride / padding / dilation as the layer's), and the
    groups are mixed by W1 (out_l, in_m): ``in * out_k * k`` multiply-adds per output pixel instead of
    ``in * out * k``. Tucker and split W2 are rebuilt to (out_k, in_n, *kernel) first (small).
    """
    kernel = tuple(int(k) for k in kernel)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(kernel)]
    w1 = rebuild_w1(f)
    w2 = rebuild_w2(f, kernel)
    out_l, in_m = w1.shape
    n, _c, *spatial = x.shape
    y = conv(x.reshape(n * in_m, -1, *spatial), w2, None, stride, padding, dilation)  # (n*in_m, out_k, *s')
    y = y.reshape(n, in_m, *y.shape[1:])                                                # (n, in_m, out_k, *s')
    y = torch.tensordot(w1, y, dims=([1], [1]))                                         # (out_l, n, out_k, *s')
    return y.movedim(0, 1).reshape(n, out_l * y.shape[2], *y.shape[3:])


# ----------------------------------------------------------------------------------------- DoRA
def dora_norm(weight: torch.Tensor, dora_scale_shape: Sequence[int]) -> torch.Tensor:
    """Norm of ``weight`` along the axis the stored magnitude implies, shaped like the magnitude.

    magnitude (out, 1, ...): one norm per output row over all other axes (lycoris wd_on_out=True);
    magnitude (1, in, ...): one norm per input column over all other axes (wd_on_out=False).
    """
    shape = tuple(dora_scale_shape)
    if len(shape) >= 2 and shape[0] == 1 and shape[1] == weight.shape[1] and weight.shape[0] != 1:
        cols = weight.transpose(0, 1).reshape(weight.shape[1], -1).norm(dim=1)
        return cols.reshape(1, weight.shape[1], *([1] * (weight.ndim - 2)))
    rows = weight.reshape(weight.shape[0], -1).norm(dim=1)
    return rows.reshape(weight.shape[0], *([1] * (weight.ndim - 1)))


def dora_weight(weight: torch.Tensor, delta: torch.Tensor, dora_scale: torch.Tensor) -> torch.Tensor:
    """W_dora = (W + ΔW) * dora_scale / (||W + ΔW|| + eps), eps = finfo(dtype).eps (lycoris-lora).

    ``weight`` and ``delta`` share shape (out, in[, k...]); computed in their dtype.
    """
    merged = weight + delta
    norm = dora_norm(merged, dora_scale.shape) + torch.finfo(merged.dtype).eps
    return merged * (dora_scale.to(merged.dtype).reshape(norm.shape) / norm)


def dora_apply(weight: torch.Tensor, delta: torch.Tensor, dora_scale: torch.Tensor, strength: float = 1.0,
               mode: str = "interpolate") -> torch.Tensor:
    """The DoRA-merged weight at ``strength`` (docs/math.md, DoRA); ``delta`` is ΔW at full strength.

    - ``"interpolate"`` (default): W + m * (W_dora - W): 0 -> W exactly, 1 -> W_dora.
    - ``"lycoris"``: (W + ΔW) * (m * (s - 1) + 1), s = dora_scale / norm, as lycoris-lora does
      (ΔW stays applied at m = 0).
    """
    if mode == "interpolate":
        if strength == 0:
            return weight.clone()
        w_dora = dora_weight(weight, delta, dora_scale)
        return weight + strength * (w_dora - weight) if strength != 1 else w_dora
    if mode == "lycoris":
        merged = weight + delta
        norm = dora_norm(merged, dora_scale.shape) + torch.finfo(merged.dtype).eps
        s = dora_scale.to(merged.dtype).reshape(norm.shape) / norm
        return merged * (strength * (s - 1) + 1)
    raise ValueError(f"dora_apply: mode must be 'interpolate' or 'lycoris', got {mode!r}")
