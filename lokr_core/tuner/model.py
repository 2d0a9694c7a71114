"""Patch a torch model with LoKr layers, in place, the way PEFT's ``LoKrModel`` does.

``inject`` wraps every target module of a config in a ``layers.LoKrLayer`` (and every
``modules_to_save`` module in a ``ModulesToSave`` holding a trainable copy), freezing all other
parameters as PEFT does. Parameter names inside the model follow PEFT (``<path>.lokr_w1.<adapter>``,
``<path>.base_layer.weight``, ``<path>.modules_to_save.<adapter>.weight``), so ``lokr_state_dict``
gives PEFT's ``get_peft_model_state_dict`` keys: ``base_model.model.<path>.lokr_w1`` etc.

Every function that changes a model checks everything first: on bad input it raises a
``lokr_core.base.errors`` class naming the module / key and what was expected, and the model is left
exactly as it was.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..base.peft_names import PEFT_PREFIX, WEIGHTS_NAME, strip_peft_prefix
from ..base.errors import LoKrError, LoKrFormatError, LoKrKeyError, LoKrShapeError, where
from .layers import ADAPTER_PARAM_NAMES, LoKrLayer, wrap_layer

__all__ = ["inject", "merge_and_unload", "unload", "set_adapter_scale", "set_adapter", "enable_adapters",
           "lokr_layers", "active_adapters", "lokr_state_dict", "load_lokr_state_dict", "save_peft_adapter", "ModulesToSave",
           "PEFT_PREFIX", "WEIGHTS_NAME"]


class ModulesToSave(nn.Module):
    """A module trained fully: ``original_module`` (frozen) plus one trainable copy per adapter.

    Forward runs the active adapter's copy, or the original when no copy is active or adapters
    are disabled. Names follow PEFT's ``ModulesToSaveWrapper`` (``<path>.modules_to_save.<adapter>.*``).
    """

    def __init__(self, module: nn.Module, adapter_name: str) -> None:
        super().__init__()
        self.original_module = module
        self.modules_to_save = nn.ModuleDict({})
        self.active_adapter: str | None = None
        self.disabled = False
        self.add(adapter_name, activate=True)
        self.train(module.training)

    def add(self, adapter_name: str, activate: bool) -> None:
        """Add a copy of the original module for ``adapter_name``; trainable and active if ``activate``."""
        clone = copy.deepcopy(self.original_module)
        for p in clone.parameters():
            p.requires_grad_(activate)
        self.modules_to_save[adapter_name] = clone
        if activate:
            self.active_adapter = adapter_name

    def set_adapter(self, names: Sequence[str]) -> None:
        """Activate the first of ``names`` this wrapper holds (none held: the original runs)."""
        held = [n for n in names if n in self.modules_to_save]
        self.active_adapter = held[0] if held else None
        for n, m in self.modules_to_save.items():
            for p in m.parameters():
                p.requires_grad_(n == self.active_adapter)

    def current(self) -> nn.Module:
        if self.disabled or self.active_adapter is None:
            return self.original_module
        return self.modules_to_save[self.active_adapter]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.current()(*args, **kwargs)


# --------------------------------------------------------------------------------- helpers
def _split(name: str) -> tuple[str, str]:
    parent, _, child = name.rpartition(".")
    return parent, child


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, child = _split(name)
    setattr(model.get_submodule(parent) if parent else model, child, new)


def lokr_layers(model: nn.Module) -> Iterator[tuple[str, LoKrLayer]]:
    """(path, layer) for every LoKr layer in ``model``, in ``named_modules`` order."""
    for name, module in model.named_modules():
        if isinstance(module, LoKrLayer):
            yield name, module


def _save_wrappers(model: nn.Module) -> Iterator[tuple[str, ModulesToSave]]:
    for name, module in model.named_modules():
        if isinstance(module, ModulesToSave):
            yield name, module


def _adapter_names(model: nn.Module) -> set[str]:
    names: set[str] = set()
    for _, layer in lokr_layers(model):
        names |= layer.available_adapters
    for _, w in _save_wrappers(model):
        names |= set(w.modules_to_save)
    return names


def active_adapters(model: nn.Module) -> list[str]:
    """The active adapter names of the model (union over its layers and wrappers, first-seen order)."""
    names: dict[str, None] = {}
    for _, layer in lokr_layers(model):
        names.update(dict.fromkeys(layer.active_adapters))
    for _, w in _save_wrappers(model):
        if w.active_adapter is not None:
            names[w.active_adapter] = None
    return list(names)


def _require_adapter(model: nn.Module, adapter_name: str, fn: str) -> None:
    present = _adapter_names(model)
    if adapter_name not in present:
        raise LoKrKeyError(f"{fn}: the model has no LoKr adapter {adapter_name!r}; expected one of {sorted(present)}")


# --------------------------------------------------------------------------------- inject
def inject(model: nn.Module, config: Any, adapter_name: str = "default", *, peft_conv1d_compat: bool = False,
           forward_mode: str = "auto") -> nn.Module:
    """Add LoKr adapter ``adapter_name`` to ``model`` in place, as PEFT's ``LoKrModel`` would; returns ``model``.

    Targets come from ``targeting.find_targets(model, config)`` (rank / alpha per module from
    ``rank_pattern`` / ``alpha_pattern``); each becomes a LoKrLinear / LoKrConv1d / LoKrConv2d (a
    target that is already a LoKr layer gets the new adapter next to its others). Modules named
    by ``config.modules_to_save`` get a trainable copy. Like PEFT, every other parameter of the
    model is frozen (``requires_grad=False``); the new adapter becomes active only when the model
    had no active adapter (PEFT keeps the active set; switch with ``set_adapter``). Raises LoKrKeyError when the name is taken or nothing matches, LoKrConfigError /
    LoKrShapeError from the layers; on any error the model is exactly as before.
    """
    from .targeting import find_targets, modules_to_save_names

    if adapter_name in _adapter_names(model):
        raise LoKrKeyError(f"inject: the model already has an adapter named {adapter_name!r}; expected a new name")
    active = active_adapters(model)  # PEFT: a model with adapters keeps its active set
    targets = find_targets(model, config)
    save_names = list(modules_to_save_names(model, config)) if getattr(config, "modules_to_save", None) else []

    swaps: list[tuple[str, nn.Module, nn.Module]] = []  # (path, old, new)
    updated: list[LoKrLayer] = []  # existing layers that got the adapter
    wrappers_added: list[ModulesToSave] = []
    grads = {p: p.requires_grad for p in model.parameters()}
    try:
        for t in targets:
            module = t.module
            if isinstance(module, LoKrLayer):
                module.update_layer(adapter_name, t.r, t.alpha, config)
                updated.append(module)
                continue
            try:
                new = wrap_layer(module, adapter_name, t.r, t.alpha, config,
                                 peft_conv1d_compat=peft_conv1d_compat, forward_mode=forward_mode)
            except LoKrError as exc:  # name the module in the message, keep the error class
                raise type(exc)(f"{where(None, t.name)}{exc}") from None
            swaps.append((t.name, module, new))
        for name in save_names:
            module = model.get_submodule(name)
            if isinstance(module, ModulesToSave):
                module.add(adapter_name, activate=not active)
                wrappers_added.append(module)
            else:
                swaps.append((name, module, ModulesToSave(module, adapter_name)))
        for name, _, new in swaps:
            _set_module(model, name, new)
        if active:
            for _, new in ((n, m) for n, _, m in swaps if isinstance(m, LoKrLayer)):
                new.set_adapter([a for a in active if a in new.available_adapters])
            for _, new in ((n, m) for n, _, m in swaps if isinstance(m, ModulesToSave)):
                new.set_adapter(active)
    except BaseException:
        for name, old, _ in reversed(swaps):
            _set_module(model, name, old)
        for layer in updated:
            if adapter_name in layer.available_adapters:
                layer.delete_adapter(adapter_name)
        for w in wrappers_added:
            if adapter_name in w.modules_to_save:
                del w.modules_to_save[adapter_name]
        for p, g in grads.items():
            p.requires_grad_(g)
        raise
    _freeze_non_adapter_params(model)
    return model


def _freeze_non_adapter_params(model: nn.Module) -> None:
    """PEFT's rule: only LoKr factors (of active adapters) and modules_to_save copies stay trainable."""
    keep: set[int] = set()
    for _, layer in lokr_layers(model):
        for attr in ADAPTER_PARAM_NAMES:
            keep |= {id(p) for p in getattr(layer, attr).parameters()}
    for _, w in _save_wrappers(model):
        keep |= {id(p) for p in w.modules_to_save.parameters()}
    for p in model.parameters():
        if id(p) not in keep:
            p.requires_grad_(False)


