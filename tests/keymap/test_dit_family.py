"""DiT family detection against real module names: ComfyUI 0.28.0's own weights and LoRA key map
(tests/support/comfy_dit_keys.json, written by tools/comfy_dit_keylists.py) and diffusers' model
classes built on the meta device, in every key format trainers ship."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from lokr_core.keymap.family import (FAMILY_LABELS, families_conflict, family_signals, model_family, pick_family,
                                     target_dit_family)

COMFY = json.loads((Path(__file__).parents[1] / "support" / "comfy_dit_keys.json").read_text())
EXPECTED = {"sd3": "sd3", "sd35": "sd3", "flux": "flux", "flux2": "flux2", "chroma": "chroma", "auraflow": "auraflow",
            "pixart_sigma": "pixart", "hunyuan_dit": "hunyuan_dit", "hunyuan_video": "hunyuan_video",
            "hidream": "hidream", "lumina2": "lumina2", "zimage": "zimage", "qwen_image": "qwen_image", "wan21": "wan",
            "wan22_5b": "wan", "ltxv": "ltxv", "ace": "ace", "mochi": "mochi", "kandinsky5": "kandinsky5",
            "omnigen2": "omnigen2", "krea2": "krea2", "ernie": "ernie", "cosmos_predict2": "cosmos"}
"""tools/comfy_dit_keylists.py family -> our family id."""
FORMATS = ("lycoris_", "transformer.", "base_model.model.", "lora_transformer_", "unet.base_model.model.")


def _family(names, shapes=None):
    return pick_family(family_signals(names, shapes))


def test_every_comfy_family_is_stored():
    assert set(COMFY) == set(EXPECTED)


@pytest.mark.parametrize("fam", sorted(COMFY))
def test_comfy_model_weights(fam):
    """A ComfyUI-layout model (diffusion_model.* keys with shapes) and the same keys under model.*."""
    w = {k: tuple(s) for k, s in COMFY[fam]["weights"].items()}
    assert target_dit_family(w) == EXPECTED[fam]
    assert target_dit_family({"model." + k: s for k, s in w.items()}) == EXPECTED[fam]


@pytest.mark.parametrize("fam", sorted(COMFY))
def test_comfy_names_ai_toolkit_and_kohya(fam):
    """ai-toolkit ``diffusion_model.<path>`` and kohya / musubi ``lora_unet_<path with _>`` names, with
    the factor shapes a file gives (the weight shape)."""
    w = {k[:-len(".weight")]: tuple(s) for k, s in COMFY[fam]["weights"].items()}
    assert _family(list(w), w) == EXPECTED[fam]
    kohya = {"lora_unet_" + k[len("diffusion_model."):].replace(".", "_"): s for k, s in w.items()}
    assert _family(list(kohya), kohya) == EXPECTED[fam]
    assert model_family(list(kohya), kohya) == EXPECTED[fam]


def _comfy_format_names(fam):
    """ComfyUI's own LoRA key map names of ``fam``, by key format, with the target weight's shape."""
    weights = COMFY[fam]["weights"]
    out: dict[str, dict[str, tuple]] = {}
    for name, target in COMFY[fam]["lora_keys"].items():
        key, rows = (target, None) if isinstance(target, str) else target
        shape = tuple(weights[key])
        if rows is not None:
            shape = (rows[2],) + shape[1:]
        fmt = next((p for p in sorted(FORMATS, key=len, reverse=True) if name.startswith(p)), "bare")
        out.setdefault(fmt, {})[name] = shape
    return out


WITH_SHAPES = {"chroma": "flux/chroma"}
"""ComfyUI maps Flux.1's diffusers names for Chroma too; Chroma without its own layers has Flux's
names and widths: both are named."""
NAMES_ONLY: dict = {}


@pytest.mark.parametrize("fam", sorted(COMFY))
def test_comfy_key_map_formats(fam):
    """Every key format ComfyUI maps for the family (lycoris_, transformer., base_model.model.,
    lora_transformer_, bare diffusers names), with shapes: the family; names alone: the family or
    a set holding it."""
    for fmt, names in _comfy_format_names(fam).items():
        got = _family(list(names), names)
        assert got == EXPECTED[fam] or got == WITH_SHAPES.get(fam), (fmt, got)
        bare = _family(list(names))
        assert EXPECTED[fam] in bare.split("/") or bare == NAMES_ONLY.get((fam, fmt)), (fmt, bare)


def _diffusers(cls_name, **cfg):
    diffusers = pytest.importorskip("diffusers")
    cls = getattr(diffusers, cls_name, None)
    if cls is None:
        pytest.skip(f"diffusers {diffusers.__version__} has no {cls_name}")
    with torch.device("meta"):
        model = cls(**cfg)
    return {k[:-len(".weight")]: tuple(v.shape) for k, v in model.state_dict().items()
            if k.endswith(".weight") and v.ndim >= 2}


DIFFUSERS = {
    "FluxTransformer2DModel": ("flux", {}), "Flux2Transformer2DModel": ("flux2", {}),
    "ChromaTransformer2DModel": ("chroma", {}),
    "SD3Transformer2DModel": ("sd3", dict(num_layers=24, num_attention_heads=24, attention_head_dim=64,
                                          joint_attention_dim=4096, caption_projection_dim=1536,
                                          pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192)),
    "AuraFlowTransformer2DModel": ("auraflow", {}), "PixArtTransformer2DModel": ("pixart", {}),
    "HunyuanVideoTransformer3DModel": ("hunyuan_video", {}), "Lumina2Transformer2DModel": ("lumina2", {}),
    "ZImageTransformer2DModel": ("zimage", {}), "QwenImageTransformer2DModel": ("qwen_image", {}),
    "WanTransformer3DModel": ("wan", {}), "LTXVideoTransformer3DModel": ("ltxv", {}),
    "MochiTransformer3DModel": ("mochi", {}), "Kandinsky5Transformer3DModel": ("kandinsky5", {}),
    "CosmosTransformer3DModel": ("cosmos", {}), "ErnieImageTransformer2DModel": ("ernie", {}),
    "Krea2Transformer2DModel": ("krea2", {}),
}


@pytest.mark.parametrize("cls_name", sorted(DIFFUSERS))
def test_diffusers_models_in_every_format(cls_name):
    """diffusers' own module names (full-size defaults on the meta device) as SimpleTuner lycoris_,
    PEFT transformer. / base_model.model., OneTrainer lora_transformer_, and the model itself as target."""
    fam, cfg = DIFFUSERS[cls_name]
    w = _diffusers(cls_name, **cfg)
    assert target_dit_family({k + ".weight": s for k, s in w.items()}) == fam
    for fmt in ("lycoris_", "transformer.", "base_model.model.", "lora_transformer_"):
        names = {(fmt + k.replace(".", "_")) if fmt.endswith("_") else fmt + k: s for k, s in w.items()}
        assert _family(list(names), names) == fam, fmt


def test_shared_names_are_named_together_and_do_not_conflict():
    sd3_names = ["transformer.transformer_blocks.0.attn.to_q", "transformer.transformer_blocks.0.ff_context.net.0.proj"]
    assert _family(sd3_names) == "flux/flux2/chroma/sd3"
    assert model_family(sd3_names) is None
    assert _family(sd3_names, {sd3_names[0]: (1536, 1536)}) == "sd3"
    assert _family(sd3_names, {sd3_names[0]: (3072, 3072)}) == "flux/flux2/chroma"  # Klein 4B is 3072 wide
    attn_only = ["lora_unet_double_blocks_0_img_attn_qkv", "lora_unet_single_blocks_0_linear1"]
    assert _family(attn_only) == "flux/flux2/chroma"
    assert _family(attn_only, {attn_only[1]: (21504, 3072)}) == "flux/chroma"
    assert _family(attn_only, {attn_only[1]: (55296, 6144)}) == "flux2"
    assert FAMILY_LABELS["flux/chroma"] == "Flux.1 or Chroma" and FAMILY_LABELS.get("flux/nope") is None
    assert not families_conflict("flux/chroma", "chroma") and families_conflict("flux/chroma", "sd3")
    assert families_conflict("flux", "sdxl") and not families_conflict("flux", None)


def test_hunyuan_video_past_flux_depth():
    assert _family(["lora_unet_double_blocks_19_img_attn_qkv", "lora_unet_double_blocks_0_img_mod_lin"]) == "hunyuan_video"
    assert _family(["lora_unet_double_blocks_0_img_mod_lin"]) == "flux"  # read as Flux: nothing HunyuanVideo-only
    # lora_te3_ alone: tests/keymap/test_dit_text_encoders.py (ComfyUI gives it to Flux, SD3 and HiDream)


def test_dit_file_with_text_encoders_is_not_sdxl():
    """Flux / SD3 kohya files carry lora_te1_ / lora_te2_ text-encoder modules; the DiT names decide."""
    names = ["lora_te1_text_model_encoder_layers_0_mlp_fc1", "lora_te2_encoder_block_0_layer_0_SelfAttention_q",
             "lora_unet_double_blocks_0_img_attn_qkv", "lora_unet_double_blocks_0_img_mod_lin"]
    assert _family(names) == "flux"
    assert _family(names[:2] + ["lycoris_transformer_blocks_1_attn_to_q"]) != "sdxl"


def test_sd_unet_names_stay_sd():
    """The SDXL structure rule needs a UNet block around transformer_blocks_1+ (no DiT match)."""
    assert _family(["lora_unet_input_blocks_4_1_transformer_blocks_3_attn1_to_q"]) == "sdxl"
    assert _family(["lora_unet_down_blocks_2_attentions_0_transformer_blocks_5_attn1_to_q"]) == "sdxl"
    assert re.fullmatch(r"sd1/sd2", _family(["lora_unet_down_blocks_3_resnets_0_conv1"]))
