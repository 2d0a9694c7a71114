"""Patch planning: what one LoKr file does to a MODEL / CLIP pair, checked before anything changes.

Flow: :class:`WeightsCache` (``lokr_core.formats.io.load_lokr``, cached per node) ->
:func:`plan_patches` (match every file module to a ComfyUI key, check every shape, build one LoKr
patch per weight; raises before anything is touched) -> :func:`apply_plan` (clone the ModelPatcher /
CLIP, ``add_patches`` on the clones, or bypass injections; the inputs are never changed).
:func:`load_and_apply` runs the whole chain for the loader nodes. Non-LoKr modules of a mixed file
are handed to ComfyUI's own ``comfy.lora.load_lora``.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..lokr_core.base.errors import LoKrConfigError, LoKrError, LoKrKeyError, LoKrShapeError, where
from ..lokr_core.base.fingerprint import stat_token
from ..lokr_core.formats.io import load_lokr
from ..lokr_core.keymap.family import (FAMILY_BY_CROSS_DIM, FAMILY_LABELS, family_signals, pick_family,
                                       target_dit_family)
from .bypass import INJECTION_KEY, BypassEntry, bypass_injections
from .common import APPLY_MODES, BYPASS, PATCH, check_strengths, lokr_path
from .keys import (base_key, clip_key_map, match_names, resolve_names, split_key, target_shape, unet_key_map,
                   weight_shapes)
from ..lokr_core.ops.merge import KronUpdate, check_merge_fits
from .patch import is_lokr_patch, make_patch

log = logging.getLogger("comfyui-lokr")


class WeightsCache:
    """The last file a node loaded: (path, size, mtime, inode, device) -> LoKrWeights (per node
    instance, not global); a file replaced under the same name (new inode) is loaded again."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._weights: Any = None

    def get(self, path: str) -> Any:
        key = (path, *stat_token(path))
        if key != self._key:
            weights = load_lokr(path)
            self._key, self._weights = key, weights
        return self._weights


@dataclass
class PatchPlan:
    """What one file does to one MODEL / CLIP pair, computed before anything is changed.

    ``unet`` / ``clip``: ComfyUI key -> patch object. ``matched``: file module -> ComfyUI key.
    ``unmatched``: LoKr modules no weight of the connected models takes, ``nearest`` their nearest
    weight keys; ``skipped``: {module: reason} for modules that name a weight but cannot be applied
    (shape, unreadable factors, a fused module split over several weights); ``family`` /
    ``model_family``: family ids of the file and of the connected MODEL (None when unknown). ``other``: ComfyUI's own
    patches for non-LoKr modules (LoRA, LoHa, ...), split the same way; ``other_skipped``: those
    that could not be handed to ComfyUI (no ComfyUI, or no key).
    """

    unet: dict[Any, Any] = field(default_factory=dict)
    clip: dict[Any, Any] = field(default_factory=dict)
    matched: dict[str, Any] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)
    other_unet: dict[Any, Any] = field(default_factory=dict)
    other_clip: dict[Any, Any] = field(default_factory=dict)
    other_skipped: list[str] = field(default_factory=list)
    multipliers: dict[str, float] = field(default_factory=dict)
    source: str = ""
    skipped: dict[str, str] = field(default_factory=dict)
    nearest: dict[str, list[str]] = field(default_factory=dict)
    family: str | None = None
    model_family: str | None = None


@dataclass
class Matches:
    """Where each file module goes on the connected MODEL / CLIP.

    ``unet_map`` / ``clip_map``: ComfyUI's key maps (empty for a missing model); ``unet`` / ``clip``:
    {file module: ComfyUI patch key}, from ComfyUI's map first, then lokr_core's resolver against the
    model's own weights; ``unmatched``: names neither places; ``skipped``: {name: reason} for names the
    resolver found but a node patch cannot apply; ``nearest``: {unmatched name: up to 3 weight keys}.
    """

    unet_map: dict = field(default_factory=dict)
    clip_map: dict = field(default_factory=dict)
    unet: dict[str, Any] = field(default_factory=dict)
    clip: dict[str, Any] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    nearest: dict[str, list[str]] = field(default_factory=dict)


