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
- Conv1d with a full 3-D ``lokr_w2`` uses the true Kronecker product (LOKR_SPEC 2);
  ``peft_conv1d_compat=True`` reproduces PEFT's layout for adapters trained through it.
- merge / unmerge add the product in place with ``kron.add_kron_`` and remember the scale each
  adapter was merged with, so unmerge is the inverse even after ``set_scale``.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..tensor import kron
from ..base.errors import LoKrConfigError, LoKrFormatError, LoKrKeyError
from ..tensor.factors import FACTOR_NAMES, LoKrFactors
from ..tensor.shapes import FactorPlan, plan_for_layer

__all__ = ["LoKrLayer", "LoKrLinear", "LoKrConv1d", "LoKrConv2d", "wrap_layer", "ADAPTER_PARAM_NAMES",
           "FORWARD_MODES"]

ADAPTER_PARAM_NAMES = tuple(f"lokr_{n}" for n in FACTOR_NAMES)
"""Attribute (and state-dict) names of the factor dicts: ``lokr_w1`` ... ``lokr_t2``."""

FORWARD_MODES = ("auto", "bypass", "delta")
"""``auto``: one op with W + ΔW; ``bypass``: no ΔW for Linear and 1x1 convs (others: ΔW);
``delta``: base(x) + op(x, ΔW), PEFT's way. See ``LoKrLayer.forward``."""

_CONFIG_DEFAULTS: dict[str, Any] = dict(
    rank_dropout=0.0, module_dropout=0.0, init_weights=True, use_effective_conv2d=False,
    decompose_both=False, decompose_factor=-1, rank_dropout_scale=False, inference_mode=False)


