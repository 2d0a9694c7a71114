"""LoKr Block Weights: the LoKr loader with per-block strengths (LBW vectors, mapped by block ID).

The vector / preset / ``%`` syntax and its parser are ``lokr_core.keymap.block_weights``
(``parse_block_weights``, ``PRESETS``, ``DIT_PRESETS``); the block of each ComfyUI weight key comes
from ``block_multiplier`` (SD UNets: LDM numbering, ``diffusion_model.input_blocks.4...`` -> IN04;
transformers: ``diffusion_model.double_blocks.3...`` -> ``double 3``, ``joint_blocks.N`` ->
``joint N``, ``layers.N`` / ``blocks.N`` -> ``layers N``; text encoders -> BASE). This node only
picks the family and the model's block counts, parses, and hands ``multiplier(key)`` to the loader.
The populated vector (every block -> value) is returned as STRING so users see what applied.
"""
from __future__ import annotations

from typing import Any, Mapping

from ..lokr_core.base.errors import LoKrConfigError, LoKrFormatError
from ..lokr_core.keymap.block_weights import (DIT_PRESETS, PRESETS, block_multiplier, format_block_weights,
                                              parse_block_weights)
from ..lokr_core.keymap.family import FAMILY_LABELS, target_dit_family
from ..lokr_core.keymap.family_signatures import DEFAULT_BLOCKS, ORDER, dit_block_counts
from .common import (CATEGORY, PATCH, apply_input, dora_mode_input, file_token, lokr_name_input, scale_rule_input,
                     strength_input, validate_inputs)
from .planning import WeightsCache, load_and_apply, plan_report

SD_FAMILIES = ("sd1", "sd2", "sdxl")
DIT_FAMILIES = tuple(f for f in ORDER if f in DEFAULT_BLOCKS)
"""Transformer families with a block layout in lokr_core (``DEFAULT_BLOCKS``), in its label order."""
FAMILIES = ["auto", *SD_FAMILIES, *DIT_FAMILIES]
CUSTOM = "custom"
_CROSS_DIM = {768: "sd1", 1024: "sd2"}


def preset_names() -> list[str]:
    """``custom`` (use the vector text), lokr_core's SD presets, then its DiT presets."""
    return [CUSTOM] + list(PRESETS) + list(DIT_PRESETS)


def is_dit(family: str | None) -> bool:
    """True for a transformer family id or ``/``-joined verdict (``flux``, ``flux/chroma``)."""
    return bool(family) and str(family).split("/")[0] in DEFAULT_BLOCKS


def detect_family(model: Any) -> str:
    """SD family of the connected model: ``sdxl``; ``sd1`` / ``sd2`` from the cross-attention input
    width (768 / 1024); ``sd1/sd2`` when nothing tells (the two share their block layout).

    SDXL: ComfyUI's model class name contains "SDXL", or the UNet has a ``label_emb`` (ADM) input.
    """
    if "sdxl" in type(getattr(model, "model", None)).__name__.lower():
        return "sdxl"
    sd = model.model.state_dict()
    if any(k.startswith("diffusion_model.label_emb.") for k in sd):
        return "sdxl"
    for k, v in sd.items():
        if k.endswith("attn2.to_k.weight") and len(getattr(v, "shape", ())) == 2:
            return _CROSS_DIM.get(int(v.shape[1]), "sd1/sd2")
    return "sd1/sd2"


def model_layout(model: Any) -> tuple[str, dict[str, int] | None]:
    """(family verdict, DiT block counts) of the connected model.

    Transformers: ``target_dit_family`` over the diffusion model's weight shapes (``"flux"``,
    ``"flux/chroma"``, ``"sd3"``, ...) and {block kind: count} of its weights (``{"double": 19,
    "single": 38}``); SD UNets: :func:`detect_family` and None.
    """
    sd = model.model.state_dict()
    dit = target_dit_family(sd)
    if dit:
        return dit, dit_block_counts(sd.keys(), dit) or None
    return detect_family(model), None


def _groups(family: str, blocks: Mapping[str, int] | None) -> set[str]:
    return set(blocks or DEFAULT_BLOCKS.get(family.split("/")[0], {}))


def choose_family(choice: str, model: Any) -> tuple[str, dict[str, int] | None, str]:
    """(family to parse with, DiT block counts or None, the model's own verdict) for the ``family`` input.

    ``auto`` takes the model's; a chosen family must fit the model's kind of blocks (an SD family on an
    SD UNet; a transformer family whose block groups, double / single, joint or layers, are the
    model's): else LoKrConfigError naming both. A chosen transformer family uses the model's counts.
    """
    detected, blocks = model_layout(model)
    if choice == "auto":
        return detected, blocks, detected
    if is_dit(choice) != is_dit(detected) or (is_dit(choice) and _groups(choice, None) != _groups(detected, blocks)):
        have = FAMILY_LABELS.get(detected, detected)
        groups = ", ".join(sorted(_groups(detected, blocks))) if is_dit(detected) else "UNet IN / MID / OUT"
        raise LoKrConfigError(f"block weights: family {choice!r} does not fit the connected model, which looks like "
                              f"{have} (blocks: {groups}); choose 'auto' or a family with those blocks")
    return choice, (blocks if is_dit(choice) else None), detected


