"""Bypass mode: LoKr patches added in the forward pass; the model's weights are never modified.

ComfyUI's ModelPatcher installs *injections* (``PatcherInjection``: ``inject`` / ``eject`` called
when it loads / unloads the model; every supported version has them). A patcher carries one
:class:`BypassSet` under :data:`INJECTION_KEY`: every bypass entry of every LoKr loaded onto it
(so chained loaders add up, and the q / k / v row blocks of a fused weight share one layer). On
inject, each adapted layer gets one torch forward hook that returns
``output + Σ strength * block * scale * layer(x; kron(W1, W2))`` (``patch.bypass_delta``: fp32,
no ΔW built for Linear and convs); eject removes the hooks. Forward hooks compose with any other
forward wrapper in any order, which ComfyUI's own ``BypassForwardHook`` (it swaps ``forward``) does
not when two are stacked.

ComfyUI's own adapters (LoRA / LoHa modules of a mixed file) need their ``h()`` (ComfyUI 0.28.0
has it); they are run through ComfyUI's ``BypassForwardHook``, injected in order and ejected in
reverse order. Sets are immutable: a loader makes a new set for its clone, the input patcher keeps
its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Iterable

import torch
from torch import nn

from ..lokr_core.base.errors import LoKrConfigError, LoKrKeyError, where
from .patch import bypass_delta, is_identity, is_lokr_patch

INJECTION_KEY = "lokr_bypass"

__all__ = ["INJECTION_KEY", "BypassEntry", "BypassSet", "core_bypass_supported", "bypass_injections", "conv_params", "is_linear",
           "bypass_set_of", "check_bypass_target"]


@dataclass(frozen=True)
class BypassEntry:
    """One adapter on one weight: ``key`` the state-dict key (``...weight``), ``strength`` the
    loader strength, ``offset`` ComfyUI's ``(dim, start, length)`` row block of a fused weight or
    None, ``function`` ComfyUI's per-patch transform of ΔW (applied to the output channels)."""

    key: str
    adapter: Any
    strength: float
    offset: tuple | None = None
    function: Callable | None = None

    @property
    def module_key(self) -> str:
        return self.key[:-len(".weight")] if self.key.endswith(".weight") else self.key


def core_bypass_supported() -> bool:
    """True when this ComfyUI's own adapters can run in bypass (``comfy.weight_adapter.bypass``)."""
    try:
        import comfy.weight_adapter.bypass  # type: ignore[import-not-found]  # noqa: F401
    except Exception:
        return False
    return True


def conv_params(layer: nn.Module) -> dict | None:
    """``{stride, padding, dilation, groups}`` of a conv layer (ComfyUI's ops subclass torch's), None for others."""
    if isinstance(layer, nn.modules.conv._ConvNd) and not layer.transposed:
        return {"stride": layer.stride, "padding": layer.padding, "dilation": layer.dilation, "groups": layer.groups}
    return None


def is_linear(layer: nn.Module) -> bool:
    """True for a Linear layer: torch's, or ComfyUI's mixed-precision / quantized Linear (an nn.Module with
    ``in_features`` / ``out_features`` that is no ``nn.Linear``, 0.8.0 and later)."""
    if isinstance(layer, nn.Linear):
        return True
    return conv_params(layer) is None and hasattr(layer, "in_features") and hasattr(layer, "out_features")


def _module(root: nn.Module, module_key: str) -> nn.Module:
    mod = root
    for part in module_key.split("."):
        mod = mod[int(part)] if part.isdigit() and isinstance(mod, (nn.ModuleList, nn.Sequential)) else getattr(mod, part)
    return mod


def _channel_first(y: torch.Tensor, conv: bool) -> torch.Tensor:
    return y if conv else y.movedim(-1, 0)