def _settings(config: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """The layer settings from a config object (ours or peft's LoKrConfig, duck-typed) plus overrides."""
    unknown = set(overrides) - set(_CONFIG_DEFAULTS)
    if unknown:
        raise LoKrConfigError(f"update_layer: unknown setting(s) {sorted(unknown)}; expected some of "
                              f"{sorted(_CONFIG_DEFAULTS)}")
    out = {k: getattr(config, k, v) if config is not None else v for k, v in _CONFIG_DEFAULTS.items()}
    out.update(overrides)
    return out


class LoKrLayer(nn.Module):
    """Base of the LoKr layers: holds ``base_layer`` and the adapters' factors, scale and dropout.

    Per adapter name: ``r``, ``alpha``, ``scaling`` (= scale * alpha / r), ``rank_dropout``,
    ``rank_dropout_scale``, ``module_dropout`` (plain dicts, as PEFT) and the factor parameters in
    ``lokr_w1`` / ``lokr_w1_a`` / ``lokr_w1_b`` / ``lokr_w2`` / ``lokr_w2_a`` / ``lokr_w2_b`` /
    ``lokr_t2`` (``nn.ParameterDict``). Subclasses only say how ΔW is applied to an input.
    """

    adapter_layer_names = ADAPTER_PARAM_NAMES
    other_param_names = ("r", "alpha", "scaling", "rank_dropout", "rank_dropout_scale", "module_dropout")
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
    def forward_mode(self) -> str:
        return self._forward_mode

    @forward_mode.setter
    def forward_mode(self, mode: str) -> None:
        if mode not in FORWARD_MODES:
            raise LoKrConfigError(f"{type(self).__name__}: forward_mode must be one of {FORWARD_MODES}, got {mode!r}")
        self._forward_mode = mode

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

    @property
    def available_adapters(self) -> set[str]:
        """Names of the adapters that have factors on this layer."""
        return {name for attr in ADAPTER_PARAM_NAMES for name in getattr(self, attr)}

    @property
    def active_adapters(self) -> list[str]:
        return list(self._active_adapters)

    @property
    def active_adapter(self) -> str | list[str]:
        a = self._active_adapters
        return a[0] if len(a) == 1 else list(a)

    @property
    def merged(self) -> bool:
        return bool(self.merged_adapters)

    @property
    def disable_adapters(self) -> bool:
        return self._disable_adapters

    def set_adapter(self, adapter_names: str | Sequence[str], inference_mode: bool = False) -> None:
        """Make ``adapter_names`` the active adapters; they become trainable unless ``inference_mode``,
        all others are frozen (PEFT's rule). Unknown names raise LoKrKeyError, nothing changed."""
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        missing = [n for n in names if n not in self.available_adapters]
        if missing:
            raise LoKrKeyError(f"{type(self).__name__}.set_adapter: adapter(s) {missing} not on this layer; "
                               f"expected some of {sorted(self.available_adapters)}")
        for attr in ADAPTER_PARAM_NAMES:
            for key, p in getattr(self, attr).items():
                p.requires_grad_(key in names and not inference_mode)
        self._active_adapters = names

    def enable_adapters(self, enabled: bool) -> None:
        """Turn the adapters on or off (off: forward == base layer; merged adapters are unmerged first)."""
        if enabled:
            self.set_adapter(self._active_adapters)
            self._disable_adapters = False
        else:
            for attr in ADAPTER_PARAM_NAMES:
                for p in getattr(self, attr).values():
                    p.requires_grad_(False)
            self._disable_adapters = True

    def set_scale(self, adapter: str, scale: float) -> None:
        """scaling = scale * alpha / r for ``adapter`` (ignored when the adapter is not on this layer, as PEFT)."""
        if adapter not in self.available_adapters:
            return
        self.scaling[adapter] = float(scale) * self.alpha[adapter] / self.r[adapter]

    def delete_adapter(self, adapter_name: str) -> None:
        """Remove an (unmerged) adapter; raises LoKrKeyError if it is merged or absent."""
        if adapter_name not in self.available_adapters:
            raise LoKrKeyError(f"{type(self).__name__}.delete_adapter: no adapter {adapter_name!r}; "
                               f"expected one of {sorted(self.available_adapters)}")
        if adapter_name in self.merged_adapters:
            raise LoKrKeyError(f"{type(self).__name__}.delete_adapter: adapter {adapter_name!r} is merged; "
                               "unmerge it first")
        for attr in ADAPTER_PARAM_NAMES + self.other_param_names:
            d = getattr(self, attr)
            if adapter_name in d:
                del d[adapter_name]
        self._active_adapters = [a for a in self._active_adapters if a != adapter_name]

    # ------------------------------------------------------------------ creation
    def plan(self, r: int, settings: dict[str, Any]) -> FactorPlan:
        """The factor shapes PEFT would create for rank ``r`` on this base layer (``shapes.plan_for_layer``)."""
        return plan_for_layer(self.base_layer, r, decompose_both=bool(settings["decompose_both"]),
                              decompose_factor=int(settings["decompose_factor"]),
                              use_effective_conv2d=bool(settings["use_effective_conv2d"]))

    def update_layer(self, adapter_name: str, r: int, alpha: float, config: Any = None, **overrides: Any) -> None:
        """Create adapter ``adapter_name`` with rank ``r`` and ``alpha`` (scaling alpha / r), as PEFT does.

        Settings (``rank_dropout``, ``module_dropout``, ``init_weights``, ``use_effective_conv2d``,
        ``decompose_both``, ``decompose_factor``, ``rank_dropout_scale``, ``inference_mode``) come from
        ``config`` (our LoKrConfig or peft's) and ``overrides``. Init modes (PEFT 0.21.2):
        ``True``: W1 side zero (``w1`` or ``w1_a``), the rest Kaiming-uniform(a=sqrt 5);
        ``"lycoris"``: W2 side zero (``w2`` or ``w2_b``), the rest Kaiming; ``False``: all Kaiming.
        Parameters are made in the base weight's device and floating dtype. The adapter is made
        active next to the already active ones only if none is active (PEFT keeps the active set).
        On error nothing is changed.
        """
        settings = _settings(config, overrides)
        if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
            raise LoKrConfigError(f"{type(self).__name__}.update_layer: adapter {adapter_name!r}: r must be a "
                                  f"positive integer, got {r!r}")
        if adapter_name in self.available_adapters:
            raise LoKrKeyError(f"{type(self).__name__}.update_layer: adapter {adapter_name!r} already exists; "
                               "expected a new name (delete it first)")
        plan = self.plan(r, settings)
        params = self._init_params(plan, settings["init_weights"])
        for fname, p in params.items():
            getattr(self, f"lokr_{fname}")[adapter_name] = p
        self.r[adapter_name] = r
        self.alpha[adapter_name] = alpha
        self.scaling[adapter_name] = alpha / r
        self.rank_dropout[adapter_name] = settings["rank_dropout"]
        self.module_dropout[adapter_name] = settings["module_dropout"]
        self.rank_dropout_scale[adapter_name] = settings["rank_dropout_scale"]
        self.set_adapter(self._active_adapters or [adapter_name], inference_mode=bool(settings["inference_mode"]))

    def _init_params(self, plan: FactorPlan, init_weights: bool | str) -> dict[str, nn.Parameter]:
        """Fresh parameters for ``plan``, initialised in PEFT's order (w1 side, w2 side, t2)."""
        w = self.base_layer.weight
        dtype = w.dtype if (w.dtype.is_floating_point or w.dtype.is_complex) else None
        tensors = {name: torch.empty(shape) for name, shape in plan.shapes.items()}

        def kaiming(t: torch.Tensor) -> None:
            nn.init.kaiming_uniform_(t, a=math.sqrt(5))

        if init_weights == "lycoris":
            zero = {"w2", "w2_b"}
        elif init_weights:
            zero = {"w1", "w1_a"}
        else:
            zero = set()
        for name in ("w1", "w1_a", "w1_b", "w2", "w2_a", "w2_b", "t2"):
            if name in tensors:
                if name in zero:
                    nn.init.zeros_(tensors[name])
                else:
                    kaiming(tensors[name])
        return {n: nn.Parameter(t.to(device=w.device, dtype=dtype)) for n, t in tensors.items()}

    # ------------------------------------------------------------------ math
    def factors(self, adapter_name: str) -> LoKrFactors:
        """The adapter's factors as a ``LoKrFactors`` (the parameters themselves, no copy; alpha kept)."""
        if adapter_name not in self.available_adapters:
            raise LoKrKeyError(f"{type(self).__name__}: no adapter {adapter_name!r}; expected one of "
                               f"{sorted(self.available_adapters)}")
        kw = {}
        for name in FACTOR_NAMES:
            d = getattr(self, f"lokr_{name}")
            if adapter_name in d:
                kw[name] = d[adapter_name]
        return LoKrFactors(alpha=self.alpha.get(adapter_name), **kw)

    def _peft_layout(self, f: LoKrFactors) -> bool:
        """True when PEFT's Conv1d layout (not the true Kronecker product) is asked for and differs."""
        return (self.peft_conv1d_compat and isinstance(self.base_layer, nn.Conv1d)
                and f.w2 is not None and f.w2.ndim == 3)

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

    # ------------------------------------------------------------------ merge
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

    # ------------------------------------------------------------------ forward
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