def _specs(weights: Any, names: list[str]) -> dict[str, Any]:
    shapes = getattr(weights, "shapes", None)
    return {n: shapes(n) for n in names} if callable(shapes) else {}


def match_modules(weights: Any, model: Any = None, clip: Any = None) -> Matches:
    """:class:`Matches` of the LoKr modules of ``weights`` on ``model`` (ModelPatcher) / ``clip`` (CLIP).

    ComfyUI's map first (``keys.unet_key_map`` / ``clip_key_map``; a name the diffusion model takes is
    not offered to the text encoder), then ``keys.resolve_names`` for the rest against the diffusion
    model's weights, then the text encoder's.
    """
    names = list(weights.module_names)
    m = Matches(unet_map=unet_key_map(model) if model is not None else {},
                clip_map=clip_key_map(clip) if clip is not None else {})
    m.unet, rest = match_names(names, m.unet_map)
    m.clip, rest = match_names(rest, m.clip_map)
    specs = _specs(weights, rest)
    for owner, out in ((getattr(model, "model", None), m.unet), (getattr(clip, "cond_stage_model", None), m.clip)):
        if not rest or owner is None:
            continue
        found = resolve_names(rest, weight_shapes(owner), specs)
        out.update(found.matched)
        m.skipped.update(found.skipped)
        m.nearest.update(found.nearest)
        rest = [n for n in rest if n not in found.matched and n not in found.skipped]
    m.unmatched = rest
    m.nearest = {n: m.nearest.get(n, []) for n in rest}
    return m


def model_family_of(model: Any) -> str | None:
    """Family id of a connected MODEL (ModelPatcher): a DiT verdict from its weights
    (``target_dit_family``), else an SD family from its cross-attention width; None when unknown."""
    owner = getattr(model, "model", None)
    if owner is None:
        return None
    shapes = weight_shapes(owner)
    fam = target_dit_family(shapes)
    if fam:
        return fam
    for key, shape in shapes.items():
        if key.endswith("attn2.to_k.weight") and len(shape) == 2 and shape[1] in FAMILY_BY_CROSS_DIM:
            return FAMILY_BY_CROSS_DIM[shape[1]]
    return None


def file_family(weights: Any) -> str | None:
    """Family verdict of a LoKr file from its names and factor shapes (``"flux"``, ``"sd1/sd2"``, ...; None)."""
    names = list(weights.module_names)
    try:
        return pick_family(family_signals(names, _specs(weights, names)))
    except Exception:
        return None


def family_label(family: str | None) -> str | None:
    """Display name of a family verdict (``FAMILY_LABELS``), the id itself when it has none, None for None."""
    return None if family is None else FAMILY_LABELS.get(family, family)


def _family_hint(weights: Any, model: Any = None) -> str:
    """" (the file looks like a Flux.1 LoKr; the model is SD3)" or the parts of it that are known."""
    fam, mfam = file_family(weights), model_family_of(model)
    parts = []
    if fam:
        parts.append(f"the file looks like a {family_label(fam)} LoKr")
    if mfam:
        parts.append(f"the model is {family_label(mfam)}")
    return f" ({'; '.join(parts)})" if parts else ""


