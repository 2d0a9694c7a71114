"""How a LoKr layer applies its adapters in forward: one fused op, bypass through the factors, or
PEFT's base(x) + op(x, ΔW); ΔW itself (``get_delta_weight``) and PEFT's dropouts.

:class:`ForwardMixin` is one part of :class:`lokr_core.tuner.layers.LoKrLayer` (see there for the
three forward modes); the Linear / Conv subclasses there supply ``_base_op``, ``_bypass_ok``,
``_bypass_forward`` and ``_n_spatial``.
"""
from __future__ import annotations

from typing import Any

import torch

from ..base.errors import LoKrConfigError
from ..tensor import kron
from ..tensor.factors import LoKrFactors

FORWARD_MODES = ("auto", "bypass", "delta")
"""``auto``: one op with W + ΔW; ``bypass``: no ΔW for Linear and 1x1 convs (others: ΔW);
``delta``: base(x) + op(x, ΔW), PEFT's way. See ``LoKrLayer.forward``."""


class ForwardMixin:
    """forward through ``forward_path``; ``get_delta_weight`` as PEFT."""

    @property
    def forward_mode(self) -> str:
        return self._forward_mode

    @forward_mode.setter
    def forward_mode(self, mode: str) -> None:
        if mode not in FORWARD_MODES:
            raise LoKrConfigError(f"{type(self).__name__}: forward_mode must be one of {FORWARD_MODES}, got {mode!r}")
        self._forward_mode = mode

    def _rank_drop(self, n_out: int, adapter_name: str, device: torch.device) -> torch.Tensor:
        """PEFT's rank-dropout mask (n_out,) : keep with prob 1 - p, optionally rescaled by its mean."""
        drop = (torch.rand(n_out) > self.rank_dropout[adapter_name]).float()
        if self.rank_dropout_scale[adapter_name]:
            drop = drop / drop.mean()
        return drop.to(device)

    def get_delta_weight(self, adapter_name: str, *, apply_rank_dropout: bool = False) -> torch.Tensor:
        """ΔW = scaling * kron(W1, W2), shaped like the base weight (out, in/groups[, k...]).

        With ``apply_rank_dropout``, rows are dropped with probability ``rank_dropout`` (and the
        mask divided by its mean when ``rank_dropout_scale``), drawing ``torch.rand(out)`` as PEFT.
        """
        f = self.factors(adapter_name)
        shape = tuple(self.base_layer.weight.shape)
        delta = kron.kron_delta(f, shape, self.scaling[adapter_name], peft_conv1d=self._peft_layout(f))
        if apply_rank_dropout:
            drop = self._rank_drop(shape[0], adapter_name, delta.device)
            delta = delta * drop.to(delta.dtype).view(-1, *([1] * (delta.ndim - 1)))
        return delta

    # ------------------------------------------------------------------ forward paths
    def forward_path(self, adapter_name: str) -> str:
        """How forward applies this adapter: ``"fused"`` (one op with W + ΔW), ``"bypass"`` (factors
        applied to x, no ΔW) or ``"delta"`` (base(x) + op(x, ΔW), PEFT's way)."""
        if self._forward_mode == "bypass" and self._bypass_ok() and not self._peft_layout(self.factors(adapter_name)):
            return "bypass"
        if self._forward_mode == "auto" and self._fusable():
            return "fused"
        return "delta"

    def uses_bypass(self, adapter_name: str) -> bool:
        """True when forward computes this adapter's output from the factors without building ΔW."""
        return self.forward_path(adapter_name) == "bypass"

    def _bypass_ok(self) -> bool:
        return False

    def _fusable(self) -> bool:
        """The base layer is a plain Linear / Conv without hooks, so ``_base_op`` reproduces its forward."""
        b = self.base_layer
        return (type(b) is self.base_type and not b._forward_hooks and not b._forward_pre_hooks
                and b.weight.dtype.is_floating_point)

    def _base_op(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def _delta_forward(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        return self._base_op(x, delta, None)

    def _bypass_forward(self, x: torch.Tensor, f: LoKrFactors) -> torch.Tensor:
        raise NotImplementedError

    def _adapter_output(self, adapter_name: str, x: torch.Tensor) -> torch.Tensor:
        """The adapter's contribution scaling * ΔW applied to x (rank dropout when training)."""
        apply_drop = self.training and bool(self.rank_dropout[adapter_name])
        if not self.uses_bypass(adapter_name):
            delta = self.get_delta_weight(adapter_name, apply_rank_dropout=apply_drop)
            return self._delta_forward(x.to(delta.dtype), delta)
        f = self.factors(adapter_name)
        x = x.to(f.dtype)
        y = self._bypass_forward(x, f) * self.scaling[adapter_name]
        if apply_drop:
            drop = self._rank_drop(self.out_features, adapter_name, y.device).to(y.dtype)
            y = y * drop.view(-1, *([1] * self._n_spatial()))
        return y

    def _fused_add(self, eff: torch.Tensor | None, name: str) -> torch.Tensor:
        """``eff`` (None: a copy of W) plus the adapter's ΔW (rank dropout when training); W untouched.

        Without rank dropout the product is added with one broadcast ``kron.add_kron_`` into the
        copy (no ΔW tensor); autograd reaches the factors either way.
        """
        w = self.base_layer.weight
        f = self.factors(name)
        apply_drop = self.training and bool(self.rank_dropout[name])
        if apply_drop or self._peft_layout(f) or f.dtype != w.dtype:
            delta = self.get_delta_weight(name, apply_rank_dropout=apply_drop).to(w.dtype)
            return (w if eff is None else eff) + delta
        eff = w.clone() if eff is None else eff
        return kron.add_kron_(eff, kron.rebuild_w1(f), kron.rebuild_w2(f, tuple(w.shape[2:])), self.scaling[name])

    def _n_spatial(self) -> int:
        """Number of trailing spatial axes after the channel axis of the output (0 for Linear)."""
        return 0

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """base_layer(x) plus every active adapter's output, through ``forward_path``.

        ``auto`` runs one op with W + ΔW (as fast as the base layer for realistic token counts);
        ``bypass`` adds the factors' product (Linear / 1x1); ``delta`` adds op(x, ΔW) as PEFT does.
        Random draws (module dropout, then rank dropout, per adapter) happen in PEFT's order.
        """
        previous_dtype = x.dtype
        if self._disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs).to(previous_dtype)
        if self.merged:
            return self.base_layer(x, *args, **kwargs).to(previous_dtype)
        available = self.available_adapters
        names = [n for n in self._active_adapters if n in available]
        keep = lambda n: (not self.training) or bool(torch.rand(1) > self.module_dropout[n])  # noqa: E731
        if names and not args and not kwargs and all(self.forward_path(n) == "fused" for n in names):
            eff = None
            for name in names:  # module dropout, then rank dropout, per adapter: PEFT's order of draws
                if keep(name):
                    eff = self._fused_add(eff, name)
            if eff is not None:
                if x.dtype != eff.dtype and not torch.is_autocast_enabled():
                    x = x.to(eff.dtype)
                return self._base_op(x, eff, self.base_layer.bias).to(previous_dtype)
            return self.base_layer(x).to(previous_dtype)
        result = self.base_layer(x, *args, **kwargs)
        for name in names:
            if keep(name):
                result = result + self._adapter_output(name, x)
        return result.to(previous_dtype)