# --------------------------------------------------------------------------------- unwrap
def merge_and_unload(model: nn.Module, adapter_names: Sequence[str] | None = None,
                     safe_merge: bool = False) -> nn.Module:
    """Merge adapters (default: each layer's active ones) into the base weights and remove every
    LoKr layer, leaving plain Linear / Conv modules; modules_to_save wrappers become their active copy.

    With ``safe_merge`` all merges are tried first and the model is unchanged if one gives NaN/inf.
    Returns ``model``. Merging happens in place on the base weights (``kron.add_kron_``).
    """
    layers = list(lokr_layers(model))
    if adapter_names is not None:
        for n in adapter_names:
            _require_adapter(model, n, "merge_and_unload")
    if safe_merge:
        for name, layer in layers:
            for n in (adapter_names if adapter_names is not None else layer.active_adapters):
                if n in layer.available_adapters and n not in layer.merged_adapters:
                    d = layer.get_delta_weight(n).detach()
                    if not bool(torch.isfinite(layer.base_layer.weight.detach() + d).all()):
                        raise LoKrFormatError(f"{where(None, name)}merging adapter {n!r} gives NaN/inf; "
                                              "expected finite weights (model unchanged)")
    for name, layer in layers:
        layer.merge(adapter_names=None if adapter_names is None else list(adapter_names))
        _set_module(model, name, layer.base_layer)
    for name, w in list(_save_wrappers(model)):
        _set_module(model, name, w.current())
    return model


