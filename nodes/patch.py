"""The LoKr patch object ComfyUI's ModelPatcher calls when it loads a weight to its device.

One LoKr patch per matched weight, a ComfyUI weight adapter (``comfy.weight_adapter.WeightAdapterBase``
where it exists). It follows the adapter contract of every supported ComfyUI (0.3.64 to 0.28.0):

- **rebuild**: ``cls(loaded_keys, weights)``. ``weights`` is ``(factors, params)``: ``factors`` the
  tuple of the 8 factor slots (``w1, w1_a, w1_b, w2, w2_a, w2_b, t2, dora_scale``; None where absent),
  ``params`` a frozen :class:`PatchParams` (scale, block weight, DoRA mode, names). ComfyUI 0.28.0's
  dynamic VRAM (``comfy.lora.prefetch_prepared_value``) rebuilds every adapter this way with the
  tensors moved into its staging buffer; the rebuilt patch computes the same weight.
- ``memory_required`` of ComfyUI's ``LowVramPatch`` counts the tensors in ``weights``: the factors,
  never ΔW.
- ``calculate_weight(weight, key, strength, strength_model, offset, function, intermediate_dtype,
  original_weight)``: W + strength * block * scale * kron(W1, W2), formed with ``lokr_core.tensor.kron`` in
  fp32 on ``weight.device`` whatever ``intermediate_dtype`` says, written back once in the weight's
  dtype (also for ComfyUI 0.8.0's fp16 ``lora_compute_dtype`` copies and ``QuantizedTensor`` weights,
  which ComfyUI re-quantizes).
- ``calculate_shape`` is None (a LoKr never changes a weight's shape).
- bypass (0.28.0's ``h()`` / ``g()``): ``h(x, base_out)`` is ``multiplier * block * scale * x·kron(W1, W2)``
  without building ΔW for Linear and convs (``lokr_core.tensor.kron``), in fp32; ``g`` is the identity.

The factors sit one level down in ``weights`` on purpose: ComfyUI's own bypass hook casts the
top-level tensors of an adapter to the layer's (half) dtype; ours stay as stored and are cast to
fp32 once per device (:meth:`LoKrPatchMixin.factors_on`).
Nothing is imported from ComfyUI at module import time.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import torch

from ..lokr_core.base.errors import LoKrConfigError, where
from ..lokr_core.tensor import kron as _kron
from ..lokr_core.tensor.factors import FACTOR_NAMES, LoKrFactors

FACTOR_SLOTS = FACTOR_NAMES + ("dora_scale",)

__all__ = ["PatchParams", "LoKrPatchMixin", "lokr_patch_class", "make_patch", "is_identity", "is_lokr_patch"]


@dataclasses.dataclass(frozen=True)
class PatchParams:
    """Every non-tensor parameter of one LoKr patch (immutable: patches are shared by clones).

    ``scale``: the file's alpha/rank rule as a number; ``block_weight``: the per-weight block
    multiplier (1.0 unless a block-weight node set it); ``dora_mode``: ``"interpolate"`` or
    ``"lycoris"`` (docs/math.md, DoRA); ``alpha``: the stored alpha (reports); ``module``: the
    file's module name; ``source``: the file's base name.
    """

    scale: float
    block_weight: float = 1.0
    dora_mode: str = "interpolate"
    alpha: float | None = None
    module: str = ""
    source: str = ""


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
    """A plain tensor for ``weight``: ComfyUI's ``QuantizedTensor`` through its own ``dequantize()``."""
    if type(weight).__name__ == "QuantizedTensor" and hasattr(weight, "dequantize"):
        return weight.dequantize()
    return weight


def _split_weights(weights: Any) -> tuple[tuple, PatchParams]:
    """(factor slots, params) of an adapter's ``weights``; TypeError naming what was expected."""
    if (isinstance(weights, (tuple, list)) and len(weights) == 2 and isinstance(weights[1], PatchParams)
            and isinstance(weights[0], (tuple, list)) and len(weights[0]) == len(FACTOR_SLOTS)):
        return tuple(weights[0]), weights[1]
    raise TypeError(f"LoKr patch: weights must be ({len(FACTOR_SLOTS)} factor slots {FACTOR_SLOTS}, PatchParams) "
                    f"as made by make_patch; got {type(weights).__name__} of length "
                    f"{len(weights) if hasattr(weights, '__len__') else '?'}")


