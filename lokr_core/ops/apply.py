"""Apply a LoKr file to a live torch model: merge ΔW into its weights, or bypass through hooks.

``apply_lokr(model, weights, strength, mode)`` works on a diffusers UNet, a transformers CLIP text
model, any nn.Module the resolver knows, or a dict of them (``{"unet": unet, "text_encoder": te}``).
Everything is resolved and checked first (names, shapes, scales, finite strength): on any error
the model is left untouched.

- ``mode="merge"``: W <- W + strength * scale * kron(W1, W2), computed in fp32 with
  ``kron.add_kron_`` and written back in W's dtype (DoRA modules through ``kron.dora_apply``).
- ``mode="bypass"``: a forward hook per adapted layer adds ``strength * scale * kron(W1, W2) @ x``
  (``kron.kron_linear_factors`` for Linear and 1x1 convs, no ΔW built; ΔW per call for other
  convs; DoRA layers recompute their weight per call). ``ApplyResult.remove()`` takes them off.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..tensor import kron
from ..base.errors import LoKrConfigError, LoKrKeyError, LoKrShapeError, where
from ..keymap.resolve import resolve_for
from ..tensor.factors import LoKrFactors
from .merge import KronUpdate, check_strength, merged_weight

__all__ = ["ApplyResult", "apply_lokr"]

MODES = ("merge", "bypass")


@dataclass
class ApplyResult:
    """What ``apply_lokr`` did.

    ``matched``: file module -> adapted parameter (``"component:param"`` for a dict of models);
    ``unmatched``: file modules that resolve to nothing (skipped); ``mode``, ``strength``,
    ``scale_rule`` as used; ``hooks``: the bypass hook handles (empty after a merge).
    """

    matched: dict[str, str]
    unmatched: list[str]
    mode: str
    strength: float
    scale_rule: Any
    hooks: list[Any] = field(default_factory=list)

    def remove(self) -> None:
        """Remove the bypass hooks (the model computes exactly as before). No-op after a merge."""
        while self.hooks:
            self.hooks.pop().remove()


@dataclass
class _Target:
    module: str           # file module name
    comp: str             # component name ("" for a single model)
    param: str            # parameter name inside the component
    layer: nn.Module      # the layer owning the weight
    weight: torch.Tensor  # the parameter
    factors: LoKrFactors
    scale: float


def _components(model: Any) -> dict[str, nn.Module]:
    if isinstance(model, nn.Module):
        return {"": model}
    if isinstance(model, Mapping) and model and all(isinstance(m, nn.Module) for m in model.values()):
        return {str(k): m for k, m in model.items()}
    raise LoKrConfigError(f"apply_lokr: model must be an nn.Module or a non-empty dict of nn.Modules, "
                          f"got {type(model).__name__}")


def _load(weights: Any) -> Any:
    if isinstance(weights, (str, os.PathLike)):
        from ..formats.io import load_lokr

        return load_lokr(weights)
    if not hasattr(weights, "modules") or not hasattr(weights, "scale"):
        raise LoKrConfigError(f"apply_lokr: weights must be a LoKrWeights or a file path, got {type(weights).__name__}")
    return weights


def _param(comp: nn.Module, name: str) -> tuple[str, nn.Module, torch.Tensor] | None:
    """(param name, owning layer, weight) for a resolved name (a module path or a ``.weight`` key)."""
    path = name[: -len(".weight")] if name.endswith(".weight") else name
    try:
        layer = comp.get_submodule(path) if path else comp
    except AttributeError:
        return None
    w = getattr(layer, "weight", None)
    if not isinstance(w, torch.Tensor):
        return None
    return path + ".weight", layer, w


def _plan(model: Any, comps: Mapping[str, nn.Module], weights: Any, scale_rule: Any) -> tuple[list[_Target], list[str]]:
    """Resolve ``weights`` on ``model``; raise before any change on a wrong shape / no match."""
    src = getattr(weights, "source", None)
    names = list(getattr(weights, "module_names", None) or list(weights.modules))
    report = resolve_for(weights, model)
    mismatch = dict(getattr(report, "shape_mismatch", {}) or {})
    fam = getattr(report, "family_mismatch", None)
    if mismatch:
        m, v = next(iter(mismatch.items()))
        raise LoKrShapeError(f"{where(src, m)}factors do not fit the model's weight (target {tuple(v[0])}, factors "
                             f"give {tuple(v[1]) if v[1] is not None else '?'}); {len(mismatch)} module(s) mismatch "
                             f"(first: {sorted(mismatch)[:5]}). "
                             + (f"{fam[0].upper() + fam[1:]}. " if fam else "Is this LoKr for another model? ")
                             + "Model unchanged")
    dict_target = "" not in comps
    rows = dict(getattr(report, "rows", {}) or {})
    found: dict[str, tuple[str, str, nn.Module, torch.Tensor]] = {}
    for mod, key in report.matched.items():
        comp_name, path = key.split(".", 1) if dict_target else ("", key)
        comp = comps.get(comp_name)
        hit = _param(comp, path) if comp is not None else None
        if hit is not None:
            found[mod] = (comp_name, *hit)
    if not found:
        raise LoKrKeyError(f"{where(src, None)}none of its {len(names)} modules matches a layer of the model "
                           f"(first: {names[:3]}); expected a LoKr for this model"
                           + (f" ({fam})" if fam else "") + ". Model unchanged")
    targets = []
    for mod, (comp_name, param, layer, w) in found.items():
        if mod in rows:
            raise LoKrConfigError(f"{where(src, mod)}maps to rows {rows[mod]} of the fused weight {param}; "
                                  "apply_lokr supports separate q/k/v layers only (use merge_checkpoint). Model unchanged")
        f = weights.modules[mod]  # loads + validates the tensors
        f.check_target(tuple(w.shape), src, mod)
        scale = float(weights.scale(mod, scale_rule))
        if not math.isfinite(scale):
            raise LoKrConfigError(f"{where(src, mod)}scale is {scale} under rule {scale_rule!r}; expected a finite number")
        targets.append(_Target(mod, comp_name, param, layer, w, f, scale))
    unmatched = sorted(n for n in names if n not in found)
    return targets, unmatched


def apply_lokr(model: Any, weights: Any, strength: float = 1.0, mode: str = "merge",
               scale_rule: str | float = "file", dora_mode: str = "interpolate") -> ApplyResult:
    """Apply one LoKr file to ``model`` (an nn.Module or {name: nn.Module}); returns an ApplyResult.

    ``weights``: a LoKrWeights or a path for ``load_lokr``. ``strength``: finite multiplier of ΔW
    (DoRA: see ``kron.dora_apply``, ``dora_mode``). ``scale_rule``: ``"file" | "peft" |
    "metadata-dim" | "none"`` or a number (lokr_core.tensor.scale). ``mode``: ``"merge"`` changes the
    weights in place (fp32 math, written back in each weight's dtype); ``"bypass"`` leaves them and
    adds forward hooks, removable with ``result.remove()``.

    Raises (model unchanged): LoKrConfigError for a bad mode / strength / model type,
    LoKrKeyError when no module of the file matches the model, LoKrShapeError when a matched
    module's factors do not fit its weight. Modules that match nothing are listed in
    ``result.unmatched`` and skipped.
    """
    if mode not in MODES:
        raise LoKrConfigError(f"apply_lokr: mode {mode!r} is not known; expected one of {MODES}")
    if dora_mode not in ("interpolate", "lycoris"):
        raise LoKrConfigError(f"apply_lokr: dora_mode {dora_mode!r} is not known; expected 'interpolate' or 'lycoris'")
    strength = check_strength(strength, caller="apply_lokr")
    comps = _components(model)
    weights = _load(weights)
    targets, unmatched = _plan(model, comps, weights, scale_rule)
    matched = {t.module: (f"{t.comp}:{t.param}" if t.comp else t.param) for t in targets}
    result = ApplyResult(matched, unmatched, mode, strength, scale_rule)
    if mode == "merge":
        src = getattr(weights, "source", None)
        with torch.no_grad():
            for t in targets:
                w = t.weight.data
                new = merged_weight(w, [KronUpdate(t.factors, t.scale, strength, src, t.module, dora_mode)],
                                    device=w.device, dtype=w.dtype, inplace=True)
                if new is not w:  # half / bf16 weights: computed in fp32, written back once
                    w.copy_(new)
    else:
        for t in targets:
            if not (isinstance(t.layer, nn.Linear) or (isinstance(t.layer, nn.modules.conv._ConvNd)
                                                        and not t.layer.transposed)):
                raise LoKrConfigError(f"{where(getattr(weights, 'source', None), t.module)}bypass mode supports "
                                      f"Linear and Conv layers; {t.param} belongs to a {type(t.layer).__name__}. "
                                      "Use mode='merge'. Model unchanged")
        for t in targets:
            result.hooks.append(t.layer.register_forward_hook(_bypass_hook(t, strength, dora_mode)))
    return result


# ------------------------------------------------------------------------------------------ bypass
def _is_pointwise(layer: nn.Module) -> bool:
    """A conv equal to a per-pixel Linear: kernel 1, stride 1, no padding, 1 group."""
    return (isinstance(layer, nn.modules.conv._ConvNd) and all(k == 1 for k in layer.kernel_size)
            and all(s == 1 for s in layer.stride) and all(p == 0 for p in layer.padding)
            and layer.groups == 1 and not layer.transposed)


def _layer_forward(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``layer``'s own operation with another weight (Linear, Conv1d/2d/3d)."""
    if isinstance(layer, nn.Linear):
        return F.linear(x, weight, bias)
    if isinstance(layer, nn.modules.conv._ConvNd) and not layer.transposed:
        if layer.padding_mode != "zeros":
            x = F.pad(x, layer._reversed_padding_repeated_twice, mode=layer.padding_mode)
            padding = 0
        else:
            padding = layer.padding
        fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[weight.ndim - 2]
        return fn(x, weight, bias, layer.stride, padding, layer.dilation, layer.groups)
    raise LoKrConfigError(f"apply_lokr: bypass supports Linear and Conv layers, not {type(layer).__name__}")


def _bypass_hook(t: _Target, strength: float, dora_mode: str) -> Callable[..., torch.Tensor]:
    """A forward hook computing the adapted output of ``t.layer`` from its input (fp32 factors)."""
    dev = t.weight.device
    f = t.factors.map(lambda x: x.to(device=dev, dtype=torch.float32))
    factor = t.scale * strength
    shape = tuple(t.weight.shape)
    layer = t.layer
    if f.dora_scale is not None:
        def dora_hook(_mod: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            w = layer.weight.detach().float()
            delta = kron.kron_delta(f, shape, t.scale)
            new_w = kron.dora_apply(w, delta, f.dora_scale, strength, mode=dora_mode).to(layer.weight.dtype)
            return _layer_forward(layer, args[0], new_w, layer.bias)
        return dora_hook
    if isinstance(layer, nn.Linear):
        def linear_hook(_mod: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            x = args[0]
            return output + (kron.kron_linear_factors(x.float(), f) * factor).to(output.dtype)
        return linear_hook
    if _is_pointwise(layer):
        def pointwise_hook(_mod: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            x = args[0]
            return output + (kron.kron_conv1x1(x.float(), f) * factor).to(output.dtype)
        return pointwise_hook

    def conv_hook(_mod: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        delta = kron.kron_delta(f, shape, factor)
        return output + _layer_forward(layer, args[0].float(), delta, None).to(output.dtype)
    return conv_hook
