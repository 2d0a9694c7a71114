"""Reference configs of SD1.5, SD2.1 and SDXL, and their weight key lists without any checkpoint.

:func:`family_target` builds the family's diffusers UNet and transformers text encoders on the
``meta`` device (no memory, no download; needs diffusers and transformers) and returns their weight
shapes under LDM checkpoint keys (``layout="ldm"``) or diffusers pipeline keys
(``layout="diffusers"``: ``unet.``, ``text_encoder.``, ``text_encoder_2.``). The result is a
read-only {key: shape} that :func:`lokr_core.keymap.resolve.resolve` takes as a target, e.g. to report how a
file resolves on "an SDXL model" without loading one.
"""
from __future__ import annotations

from functools import lru_cache
from types import MappingProxyType
from typing import Mapping

from ..base.errors import LoKrKeyError
from .clip_text import canonical_text_path, hf_to_openclip
from .ldm_unet import diffusers_to_ldm, layout_from_config, unet_rules

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8,
)
SD21_UNET = dict(SD15_UNET, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True)
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              projection_dim=768, vocab_size=49408, max_position_embeddings=77, hidden_act="quick_gelu")
OPENCLIP_H = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
                  projection_dim=1024, vocab_size=49408, max_position_embeddings=77, hidden_act="gelu")
OPENCLIP_G = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                  projection_dim=1280, vocab_size=49408, max_position_embeddings=77, hidden_act="gelu")

FAMILIES: dict[str, dict] = {
    "sd1": {"unet": SD15_UNET, "te1": (CLIP_L, "hf", "cond_stage_model.transformer.")},
    "sd2": {"unet": SD21_UNET, "te1": (OPENCLIP_H, "openclip", "cond_stage_model.model.")},
    "sdxl": {"unet": SDXL_UNET, "te1": (CLIP_L, "hf", "conditioner.embedders.0.transformer."),
             "te2": (OPENCLIP_G, "openclip", "conditioner.embedders.1.model.")},
}
"""family -> UNet config and text encoders (config, LDM layout, LDM prefix)."""
_BARE_PARAMS = {"text_projection": "text_projection", "embeddings.position_embedding": "positional_embedding"}
_DIFFUSERS_PREFIX = {"te1": "text_encoder.", "te2": "text_encoder_2."}


def _openclip_shapes(hf: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """transformers CLIP parameter shapes -> OpenCLIP keys (q/k/v fused into in_proj_weight/bias)."""
    out: dict[str, tuple[int, ...]] = {}
    for key, shape in hf.items():
        path, _, param = canonical_text_path(key).rpartition(".")
        if path in _BARE_PARAMS and param == "weight":  # bare parameters; text_projection transposed
            out[_BARE_PARAMS[path]] = tuple(reversed(shape)) if path == "text_projection" else shape
            continue
        oc = hf_to_openclip(path)
        if oc is None:
            continue
        oc_path, block = oc
        if block is None:
            out[f"{oc_path}.{param}"] = shape
        elif block == 0:
            out[f"{oc_path}_{param}"] = (3 * shape[0],) + tuple(shape[1:])
    return out


@lru_cache(maxsize=8)
def family_target(family: str, layout: str = "ldm") -> Mapping[str, tuple[int, ...]]:
    """Read-only {weight key: shape} of a full-size ``family`` ("sd1" | "sd2" | "sdxl") model.

    ``layout``: "ldm" (single-file checkpoint keys) or "diffusers" (pipeline keys). Raises
    LoKrKeyError for another family or layout; ImportError without diffusers / transformers.
    """
    if family not in FAMILIES:
        raise LoKrKeyError(f"family_target: family {family!r} is not known; expected one of {sorted(FAMILIES)}")
    if layout not in ("ldm", "diffusers"):
        raise LoKrKeyError(f"family_target: layout {layout!r} is not known; expected 'ldm' or 'diffusers'")
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    spec = FAMILIES[family]
    out: dict[str, tuple[int, ...]] = {}
    with torch.device("meta"):
        unet = UNet2DConditionModel(**spec["unet"])
    rules = unet_rules(layout_from_config(unet.config))
    for k, v in unet.state_dict().items():
        out[("model.diffusion_model." + diffusers_to_ldm(k, rules)) if layout == "ldm" else "unet." + k] = tuple(v.shape)
    for comp in ("te1", "te2"):
        if comp not in spec:
            continue
        cfg, te_layout, prefix = spec[comp]
        cls = CLIPTextModelWithProjection if comp == "te2" else CLIPTextModel
        with torch.device("meta"):
            te = cls(CLIPTextConfig(**cfg))
        shapes = {k: tuple(v.shape) for k, v in te.state_dict().items()}
        if layout == "diffusers":
            out.update({_DIFFUSERS_PREFIX[comp] + k: s for k, s in shapes.items()})
        elif te_layout == "openclip":
            out.update({prefix + k: s for k, s in _openclip_shapes(shapes).items()})
        else:
            out.update({prefix + "text_model." + canonical_text_path(k): s for k, s in shapes.items()
                        if k.startswith(("text_model.", "encoder.", "embeddings.", "final_layer_norm."))})
    return MappingProxyType(out)