def unload(model: nn.Module) -> nn.Module:
    """Remove every LoKr layer without merging (merged adapters are subtracted first) and every
    modules_to_save wrapper (back to the original module): the base model as it was. Returns ``model``."""
    for name, layer in list(lokr_layers(model)):
        if layer.merged:
            layer.unmerge()
        _set_module(model, name, layer.base_layer)
    for name, w in list(_save_wrappers(model)):
        _set_module(model, name, w.original_module)
    return model


# --------------------------------------------------------------------------------- switches
def set_adapter_scale(model: nn.Module, scale: float, adapter_name: str | None = None) -> None:
    """scaling = scale * alpha / r on every layer, for ``adapter_name`` (default: each layer's active ones).

    ``scale`` multiplies PEFT's alpha / r (1 restores it). A merged adapter keeps the weight it was
    merged with until it is unmerged. Raises LoKrKeyError for an unknown adapter (nothing changed).
    """
    scale = float(scale)
    if adapter_name is not None:
        _require_adapter(model, adapter_name, "set_adapter_scale")
    for _, layer in lokr_layers(model):
        for n in ([adapter_name] if adapter_name is not None else layer.active_adapters):
            layer.set_scale(n, scale)


def set_adapter(model: nn.Module, adapter_name: str | Sequence[str]) -> None:
    """Make ``adapter_name`` (one name or a list) the active adapter(s) on every layer and wrapper.

    Active adapters are trainable, others frozen (PEFT). A layer that lacks a name just skips it.
    Raises LoKrKeyError, nothing changed, when a name is on no layer of the model.
    """
    names = [adapter_name] if isinstance(adapter_name, str) else list(adapter_name)
    for n in names:
        _require_adapter(model, n, "set_adapter")
    for _, layer in lokr_layers(model):
        layer.set_adapter([n for n in names if n in layer.available_adapters])
    for _, w in _save_wrappers(model):
        w.set_adapter(names)


