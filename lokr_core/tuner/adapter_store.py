"""The adapters of a LoKr layer, by name: creation (PEFT's shapes and init), activation, removal.

:class:`AdapterStore` is one part of :class:`lokr_core.tuner.layers.LoKrLayer` (see there). It uses
the attributes ``LoKrLayer.__init__`` sets: ``base_layer``, the ``lokr_*`` ``nn.ParameterDict`` s,
the per-adapter dicts ``r`` / ``alpha`` / ``scaling`` / ``rank_dropout`` / ``rank_dropout_scale`` /
``module_dropout``, ``merged_adapters``, ``_active_adapters``, ``_disable_adapters`` and
``peft_conv1d_compat``.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from ..base.errors import LoKrConfigError, LoKrKeyError
from ..tensor.factors import FACTOR_NAMES, LoKrFactors
from ..tensor.shapes import FactorPlan, plan_for_layer

ADAPTER_PARAM_NAMES = tuple(f"lokr_{n}" for n in FACTOR_NAMES)
"""Attribute (and state-dict) names of the factor dicts: ``lokr_w1`` ... ``lokr_t2``."""

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


class AdapterStore:
    """Named adapters of one layer: which exist, which are active, their factors; ``update_layer``
    creates one as PEFT does."""

    other_param_names = ("r", "alpha", "scaling", "rank_dropout", "rank_dropout_scale", "module_dropout")

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

    # ------------------------------------------------------------------ reading
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
