"""File module names -> (model component, underscore form), for every naming style a LoKr file uses.

Styles: kohya ``lora_unet_<path>`` (diffusers or LDM path, dots as ``_``), ``lora_te_`` / ``lora_te1_``
(CLIP-L) / ``lora_te2_`` (OpenCLIP-G), LyCORIS ``lycoris_<path>``, PEFT ``base_model.model.`` with
optional ``unet.`` / ``text_encoder.`` / ``text_encoder_2.``, diffusers pipeline prefixes, LDM checkpoint
prefixes (``model.diffusion_model.``, ``cond_stage_model.transformer.``, ``conditioner.embedders.N.``)
and ComfyUI's (``diffusion_model.``, ``clip_l.transformer.``, ...); for DiT models diffusers / PEFT
``transformer.`` and OneTrainer ``lora_transformer_`` (the diffusion model, like ``lora_unet_``), and
their text encoders' names (``text_encoders.t5xxl.transformer.``, ``lora_te3_``, ...: :mod:`.te_names`).

Underscores are ambiguous (``to_out_0`` is ``to_out.0``), so nothing here turns ``_`` back into
dots: names are compared in underscore form against the underscore form of the target's real module
paths (:mod:`lokr_core.keymap.targets`).
"""
from __future__ import annotations

from ..base.peft_names import strip_peft_prefix
from . import te_names

COMPONENTS = ("unet", "te1", "te2", "t5", "llm")
"""``te1``: the (first) text encoder, CLIP-L for SD1/SDXL, OpenCLIP-H for SD2; ``te2``: SDXL OpenCLIP-G;
``t5`` / ``llm``: T5-style and language-model text encoders of DiT models (:mod:`.te_names`).
File names may also hint ``te`` / ``te3`` / ``te4``: some text encoder, whichever the target holds."""

TEXT_HINTS = ("te1", "te2", "te3", "te4", "te", "t5", "llm")
"""Component hints that name a text encoder."""


NAME_PREFIXES: dict[str, str | None] = {
    "lora_unet_": "unet", "lora_te_": "te1", "lora_te1_": "te1", "lora_te2_": "te2",
    "lycoris_te_": "te1", "lycoris_te1_": "te1", "lycoris_te2_": "te2", "lycoris_": None,
    "unet.": "unet", "text_encoder.": "te1", "text_encoder_2.": "te2",
    "transformer.": "unet", "lora_transformer_": "unet",
    "model.diffusion_model.": "unet", "diffusion_model.": "unet",
    "cond_stage_model.transformer.": "te1", "cond_stage_model.model.": "te1",
    "conditioner.embedders.0.transformer.": "te1", "conditioner.embedders.1.model.": "te2",
    "clip_l.transformer.": "te1", "clip_h.transformer.": "te1", "clip_g.transformer.": "te2",
    **te_names.name_prefixes(),
}
"""Prefix of a file module name -> component it names (None: any). Longest prefix wins."""

_ORDERED = sorted(NAME_PREFIXES, key=len, reverse=True)


def underscore(path: str) -> str:
    """``down_blocks.0.attentions.0`` -> ``down_blocks_0_attentions_0`` (the kohya form)."""
    return path.replace(".", "_")


def split_name(name: str) -> tuple[str | None, str]:
    """File module name -> (component hint or None, underscore form of the rest).

    ``lora_te2_text_model_encoder_layers_0_mlp_fc1`` -> (``te2``, ``text_model_encoder_layers_0_mlp_fc1``);
    ``base_model.model.unet.conv_in`` and ``unet.base_model.model.conv_in`` -> (``unet``, ``conv_in``);
    ``base_model.model.conv_in`` -> (None, ``conv_in``).
    """
    rest = strip_peft_prefix(name)
    for prefix in _ORDERED:
        if rest.startswith(prefix):
            return NAME_PREFIXES[prefix], underscore(strip_peft_prefix(rest[len(prefix):]))
    return None, underscore(rest)


def kohya_name(component: str, path: str) -> str:
    """The kohya file name of a module: (``unet``, ``down_blocks.0.resnets.0.conv1``) ->
    ``lora_unet_down_blocks_0_resnets_0_conv1``; ``te``/``te1``/``te2`` give ``lora_te_``/``lora_te1_``/``lora_te2_``."""
    prefix = {"unet": "lora_unet_", "te": "lora_te_", "te1": "lora_te1_", "te2": "lora_te2_"}[component]
    return prefix + underscore(path)
