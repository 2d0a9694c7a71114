"""The LoKr patch object ComfyUI's ModelPatcher calls when it loads a weight to its device.

One :class:`LoKrPatch` per matched weight. It holds the module's :class:`lokr_core.factors.LoKrFactors`,
the file's scale and a per-weight multiplier (block weights), and implements ComfyUI's weight-adapter
interface ``calculate_weight(weight, key, strength, strength_model, offset, function,
intermediate_dtype, original_weight)``: ΔW = strength * multiplier * scale * kron(W1, W2) is formed
with ``lokr_core.kron`` in fp32 on ``weight.device`` and written back in ``weight``'s dtype (one
rounding, also when ComfyUI 0.8.0 hands over an fp16 ``lora_compute_dtype`` copy).

Where ``comfy.weight_adapter.WeightAdapterBase`` exists, the class is a subclass of it (so
``comfy.lora.calculate_weight`` dispatches to it); without ComfyUI it is a plain class, which is
what the CI stand-ins exercise. Nothing is imported from ComfyUI at module import time.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import torch

from . import core

_kron = core("kron")
add_kron_, dora_apply, kron_delta = _kron.add_kron_, _kron.dora_apply, _kron.kron_delta
rebuild_w1, rebuild_w2 = _kron.rebuild_w1, _kron.rebuild_w2
LoKrFactors = core("factors").LoKrFactors

__all__ = ["LoKrPatchMixin", "lokr_patch_class", "make_patch", "is_identity"]


def is_identity(function: Callable | None) -> bool:
    """True when ComfyUI's patch ``function`` leaves a tensor as it is (None, or ``lambda a: a``).

    Probed with an empty tensor: an identity returns the very object it was given.
    """
    if function is None:
        return True
    probe = torch.empty(0)
    try:
        return function(probe) is probe
    except Exception:  # a real transform that cannot take an empty tensor
        return False


def _dequantize(weight: torch.Tensor) -> torch.Tensor:
    """A plain tensor for ``weight``: ComfyUI 0.8.0 ``QuantizedTensor`` through its own ``dequantize()``."""
    if type(weight).__name__ == "QuantizedTensor" and hasattr(weight, "dequantize"):
        return weight.dequantize()
    return weight


class LoKrPatchMixin:
    """ΔW of one LoKr module for one ComfyUI weight (see module docstring).

    Attributes: ``factors`` (LoKrFactors, any device / dtype), ``scale`` (the file's alpha/rank
    rule, a float), ``multiplier`` (block weight, 1.0 by default), ``dora_mode``
    (``"interpolate"`` or ``"lycoris"``, LOKR_SPEC 4), ``module`` (the file's module name),
    ``source`` (the file's base name).
    """

    name = "lokr_core"

    def __init__(self, factors: LoKrFactors, scale: float, multiplier: float = 1.0, *,
                 module: str = "", dora_mode: str = "interpolate", source: str = "") -> None:
        self.factors = factors
        self.source = source
        self.scale = float(scale)
        self.multiplier = float(multiplier)
        self.module = module
        self.dora_mode = dora_mode
        self.loaded_keys: set[str] = set()
        self.weights = [t for _, t in factors.tensors()]

    # ComfyUI's WeightAdapterBase.load picks keys out of a state dict; our patches are built from
    # lokr_core's parsed file instead, so this loader never claims keys.
    @classmethod
    def load(cls, *args: Any, **kwargs: Any) -> None:
        return None

    def with_multiplier(self, multiplier: float) -> "LoKrPatchMixin":
        """A new patch of the same factors with ``multiplier`` (patches are shared by clones: never mutate)."""
        return type(self)(self.factors, self.scale, multiplier, module=self.module, dora_mode=self.dora_mode,
                          source=self.source)

    def calculate_weight(self, weight: torch.Tensor, key: str, strength: float, strength_model: float,
                         offset: Any, function: Callable | None,
                         intermediate_dtype: torch.dtype = torch.float32, original_weight: Any = None) -> torch.Tensor:
        """Add strength * multiplier * scale * kron(W1, W2) to ``weight`` (out, in[, k...]); returns it.

        ``weight`` is updated in place when it is a plain tensor (ComfyUI relies on that for
        ``offset`` views); the arithmetic is fp32 on ``weight.device`` whatever
        ``intermediate_dtype`` says. ``strength_model`` was already applied by ComfyUI.
        A total strength of 0 without DoRA returns ``weight`` untouched (bit-identical).
        """
        s = float(strength) * self.multiplier
        f = self.factors
        if s == 0.0 and f.dora_scale is None:
            return weight
        plain = _dequantize(weight)
        dev = plain.device
        f32 = f.map(lambda t: t.to(device=dev, dtype=torch.float32))
        shape = tuple(plain.shape)
        if f.dora_scale is None and is_identity(function):
            if plain.dtype in (torch.float32, torch.float16, torch.bfloat16) and plain is weight:
                add_kron_(weight, rebuild_w1(f32), rebuild_w2(f32, shape[2:]), self.scale * s)
                return weight
            out = plain.to(torch.float32)
            add_kron_(out, rebuild_w1(f32), rebuild_w2(f32, shape[2:]), self.scale * s)
            return _write_back(weight, out)
        delta = kron_delta(f32, shape, self.scale)
        base = plain.to(torch.float32)
        if f.dora_scale is not None:
            if not is_identity(function):
                delta = function(delta)
            out = dora_apply(base, delta, f32.dora_scale, s, mode=self.dora_mode)
        else:
            out = base + function(delta * s)
        return _write_back(weight, out)


def _write_back(weight: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Store fp32 ``out`` into ``weight`` in its dtype (in place for plain tensors), return the result."""
    if type(weight).__name__ == "QuantizedTensor" or not weight.dtype.is_floating_point:
        return out  # ComfyUI's set_func re-quantizes what calculate_weight returns
    weight.copy_(out)
    return weight


@functools.lru_cache(maxsize=1)
def lokr_patch_class() -> type:
    """The patch class: LoKrPatchMixin + ComfyUI's WeightAdapterBase when ComfyUI is importable.

    Cached (a frozen, build-once registry), so isinstance checks see one class per process.
    """
    try:
        from comfy.weight_adapter.base import WeightAdapterBase  # type: ignore[import-not-found]
    except Exception:  # no ComfyUI (CI) or a ComfyUI before weight adapters (< 0.3.3x)
        return LoKrPatchMixin
    return type("LoKrPatch", (LoKrPatchMixin, WeightAdapterBase), {"__module__": __name__})


def make_patch(factors: LoKrFactors, scale: float, multiplier: float = 1.0, *, module: str = "",
               dora_mode: str = "interpolate", source: str = "") -> LoKrPatchMixin:
    """One patch object of the right class for this process (see :func:`lokr_patch_class`).

    ``module``: the file's module name; ``source``: the file's base name (both for reports / metadata).
    """
    return lokr_patch_class()(factors, scale, multiplier, module=module, dora_mode=dora_mode, source=source)
