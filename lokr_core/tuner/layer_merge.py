"""Merging a LoKr layer's adapters into its base weight and taking them out again.

:class:`MergeMixin` is one part of :class:`lokr_core.tuner.layers.LoKrLayer` (see there); it reads
the adapters through :class:`lokr_core.tuner.adapter_store.AdapterStore` and keeps
``merged_adapters`` and ``_merged_scaling`` (the scale each adapter was merged with, so unmerge is
the inverse even after ``set_scale``).
"""
from __future__ import annotations

import warnings
from typing import Iterable

import torch

from ..base.errors import LoKrConfigError, LoKrFormatError
from ..tensor import kron


class MergeMixin:
    """merge / unmerge in place with ``kron.add_kron_`` (no ΔW tensor where the layout allows)."""

    def merge(self, safe_merge: bool = False, adapter_names: Iterable[str] | None = None) -> None:
        """Add the ΔW of ``adapter_names`` (default: active adapters) into the base weight, in place.

        Already merged adapters and names this layer does not hold are skipped. ``safe_merge``
        works on a copy and raises LoKrFormatError (weight untouched) when the result is not finite.
        """
        if isinstance(adapter_names, str):
            raise LoKrConfigError(f"merge: adapter_names must be a list of names, got the string {adapter_names!r}")
        names = self.active_adapters if adapter_names is None else list(adapter_names)
        # as PEFT: names this layer does not hold are skipped (another layer of the model may hold them)
        names = [n for n in names if n in self.available_adapters and n not in self.merged_adapters]
        weight = self.base_layer.weight
        for name in names:
            scale = self.scaling[name]
            with torch.no_grad():
                if safe_merge:
                    trial = self._add_delta(weight.detach().clone(), name, scale)
                    if not bool(torch.isfinite(trial).all()):
                        raise LoKrFormatError(f"{type(self).__name__}.merge: adapter {name!r} gives NaN/inf in the "
                                             "merged weight; expected finite values (weight left unchanged)")
                    weight.data.copy_(trial)
                else:
                    self._add_delta(weight.data, name, scale)
            self.merged_adapters.append(name)
            self._merged_scaling[name] = scale

    def unmerge(self) -> None:
        """Subtract every merged adapter again (last merged first), with the scale it was merged with."""
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.")
            return
        weight = self.base_layer.weight
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            scale = self._merged_scaling.pop(name)
            with torch.no_grad():
                self._add_delta(weight.data, name, -scale)

    def _add_delta(self, weight: torch.Tensor, adapter_name: str, scale: float) -> torch.Tensor:
        """weight += scale * kron(W1, W2) in place (broadcast add, no ΔW) and return it."""
        f = self.factors(adapter_name)
        if self._peft_layout(f) or weight.is_complex():
            delta = kron.kron_delta(f, tuple(weight.shape), scale, peft_conv1d=self._peft_layout(f))
            return weight.add_(delta.to(weight.dtype))
        f = f.map(lambda t: t.detach())
        w1 = kron.rebuild_w1(f)
        w2 = kron.rebuild_w2(f, tuple(weight.shape[2:]))
        if w1.dtype != weight.dtype and weight.dtype.itemsize >= w1.dtype.itemsize:
            w1, w2 = w1.to(weight.dtype), w2.to(weight.dtype)
        return kron.add_kron_(weight, w1, w2, scale)