def plan_patches(weights: Any, model: Any = None, clip: Any = None, *, scale_rule: Any = "file",
                 multiplier: Callable[[Any], float] | None = None, dora_mode: str = "interpolate",
                 other_state_dict: Callable[[list[str]], dict] | None = None, strict: bool = False) -> PatchPlan:
    """Match, check and build every patch of ``weights`` for ``model`` (ModelPatcher) and ``clip`` (CLIP).

    ``multiplier(comfy_key) -> float`` gives per-weight block strengths (default 1). A module whose
    factors do not fit its weight (or cannot be read) is listed in ``plan.skipped`` with the reason
    and the rest are planned; ``strict=True`` raises on the first such module instead
    (LoKrShapeError / the reading error). Raises LoKrKeyError when no module matches and
    LoKrShapeError when none fits (wrong model family; the message names the file's and the model's
    families). Nothing is changed in any case.
    """
    source = weights.source
    names = list(weights.module_names)
    m = match_modules(weights, model, clip)
    if names and not m.unet and not m.clip and not m.skipped:
        parts = [p for p, o in (("MODEL", model), ("CLIP", clip)) if o is not None]
        raise LoKrKeyError(
            f"{where(source, None)}none of its {len(names)} LoKr modules (e.g. {names[0]!r}) names a weight of the "
            f"connected {' / '.join(parts)}{_family_hint(weights, model)}; expected a LoKr made for this model family")
    base = os.path.basename(str(source or ""))
    plan = PatchPlan(unmatched=m.unmatched, source=base, nearest=dict(m.nearest), skipped=dict(m.skipped),
                     family=file_family(weights), model_family=model_family_of(model))
    if strict and plan.skipped:
        name, why = next(iter(plan.skipped.items()))
        raise LoKrShapeError(f"{where(source, name)}{why}{_family_hint(weights, model)}; "
                             "expected a LoKr made for the connected model")
    unet_sd, clip_sd = (weight_shapes(getattr(model, "model", None)),
                        weight_shapes(getattr(clip, "cond_stage_model", None)))
    # 1. every shape first, from metadata only: a wrong file fails before a tensor is read
    first_error: str | None = None
    for matched, sd in ((m.unet, unet_sd), (m.clip, clip_sd)):
        for name, key in list(matched.items()):
            try:
                weights.shapes(name).check_target(target_shape(key, sd), source, name)
            except LoKrShapeError as e:
                text = f"{e} (ComfyUI weight {base_key(key)!r})"
                if strict:
                    raise LoKrShapeError(f"{text}{_family_hint(weights, model)}; "
                                         "expected a LoKr made for the connected model") from None
                first_error = first_error or text
                plan.skipped[name] = f"shape mismatch: {e} (ComfyUI weight {base_key(key)!r})"
                del matched[name]
    if names and not m.unet and not m.clip:
        raise LoKrShapeError(f"{first_error or where(source, None) + 'no module fits the connected model'}"
                             f"{_family_hint(weights, model)}; expected a LoKr made for the connected model")
    # 2. factors (read + finite-checked) and one patch per weight
    for matched, out in ((m.unet, plan.unet), (m.clip, plan.clip)):
        for name, key in matched.items():
            mult = float(multiplier(key)) if multiplier is not None else 1.0
            try:
                factors = weights.modules[name]
            except LoKrError as e:
                if strict:
                    raise
                plan.skipped[name] = str(e)
                continue
            plan.multipliers[name] = mult
            plan.matched[name] = key
            out[key] = make_patch(factors, weights.scale(name, scale_rule), mult,
                                  module=name, dora_mode=dora_mode, source=base)
    if plan.skipped:
        log.warning("comfyui-lokr: %s: %d LoKr module(s) skipped: %s", base, len(plan.skipped),
                    "; ".join(f"{n}: {r}" for n, r in list(plan.skipped.items())[:3]))
    # 3. non-LoKr modules: ComfyUI's own loader
    others = list(getattr(weights, "other_modules", {}) or {})
    if others:
        _plan_others(plan, others, m.unet_map, m.clip_map, other_state_dict, multiplier)
    return plan


def _plan_others(plan: PatchPlan, others: list[str], unet_map: dict, clip_map: dict,
                 other_state_dict: Callable[[list[str]], dict] | None,
                 multiplier: Callable[[Any], float] | None) -> None:
    try:
        import comfy.lora  # type: ignore[import-not-found]
    except Exception:
        plan.other_skipped = others
        log.warning("comfyui-lokr: %d non-LoKr module(s) not applied (ComfyUI's loader is not available): %s",
                    len(others), ", ".join(others[:5]))
        return
    sd = other_state_dict(others) if other_state_dict is not None else {}
    loaded = comfy.lora.load_lora(sd, {**unet_map, **clip_map}, log_missing=True)
    unet_keys, clip_keys = set(unet_map.values()), set(clip_map.values())
    for key, patch in loaded.items():
        if multiplier is not None and float(multiplier(key)) != 1.0:
            patch = _scaled_core_patch(patch, float(multiplier(key)))
        if key in unet_keys:
            plan.other_unet[key] = patch
        elif key in clip_keys:
            plan.other_clip[key] = patch
    plan.other_skipped = [n for n in others if n not in unet_map and n not in clip_map]
    if plan.other_skipped:
        log.warning("comfyui-lokr: %d non-LoKr module(s) name no weight of the connected model: %s",
                    len(plan.other_skipped), ", ".join(plan.other_skipped[:5]))


