"""LoKr Stack and Apply LoKr Stack: several files with strengths, as the community ``LORA_STACK``.

``LORA_STACK`` is a list of ``(file name, strength_model, strength_clip)`` tuples (names relative to
the ``loras`` folders), the type other packs' stackers emit and accept, so the nodes chain with
them. Apply: every entry is checked first (file present, strengths finite); then each file that
holds LoKr modules goes through the LoKr loader, and a file without LoKr modules (a plain LoRA from
another stacker) through ComfyUI's own ``comfy.sd.load_lora_for_models``. Inputs are never changed.
"""
from __future__ import annotations

import os
from typing import Any, Callable

from ..lokr_core.base.errors import LoKrConfigError, LoKrError, LoKrFormatError
from .block_weights import CUSTOM, choose_family, multiplier_for, parse_vector
from .common import (BYPASS, CATEGORY, PATCH, TIP_FILE, file_token, lokr_files, lokr_path, model_clip_inputs,
                     run_options, scale_rule_input, strength_error, strength_input, validate_inputs)
from .planning import PatchPlan, WeightsCache, apply_plan, other_state_dict_from_file, plan_patches, plan_report

SLOTS = 3
NONE = "None"


def stack_entries(lora_stack: Any = None, **slots: Any) -> list[tuple[str, float, float]]:
    """The incoming stack (copied, never mutated) + the filled slots ``lokr_i`` / ``strength_*_i``."""
    out = [tuple(e) for e in (lora_stack or [])]
    for i in range(1, SLOTS + 1):
        name = slots.get(f"lokr_{i}", NONE)
        if name and name != NONE:
            out.append((name, float(slots.get(f"strength_model_{i}", 1.0)), float(slots.get(f"strength_clip_{i}", 1.0))))
    return out


def check_stack(stack: Any) -> None:
    """Raise LoKrFormatError naming the entry when the stack is malformed, a file is missing or a strength NaN.

    An entry is ``(file, strength_model, strength_clip)``, or ``(file, strength_model, strength_clip,
    blocks)`` with ``blocks`` a block-weight preset name or vector text ("" = none; the Power Loader's rows).
    """
    if not isinstance(stack, (list, tuple)):
        raise LoKrFormatError(f"LORA_STACK is a {type(stack).__name__}; expected a list of (file, strength_model, strength_clip)")
    for i, entry in enumerate(stack):
        if (not isinstance(entry, (list, tuple)) or len(entry) not in (3, 4)
                or (len(entry) == 4 and not isinstance(entry[3], str))):
            raise LoKrFormatError(f"LORA_STACK entry {i} is {entry!r}; expected (file, strength_model, strength_clip) "
                                  "or (file, strength_model, strength_clip, blocks text)")
        name, sm, sc = entry[:3]
        for label, v in (("strength_model", sm), ("strength_clip", sc)):
            msg = strength_error(label, v)
            if msg:
                raise LoKrFormatError(f"LORA_STACK entry {i} ({name!r}): {msg}")
        lokr_path(name)


def _is_lokr(weights: Any) -> bool:
    return len(list(weights.module_names)) > 0


def apply_stack(model: Any, clip: Any, stack: Any, *, scale_rule: str = "file",
                caches: dict[str, WeightsCache] | None = None, apply: str = PATCH,
                strict: bool = False) -> tuple[Any, Any, list[dict]]:
    """Apply every stack entry in order to clones of ``model`` / ``clip``; returns (model, clip, reports).

    ``apply``: ``"patch weights"`` or ``"bypass"`` for every entry (see ``planning.apply_plan``);
    ``strict``: a module that does not fit stops the run (``planning.plan_patches``). An entry's
    ``blocks`` text (see :func:`check_stack`) scales each weight by its block's value, parsed for the
    connected model's family as the Block Weights node does; LoKr and non-LoKr files alike.
    """
    check_stack(stack)
    caches = caches if caches is not None else {}
    layout: dict = {}
    loaded = []
    for i, entry in enumerate(stack):  # load + plan everything first: a bad file fails before anything is applied
        name, sm, sc = entry[:3]
        blocks = entry[3].strip() if len(entry) == 4 else ""
        mult = _entry_multiplier(model, blocks, layout, i, name)
        path = lokr_path(name)
        cache = caches.setdefault(path, WeightsCache())
        try:
            weights = cache.get(path)
        except LoKrFormatError:
            weights = None
        lokr = weights is not None and _is_lokr(weights)
        if lokr:
            plan = plan_patches(weights, model, clip, scale_rule=scale_rule, multiplier=mult,
                                other_state_dict=other_state_dict_from_file(path), strict=strict)
        elif mult is not None:  # a non-LoKr file with block weights: ComfyUI's own patches, scaled per block
            plan = core_lora_plan(model, clip, path, name, mult)
        else:
            plan = None
        loaded.append((name, float(sm), float(sc), plan, path, blocks, lokr))
    reports = []
    cur_model, cur_clip = model, clip
    for name, sm, sc, plan, path, blocks, lokr in loaded:
        if plan is not None:
            cur_model, cur_clip = apply_plan(plan, cur_model, cur_clip, sm, sc, apply)
        else:
            cur_model, cur_clip = _core_lora(cur_model, cur_clip, path, name, sm, sc, apply)
        report = plan_report(plan, name) if lokr else {"file": name, "handled_by": "ComfyUI LoraLoader"}
        if blocks:
            report["blocks"] = blocks
        reports.append(report)
    return cur_model, cur_clip, reports


