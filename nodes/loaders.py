"""The LoKr Loader nodes: MODEL + CLIP, and model only (as ComfyUI's LoraLoader / LoraLoaderModelOnly).

Both run :func:`.planning.load_and_apply` (load cached, plan, apply to clones) and show the plan's
report on the node (``ui.lokr_report``). :class:`LoKrLoaderModelOnly` is :class:`LoKrLoader` without
the CLIP side, the way ComfyUI core's ``LoraLoaderModelOnly`` subclasses ``LoraLoader``.
"""
from __future__ import annotations

from typing import Any

from .common import (CATEGORY, PATCH, apply_input, dora_mode_input, file_token, lokr_name_input, scale_rule_input,
                     strength_input, strict_input, validate_inputs)
from .planning import WeightsCache, load_and_apply, plan_report

TIP_MODEL_STRENGTH = "Strength on the diffusion model; may be negative; 0 leaves it bit-identical."
TIP_CLIP_STRENGTH = "Strength on the text encoder; may be negative; 0 leaves it bit-identical."


class LoKrLoader:
    """LoKr Loader: MODEL + CLIP + a LoKr file -> patched clones (see module docstring)."""

    CATEGORY = CATEGORY
    DESCRIPTION = ("Applies a LoKr (LyCORIS low-rank Kronecker) file to the diffusion model and text encoder. "
                   "Handles Tucker and PEFT-format LoKr files exactly, computes in fp32 on the weight's device, "
                   "and hands LoRA/LoHa modules of mixed files to ComfyUI's own loader.")
    RETURN_TYPES = ("MODEL", "CLIP")
    RETURN_NAMES = ("MODEL", "CLIP")
    OUTPUT_TOOLTIPS = ("The diffusion model with the LoKr applied.", "The text encoder with the LoKr applied.")
    FUNCTION = "load"

    def __init__(self) -> None:
        self._cache = WeightsCache()

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "model": ("MODEL", {"tooltip": "The diffusion model the LoKr is applied to (it is cloned, never changed)."}),
            "clip": ("CLIP", {"tooltip": "The text encoder the LoKr is applied to (it is cloned, never changed)."}),
            "lokr_name": lokr_name_input(),
            "strength_model": strength_input(TIP_MODEL_STRENGTH),
            "strength_clip": strength_input(TIP_CLIP_STRENGTH),
            "scale_rule": scale_rule_input(),
        }, "optional": {
            "dora_mode": dora_mode_input(),
            "apply": apply_input(),
            "strict": strict_input(),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, lokr_name: Any = None, strength_model: Any = None, strength_clip: Any = None) -> bool | str:
        return validate_inputs(lokr_name, strength_model=strength_model, strength_clip=strength_clip)

    @classmethod
    def IS_CHANGED(cls, lokr_name: Any = None, **_: Any) -> str:
        """The file's token: a file rewritten under the same name runs the node again."""
        return file_token("loras", lokr_name)

    def load(self, model: Any, clip: Any, lokr_name: str, strength_model: float, strength_clip: float,
             scale_rule: str = "file", dora_mode: str = "interpolate", apply: str = PATCH, strict: bool = False) -> dict:
        new_model, new_clip, plan = load_and_apply(self._cache, model, clip, lokr_name, strength_model, strength_clip,
                                                   scale_rule, dora_mode, apply=apply, strict=bool(strict))
        return {"ui": {"lokr_report": [plan_report(plan, lokr_name)]}, "result": (new_model, new_clip)}


class LoKrLoaderModelOnly(LoKrLoader):
    """LoKr Loader (model only): MODEL + a LoKr file -> patched clone of the MODEL (the loader with no CLIP)."""

    DESCRIPTION = ("Applies the diffusion-model part of a LoKr file (text-encoder modules are ignored). "
                   "Exact for Tucker and PEFT-format files; fp32 on the weight's device.")
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The diffusion model with the LoKr applied.",)
    FUNCTION = "load_model_only"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        types = super().INPUT_TYPES()
        del types["required"]["clip"], types["required"]["strength_clip"]
        return types

    @classmethod
    def VALIDATE_INPUTS(cls, lokr_name: Any = None, strength_model: Any = None) -> bool | str:
        return validate_inputs(lokr_name, strength_model=strength_model)

    def load_model_only(self, model: Any, lokr_name: str, strength_model: float, scale_rule: str = "file",
                        dora_mode: str = "interpolate", apply: str = PATCH, strict: bool = False) -> dict:
        out = self.load(model, None, lokr_name, strength_model, 0.0, scale_rule, dora_mode, apply, strict)
        return {"ui": out["ui"], "result": out["result"][:1]}


NODES = {
    "LoKrLoader": (LoKrLoader, "LoKr Loader"),
    "LoKrLoaderModelOnly": (LoKrLoaderModelOnly, "LoKr Loader (model only)"),
}