def _scaled_core_patch(patch: Any, mult: float) -> Any:
    """A ComfyUI patch scaled by ``mult`` for block weights: nested list form ComfyUI understands.

    ComfyUI has no per-patch multiplier for its own adapters; a block multiplier m is applied by
    registering the patch with strength m (see ``apply_plan``), so here it is only recorded.
    """
    return (mult, patch)


def other_state_dict_from_file(path: str) -> Callable[[list[str]], dict]:
    """A reader of the file's own tensors for the given non-LoKr module names (``<name>.*`` keys)."""
    def read(names: list[str]) -> dict:
        from safetensors import safe_open
        out = {}
        with safe_open(path, framework="pt") as fh:
            for k in fh.keys():
                mod = k.rsplit(".", 1)[0]
                if mod in names or any(k.startswith(n + ".") for n in names):
                    out[k] = fh.get_tensor(k)
        return out
    return read


def _add(target: Any, patches: Mapping[Any, Any], strength: float) -> set:
    """add_patches grouped by block multiplier for ComfyUI-native patches recorded as (mult, patch)."""
    plain = {k: p for k, p in patches.items() if not _is_scaled(p)}
    added = set(target.add_patches(plain, strength)) if plain else set()
    for k, p in patches.items():
        if k not in plain:
            added |= set(target.add_patches({k: p[1]}, strength * p[0]))
    return added


def plan_report(plan: PatchPlan, lokr_name: str = "") -> dict:
    """The JSON-able run report shown on the node (``ui.lokr_report``): matched / unmatched / skipped /
    other counts and names, the file's and the model's families (ids and labels), nearest candidates."""
    return {"file": lokr_name, "matched": len(plan.matched),
            "total": len(plan.matched) + len(plan.unmatched) + len(plan.skipped),
            "unmatched": list(plan.unmatched), "unet_weights": len(plan.unet), "clip_weights": len(plan.clip),
            "other_applied": len(plan.other_unet) + len(plan.other_clip), "other_skipped": list(plan.other_skipped),
            "shape_mismatch": {n: r for n, r in plan.skipped.items() if r.startswith("shape mismatch")},
            "skipped": dict(plan.skipped), "nearest": {n: list(c) for n, c in plan.nearest.items()},
            "family": plan.family, "family_label": family_label(plan.family),
            "model_family": plan.model_family, "model_family_label": family_label(plan.model_family)}


def _bypass_side(patcher: Any, root: Any, lokr: Mapping[Any, Any], others: Mapping[Any, Any], strength: float,
                 source: str) -> tuple[list, dict]:
    """(injection list, regular patches) for one side in bypass mode; checks every entry, changes nothing.

    LoKr patches and ComfyUI's own adapters become bypass entries (a block multiplier recorded as
    ``(mult, patch)`` scales the strength); other ComfyUI patches (plain diffs) stay regular patches,
    as ComfyUI's own bypass loader does.
    """
    entries, regular = [], {}
    for patches in (lokr, others):
        for k, p in patches.items():
            mult, adapter = (p[0], p[1]) if _is_scaled(p) else (1.0, p)
            if is_lokr_patch(adapter) or _is_core_adapter(adapter):
                key, offset, function = split_key(k)
                entries.append(BypassEntry(key, adapter, strength * mult, offset, function))
            else:
                regular[k] = p
    return bypass_injections(patcher, root, entries, source), regular


def _is_scaled(p: Any) -> bool:
    return isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], float)


def _is_core_adapter(p: Any) -> bool:
    try:
        from comfy.weight_adapter import WeightAdapterBase  # type: ignore[import-not-found]
    except Exception:
        return False
    return isinstance(p, WeightAdapterBase)