def _entry_multiplier(model: Any, blocks: str, layout: dict, index: int,
                      name: str) -> Callable[[Any], float] | None:
    """``key -> block value`` of an entry's block-weight text (None for ""), parsed for the model's family
    (``nodes.block_weights``: ``choose_family("auto")`` once per stack, kept in ``layout``)."""
    if not blocks:
        return None
    try:
        if "family" not in layout:
            layout["family"] = choose_family("auto", model)[:2]
        family, counts = layout["family"]
        return multiplier_for(parse_vector(blocks, CUSTOM, family, 4.0, 1.0, 0, counts), family)
    except LoKrError as e:
        raise LoKrFormatError(f"LORA_STACK entry {index} ({name!r}): blocks {blocks!r}: {e}") from None


def core_lora_plan(model: Any, clip: Any, path: str, name: str,
                   multiplier: Callable[[Any], float]) -> PatchPlan:
    """A non-LoKr file as ComfyUI's own loader reads it (its key maps, ``convert_lora``, ``load_lora``),
    every patch recorded with its block value, as a plan ``planning.apply_plan`` applies (patch or bypass)."""
    try:
        import comfy.lora  # type: ignore[import-not-found]
        import comfy.lora_convert  # type: ignore[import-not-found]
        import comfy.utils  # type: ignore[import-not-found]
    except Exception:
        raise LoKrFormatError(f"file {name!r}: holds no LoKr module and ComfyUI's LoRA loader is not available; "
                              "expected a LoKr file") from None
    unet_map = comfy.lora.model_lora_keys_unet(model.model, {}) if model is not None else {}
    clip_map = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, {}) if clip is not None else {}
    sd = comfy.lora_convert.convert_lora(comfy.utils.load_torch_file(path, safe_load=True))
    loaded = comfy.lora.load_lora(sd, {**unet_map, **clip_map})
    unet_keys = set(unet_map.values())
    plan = PatchPlan(source=os.path.basename(path))
    for key, patch in loaded.items():
        m = float(multiplier(key))
        (plan.other_unet if key in unet_keys else plan.other_clip)[key] = patch if m == 1.0 else (m, patch)
    return plan


def _core_lora(model: Any, clip: Any, path: str, name: str, sm: float, sc: float,
               apply: str = PATCH) -> tuple[Any, Any]:
    """A non-LoKr file through ComfyUI's own loader (what LoraLoader / LoraLoaderBypass do)."""
    try:
        import comfy.sd  # type: ignore[import-not-found]
        import comfy.utils  # type: ignore[import-not-found]
    except Exception:
        raise LoKrFormatError(f"file {name!r}: holds no LoKr module and ComfyUI's LoRA loader is not available; "
                              "expected a LoKr file") from None
    if sm == 0 and sc == 0:
        return model, clip
    load = comfy.sd.load_lora_for_models
    if apply == BYPASS:
        load = getattr(comfy.sd, "load_bypass_lora_for_models", None)
        if load is None:
            raise LoKrConfigError(f"file {name!r}: holds no LoKr module, and this ComfyUI's own loader has no bypass "
                                  "mode (0.28.0 has it, 0.8.0 does not); use apply = 'patch weights'")
    lora = comfy.utils.load_torch_file(path, safe_load=True)
    return load(model, clip, lora, sm, sc)