def _layer_hook(layer: nn.Module, entries: tuple[BypassEntry, ...]) -> Callable:
    """A forward hook adding every LoKr entry's bypass term to ``layer``'s output."""
    conv = conv_params(layer)
    kernel = tuple(layer.weight.shape[2:]) if conv is not None else ()
    ch_dim = 1 if conv is not None else -1

    def hook(_mod: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        x = args[0]
        out, owned = output, False
        for e in entries:
            d = bypass_delta(e.adapter, x, output, conv=conv, kernel=kernel, strength=e.strength)
            if not is_identity(e.function):  # ComfyUI's transforms permute / scale weight rows = output channels
                if conv is None:
                    d = e.function(d.movedim(-1, 0)).movedim(0, -1)
                else:
                    d = e.function(d.movedim(1, 0)).movedim(0, 1)
            if e.offset is None:
                out = out + d
                owned = True
                continue
            if not owned:
                out, owned = out.clone(), True
            _dim, start, length = e.offset
            out.narrow(ch_dim, int(start), int(length)).add_(d)
        return out
    return hook


class BypassSet:
    """Every bypass entry of one ModelPatcher, installed and removed as one ComfyUI injection."""

    def __init__(self, entries: Iterable[BypassEntry] = ()) -> None:
        self.entries: tuple[BypassEntry, ...] = tuple(entries)
        self._handles: list[Any] = []
        self._core_hooks: list[Any] = []

    def with_entries(self, more: Iterable[BypassEntry]) -> "BypassSet":
        """A new set with ``more`` after this set's entries (this set is left as it is)."""
        return BypassSet(self.entries + tuple(more))

    def injection(self) -> Any:
        """ComfyUI's ``PatcherInjection`` for this set."""
        try:
            from comfy.patcher_extension import PatcherInjection  # type: ignore[import-not-found]
        except Exception:  # no ComfyUI (CI stand-ins): the same two callables
            return SimpleNamespace(inject=self.inject, eject=self.eject)
        return PatcherInjection(inject=self.inject, eject=self.eject)

    def inject(self, model_patcher: Any) -> None:
        """Install the hooks on ``model_patcher.model`` (idempotent until :meth:`eject`)."""
        if self._handles or self._core_hooks:
            return
        self.install(model_patcher.model)

    def install(self, model: nn.Module) -> None:
        """Install one forward hook per adapted layer of ``model`` (plus ComfyUI's hooks for its adapters)."""
        ours: dict[str, list[BypassEntry]] = {}
        for e in self.entries:
            if is_lokr_patch(e.adapter):
                ours.setdefault(e.module_key, []).append(e)
            else:
                from comfy.weight_adapter.bypass import BypassForwardHook  # type: ignore[import-not-found]
                hook = BypassForwardHook(_module(model, e.module_key), e.adapter, multiplier=e.strength)
                hook.inject()
                self._core_hooks.append(hook)
        for module_key, entries in ours.items():
            layer = _module(model, module_key)
            self._handles.append(layer.register_forward_hook(_layer_hook(layer, tuple(entries))))

    def eject(self, model_patcher: Any = None) -> None:
        """Remove every hook this set installed (ComfyUI's in reverse order of injection)."""
        for handle in self._handles:
            handle.remove()
        for hook in reversed(self._core_hooks):
            hook.eject()
        self._handles.clear()
        self._core_hooks.clear()


def bypass_set_of(patcher: Any) -> BypassSet:
    """The BypassSet a ModelPatcher carries (an empty one when it has none)."""
    injections = (getattr(patcher, "injections", None) or {}).get(INJECTION_KEY) or []
    for inj in injections:
        owner = getattr(getattr(inj, "inject", None), "__self__", None)
        if isinstance(owner, BypassSet):
            return owner
    return BypassSet()


def check_bypass_target(layer: nn.Module, entry: BypassEntry, source: str) -> None:
    """LoKrConfigError naming the module when ``entry`` cannot run in bypass on ``layer``."""
    adapter = entry.adapter
    name = getattr(getattr(adapter, "params", None), "module", "") or entry.key
    at = where(source, name)
    if not is_linear(layer) and conv_params(layer) is None:
        raise LoKrConfigError(f"{at}bypass mode covers Linear and Conv layers; {entry.key} belongs to a "
                                      f"{type(layer).__name__}. Use apply = 'patch weights'")
    if is_lokr_patch(adapter):
        if adapter.factors.dora_scale is not None:
            raise LoKrConfigError(f"{at}DoRA modules need the base weight, which bypass mode never reads; "
                                          "use apply = 'patch weights'")
        if entry.offset is not None and int(entry.offset[0]) != 0:
            raise LoKrConfigError(f"{at}bypass mode adds row blocks of fused weights (dim 0), not dim "
                                          f"{entry.offset[0]}; use apply = 'patch weights'")
    elif not core_bypass_supported():
        raise LoKrConfigError(f"{at}this file's non-LoKr module ({type(adapter).__name__}) runs in bypass only "
                                      "on a ComfyUI with bypass LoRA support (0.28.0 has it, 0.8.0 does not); "
                                      "use apply = 'patch weights'")
    elif entry.offset is not None or not is_identity(entry.function):
        raise LoKrConfigError(f"{at}ComfyUI's bypass cannot add a {type(adapter).__name__} to a fused row "
                                      "block or through a transform; use apply = 'patch weights'")


def bypass_injections(patcher: Any, root: nn.Module, entries: Iterable[BypassEntry], source: str = "") -> list:
    """The injection list for a clone of ``patcher`` that adds ``entries`` to the bypass terms ``patcher`` has.

    ``root``: the module the entry keys are relative to (``model.model`` for a MODEL,
    ``clip.cond_stage_model`` for a CLIP). Every entry is checked first (LoKrKeyError /
    LoKrConfigError naming the module); ``patcher`` is never changed. The caller clones and calls
    ``clone.set_injections(INJECTION_KEY, <this list>)``.
    """
    entries = tuple(entries)
    for e in entries:
        try:
            layer = _module(root, e.module_key)
        except (AttributeError, IndexError) as err:
            raise LoKrKeyError(f"{where(source, e.key)}no layer {e.module_key!r} in the model "
                                       f"({err}); expected a key of its state dict") from None
        check_bypass_target(layer, e, source)
    return [bypass_set_of(patcher).with_entries(entries).injection()]
