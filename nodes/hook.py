"""LoKr Hook: a LoKr file as HOOKS for ComfyUI's hook system (what core's Create Hook LoRA makes).

A hook group holds weight hooks; ComfyUI registers each on the MODEL when sampling starts (and on
the CLIP in Set CLIP Hooks), applies its patches only for the conditioning it is attached to, and
scales them per step by the hook's keyframes (Create Hook Keyframe, Set Hook Keyframes, ...).
Core's weight hook turns a LoRA state dict into ComfyUI's own adapters when it is registered;
:func:`lokr_hook_class` makes a weight hook that instead plans our LoKr patches
(:func:`.planning.plan_patches`, the same patch objects as the loaders: exact for Tucker, DoRA
and PEFT files) for the model it is registered on, keyed by that model's ComfyUI keys. Files
without LoKr modules go to core's own weight hook. Nothing is imported from ComfyUI at import time.
"""
from __future__ import annotations

import functools
import logging
import types
from dataclasses import dataclass
from typing import Any

from ..lokr_core.base.errors import LoKrConfigError, LoKrFormatError, LoKrKeyError
from .common import (CATEGORY, check_strengths, dora_mode_input, file_token, lokr_name_input, lokr_path,
                     scale_rule_input, strength_input, validate_inputs)
from .planning import WeightsCache, other_state_dict_from_file, plan_patches

log = logging.getLogger("comfyui-lokr")

NO_HOOKS = ("LoKr Hook: this ComfyUI has no hook system (no comfy.hooks.WeightHook); update ComfyUI, or use "
            "LoKr Loader to apply the file for every step")


@dataclass(frozen=True)
class HookSource:
    """What a LoKr weight hook applies: the file (``name``, full ``path``), its parsed ``weights``
    (``LoKrWeights``), the scale rule and the DoRA mode. Shared by the hook's clones."""

    name: str
    path: str
    weights: Any
    scale_rule: str = "file"
    dora_mode: str = "interpolate"


def comfy_hooks() -> Any:
    """ComfyUI's ``comfy.hooks`` module; LoKrConfigError (:data:`NO_HOOKS`) where this ComfyUI has none."""
    try:
        import comfy.hooks as hooks  # type: ignore[import-not-found]
    except Exception:
        raise LoKrConfigError(NO_HOOKS) from None
    if not hasattr(hooks, "WeightHook") or not hasattr(hooks, "HookGroup"):
        raise LoKrConfigError(NO_HOOKS)
    return hooks


def hook_patches(source: HookSource, patcher: Any, clip_side: bool) -> dict:
    """{ComfyUI key: patch} of ``source`` for the ModelPatcher ``patcher`` a hook is registered on.

    ``clip_side``: ``patcher`` is a CLIP's patcher (``patcher.model`` is the text encoder), else a
    MODEL. LoKr modules get our patch objects, other modules of a mixed file ComfyUI's own. A file
    with no module for this side (a UNet-only file on the CLIP) gives {} and a log line.
    """
    model, clip = (None, types.SimpleNamespace(cond_stage_model=patcher.model)) if clip_side else (patcher, None)
    try:
        plan = plan_patches(source.weights, model, clip, scale_rule=source.scale_rule, dora_mode=source.dora_mode,
                            other_state_dict=other_state_dict_from_file(source.path))
    except LoKrKeyError as e:
        log.info("comfyui-lokr: LoKr Hook %s: nothing for the %s: %s", source.name,
                 "text encoder" if clip_side else "diffusion model", e)
        return {}
    return {**plan.clip, **plan.other_clip} if clip_side else {**plan.unet, **plan.other_unet}


@functools.lru_cache(maxsize=1)
def lokr_hook_class() -> type:
    """The LoKr weight hook class: ComfyUI's ``WeightHook`` whose patches come from :func:`hook_patches`.

    Built once per process (isinstance checks see one class). Registration mirrors core's
    ``WeightHook.add_hook_patches``: the model strength on a MODEL, the clip strength on a CLIP,
    the keyframe strength applied by ComfyUI per step.
    """
    hooks = comfy_hooks()

    class LoKrWeightHook(hooks.WeightHook):
        def __init__(self, strength_model: float = 1.0, strength_clip: float = 1.0,
                     source: HookSource | None = None) -> None:
            super().__init__(strength_model=strength_model, strength_clip=strength_clip)
            self.need_weight_init = False
            self.lokr_source = source

        def add_hook_patches(self, model: Any, model_options: dict, target_dict: dict, registered: Any) -> bool:
            if not self.should_register(model, model_options, target_dict, registered):
                return False
            clip_side = target_dict.get("target", None) == hooks.EnumWeightTarget.Clip
            strength = self._strength_clip if clip_side else self._strength_model
            patches = hook_patches(self.lokr_source, model, clip_side) if self.lokr_source is not None else {}
            model.add_hook_patches(hook=self, patches=patches, strength_patch=strength)
            registered.add(self)
            return True

        def clone(self) -> "LoKrWeightHook":
            c = super().clone()
            c.lokr_source = self.lokr_source
            return c

    LoKrWeightHook.__module__ = __name__
    return LoKrWeightHook