def _slot_inputs() -> dict:
    files = [NONE] + lokr_files()
    out = {}
    for i in range(1, SLOTS + 1):
        out[f"lokr_{i}"] = (files, {"default": NONE, "tooltip": f"Slot {i}: {TIP_FILE} 'None' leaves the slot empty."})
        out[f"strength_model_{i}"] = strength_input(f"Slot {i}: strength on the diffusion model.")
        out[f"strength_clip_{i}"] = strength_input(f"Slot {i}: strength on the text encoder.")
    return out


class LoKrStack:
    """LoKr Stack: up to three files + strengths appended to an optional incoming LORA_STACK."""

    CATEGORY = CATEGORY
    DESCRIPTION = ("Builds a LORA_STACK list of (file, strength_model, strength_clip): chain several stack nodes, "
                   "or mix with other packs' LoRA stackers, then apply it with 'Apply LoKr Stack'.")
    RETURN_TYPES = ("LORA_STACK",)
    RETURN_NAMES = ("lora_stack",)
    OUTPUT_TOOLTIPS = ("The incoming stack with this node's filled slots appended.",)
    FUNCTION = "stack"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": _slot_inputs(),
                "optional": {"lora_stack": ("LORA_STACK", {"tooltip": "A stack to extend (from another stacker node)."})}}

    @classmethod
    def VALIDATE_INPUTS(cls, **kwargs: Any) -> bool | str:
        for i in range(1, SLOTS + 1):
            name = kwargs.get(f"lokr_{i}")
            strengths = {label: kwargs.get(label) for label in (f"strength_model_{i}", f"strength_clip_{i}")}
            msg = validate_inputs(name if name and name != NONE else None, **strengths)
            if msg is not True:
                return msg
        return True

    @classmethod
    def IS_CHANGED(cls, **slots: Any) -> str:
        """The tokens of the slots' files, one a line: a file rewritten under the same name runs this node
        and so every node downstream (Apply LoKr Stack) again. The incoming ``lora_stack`` is a link,
        which ComfyUI does not pass here: the stacker that made it answers for its files."""
        names = [slots.get(f"lokr_{i}") for i in range(1, SLOTS + 1)]
        return "\n".join(file_token("loras", n) for n in names if n and n != NONE)

    def stack(self, lora_stack: Any = None, **slots: Any) -> tuple[list]:
        out = stack_entries(lora_stack, **slots)
        check_stack(out)
        return (out,)


class ApplyLoKrStack:
    """Apply LoKr Stack: MODEL + CLIP + LORA_STACK -> patched clones (LoKr ours, plain LoRA ComfyUI's)."""

    CATEGORY = CATEGORY
    DESCRIPTION = ("Applies every (file, strength_model, strength_clip) of a LORA_STACK in order. LoKr files use the "
                   "exact LoKr patch; files without LoKr modules go to ComfyUI's own LoRA loader.")
    RETURN_TYPES = ("MODEL", "CLIP")
    RETURN_NAMES = ("MODEL", "CLIP")
    OUTPUT_TOOLTIPS = ("The diffusion model with the stack applied.", "The text encoder with the stack applied.")
    FUNCTION = "apply"

    def __init__(self) -> None:
        self._caches: dict[str, WeightsCache] = {}

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            **model_clip_inputs(),
            "lora_stack": ("LORA_STACK", {"tooltip": "List of (file, strength_model, strength_clip), e.g. from LoKr Stack."}),
            "scale_rule": scale_rule_input(),
        }, "optional": {
            **run_options(),
        }}

    def apply(self, model: Any, clip: Any, lora_stack: Any, scale_rule: str = "file", apply: str = PATCH,
              strict: bool = False) -> dict:
        new_model, new_clip, reports = apply_stack(model, clip, lora_stack, scale_rule=scale_rule, caches=self._caches,
                                                   apply=apply, strict=bool(strict))
        return {"ui": {"lokr_report": reports}, "result": (new_model, new_clip)}


NODES = {
    "LoKrStack": (LoKrStack, "LoKr Stack"),
    "ApplyLoKrStack": (ApplyLoKrStack, "Apply LoKr Stack"),
}
