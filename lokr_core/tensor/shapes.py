"""Factor-shape planner: which LoKr factors a layer gets and their shapes, as PEFT decides it.

Reproduces the shape decisions of PEFT 0.21.2's ``LoKrLayer.update_layer`` /
``create_adapter_parameters`` as a pure function of the base weight's shape, so layers, files and
tests can agree on shapes without building parameters. See (docs/math.md, Shapes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import nn

from ..base.errors import LoKrConfigError, LoKrShapeError
from .factorization import factorization

__all__ = ["FactorPlan", "plan_factors", "plan_for_layer"]


@dataclass(frozen=True)
class FactorPlan:
    """The factor layout of one adapted layer (all sizes in elements).

    ``out = out_l * out_k``, ``in = in_m * in_n`` (``in`` is the base weight's second axis, i.e.
    ``in_channels // groups`` for a conv), ``kernel`` is the base weight's trailing axes (``()`` for
    Linear, ``(k,)`` for Conv1d, ``(kh, kw)`` for Conv2d).

    ``use_w1``: W1 stored whole as ``w1`` (out_l, in_m), else split ``w1_a`` (out_l, r) @ ``w1_b``
    (r, in_m). ``use_w2``: W2 stored whole as ``w2`` (out_k, in_n, *kernel), else split or Tucker.
    ``tucker``: W2 as ``t2`` (r, r, kh, kw) [PEFT Conv1d: (r, r, k, 1)], ``w2_a`` (r, out_k),
    ``w2_b`` (r, in_n). ``shapes`` maps each created factor (``LoKrFactors`` field names) to its
    shape, in PEFT's layout; ``num_params`` is the sum of their element counts.
    """

    out_l: int
    out_k: int
    in_m: int
    in_n: int
    kernel: tuple[int, ...]
    use_w1: bool
    use_w2: bool
    tucker: bool
    rank: int
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def num_params(self) -> int:
        """Total element count of all factors this plan creates."""
        return sum(math.prod(s) for s in self.shapes.values())

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """The base weight shape the plan reproduces: (out_l*out_k, in_m*in_n, *kernel)."""
        return (self.out_l * self.out_k, self.in_m * self.in_n, *self.kernel)


def plan_factors(weight_shape: tuple[int, ...], r: int, *, decompose_both: bool = False,
                 decompose_factor: int = -1, use_effective_conv2d: bool = False,
                 conv_dims: int = 0, groups: int = 1) -> FactorPlan:
    """Plan the LoKr factors PEFT 0.21.2 creates for a base weight of shape ``weight_shape``.

    ``weight_shape``: (out, in) for Linear (``conv_dims=0``), (out, in/groups, k) for Conv1d
    (``conv_dims=1``), (out, in/groups, kh, kw) for Conv2d (``conv_dims=2``). ``groups`` is only
    checked (>= 1): the weight's own in-axis already holds ``in_channels // groups``, as PEFT uses.

    Rules (PEFT): ``in_m, in_n = factorization(in, decompose_factor)``, same for out;
    W1 is split only when ``decompose_both and r < max(out_l, in_m) / 2``; W2 is whole when
    ``r >= max(out_k, in_n) / 2``; Tucker only for convs with ``use_effective_conv2d`` and a kernel
    other than 1 / (1, 1), and only when W2 is not whole.

    Raises LoKrConfigError for r <= 0, bad ``conv_dims`` / ``groups``, and LoKrShapeError when
    ``weight_shape`` does not have ``2 + conv_dims`` positive axes.
    """
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        raise LoKrConfigError(f"plan_factors: r must be a positive integer, got {r!r}")
    if conv_dims not in (0, 1, 2):
        raise LoKrConfigError(f"plan_factors: conv_dims must be 0 (Linear), 1 (Conv1d) or 2 (Conv2d), got {conv_dims!r}")
    if not isinstance(groups, int) or groups < 1:
        raise LoKrConfigError(f"plan_factors: groups must be a positive integer, got {groups!r}")
    shape = tuple(int(s) for s in weight_shape)
    if len(shape) != 2 + conv_dims or any(s <= 0 for s in shape):
        raise LoKrShapeError(f"plan_factors: weight shape {shape} does not fit conv_dims={conv_dims}; expected "
                             f"{2 + conv_dims} positive sizes (out, in{', k' * conv_dims})")
    out_dim, in_dim, kernel = shape[0], shape[1], shape[2:]

    in_m, in_n = factorization(in_dim, decompose_factor)
    out_l, out_k = factorization(out_dim, decompose_factor)
    use_w1 = not (decompose_both and r < max(out_l, in_m) / 2)
    use_w2 = r >= max(out_k, in_n) / 2
    tucker = bool(use_effective_conv2d and conv_dims > 0 and any(k != 1 for k in kernel) and not use_w2)

    shapes: dict[str, tuple[int, ...]] = {}
    if use_w1:
        shapes["w1"] = (out_l, in_m)
    else:
        shapes["w1_a"] = (out_l, r)
        shapes["w1_b"] = (r, in_m)
    if use_w2:
        shapes["w2"] = (out_k, in_n, *kernel)
    elif tucker:
        # PEFT pads a Conv1d kernel with a trailing 1 so its 2-D Tucker code applies.
        shapes["t2"] = (r, r, *kernel) if conv_dims == 2 else (r, r, kernel[0], 1)
        shapes["w2_a"] = (r, out_k)
        shapes["w2_b"] = (r, in_n)
    else:
        shapes["w2_a"] = (out_k, r)
        shapes["w2_b"] = (r, in_n * math.prod(kernel))
    return FactorPlan(out_l=out_l, out_k=out_k, in_m=in_m, in_n=in_n, kernel=kernel, use_w1=use_w1,
                      use_w2=use_w2, tucker=tucker, rank=r, shapes=shapes)


def plan_for_layer(layer: nn.Module, r: int, *, decompose_both: bool = False, decompose_factor: int = -1,
                   use_effective_conv2d: bool = False) -> FactorPlan:
    """``plan_factors`` for an ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` (its weight shape and groups).

    Works on ``meta`` layers (shapes only). Raises LoKrConfigError naming the type for any other
    module, as PEFT refuses them.
    """
    if isinstance(layer, nn.Linear):
        conv_dims, groups = 0, 1
        weight_shape: tuple[int, ...] = (layer.out_features, layer.in_features)
    elif isinstance(layer, (nn.Conv1d, nn.Conv2d)):
        conv_dims = 1 if isinstance(layer, nn.Conv1d) else 2
        groups = layer.groups
        weight_shape = (layer.out_channels, layer.in_channels // layer.groups, *layer.kernel_size)
    else:
        raise LoKrConfigError(f"plan_for_layer: LoKr supports nn.Linear, nn.Conv1d and nn.Conv2d; "
                              f"got a {type(layer).__name__}")
    return plan_factors(weight_shape, r, decompose_both=decompose_both, decompose_factor=decompose_factor,
                        use_effective_conv2d=use_effective_conv2d, conv_dims=conv_dims, groups=groups)