def parse_vector(text: str, preset: str, family: str, a: float, b: float, seed: int,
                 blocks: Mapping[str, int] | None = None) -> dict[str, float]:
    """{block ID: value} for the chosen preset (or the free text when preset is ``custom``).

    ``blocks``: the model's DiT block counts. A DiT preset on an SD family is refused here (lokr_core
    refuses SD presets on DiT families)."""
    spec = text if preset == CUSTOM else preset
    if spec.strip() in DIT_PRESETS and not is_dit(family):
        raise LoKrConfigError(f"block weights: preset {spec.strip()!r} is for transformer (DiT) models; for "
                              f"{FAMILY_LABELS.get(family, family)} use an SD preset "
                              f"({', '.join(n for n in PRESETS if n.startswith('SDXL' if family == 'sdxl' else 'SD-'))}) "
                              "or a vector")
    return parse_block_weights(spec, family, a=a, b=b, seed=seed, blocks=blocks if is_dit(family) else None)


def multiplier_for(values: dict[str, float], family: str | None = None):
    """``key -> value`` of the block holding ComfyUI weight ``key`` (a str or a ``(key, ...)`` tuple).

    ``family``: the model's family (a transformer's decides what ``transformer_blocks N`` is)."""
    fam = family if is_dit(family) else None

    def mult(key: Any) -> float:
        return block_multiplier(values, key if isinstance(key, str) else key[0], family=fam)
    return mult


class LoKrBlockWeights:
    """LoKr Block Weights node: MODEL, CLIP + file + per-block vector -> patched clones + populated vector."""

    CATEGORY = CATEGORY
    DESCRIPTION = ("Applies a LoKr with a strength per block (sd-webui-lora-block-weight / Inspire LBW syntax). "
                   "SD UNets: 17 or 26 values for SD1.x/SD2.x, 12 or 20 for SDXL. Transformers: BASE then every "
                   "block (Flux.1: double 0-18, single 0-37 = 58 values) or one value per group (BASE, double, "
                   "single); SD3 joint N; layers N for the others. Presets, A/B/R/U tokens and the "
                   "%default=1,in=0.5,out3-5=0 / %base=1,double=0.5,single3-5=0 form. Values are mapped by block "
                   "ID, never by position among the blocks a file happens to touch; the populated vector is returned.")
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
            "preset": (preset_names(), {"default": CUSTOM, "tooltip": "A named preset (Inspire-Pack names; DIT-* and "
                                        "FLUX-* for transformers), or 'custom' to use the vector below."}),
            "block_vector": ("STRING", {"default": "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1", "multiline": False,
                                        "tooltip": "Comma-separated values, BASE first: SD 17 (BASE,IN01,IN02,IN04,IN05,"
                                        "IN07,IN08,MID,OUT03..OUT11) or 26 (BASE,IN00..IN11,MID,OUT00..OUT11); SDXL 12 "
                                        "or 20; Flux.1 58 (BASE, double 0..18, single 0..37) or 3 (BASE,double,single); "
                                        "SD3 BASE + joint N; others BASE + layers N. Tokens A, a=A/2, B, b=B/2, R (0..3), "
                                        "U (-1.5..1.5); or a preset name; or %default=1,in=0.5,mid=0,out3-5=0 "
                                        "(%base=1,double=0.5,single3-5=0 for transformers)."}),
            "family": (FAMILIES, {"default": "auto", "tooltip": "Block layout: 'auto' reads the family and its block "
                                  "counts from the connected model."}),
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

    @classmethod
    def IS_CHANGED(cls, lokr_name: Any = None, **_: Any) -> str:
        """The file's token: a file rewritten under the same name runs the node again."""
        return file_token("loras", lokr_name)

    def load(self, model: Any, clip: Any, lokr_name: str, strength_model: float, strength_clip: float,
             preset: str = CUSTOM, block_vector: str = "", family: str = "auto", A: float = 4.0, B: float = 1.0,
             rng_seed: int = 0, scale_rule: str = "file", dora_mode: str = "interpolate", apply: str = PATCH) -> dict:
        try:  # a bad family or vector fails before any work
            fam, blocks, detected = choose_family(family, model)
            values = parse_vector(block_vector, preset, fam, A, B, rng_seed, blocks)
        except Exception as e:
            raise LoKrFormatError(f"LoKr Block Weights ({lokr_name!r}): {e}") from None
        new_model, new_clip, plan = load_and_apply(self._cache, model, clip, lokr_name, strength_model, strength_clip,
                                                   scale_rule, dora_mode, multiplier=multiplier_for(values, fam),
                                                   apply=apply)
        text = format_block_weights(values)
        report = dict(plan_report(plan, lokr_name), block_weights=values, block_family=fam,
                      block_family_label=FAMILY_LABELS.get(fam, fam), blocks=blocks)
        report.setdefault("model_family", detected)
        report.setdefault("model_family_label", FAMILY_LABELS.get(detected, detected))
        return {"ui": {"lokr_report": [report], "text": [text]}, "result": (new_model, new_clip, text)}


NODES = {"LoKrBlockWeights": (LoKrBlockWeights, "LoKr Block Weights")}