def enable_adapters(model: nn.Module, enabled: bool = True) -> None:
    """Turn all LoKr layers and modules_to_save wrappers on or off (off: the model computes as its base)."""
    for _, layer in lokr_layers(model):
        layer.enable_adapters(enabled)
    for _, w in _save_wrappers(model):
        w.disabled = not enabled


# --------------------------------------------------------------------------------- state dicts
def lokr_state_dict(model: nn.Module, format: str = "peft", adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """The factors of ``adapter_name`` as a flat dict of tensors (detached, not copied).

    - ``"peft"``: PEFT's ``get_peft_model_state_dict`` keys, ``base_model.model.<path>.lokr_w1`` ...
      (adapter name removed), plus ``base_model.model.<path>.<param>`` for modules_to_save copies.
    - ``"lycoris"``: ``<path>.lokr_w1`` ... plus ``<path>.alpha`` (0-d float tensor) with module paths
      as dotted model paths; the files layer (``formats/lycoris.py``) turns them into ``lora_unet_...``
      names. A Conv1d Tucker core is written (r, r, k) as LyCORIS stores it (PEFT: (r, r, k, 1)). The applied ΔW is kept under the LyCORIS scale rule: split modules store alpha (rank =
      r), full/full modules (where LyCORIS ignores alpha) get alpha / r folded into ``lokr_w1`` and
      alpha = r. modules_to_save copies have no LyCORIS form and are left out.
    Raises LoKrKeyError for an unknown adapter, LoKrFormatError for an unknown format.
    """
    if format not in ("peft", "lycoris"):
        raise LoKrFormatError(f"lokr_state_dict: format must be 'peft' or 'lycoris', got {format!r}")
    _require_adapter(model, adapter_name, "lokr_state_dict")
    out: dict[str, torch.Tensor] = {}
    for name, layer in lokr_layers(model):
        if adapter_name not in layer.available_adapters:
            continue
        f = layer.factors(adapter_name)
        tensors = {n: t.detach() for n, t in f.tensors()}
        if format == "peft":
            out.update({f"{PEFT_PREFIX}{name}.lokr_{n}": t for n, t in tensors.items()})
            continue
        r, alpha = layer.r[adapter_name], layer.alpha[adapter_name]
        t2 = tensors.get("t2")
        if t2 is not None and isinstance(layer.base_layer, nn.Conv1d) and t2.ndim == 4 and t2.shape[-1] == 1:
            tensors["t2"] = t2.squeeze(-1)  # PEFT's Conv1d Tucker core (r, r, k, 1) -> LyCORIS' (r, r, k)
        if f.full_full:
            tensors["w1"] = tensors["w1"] * (alpha / r)
            alpha = r
        out.update({f"{name}.lokr_{n}": t for n, t in tensors.items()})
        out[f"{name}.alpha"] = torch.tensor(float(alpha))
    if format == "peft":
        for name, w in _save_wrappers(model):
            if adapter_name in w.modules_to_save:
                for k, t in w.modules_to_save[adapter_name].state_dict().items():
                    out[f"{PEFT_PREFIX}{name}.{k}"] = t.detach()
    return out


def _expected_tensors(model: nn.Module, adapter_name: str) -> dict[str, torch.Tensor]:
    """PEFT key (prefix-less) -> the model tensor it loads into, for one adapter."""
    want: dict[str, torch.Tensor] = {}
    for name, layer in lokr_layers(model):
        if adapter_name in layer.available_adapters:
            for n, t in layer.factors(adapter_name).tensors():
                want[f"{name}.lokr_{n}"] = t
    for name, w in _save_wrappers(model):
        if adapter_name in w.modules_to_save:
            for k, t in w.modules_to_save[adapter_name].state_dict(keep_vars=True).items():
                want[f"{name}.{k}"] = t
    return want


def load_lokr_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], adapter_name: str = "default",
                         *, file: str | None = None) -> None:
    """Copy a PEFT-format state dict (keys with or without ``base_model.model.``, adapter name absent
    or equal to ``adapter_name``) into the injected adapter ``adapter_name``, strictly.

    Every factor of the adapter must be present with the layer's shape and no other key may be
    there; otherwise raises LoKrFormatError (missing / unexpected key, non-finite values) or
    LoKrShapeError (key, expected and found shape), naming ``file`` when given, and the model is
    untouched. The adapter must not be merged (LoKrKeyError). Values are cast to each parameter's
    dtype and device.
    """
    _require_adapter(model, adapter_name, "load_lokr_state_dict")
    for name, layer in lokr_layers(model):
        if adapter_name in layer.merged_adapters:
            raise LoKrKeyError(f"{where(file, name)}adapter {adapter_name!r} is merged into the weights; "
                               "unmerge it before loading new factors")
    want = _expected_tensors(model, adapter_name)
    given: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        k = strip_peft_prefix(key)
        for attr in ADAPTER_PARAM_NAMES:  # accept PEFT's in-model names (".lokr_w1.<adapter>") too
            k = k.replace(f".{attr}.{adapter_name}", f".{attr}") if k.endswith(f".{attr}.{adapter_name}") else k
        k = k.replace(f".modules_to_save.{adapter_name}.", ".")
        if k in given:
            raise LoKrFormatError(f"{where(file, k)}key {key!r} appears twice (with and without a prefix or "
                                  "adapter name); expected one")
        given[k] = value
    missing = sorted(set(want) - set(given))
    if missing:
        raise LoKrFormatError(f"{where(file, _module_of(missing[0]))}missing key {missing[0]!r} "
                              f"(expected shape {tuple(want[missing[0]].shape)}); {len(missing)} key(s) missing in all")
    extra = sorted(set(given) - set(want))
    if extra:
        raise LoKrFormatError(f"{where(file, _module_of(extra[0]))}unexpected key {extra[0]!r}: the model's adapter "
                              f"{adapter_name!r} has no such factor ({len(extra)} unexpected key(s) in all; check the "
                              "config's target_modules, r and decompose settings)")
    for k, t in want.items():
        v = given[k]
        if not isinstance(v, torch.Tensor):
            raise LoKrFormatError(f"{where(file, _module_of(k))}key {k!r} holds a {type(v).__name__}; expected a tensor")
        if tuple(v.shape) != tuple(t.shape):
            raise LoKrShapeError(f"{where(file, _module_of(k))}key {k!r} has shape {tuple(v.shape)}; expected "
                                 f"{tuple(t.shape)}")
        if v.is_floating_point() and v.device.type != "meta" and not bool(torch.isfinite(v).all()):
            raise LoKrFormatError(f"{where(file, _module_of(k))}key {k!r} holds NaN or inf values; expected finite numbers")
    with torch.no_grad():
        for k, t in want.items():
            t.copy_(given[k].to(device=t.device, dtype=t.dtype))


