"""LoKr layers: an ``nn.Module`` wrapping a Linear / Conv1d / Conv2d ``base_layer`` with named adapters.

Behaviour follows PEFT 0.21.2's ``LoKrLayer`` (shapes, init modes, scale ``alpha / r``, rank and
module dropout, several named adapters, active adapters, enable / disable, merge / unmerge,
``get_delta_weight``, forward). Parameters live in one ``nn.ParameterDict`` per factor, keyed by
adapter name, so inside a model they are named ``<module>.lokr_w1.<adapter>`` like PEFT's and the
base weight is ``<module>.base_layer.weight``.

Differences from PEFT, on purpose:

- the default forward (``forward_mode = "auto"``) runs the base op once with W + ΔW, the product
  added into a copy of W by ``kron.add_kron_``: about the base layer's cost, where PEFT pays for
  the base op twice (base(x) + op(x, ΔW)). ``"bypass"`` never builds ΔW for Linear and unpadded
  stride-1 1x1 convs: ``y = base(x) + scale * kron(W1, W2) x`` through ``kron.kron_linear_factors``
  (no weight-sized temporary; other convs fall back to ΔW). Rank dropout is applied there to output
  channels, which is exactly PEFT's per-row dropout of ΔW. ``"delta"`` is PEFT's way. All three give
  PEFT's numbers to float tolerance, gradients included.
- wrappers start in the train/eval mode of the layer they wrap (PEFT's start in train mode, so
  their dropout acts in an eval model until ``.eval()`` is called again).
- Conv1d with a full 3-D ``lokr_w2`` uses the true Kronecker product (docs/math.md, Shapes);
  ``peft_conv1d_compat=True`` reproduces PEFT's layout for adapters trained through it.
- merge / unmerge add the product in place with ``kron.add_kron_`` and remember the scale each
  adapter was merged with, so unmerge is the inverse even after ``set_scale``.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..base.errors import LoKrConfigError
from ..tensor import kron
from ..tensor.factors import LoKrFactors
from .adapter_store import ADAPTER_PARAM_NAMES, AdapterStore
from .layer_forward import FORWARD_MODES, ForwardMixin
from .layer_merge import MergeMixin

__all__ = ["LoKrLayer", "LoKrLinear", "LoKrConv1d", "LoKrConv2d", "wrap_layer", "ADAPTER_PARAM_NAMES",
           "FORWARD_MODES"]


class LoKrLayer(AdapterStore, MergeMixin, ForwardMixin, nn.Module):
    """Base of the LoKr layers: holds ``base_layer`` and the adapters' factors, scale and dropout.

    Per adapter name: ``r``, ``alpha``, ``scaling`` (= scale * alpha / r), ``rank_dropout``,
    ``rank_dropout_scale``, ``module_dropout`` (plain dicts, as PEFT) and the factor parameters in
    ``lokr_w1`` / ``lokr_w1_a`` / ``lokr_w1_b`` / ``lokr_w2`` / ``lokr_w2_a`` / ``lokr_w2_b`` /
    ``lokr_t2`` (``nn.ParameterDict``). Subclasses only say how ΔW is applied to an input.

    The jobs are split in three parts, each in its own module: the adapters by name, their creation
    and activation (:class:`~lokr_core.tuner.adapter_store.AdapterStore`), merge / unmerge
    (:class:`~lokr_core.tuner.layer_merge.MergeMixin`), forward and ΔW
    (:class:`~lokr_core.tuner.layer_forward.ForwardMixin`). This class sets their state and says
    what the base layer is.
    """

    adapter_layer_names = ADAPTER_PARAM_NAMES
    base_type: type[nn.Module] = nn.Module

    def __init__(self, base_layer: nn.Module, *, peft_conv1d_compat: bool = False,
                 forward_mode: str = "auto") -> None:
        super().__init__()
        if not isinstance(base_layer, self.base_type):
            raise LoKrConfigError(f"{type(self).__name__}: base_layer must be a {self.base_type.__name__}, "
                                  f"got a {type(base_layer).__name__}")
        self.base_layer = base_layer
        for name in ADAPTER_PARAM_NAMES:
            setattr(self, name, nn.ParameterDict({}))
        self.r: dict[str, int] = {}
        self.alpha: dict[str, float] = {}
        self.scaling: dict[str, float] = {}
        self.rank_dropout: dict[str, float] = {}
        self.rank_dropout_scale: dict[str, bool] = {}
        self.module_dropout: dict[str, float] = {}
        self.merged_adapters: list[str] = []
        self._merged_scaling: dict[str, float] = {}
        self._active_adapters: list[str] = []
        self._disable_adapters = False
        self.peft_conv1d_compat = bool(peft_conv1d_compat)
        self.forward_mode = forward_mode

    # ------------------------------------------------------------------ state
    @property
    def weight(self) -> torch.Tensor:
        """The base layer's weight (merged adapters included), like PEFT's wrapper exposes it."""
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    @property
    def in_features(self) -> int:
        b = self.base_layer
        return b.in_features if isinstance(b, nn.Linear) else b.in_channels

    @property
    def out_features(self) -> int:
        b = self.base_layer
        return b.out_features if isinstance(b, nn.Linear) else b.out_channels

    def get_base_layer(self) -> nn.Module:
        return self.base_layer

    def extra_repr(self) -> str:
        return (f"adapters={sorted(self.available_adapters)}, active={self._active_adapters}, "
                f"merged={self.merged_adapters}, forward_mode={self._forward_mode!r}")


class LoKrLinear(LoKrLayer):
    """LoKr on an ``nn.Linear``: x (..., in) -> (..., out); the adapter path never builds ΔW by default."""

    base_type = nn.Linear

    def _bypass_ok(self) -> bool:
        return True

    def _base_op(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, weight, bias)

    def _bypass_forward(self, x: torch.Tensor, f: LoKrFactors) -> torch.Tensor:
        return kron.kron_linear_factors(x, f)


class _LoKrConv(LoKrLayer):
    """Shared conv behaviour: ΔW applied with the base layer's stride / padding / dilation / groups."""

    def _bypass_ok(self) -> bool:
        b = self.base_layer
        return (all(k == 1 for k in b.kernel_size) and all(s == 1 for s in b.stride) and b.groups == 1
                and isinstance(b.padding, tuple) and all(p == 0 for p in b.padding))

    def _n_spatial(self) -> int:
        return len(self.base_layer.kernel_size)

    def _bypass_forward(self, x: torch.Tensor, f: LoKrFactors) -> torch.Tensor:
        if x.ndim == self._n_spatial() + 1:  # unbatched input (in, *spatial)
            return kron.kron_conv1x1(x.unsqueeze(0), f).squeeze(0)
        return kron.kron_conv1x1(x, f)

    def _base_op(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        # the base layer's own conv call: stride, padding (any padding_mode), dilation, groups
        return self.base_layer._conv_forward(x, weight, bias)


class LoKrConv1d(_LoKrConv):
    """LoKr on an ``nn.Conv1d``: x (N, in, L) -> (N, out, L'). ``peft_conv1d_compat`` picks PEFT's ΔW layout."""

    base_type = nn.Conv1d


class LoKrConv2d(_LoKrConv):
    """LoKr on an ``nn.Conv2d`` (grouped, Tucker / effective conv included): x (N, in, H, W) -> (N, out, H', W')."""

    base_type = nn.Conv2d


_WRAPPERS: tuple[tuple[type[nn.Module], type[LoKrLayer]], ...] = (
    (nn.Conv2d, LoKrConv2d), (nn.Conv1d, LoKrConv1d), (nn.Linear, LoKrLinear))


def wrap_layer(base: nn.Module, adapter_name: str = "default", r: int = 8, alpha: float = 8.0,
               config: Any = None, *, peft_conv1d_compat: bool = False, forward_mode: str = "auto",
               **overrides: Any) -> LoKrLayer:
    """Wrap ``base`` (Linear / Conv1d / Conv2d) in the matching LoKr layer with one adapter.

    If ``base`` is already a LoKrLayer, the adapter is added to it (PEFT's nesting rule) and it is
    returned. Raises LoKrConfigError for other module types (nothing created).
    """
    if isinstance(base, LoKrLayer):
        base.update_layer(adapter_name, r, alpha, config, **overrides)
        return base
    for base_cls, cls in _WRAPPERS:
        if isinstance(base, base_cls):
            layer = cls(base, peft_conv1d_compat=peft_conv1d_compat, forward_mode=forward_mode)
            layer.update_layer(adapter_name, r, alpha, config, **overrides)
            return layer.train(base.training)  # an eval model stays in eval (no dropout)
    raise LoKrConfigError(f"wrap_layer: LoKr supports nn.Linear, nn.Conv1d and nn.Conv2d; got a {type(base).__name__}")
