"""DiT block groups and block weights against real names: ComfyUI 0.28.0's weights
(tests/support/comfy_dit_keys.json) and diffusers models built on the meta device."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lokr_core.base.errors import LoKrConfigError
from lokr_core.keymap.block_weights import (DIT_PRESETS, block_multiplier, dit_layout, format_block_weights,
                                            parse_block_weights)
from lokr_core.keymap.blocks import block_id
from lokr_core.keymap.family_signatures import DEFAULT_BLOCKS, block_of, dit_block_counts

COMFY = json.loads((Path(__file__).parents[1] / "support" / "comfy_dit_keys.json").read_text())
MAIN = {"flux": ("flux", {"double": "double_blocks", "single": "single_blocks"}),
        "chroma": ("chroma", {"double": "double_blocks", "single": "single_blocks"}),
        "flux2": ("flux2", {"double": "double_blocks", "single": "single_blocks"}),
        "hunyuan_video": ("hunyuan_video", {"double": "double_blocks", "single": "single_blocks"}),
        "hidream": ("hidream", {"double": "double_stream_blocks", "single": "single_stream_blocks"}),
        "auraflow": ("auraflow", {"double": "double_layers", "single": "single_layers"}),
        "sd3": ("sd3", {"joint": "joint_blocks"}), "qwen_image": ("qwen_image", {"layers": "transformer_blocks"}),
        "zimage": ("zimage", {"layers": "layers"}), "lumina2": ("lumina2", {"layers": "layers"}),
        "wan21": ("wan", {"layers": "blocks"}), "ltxv": ("ltxv", {"layers": "transformer_blocks"}),
        "pixart_sigma": ("pixart", {"layers": "blocks"}), "hunyuan_dit": ("hunyuan_dit", {"layers": "blocks"}),
        "mochi": ("mochi", {"layers": "blocks"}), "krea2": ("krea2", {"layers": "blocks"}),
        "omnigen2": ("omnigen2", {"layers": "layers"}), "ernie": ("ernie", {"layers": "layers"}),
        "kandinsky5": ("kandinsky5", {"layers": "visual_transformer_blocks"}),
        "cosmos_predict2": ("cosmos", {"layers": "blocks"}), "ace": ("ace", {"layers": "transformer_blocks"})}
"""stored family -> (our id, {block kind: ComfyUI's numbered group})."""


@pytest.mark.parametrize("fam", sorted(MAIN))
def test_comfy_blocks(fam):
    """Every ComfyUI weight of a main stack is in ``kind N`` (N its index there), every other one BASE,
    in ComfyUI, kohya and ai-toolkit names; block counts of the default layout match ComfyUI's model."""
    ours, groups = MAIN[fam]
    by_group = {g: k for k, g in groups.items()}
    for key in COMFY[fam]["weights"]:
        path = key[len("diffusion_model."):-len(".weight")]
        head, _, rest = path.partition(".")
        want = "BASE"
        for g, kind in by_group.items():
            if path.startswith(g + "."):
                want = f"{kind} {int(path[len(g) + 1:].split('.')[0])}"
        for name in (key, "lora_unet_" + path.replace(".", "_"), "diffusion_model." + path):
            assert block_of(name, ours) == want, name
            assert block_id(name, ours) == want, name
    for kind, g in groups.items():
        if fam in ("flux", "chroma", "hunyuan_video", "hidream", "auraflow", "zimage", "lumina2", "qwen_image",
                   "wan21", "pixart_sigma", "hunyuan_dit", "mochi", "krea2", "omnigen2", "ernie", "ace"):
            assert DEFAULT_BLOCKS[ours][kind] == COMFY[fam]["groups"][g], (kind, g)


@pytest.mark.parametrize("cls_name,fam,kinds", [
    ("FluxTransformer2DModel", "flux", {"double": 19, "single": 38}),
    ("QwenImageTransformer2DModel", "qwen_image", {"layers": 60}),
    ("WanTransformer3DModel", "wan", {"layers": 40}),
    ("ZImageTransformer2DModel", "zimage", {"layers": 30}),
    ("HunyuanVideoTransformer3DModel", "hunyuan_video", {"double": 20, "single": 40}),
])
def test_diffusers_block_counts(cls_name, fam, kinds):
    """diffusers names (as lycoris_ / transformer. files) count the model's blocks; refiners are BASE."""
    diffusers = pytest.importorskip("diffusers")
    with torch.device("meta"):
        model = getattr(diffusers, cls_name)()
    keys = [k[:-len(".weight")] for k, v in model.state_dict().items() if k.endswith(".weight") and v.ndim >= 2]
    assert dit_block_counts(["lycoris_" + k.replace(".", "_") for k in keys], fam) == kinds
    assert dit_block_counts(["transformer." + k for k in keys], fam) == kinds
    for k in keys:
        if "refiner" in k or k.startswith(("context_embedder", "time_", "x_embedder", "norm_out", "proj_out")):
            assert block_of("transformer." + k, fam) == "BASE", k


def test_transformer_blocks_depend_on_the_family():
    assert block_of("lycoris_transformer_blocks_4_attn_to_q", "flux") == "double 4"
    assert block_of("lycoris_transformer_blocks_4_attn_to_q", "sd3") == "joint 4"
    assert block_of("lycoris_transformer_blocks_4_attn_to_q", "qwen_image") == "layers 4"
    assert block_of("transformer.transformer_blocks.4.img_mlp.net.0.proj") == "layers 4"  # Qwen-only name
    assert block_id("lora_unet_input_blocks_4_1_proj_in") == "IN04"  # SD IDs unchanged
    assert block_id("lora_unet_input_blocks_4_1_proj_in", "sdxl") == "IN04"


def test_flux_vectors_map_by_id():
    full = ["1"] + [str(i / 100) for i in range(19)] + ["0"] * 38
    v = parse_block_weights(",".join(full), "flux")
    assert list(v) == list(dit_layout("flux")) and len(v) == 58
    assert v["double 18"] == 0.18 and v["single 37"] == 0.0
    g = parse_block_weights("0.5,1,0", "flux")
    assert g["BASE"] == 0.5 and all(g[f"double {i}"] == 1 for i in range(19)) and g["single 0"] == 0
    k = parse_block_weights("1,0.5,0.25", "flux2", blocks={"double": 8, "single": 24})  # Klein 9B
    assert len(k) == 33 and k["single 23"] == 0.25
    p = parse_block_weights("%default=0,base=1,double3-5=0.5,single=2", "flux")
    assert [p[f"double {i}"] for i in (2, 3, 5, 6)] == [0, 0.5, 0.5, 0] and p["single 37"] == 2 and p["BASE"] == 1
    assert parse_block_weights("A,a,b", "flux", a=3, b=1)["single 4"] == 0.5
    inv = parse_block_weights("FLUX-DOUBLE-ONLY", "flux", inverse=True)
    assert inv["double 0"] == 0 and inv["single 0"] == 1


@pytest.mark.parametrize("name", sorted(DIT_PRESETS))
def test_dit_presets_parse(name):
    fam = "flux" if name.startswith("FLUX") else "wan"
    v = parse_block_weights(name, fam)
    assert set(v) == set(dit_layout(fam))


def test_sd3_and_layers_and_multiplier_on_comfy_keys():
    v = parse_block_weights("%default=1,joint0-1=0", "sd3")
    assert block_multiplier(v, "diffusion_model.joint_blocks.1.x_block.attn.qkv.weight") == 0
    assert block_multiplier(v, "diffusion_model.joint_blocks.2.x_block.attn.qkv.weight") == 1
    assert block_multiplier(v, "lycoris_transformer_blocks_0_attn_to_q") == 0
    q = parse_block_weights("0,1", "qwen_image")
    assert block_multiplier(q, "diffusion_model.transformer_blocks.59.attn.to_q.weight") == 1
    assert block_multiplier(q, "diffusion_model.img_in.weight") == 0
    f = parse_block_weights("FLUX-SINGLE-ONLY", "flux")
    assert block_multiplier(f, "diffusion_model.double_blocks.0.img_attn.qkv.weight") == 0
    assert block_multiplier(f, "diffusion_model.single_blocks.37.linear2.weight") == 1
    assert format_block_weights(f).startswith("BASE=1, double 0=0,")


@pytest.mark.parametrize("spec,match", [
    ("1,1,1,1", r"58 values \(BASE, double 0..18, single 0..37\) or 3 values"),
    ("%double19=1", "double 19, which this flux model does not have"),
    ("%joint=1", "flux has no joint blocks"),
    ("%foo=1", "is not understood"),
    ("1,x,1", "not a number"),
    ("SD-ALL", "is for SD UNets"),
    ("", "the vector is empty"),
])
def test_dit_errors_name_what_was_expected(spec, match):
    with pytest.raises(LoKrConfigError, match=match):
        parse_block_weights(spec, "flux")
    with pytest.raises(LoKrConfigError, match="not known"):
        dit_layout("flux", {"bogus": 2})