class LoKrPatchMixin:
    """ΔW of one LoKr module for one ComfyUI weight (see the module docstring for the contract).

    ``loaded_keys``: the file keys the patch stands for (ComfyUI's adapter field); ``weights``:
    ``(factor slots, PatchParams)``; ``multiplier``: the bypass strength ComfyUI's bypass
    machinery sets (1.0 otherwise).
    """

    name = "lokr_core"
    multiplier: float = 1.0

    def __init__(self, loaded_keys: Any, weights: Any) -> None:
        _split_weights(weights)
        self.loaded_keys = loaded_keys if loaded_keys is not None else set()
        self.weights = weights
        self._device_factors: dict[torch.device, LoKrFactors] = {}

    # ----------------------------------------------------------------- what the patch holds
    @property
    def params(self) -> PatchParams:
        return _split_weights(self.weights)[1]

    @property
    def factors(self) -> LoKrFactors:
        """The factors as a LoKrFactors (the tensors in ``weights``, wherever ComfyUI put them)."""
        slots, params = _split_weights(self.weights)
        return LoKrFactors(**dict(zip(FACTOR_SLOTS, slots)), alpha=params.alpha)

    scale = property(lambda self: self.params.scale, doc="The file's scale rule as a number.")
    block_weight = property(lambda self: self.params.block_weight, doc="Per-weight block multiplier.")
    dora_mode = property(lambda self: self.params.dora_mode)
    module = property(lambda self: self.params.module, doc="The file's module name.")
    source = property(lambda self: self.params.source, doc="The file's base name.")

    def factors_on(self, device: torch.device) -> LoKrFactors:
        """The factors in fp32 on ``device`` for bypass forwards: cast once per device and kept."""
        cached = self._device_factors.get(device)
        if cached is None:
            cached = self.factors.map(lambda t: t.to(device=device, dtype=torch.float32))
            self._device_factors[device] = cached
        return cached

    def with_block_weight(self, block_weight: float) -> "LoKrPatchMixin":
        """A new patch of the same factors with ``block_weight`` (patches are shared by clones: never mutate)."""
        slots, params = _split_weights(self.weights)
        return type(self)(self.loaded_keys, (slots, dataclasses.replace(params, block_weight=float(block_weight))))

    # ComfyUI's WeightAdapterBase.load picks keys out of a state dict; our patches are built from
    # lokr_core's parsed file instead, so this loader never claims keys.
    @classmethod
    def load(cls, *args: Any, **kwargs: Any) -> None:
        return None

    def calculate_shape(self, key: Any) -> None:
        """A LoKr keeps the weight's shape: None, as ComfyUI's base class says for 'unchanged'."""
        return None

    # ----------------------------------------------------------------- patch mode
    def calculate_weight(self, weight: torch.Tensor, key: str, strength: float, strength_model: float,
                         offset: Any, function: Callable | None,
                         intermediate_dtype: torch.dtype = torch.float32, original_weight: Any = None) -> torch.Tensor:
        """Add strength * block * scale * kron(W1, W2) to ``weight`` (out, in[, k...]); returns it.

        ``weight`` is updated in place when it is a plain tensor (ComfyUI relies on that for
        ``offset`` views); the arithmetic is fp32 on ``weight.device`` whatever
        ``intermediate_dtype`` says. ``strength_model`` was already applied by ComfyUI.
        A total strength of 0 without DoRA returns ``weight`` untouched (bit-identical).
        """
        params = self.params
        s = float(strength) * params.block_weight
        f = self.factors
        if s == 0.0 and f.dora_scale is None:
            return weight
        plain = _dequantize(weight)
        f32 = f.map(lambda t: t.to(device=plain.device, dtype=torch.float32))  # not kept: a load is one call
        shape = tuple(plain.shape)
        if f.dora_scale is None and is_identity(function):
            w1, w2 = _kron.rebuild_w1(f32), _kron.rebuild_w2(f32, shape[2:])
            if plain.dtype in (torch.float32, torch.float16, torch.bfloat16) and plain is weight:
                _kron.add_kron_(weight, w1, w2, params.scale * s)
                return weight
            out = plain.to(torch.float32)
            _kron.add_kron_(out, w1, w2, params.scale * s)
            return _write_back(weight, out)
        delta = _kron.kron_delta(f32, shape, params.scale)
        base = plain.to(torch.float32)
        if f.dora_scale is not None:
            if not is_identity(function):
                delta = function(delta)
            out = _kron.dora_apply(base, delta, f32.dora_scale, s, mode=params.dora_mode)
        else:
            out = base + function(delta * s)
        return _write_back(weight, out)

    # ----------------------------------------------------------------- bypass mode
    def h(self, x: torch.Tensor, base_out: torch.Tensor) -> torch.Tensor:
        """The additive bypass term for input ``x``: ``multiplier * block * scale * layer(x; kron(W1, W2))``.

        Linear: x (..., in) -> (..., out); conv: x (N, in, *spatial) -> like ``base_out``. Uses the
        layer facts ComfyUI's bypass hook sets on the adapter (``is_conv``, ``kernel_size``,
        ``kw_dict``); ΔW is never built except for grouped convs. DoRA needs the base weight,
        which bypass never reads: LoKrConfigError naming the module.
        """
        return bypass_delta(self, x, base_out, conv=getattr(self, "kw_dict", None) if getattr(self, "is_conv", False)
                            else None, kernel=getattr(self, "kernel_size", ()),
                            strength=float(self.multiplier))

    def g(self, y: torch.Tensor) -> torch.Tensor:
        """Output transform of bypass mode: the identity for LoKr."""
        return y


