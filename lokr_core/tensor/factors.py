"""LoKrFactors: the stored tensors of one LoKr module and what their shapes say.

A module holds W1 either full (``w1``: (out_l, in_m)) or split (``w1_a`` (out_l, r) @ ``w1_b``
(r, in_m)), and W2 full (``w2``: (out_k, in_n[, k...])), split (``w2_a`` (out_k, r) @ ``w2_b``
(r, in_n * prod(k))) or Tucker (``t2`` (r, r, k...), ``w2_a`` (r, out_k), ``w2_b`` (r, in_n)).
Names follow the file keys (``lokr_w1`` -> ``w1``). See (docs/math.md, Shapes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Iterator

import torch

from ..base.errors import LoKrFormatError, LoKrShapeError, where

FACTOR_NAMES = ("w1", "w1_a", "w1_b", "w2", "w2_a", "w2_b", "t2")
"""Field names, in file order; the file key of each is ``lokr_<name>``."""


@dataclass
class LoKrFactors:
    """The factor tensors of one module (any may be None) plus optional ``alpha`` and ``dora_scale``.

    ``alpha`` is the stored scalar (a float, None when the file has none). ``dora_scale`` is the
    DoRA magnitude, shaped (out, 1, ...) or (1, in, ...). Tensors are never copied here.
    """

    w1: torch.Tensor | None = None
    w1_a: torch.Tensor | None = None
    w1_b: torch.Tensor | None = None
    w2: torch.Tensor | None = None
    w2_a: torch.Tensor | None = None
    w2_b: torch.Tensor | None = None
    t2: torch.Tensor | None = None
    alpha: float | None = None
    dora_scale: torch.Tensor | None = None

    # ----------------------------------------------------------------- layout facts
    @property
    def w1_full(self) -> bool:
        return self.w1 is not None

    @property
    def w2_full(self) -> bool:
        return self.w2 is not None

    @property
    def tucker(self) -> bool:
        return self.t2 is not None

    @property
    def full_full(self) -> bool:
        """Both W1 and W2 stored whole: the LyCORIS rule ignores alpha there (scale 1)."""
        return self.w1_full and self.w2_full

    @property
    def rank(self) -> int | None:
        """Inner dimension of the split factor: ``w2_b.shape[0]``, else ``w1_b.shape[0]``; None if full/full."""
        if self.w2_b is not None:
            return int(self.w2_b.shape[0])
        if self.w1_b is not None:
            return int(self.w1_b.shape[0])
        return None

    @property
    def layout(self) -> str:
        """Short name: ``full``, ``split-w1``, ``split-w2``, ``split-both``, ``tucker``, ``tucker-split-w1``."""
        if self.tucker:
            return "tucker" if self.w1_full else "tucker-split-w1"
        if self.full_full:
            return "full"
        if self.w1_full:
            return "split-w2"
        if self.w2_full:
            return "split-w1"
        return "split-both"

    @property
    def w1_shape(self) -> tuple[int, int]:
        """(out_l, in_m)."""
        if self.w1 is not None:
            return tuple(self.w1.shape)  # type: ignore[return-value]
        return (int(self.w1_a.shape[0]), int(self.w1_b.shape[1]))  # type: ignore[union-attr]

    @property
    def dtype(self) -> torch.dtype:
        return next(t for _, t in self.tensors()).dtype

    @property
    def device(self) -> torch.device:
        return next(t for _, t in self.tensors()).device

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, tensor) for every factor present, ``dora_scale`` included, in file order."""
        for name in FACTOR_NAMES + ("dora_scale",):
            t = getattr(self, name)
            if t is not None:
                yield name, t

    def num_params(self) -> int:
        return sum(t.numel() for name, t in self.tensors() if name != "dora_scale")

    def map(self, fn) -> "LoKrFactors":
        """A copy with ``fn(tensor)`` applied to every tensor (alpha kept)."""
        return replace(self, **{name: fn(t) for name, t in self.tensors()})

    # ----------------------------------------------------------------- validation
    def validate(self, file: str | None = None, module: str | None = None) -> None:
        """Check that the factors form one known layout with consistent inner shapes.

        Raises LoKrFormatError (missing / extra factor, non-finite values) or LoKrShapeError
        (inner dims that do not agree), naming ``file`` and ``module``.
        """
        at = where(file, module)
        has = {f.name for f in fields(self) if f.name in FACTOR_NAMES and getattr(self, f.name) is not None}
        if "w1" in has and ({"w1_a", "w1_b"} & has):
            raise LoKrFormatError(f"{at}has both lokr_w1 and lokr_w1_a/lokr_w1_b; expected one of them")
        if "w1" not in has and not {"w1_a", "w1_b"} <= has:
            raise LoKrFormatError(f"{at}W1 is missing: expected lokr_w1, or lokr_w1_a and lokr_w1_b (found {sorted(has)})")
        if "w2" in has and ({"w2_a", "w2_b", "t2"} & has):
            raise LoKrFormatError(f"{at}has both lokr_w2 and lokr_w2_a/lokr_w2_b/lokr_t2; expected one of them")
        if "w2" not in has and not {"w2_a", "w2_b"} <= has:
            raise LoKrFormatError(f"{at}W2 is missing: expected lokr_w2, or lokr_w2_a and lokr_w2_b (found {sorted(has)})")
        for name, t in self.tensors():
            if any(int(d) == 0 for d in t.shape):  # a rank 0 divides by zero in the scale, an empty W is no LoKr
                raise LoKrShapeError(f"{at}lokr_{name} has shape {tuple(t.shape)}; expected no zero-size axis")
        for name, t in self.tensors():
            if t.device.type != "meta" and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise LoKrFormatError(f"{at}lokr_{name} holds NaN or inf values; expected finite numbers")
        if self.w1 is None:
            if self.w1_a.ndim != 2 or self.w1_b.ndim != 2 or self.w1_a.shape[1] != self.w1_b.shape[0]:
                raise LoKrShapeError(f"{at}lokr_w1_a {tuple(self.w1_a.shape)} @ lokr_w1_b {tuple(self.w1_b.shape)}: "
                                     "expected (out_l, r) and (r, in_m)")
        elif self.w1.ndim != 2:
            raise LoKrShapeError(f"{at}lokr_w1 has shape {tuple(self.w1.shape)}; expected 2-D (out_l, in_m)")
        if self.t2 is not None:
            if self.t2.ndim < 2:
                raise LoKrShapeError(f"{at}lokr_t2 has shape {tuple(self.t2.shape)}; expected (r, r, k...)")
            r1, r2 = self.t2.shape[:2]
            if (self.w2_a.ndim != 2 or self.w2_b.ndim != 2 or self.w2_a.shape[0] != r1 or self.w2_b.shape[0] != r2):
                raise LoKrShapeError(f"{at}Tucker factors lokr_t2 {tuple(self.t2.shape)}, lokr_w2_a {tuple(self.w2_a.shape)}, "
                                     f"lokr_w2_b {tuple(self.w2_b.shape)}: expected (r, r, k...), (r, out_k), (r, in_n)")
        elif self.w2 is not None:
            if self.w2.ndim < 2:
                raise LoKrShapeError(f"{at}lokr_w2 has shape {tuple(self.w2.shape)}; expected (out_k, in_n[, k...])")
        else:
            if self.w2_a.ndim != 2 or self.w2_b.ndim < 2 or self.w2_a.shape[1] != self.w2_b.shape[0]:
                raise LoKrShapeError(f"{at}lokr_w2_a {tuple(self.w2_a.shape)} @ lokr_w2_b {tuple(self.w2_b.shape)}: "
                                     "expected (out_k, r) and (r, in_n*k) (or (r, in_n, k...))")
        if self.alpha is not None and math.isnan(self.alpha):
            raise LoKrFormatError(f"{at}alpha is NaN; expected a finite number")
        if self.alpha is not None and math.isinf(self.alpha) and not self.full_full:
            raise LoKrFormatError(f"{at}alpha is {self.alpha} on a split ({self.layout}) module; expected a finite "
                                  "number (inf alpha is only meaningful when W1 and W2 are both full)")

    def check_target(self, shape: tuple[int, ...] | torch.Size, file: str | None = None,
                     module: str | None = None) -> None:
        """Raise LoKrShapeError unless kron(W1, W2) can be reshaped to ``shape`` = (out, in[, k...]).

        The check compares out = out_l*out_k, in = in_m*in_n and the kernel size, using shapes only,
        and that a ``dora_scale`` holds one magnitude per output row or per input column.
        """
        at = where(file, module)
        shape = tuple(int(s) for s in shape)
        out_l, in_m = self.w1_shape
        if self.t2 is not None:
            out_k, in_n = int(self.w2_a.shape[1]), int(self.w2_b.shape[1])
            kernel = math.prod(self.t2.shape[2:])
        elif self.w2 is not None:
            out_k, in_n = int(self.w2.shape[0]), int(self.w2.shape[1])
            kernel = math.prod(self.w2.shape[2:])
        else:
            out_k = int(self.w2_a.shape[0])
            inner = math.prod(int(d) for d in self.w2_b.shape[1:])  # (r, in_n*k) or lycoris' (r, in_n, k...)
            in_n, kernel = inner, 1
            if len(shape) > 2:
                kernel_t = math.prod(shape[2:])
                in_n, kernel = (inner // kernel_t, kernel_t) if inner % kernel_t == 0 else (-1, kernel_t)
        want_kernel = math.prod(shape[2:]) if len(shape) > 2 else 1
        ok = (len(shape) >= 2 and out_l * out_k == shape[0] and in_m * in_n == shape[1] and kernel == want_kernel)
        if not ok:
            raise LoKrShapeError(
                f"{at}factors give a weight of (out={out_l}*{out_k}, in={in_m}*{in_n}, kernel={kernel}) "
                f"but the target weight has shape {shape}")
        if self.dora_scale is not None:
            ds = tuple(int(d) for d in self.dora_scale.shape)
            per_row = self.dora_scale.numel() == shape[0]
            per_col = len(ds) >= 2 and ds[0] == 1 and ds[1] == shape[1]
            if not (per_row or per_col):
                raise LoKrShapeError(f"{at}dora_scale has shape {ds}; expected one magnitude per output row "
                                     f"({shape[0]}, 1, ...) or per input column (1, {shape[1]}, ...) of the target "
                                     f"weight {shape}")