def make_hooks(source: HookSource, strength_model: float, strength_clip: float, prev_hooks: Any = None) -> Any:
    """A HookGroup: ``prev_hooks`` (cloned, never changed) + one LoKr weight hook for ``source``.

    Both strengths 0 returns ``prev_hooks`` (or an empty group) as core's Create Hook LoRA does.
    """
    hooks = comfy_hooks()
    prev = prev_hooks if prev_hooks is not None else hooks.HookGroup()
    if strength_model == 0 and strength_clip == 0:
        return prev.clone()
    group = hooks.HookGroup()
    group.add(lokr_hook_class()(strength_model, strength_clip, source))
    return prev.clone_and_combine(group)


def core_hooks(path: str, strength_model: float, strength_clip: float, prev_hooks: Any = None) -> Any:
    """A file without LoKr modules as core's Create Hook LoRA makes it (ComfyUI's own weight hook)."""
    hooks = comfy_hooks()
    import comfy.utils  # type: ignore[import-not-found]

    prev = prev_hooks if prev_hooks is not None else hooks.HookGroup()
    if strength_model == 0 and strength_clip == 0:
        return prev.clone()
    lora = comfy.utils.load_torch_file(path, safe_load=True)
    return prev.clone_and_combine(hooks.create_hook_lora(lora=lora, strength_model=strength_model,
                                                         strength_clip=strength_clip))


class LoKrHook:
    """LoKr Hook: a LoKr file + strengths -> HOOKS (chain with ``prev_hooks``, schedule with core's keyframe nodes)."""

    CATEGORY = CATEGORY
    DESCRIPTION = ("Makes HOOKS from a LoKr file for ComfyUI's hook system (as core's Create Hook LoRA): attach them to "
                   "conditioning with Set CLIP Hooks / Cond Set Props, schedule their strength over the steps with "
                   "Create Hook Keyframe + Set Hook Keyframes. Uses the exact LoKr patch (Tucker, DoRA, PEFT files); "
                   "files without LoKr modules become core's own LoRA hook.")
    SEARCH_ALIASES = ["create hook lokr", "lokr hook", "scheduled lora", "lora keyframes", "hook lora"]
    RETURN_TYPES = ("HOOKS",)
    RETURN_NAMES = ("HOOKS",)
    OUTPUT_TOOLTIPS = ("prev_hooks (if any) plus this file's weight hook.",)
    FUNCTION = "create_hook"

    def __init__(self) -> None:
        self._cache = WeightsCache()

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "lokr_name": lokr_name_input(),
            "strength_model": strength_input("Strength on the diffusion model (times the keyframe strength per step)."),
            "strength_clip": strength_input("Strength on the text encoder when the hooks go through Set CLIP Hooks."),
        }, "optional": {
            "prev_hooks": ("HOOKS", {"tooltip": "Hooks to extend (from another hook node); kept, this file's hook is "
                                                "added."}),
            "scale_rule": scale_rule_input(),
            "dora_mode": dora_mode_input(),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, lokr_name: Any = None, strength_model: Any = None, strength_clip: Any = None) -> bool | str:
        return validate_inputs(lokr_name, strength_model=strength_model, strength_clip=strength_clip)

    @classmethod
    def IS_CHANGED(cls, lokr_name: Any = None, **_: Any) -> str:
        return file_token("loras", lokr_name)

    def create_hook(self, lokr_name: str, strength_model: float, strength_clip: float, prev_hooks: Any = None,
                    scale_rule: str = "file", dora_mode: str = "interpolate") -> tuple[Any]:
        comfy_hooks()
        check_strengths(strength_model=strength_model, strength_clip=strength_clip)
        path = lokr_path(lokr_name)
        try:
            weights = self._cache.get(path)
        except LoKrFormatError:
            weights = None
        if weights is None or not list(weights.module_names):
            return (core_hooks(path, strength_model, strength_clip, prev_hooks),)
        weights.validate_all()  # unreadable / non-finite factors fail here, not in the middle of sampling
        source = HookSource(lokr_name, path, weights, scale_rule, dora_mode)
        return (make_hooks(source, float(strength_model), float(strength_clip), prev_hooks),)


NODES = {
    "LoKrHook": (LoKrHook, "LoKr Hook"),
}
