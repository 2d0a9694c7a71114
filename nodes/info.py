"""LoKr Info: a text report of one LoKr file, against the connected MODEL / CLIP when given.

The file part (layouts, ranks, alphas, scales under the chosen rule, DoRA, metadata, warnings such
as the full/full alpha ambiguity) is ``lokr_core.ops.report.summarize`` + ``format_report``; the model
part uses the same ComfyUI key glue as the loaders, so what it calls matched is exactly what the
loader patches, and shape mismatches are listed instead of raised.
"""
from __future__ import annotations

from typing import Any

from ..lokr_core.ops.report import format_report, summarize
from .common import CATEGORY, lokr_name_input, lokr_path, scale_rule_input, validate_inputs
from .keys import base_key, target_shape
from .planning import WeightsCache, match_modules


def model_match(weights: Any, model: Any = None, clip: Any = None) -> dict:
    """{matched, total, unmatched: [names], shape_mismatch: {name: text}, unet, clip} for the connected models.

    Never raises on a mismatch: it reports it (the loaders refuse such files).
    """
    names = list(weights.module_names)
    (_, m_unet), (_, m_clip), unmatched = match_modules(names, model, clip)
    mismatch: dict[str, str] = {}
    for matched, owner in ((m_unet, getattr(model, "model", None)), (m_clip, getattr(clip, "cond_stage_model", None))):
        sd = owner.state_dict() if owner is not None else {}
        for name, key in matched.items():
            try:
                weights.shapes(name).check_target(target_shape(key, sd), weights.source, name)
            except Exception as e:  # LoKrShapeError: report it
                mismatch[name] = f"{base_key(key)}: {e}"
    return {"matched": len(m_unet) + len(m_clip) - len(mismatch), "total": len(names), "unet": len(m_unet),
            "clip": len(m_clip), "unmatched": unmatched, "shape_mismatch": mismatch}


def format_match(match: dict, max_names: int = 20) -> str:
    """``model_match``'s dict as text lines."""
    lines = [f"Against the connected model: {match['matched']}/{match['total']} modules match "
             f"({match['unet']} diffusion model, {match['clip']} text encoder)"]
    for name in match["unmatched"][:max_names]:
        lines.append(f"  unmatched: {name}")
    if len(match["unmatched"]) > max_names:
        lines.append(f"  ... and {len(match['unmatched']) - max_names} more unmatched")
    for name, text in match["shape_mismatch"].items():
        lines.append(f"  SHAPE MISMATCH: {text}")
    return "\n".join(lines)


def info_text(weights: Any, model: Any = None, clip: Any = None, scale_rule: Any = "file") -> tuple[str, dict]:
    """(report text, match dict or {}) for ``weights`` and the optional connected models."""
    text = format_report(summarize(weights, scale_rule=scale_rule))
    match: dict = {}
    if model is not None or clip is not None:
        match = model_match(weights, model, clip)
        text = text + "\n" + format_match(match)
    return text, match


class LoKrInfo:
    """LoKr Info node: STRING report, also shown on the node."""

    CATEGORY = CATEGORY
    DESCRIPTION = ("Describes a LoKr file: modules per block, layouts (full / split / Tucker), ranks, alphas and the "
                   "scale each module gets, DoRA, training metadata and warnings; with a MODEL / CLIP connected, "
                   "which modules match, which do not and any shape mismatch.")
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("report",)
    OUTPUT_TOOLTIPS = ("The report as text.",)
    OUTPUT_NODE = True
    FUNCTION = "info"

    def __init__(self) -> None:
        self._cache = WeightsCache()

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "lokr_name": lokr_name_input(),
            "scale_rule": scale_rule_input(),
        }, "optional": {
            "model": ("MODEL", {"tooltip": "Optional: report which modules match this diffusion model."}),
            "clip": ("CLIP", {"tooltip": "Optional: report which modules match this text encoder."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, lokr_name: Any = None) -> bool | str:
        return validate_inputs(lokr_name)

    def info(self, lokr_name: str, scale_rule: str = "file", model: Any = None, clip: Any = None) -> dict:
        weights = self._cache.get(lokr_path(lokr_name))
        text, match = info_text(weights, model, clip, scale_rule)
        ui: dict = {"text": [text]}
        if match:
            ui["lokr_report"] = [dict(match, file=lokr_name)]
        return {"ui": ui, "result": (text,)}


NODES = {"LoKrInfo": (LoKrInfo, "LoKr Info")}