def bypass_delta(patch: LoKrPatchMixin, x: torch.Tensor, base_out: torch.Tensor, *, conv: dict | None,
                 kernel: Sequence[int], strength: float) -> torch.Tensor:
    """``strength * block * scale * op(x, kron(W1, W2))`` shaped like ``base_out``, in its dtype.

    ``conv``: None for a Linear, else the conv's ``{stride, padding, dilation, groups}``; ``kernel``:
    its kernel size. fp32 math on ``x.device``.
    """
    params = patch.params
    f = patch.factors_on(x.device)
    if f.dora_scale is not None:
        raise LoKrConfigError(f"{where(params.source, params.module)}DoRA modules need the base "
                                      "weight, which bypass mode never reads; use apply = 'patch weights'")
    s = strength * params.block_weight * params.scale
    if s == 0.0:
        return torch.zeros((), dtype=base_out.dtype, device=base_out.device)
    xf = x.to(torch.float32)
    if conv is None:
        y = _kron.kron_linear_factors(xf, f)
    elif int(conv.get("groups", 1)) == 1:
        y = _kron.kron_conv(xf, f, kernel, conv.get("stride", 1), conv.get("padding", 0), conv.get("dilation", 1))
    else:
        fn = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}[len(kernel)]
        in_per_group = xf.shape[1] // int(conv["groups"])
        delta = _kron.kron_delta(f, (base_out.shape[1], in_per_group, *kernel))
        y = fn(xf, delta, None, conv.get("stride", 1), conv.get("padding", 0), conv.get("dilation", 1),
               int(conv["groups"]))
    return (y * s).to(base_out.dtype)


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
    except Exception:  # no ComfyUI (CI) or a ComfyUI before weight adapters
        return LoKrPatchMixin
    return type("LoKrPatch", (LoKrPatchMixin, WeightAdapterBase), {"__module__": __name__})


def is_lokr_patch(value: Any) -> bool:
    """True for a patch object made by :func:`make_patch` (any process-level class of it)."""
    return isinstance(value, LoKrPatchMixin)


def make_patch(factors: LoKrFactors, scale: float, block_weight: float = 1.0, *, module: str = "",
               dora_mode: str = "interpolate", source: str = "", loaded_keys: Any = None) -> LoKrPatchMixin:
    """One patch object of the right class for this process (see :func:`lokr_patch_class`).

    ``module``: the file's module name; ``source``: the file's base name (both for reports /
    metadata); ``loaded_keys``: the file keys it stands for (default: ``{module + '.' + lokr_<slot>}``).
    """
    slots = tuple(getattr(factors, n) for n in FACTOR_SLOTS)
    if loaded_keys is None:
        loaded_keys = {f"{module}.{'lokr_' + n if n != 'dora_scale' else n}" for n, t in zip(FACTOR_SLOTS, slots)
                       if t is not None} if module else set()
    params = PatchParams(scale=float(scale), block_weight=float(block_weight), dora_mode=dora_mode,
                         alpha=factors.alpha, module=module, source=source)
    return lokr_patch_class()(loaded_keys, (slots, params))
