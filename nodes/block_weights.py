"""LoKr Block Weights: the LoKr loader with per-block strengths (LBW vectors, mapped by block ID).

The vector / preset / ``%`` syntax and its parser are ``lokr_core.keymap.block_weights``
(``parse_block_weights``, ``PRESETS``); the block of each ComfyUI weight key comes from
``block_multiplier`` (LDM numbering: ``diffusion_model.input_blocks.4...`` -> IN04, text encoders
-> BASE). This node only picks the family, parses, and hands ``multiplier(key)`` to the loader.
The populated vector (every block -> value) is returned as STRING so users see what applied.
"""
from __future__ import annotations

from typing import Any

from ..lokr_core.base.errors import LoKrFormatError
from ..lokr_core.keymap.block_weights import PRESETS, block_multiplier, format_block_weights, parse_block_weights
from .common import (CATEGORY, PATCH, apply_input, dora_mode_input, lokr_name_input, scale_rule_input, strength_input,
                     validate_inputs)
from .planning import WeightsCache, load_and_apply, plan_report

FAMILIES = ["auto", "sd1", "sd2", "sdxl"]
CUSTOM = "custom"


def preset_names() -> list[str]:
    """``custom`` (use the vector text) followed by lokr_core's preset names."""
    return [CUSTOM] + list(PRESETS)


def detect_family(model: Any) -> str:
    """``sdxl`` or ``sd1`` for the connected model (SD2.x shares SD1's block layout).

    SDXL: ComfyUI's model class name contains "SDXL", or the UNet has a ``label_emb`` (ADM) input.
    """
    if "sdxl" in type(getattr(model, "model", None)).__name__.lower():
        return "sdxl"
    keys = model.model.state_dict().keys()
    return "sdxl" if any(k.startswith("diffusion_model.label_emb.") for k in keys) else "sd1"


def parse_vector(text: str, preset: str, family: str, a: float, b: float, seed: int) -> dict[str, float]:
    """{block ID: value} for the chosen preset (or the free text when preset is ``custom``)."""
    spec = text if preset == CUSTOM else preset
    return parse_block_weights(spec, family, a=a, b=b, seed=seed)


def multiplier_for(values: dict[str, float]):
    """``key -> value`` of the block holding ComfyUI weight ``key`` (str or (key, offset) tuple)."""
    def mult(key: Any) -> float:
        return block_multiplier(values, key if isinstance(key, str) else key[0])
    return mult


class LoKrBlockWeights:
    """LoKr Block Weights node: MODEL, CLIP + file + per-block vector -> patched clones + populated vector."""

    CATEGORY = CATEGORY
    DESCRIPTION = ("Applies a LoKr with a strength per UNet block (sd-webui-lora-block-weight / Inspire LBW syntax: "
                   "17 or 26 values for SD1.x/SD2.x, 12 or 20 for SDXL, presets, A/B/R/U tokens and the "
                   "%default=1,in=0.5,out3-5=0 form). Values are mapped by block ID, never by position among the "
                   "blocks a file happens to touch; the populated vector is returned.")
    RETURN_TYPES = ("MODEL", "CLIP", "STRING")
    RETURN_NAMES = ("MODEL", "CLIP", "block_weights")
    OUTPUT_TOOLTIPS = ("The diffusion model with the LoKr applied per block.", "The text encoder (BASE value).",
                       "The populated vector: every block ID and the value applied to it.")
    FUNCTION = "load"

    def __init__(self) -> None:
        self._cache = WeightsCache()

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "model": ("MODEL", {"tooltip": "The diffusion model (cloned, never changed)."}),
            "clip": ("CLIP", {"tooltip": "The text encoder (cloned, never changed); it gets the BASE value."}),
            "lokr_name": lokr_name_input(),
            "strength_model": strength_input("Overall strength on the diffusion model (times each block's value)."),
            "strength_clip": strength_input("Overall strength on the text encoder (times BASE)."),
            "preset": (preset_names(), {"default": CUSTOM, "tooltip": "A named preset (Inspire-Pack names), or "
                                        "'custom' to use the vector below."}),
            "block_vector": ("STRING", {"default": "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1", "multiline": False,
                                        "tooltip": "Comma-separated values, BASE first: SD 17 (BASE,IN01,IN02,IN04,IN05,"
                                        "IN07,IN08,MID,OUT03..OUT11) or 26 (BASE,IN00..IN11,MID,OUT00..OUT11); SDXL 12 "
                                        "or 20. Tokens A, a=A/2, B, b=B/2, R (0..3), U (-1.5..1.5); or a preset name; or "
                                        "%default=1,in=0.5,mid=0,out3-5=0."}),
            "family": (FAMILIES, {"default": "auto", "tooltip": "Block layout: 'auto' reads it from the connected model."}),
        }, "optional": {
            "A": ("FLOAT", {"default": 4.0, "min": -100.0, "max": 100.0, "step": 0.01, "tooltip": "Value of token A (a = A/2)."}),
            "B": ("FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01, "tooltip": "Value of token B (b = B/2)."}),
            "rng_seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 31 - 1, "tooltip": "Seed for the random R and U tokens."}),
            "scale_rule": scale_rule_input(),
            "dora_mode": dora_mode_input(),
            "apply": apply_input(),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, lokr_name: Any = None, strength_model: Any = None, strength_clip: Any = None,
                        A: Any = None, B: Any = None) -> bool | str:
        return validate_inputs(lokr_name, strength_model=strength_model, strength_clip=strength_clip, A=A, B=B)

    def load(self, model: Any, clip: Any, lokr_name: str, strength_model: float, strength_clip: float,
             preset: str = CUSTOM, block_vector: str = "", family: str = "auto", A: float = 4.0, B: float = 1.0,
             rng_seed: int = 0, scale_rule: str = "file", dora_mode: str = "interpolate", apply: str = PATCH) -> dict:
        fam = detect_family(model) if family == "auto" else family
        try:
            values = parse_vector(block_vector, preset, fam, A, B, rng_seed)  # a bad vector fails before any work
        except Exception as e:
            raise LoKrFormatError(f"LoKr Block Weights ({lokr_name!r}): {e}") from None
        new_model, new_clip, plan = load_and_apply(self._cache, model, clip, lokr_name, strength_model, strength_clip,
                                                   scale_rule, dora_mode, multiplier=multiplier_for(values), apply=apply)
        text = format_block_weights(values)
        report = dict(plan_report(plan, lokr_name), block_weights=values, family=fam)
        return {"ui": {"lokr_report": [report], "text": [text]}, "result": (new_model, new_clip, text)}


NODES = {"LoKrBlockWeights": (LoKrBlockWeights, "LoKr Block Weights")}
