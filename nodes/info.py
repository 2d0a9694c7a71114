"""LoKr Info: a text report of one LoKr file, against the connected MODEL / CLIP when given.

The file part (layouts, ranks, alphas, scales under the chosen rule, DoRA, metadata, warnings such
as the full/full alpha ambiguity) is ``lokr_core.ops.report.summarize`` + ``format_report``; the model
part uses the same ComfyUI key glue as the loaders, so what it calls matched is exactly what the
loader patches (ComfyUI's key map, then lokr_core's resolver against the model's weights), and
shape mismatches, skipped modules and the nearest weights of unmatched ones are listed instead of
raised; the connected model's family is named, with a warning when the file's family differs.
"""
from __future__ import annotations

from typing import Any

from ..lokr_core.keymap.family import families_conflict
from ..lokr_core.ops.report import format_report, summarize
from .common import CATEGORY, file_token, lokr_name_input, lokr_path, scale_rule_input, validate_inputs
from .keys import base_key, target_shape, weight_shapes
from .planning import WeightsCache, family_label, file_family, match_modules, model_family_of


def model_match(weights: Any, model: Any = None, clip: Any = None) -> dict:
    """The connected models' match, never raising on a mismatch (the loaders skip or refuse such modules).

    {matched, total, unet, clip, unmatched: [names], nearest: {name: [keys]}, shape_mismatch: {name:
    text}, skipped: {name: reason} (shape mismatches included), family / family_label (the file's),
    model_family / model_family_label (the MODEL's)}. Every ComfyUI key form is handled (row
    blocks, functions), as in the loaders.
    """
    names = list(weights.module_names)
    m = match_modules(weights, model, clip)
    mismatch: dict[str, str] = {}
    for matched, owner in ((m.unet, getattr(model, "model", None)), (m.clip, getattr(clip, "cond_stage_model", None))):
        sd = weight_shapes(owner)
        for name, key in matched.items():
            try:
                weights.shapes(name).check_target(target_shape(key, sd), weights.source, name)
            except Exception as e:  # LoKrShapeError: report it
                mismatch[name] = f"{base_key(key)}: {e}"
    skipped = dict(m.skipped, **{n: f"shape mismatch: {t}" for n, t in mismatch.items()})
    fam, mfam = file_family(weights), model_family_of(model)
    return {"matched": len(m.unet) + len(m.clip) - len(mismatch), "total": len(names), "unet": len(m.unet),
            "clip": len(m.clip), "unmatched": list(m.unmatched), "nearest": dict(m.nearest),
            "shape_mismatch": mismatch, "skipped": skipped, "family": fam, "family_label": family_label(fam),
            "model_family": mfam, "model_family_label": family_label(mfam)}


def format_match(match: dict, max_names: int = 20) -> str:
    """``model_match``'s dict as text lines."""
    lines = []
    if match.get("model_family"):
        line = f"Connected model: {match['model_family_label']}"
        if families_conflict(match.get("family"), match["model_family"]):
            line += f" (WRONG MODEL: the file looks like a {match['family_label']} LoKr)"
        lines.append(line)
    lines.append(f"Against the connected model: {match['matched']}/{match['total']} modules match "
                 f"({match['unet']} diffusion model, {match['clip']} text encoder)")
    for name in match["unmatched"][:max_names]:
        near = match.get("nearest", {}).get(name)
        lines.append(f"  unmatched: {name}" + (f" (nearest: {', '.join(near)})" if near else ""))
    if len(match["unmatched"]) > max_names:
        lines.append(f"  ... and {len(match['unmatched']) - max_names} more unmatched")
    for name, text in match["shape_mismatch"].items():
        lines.append(f"  SHAPE MISMATCH: {text}")
    for name, why in match.get("skipped", {}).items():
        if name not in match["shape_mismatch"]:
            lines.append(f"  skipped: {name}: {why}")
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

    @classmethod
    def IS_CHANGED(cls, lokr_name: Any = None, **_: Any) -> str:
        """The file's token: a file rewritten under the same name runs the node again."""
        return file_token("loras", lokr_name)

    def info(self, lokr_name: str, scale_rule: str = "file", model: Any = None, clip: Any = None) -> dict:
        weights = self._cache.get(lokr_path(lokr_name))
        text, match = info_text(weights, model, clip, scale_rule)
        ui: dict = {"text": [text]}
        if match:
            ui["lokr_report"] = [dict(match, file=lokr_name)]
        return {"ui": ui, "result": (text,)}


NODES = {"LoKrInfo": (LoKrInfo, "LoKr Info")}
