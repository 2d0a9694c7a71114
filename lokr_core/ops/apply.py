"""Apply a LoKr file to a live torch model: merge ΔW into its weights, or bypass through hooks.

``apply_lokr(model, weights, strength, mode)`` works on a diffusers UNet, a transformers CLIP text
model, any nn.Module the resolver knows, or a dict of them (``{"unet": unet, "text_encoder": te}``).
Everything is resolved and checked first (names, shapes, scales, finite strength): on any error
the model is left untouched.

- ``mode="merge"``: W <- W + strength * scale * kron(W1, W2), computed in fp32 with
  ``kron.add_kron_`` and written back in W's dtype (DoRA modules through ``kron.dora_apply``).
- ``mode="bypass"``: a forward hook per adapted layer adds ``strength * scale * kron(W1, W2) @ x``
  (``kron.kron_linear_factors`` for Linear and 1x1 convs, no ΔW built; ΔW per call for other
  convs; DoRA layers recompute their weight per call and add the difference), to the output
  features of the module's rows only when it adapts a row block of a fused weight.
  ``ApplyResult.remove()`` takes them off.
- DiT models and files in either layout (diffusers / original): row blocks, fused modules split
  over separate layers and swapped (shift, scale) halves as ``keymap.resolve`` reports them.
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
from .merge import KronUpdate, check_merge_fits, check_strength, merged_weight, placement_index

__all__ = ["ApplyResult", "apply_lokr"]

MODES = ("merge", "bypass")


@dataclass
class ApplyResult:
    """What ``apply_lokr`` did.

    ``matched``: file module -> adapted parameter (``"component:param"`` for a dict of models; a
    tuple of them for a fused module split over several layers); ``unmatched``: file modules that
    resolve to nothing (skipped); ``skipped``: file module -> why it matched but was not applied;
    ``mode``, ``strength``, ``scale_rule`` as used; ``hooks``: the bypass hook handles (empty after
    a merge).
    """

    matched: dict[str, Any]
    unmatched: list[str]
    mode: str
    strength: float
    scale_rule: Any
    hooks: list[Any] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

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
    update: KronUpdate    # factors, scale, strength and where ΔW's rows go (rows / take / order)

    @property
    def label(self) -> str:
        return f"{self.comp}:{self.param}" if self.comp else self.param


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


def _placements(report: Any) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """file module -> [(resolved key, KronUpdate placement fields)] from a ResolveReport."""
    rows = dict(getattr(report, "rows", {}) or {})
    order = dict(getattr(report, "row_order", {}) or {})
    out = {m: [(k, {"rows": tuple(rows[m]) if m in rows else None, "order": order.get(m)})]
           for m, k in report.matched.items()}
    for m, parts in (getattr(report, "split", {}) or {}).items():
        out[m] = [(k, {"take": (a, b, parts[-1][1][1])}) for k, (a, b) in parts]
    return out


def _bypass_problem(layer: nn.Module) -> str | None:
    if isinstance(layer, nn.Linear) or (isinstance(layer, nn.modules.conv._ConvNd) and not layer.transposed):
        return None
    return f"bypass mode supports Linear and Conv layers, not a {type(layer).__name__} (use mode='merge')"


def _plan(model: Any, comps: Mapping[str, nn.Module], weights: Any, scale_rule: Any, strength: float,
          dora_mode: str, mode: str, strict: bool) -> tuple[list[_Target], list[str], dict[str, str]]:
    """Resolve ``weights`` on ``model``: (targets, unmatched, skipped {module: why}); raise before
    any change on a wrong shape, no match, or (``strict``) any unmatched / skipped module."""
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
    found: dict[str, list[tuple[str, str, nn.Module, torch.Tensor, dict[str, Any]]]] = {}
    for mod, parts in _placements(report).items():
        hits = []
        for key, how in parts:
            comp_name, path = key.split(".", 1) if dict_target else ("", key)
            comp = comps.get(comp_name)
            hit = _param(comp, path) if comp is not None else None
            if hit is None:
                break
            hits.append((comp_name, *hit, how))
        else:
            found[mod] = hits
    if not found:
        raise LoKrKeyError(f"{where(src, None)}none of its {len(names)} modules matches a layer of the model "
                           f"(first: {names[:3]}); expected a LoKr for this model"
                           + (f" ({fam})" if fam else "") + ". Model unchanged")
    targets: list[_Target] = []
    skipped: dict[str, str] = {}
    for mod, hits in found.items():
        f = weights.modules[mod]  # loads + validates the tensors
        scale = float(weights.scale(mod, scale_rule))
        if not math.isfinite(scale):
            raise LoKrConfigError(f"{where(src, mod)}scale is {scale} under rule {scale_rule!r}; expected a finite number")
        mine = [_Target(mod, c, param, layer, w, KronUpdate(f, scale, strength, src, mod, dora_mode, **how))
                for c, param, layer, w, how in hits]
        why = next((y for y in (t.update.unsupported() or (_bypass_problem(t.layer) if mode == "bypass" else None)
                                for t in mine) if y), None)
        if why:
            skipped[mod] = why
            continue
        for t in mine:
            f.check_target(t.update.module_shape(tuple(t.weight.shape)), src, mod)
        targets += mine
    applied = {t.module for t in targets}
    unmatched = sorted(n for n in names if n not in applied and n not in skipped)
    if strict and (unmatched or skipped):
        first = (unmatched or sorted(skipped))[:3]
        raise LoKrKeyError(f"{where(src, None)}{len(unmatched)} module(s) unmatched and {len(skipped)} skipped (first: "
                           f"{first}" + (f"; {skipped[first[0]]}" if first[0] in skipped else "")
                           + "); strict=True expects every module to apply. Model unchanged")
    return targets, unmatched, skipped


def apply_lokr(model: Any, weights: Any, strength: float = 1.0, mode: str = "merge",
               scale_rule: str | float = "file", dora_mode: str = "interpolate", strict: bool = False) -> ApplyResult:
    """Apply one LoKr file to ``model`` (an nn.Module or {name: nn.Module}); returns an ApplyResult.

    ``weights``: a LoKrWeights or a path for ``load_lokr``. ``strength``: finite multiplier of ΔW
    (DoRA: see ``kron.dora_apply``, ``dora_mode``). ``scale_rule``: ``"file" | "peft" |
    "metadata-dim" | "none"`` or a number (lokr_core.tensor.scale). ``mode``: ``"merge"`` changes the
    weights in place (fp32 math, written back in each weight's dtype); ``"bypass"`` leaves them and
    adds forward hooks, removable with ``result.remove()``.

    Models in either DiT layout work with files in either: a module may add to a row block of a
    fused weight (diffusers q / k / v names on a ComfyUI-layout ``qkv``), be split by rows over
    several layers (a fused original ``qkv`` on diffusers ``to_q`` / ``to_k`` / ``to_v``), or go on
    with its (shift, scale) halves swapped (``norm_out.linear`` <-> ``final_layer.adaLN_modulation.1``);
    bypass hooks then add to those output rows only.

    Raises (model unchanged): LoKrConfigError for a bad mode / strength / model type,
    LoKrKeyError when no module of the file matches the model, LoKrShapeError when a matched
    module's factors do not fit its weight. Modules that match nothing are listed in
    ``result.unmatched``, modules that match but cannot be applied as asked (e.g. bypass on an
    Embedding) in ``result.skipped`` with the reason; both are skipped, the rest applied.
    ``strict=True`` raises LoKrKeyError instead when there is any.
    """
    if mode not in MODES:
        raise LoKrConfigError(f"apply_lokr: mode {mode!r} is not known; expected one of {MODES}")
    if dora_mode not in ("interpolate", "lycoris"):
        raise LoKrConfigError(f"apply_lokr: dora_mode {dora_mode!r} is not known; expected 'interpolate' or 'lycoris'")
    strength = check_strength(strength, caller="apply_lokr")
    comps = _components(model)
    weights = _load(weights)
    targets, unmatched, skipped = _plan(model, comps, weights, scale_rule, strength, dora_mode, mode, strict)
    matched: dict[str, Any] = {}
    for t in targets:
        prev = matched.get(t.module)
        matched[t.module] = t.label if prev is None else (*(prev if isinstance(prev, tuple) else (prev,)), t.label)
    result = ApplyResult(matched, unmatched, mode, strength, scale_rule, skipped=skipped)
    if mode == "merge":
        by_weight: dict[int, tuple[torch.Tensor, list[KronUpdate]]] = {}
        for t in targets:
            by_weight.setdefault(id(t.weight), (t.weight, []))[1].append(t.update)
        for weight, updates in by_weight.values():  # every weight checked before the first changes
            check_merge_fits(weight, updates)
        # DoRA results depend on the weight's norm (not bounded ahead): computed aside first, so
        # one that fails (merged_weight raises) leaves every weight as it was
        dora = {key: merged_weight(w.data, ups, device=w.device, dtype=w.dtype)
                for key, (w, ups) in by_weight.items() if any(u.factors.dora_scale is not None for u in ups)}
        with torch.no_grad():
            for key, new in dora.items():
                by_weight[key][0].data.copy_(new)
            for weight, updates in (v for k, v in by_weight.items() if k not in dora):
                w = weight.data
                new = merged_weight(w, updates, device=w.device, dtype=w.dtype, inplace=True)
                if new is not w:  # half / bf16 weights: computed in fp32, written back once
                    w.copy_(new)
    else:
        for t in targets:
            result.hooks.append(t.layer.register_forward_hook(_bypass_hook(t)))
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


def _add_rows(output: torch.Tensor, y: torch.Tensor, dim: int, idx: torch.Tensor | None,
              rows: tuple[int, int] | None) -> torch.Tensor:
    """``output`` plus ``y`` (fp32, the module's output over its ΔW rows along ``dim``): ``y``'s
    features reordered / picked by ``idx``, added to features rows[0]:rows[1] of ``output`` (all
    when ``rows`` is None); the result in ``output``'s dtype."""
    if idx is not None:
        y = y.index_select(dim, idx)
    y = y.to(output.dtype)
    if rows is None:
        return output + y
    out = output.clone()
    out.narrow(dim, rows[0], rows[1] - rows[0]).add_(y)
    return out


def _bypass_hook(t: _Target) -> Callable[..., torch.Tensor]:
    """A forward hook adding the module's output to ``t.layer``'s, from its input (fp32 factors):
    only to the output features of ``t.update.rows`` when set, through ΔW's row order / split."""
    u, layer = t.update, t.layer
    dev = t.weight.device
    f = u.factors.map(lambda x: x.to(device=dev, dtype=torch.float32))
    factor = u.scale * u.strength
    idx = placement_index(u, u.target_shape(t.weight.shape)[0])
    idx = idx.to(dev) if idx is not None else None
    if f.dora_scale is not None:
        def dora_hook(_mod: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            w = layer.weight.detach()
            new_w = merged_weight(w, [u], device=w.device, dtype=torch.float32)
            return output + _layer_forward(layer, args[0].float(), new_w - w.float(), None).to(output.dtype)
        return dora_hook
    if isinstance(layer, nn.Linear) or _is_pointwise(layer):
        fn = kron.kron_linear_factors if isinstance(layer, nn.Linear) else kron.kron_conv1x1
        dim = -1 if isinstance(layer, nn.Linear) else 1

        def factor_hook(_mod: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            return _add_rows(output, fn(args[0].float(), f) * factor, dim, idx, u.rows)
        return factor_hook
    shape = u.module_shape(t.weight.shape)

    def conv_hook(_mod: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        delta = kron.kron_delta(f, shape, factor)
        if idx is not None:
            delta = delta[idx]
        return _add_rows(output, _layer_forward(layer, args[0].float(), delta, None), 1, None, u.rows)
    return conv_hook