def check_patch_range(module: Any, patches: Mapping[Any, Any], strength: float) -> None:
    """LoKrFormatError (nothing changed yet) when a LoKr patch at ``strength`` could push its weight
    out of the weight dtype's range, so that ComfyUI would compute inf / NaN weights at load time
    (``lokr_core.ops.merge.check_merge_fits``: from the weight's and the factors' maxima only)."""
    if module is None or not patches:
        return
    state = module.state_dict()
    for key, patch in patches.items():
        if not is_lokr_patch(patch):
            continue
        name, offset, _ = split_key(key)
        weight = state.get(name)
        if weight is None:
            continue
        if offset is not None:
            weight = weight.narrow(*offset)
        update = KronUpdate(patch.factors, patch.scale, float(strength) * patch.block_weight, patch.source,
                            patch.module)
        check_merge_fits(weight, [update], key=name)


def apply_plan(plan: PatchPlan, model: Any, clip: Any, strength_model: float,
               strength_clip: float, apply: str = PATCH) -> tuple[Any, Any]:
    """Clones of ``model`` / ``clip`` with the plan's patches; a side with strength 0 is returned as is.

    ``apply``: ``"patch weights"`` (ComfyUI patches the weights when it loads them) or ``"bypass"``
    (weights never modified; the terms are added in the forward pass, ``nodes.bypass``). Every
    bypass entry of both sides is checked before anything is cloned.
    """
    if apply not in APPLY_MODES:
        raise LoKrConfigError(f"apply is {apply!r}; expected one of {APPLY_MODES}")
    do_model = model is not None and strength_model != 0 and bool(plan.unet or plan.other_unet)
    do_clip = clip is not None and strength_clip != 0 and bool(plan.clip or plan.other_clip)
    if do_model:  # found by the fuzz suite: a huge alpha / strength patched into inf weights
        check_patch_range(getattr(model, "model", None), plan.unet, strength_model)
    if do_clip:
        check_patch_range(getattr(clip, "cond_stage_model", None), plan.clip, strength_clip)
    if apply == BYPASS:
        sides = {}
        if do_model:
            sides["model"] = _bypass_side(model, model.model, plan.unet, plan.other_unet, strength_model, plan.source)
        if do_clip:
            sides["clip"] = _bypass_side(clip.patcher, clip.cond_stage_model, plan.clip, plan.other_clip,
                                         strength_clip, plan.source)
    new_model, new_clip = model, clip
    if do_model:
        new_model = model.clone()
        if apply == BYPASS:
            injections, regular = sides["model"]
            new_model.set_injections(INJECTION_KEY, injections)
            _add(new_model, regular, strength_model)
        else:
            _add(new_model, plan.unet, strength_model)
            _add(new_model, plan.other_unet, strength_model)
    if do_clip:
        new_clip = clip.clone()
        if apply == BYPASS:
            injections, regular = sides["clip"]
            new_clip.patcher.set_injections(INJECTION_KEY, injections)
            _add(new_clip, regular, strength_clip)
        else:
            _add(new_clip, plan.clip, strength_clip)
            _add(new_clip, plan.other_clip, strength_clip)
    return new_model, new_clip


def load_and_apply(cache: WeightsCache, model: Any, clip: Any, lokr_name: str, strength_model: float,
                   strength_clip: float, scale_rule: Any = "file", dora_mode: str = "interpolate",
                   multiplier: Callable[[Any], float] | None = None,
                   apply: str = PATCH, strict: bool = False) -> tuple[Any, Any, PatchPlan]:
    """The whole loader: check inputs, load (cached), plan (``strict``: see :func:`plan_patches`), apply
    to clones. Inputs are never changed."""
    check_strengths(strength_model=strength_model, strength_clip=strength_clip)
    path = lokr_path(lokr_name)
    weights = cache.get(path)
    plan = plan_patches(weights, model, clip, scale_rule=scale_rule, multiplier=multiplier, dora_mode=dora_mode,
                        other_state_dict=other_state_dict_from_file(path), strict=strict)
    if plan.unmatched:
        log.warning("comfyui-lokr: %s: %d LoKr module(s) match no weight of the connected model: %s",
                    lokr_name, len(plan.unmatched), ", ".join(plan.unmatched[:5]))
    new_model, new_clip = apply_plan(plan, model, clip, strength_model, strength_clip, apply)
    return new_model, new_clip, plan