def _module_of(key: str) -> str:
    """The module path of a state-dict key (drops the trailing parameter name)."""
    return key.rpartition(".")[0] or key


def save_peft_adapter(model: nn.Module, directory: str | os.PathLike, config: Any,
                      adapter_name: str = "default") -> Path:
    """Write ``adapter_model.safetensors`` and ``adapter_config.json`` for ``adapter_name`` into
    ``directory`` (created if needed), loadable by ``peft.PeftModel.from_pretrained``; returns the folder.

    ``config`` is our LoKrConfig (its ``save_pretrained`` writes the JSON). Both files are written
    atomically (temp file + rename); the config is written only after the weights succeeded.
    """
    from ..base.atomic import atomic_save_file

    tensors = lokr_state_dict(model, "peft", adapter_name)
    if not hasattr(config, "save_pretrained") or not hasattr(config, "to_peft_dict"):
        raise LoKrFormatError(f"save_peft_adapter: config must be a lokr_core LoKrConfig, got {type(config).__name__}")
    config.to_peft_dict()  # fails early (before any write) on a broken config
    folder = Path(directory)
    if folder.exists() and not folder.is_dir():
        raise LoKrFormatError(f"{where(str(folder), None)}is a file; expected a directory for the PEFT adapter")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save_file({k: t.contiguous() for k, t in tensors.items()}, folder / WEIGHTS_NAME, {"format": "pt"})
    config.save_pretrained(folder)
    return folder

