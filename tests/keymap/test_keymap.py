"""lokr_core.keymap: the config-generated diffusers <-> LDM UNet map (checked against diffusers' own
single-file converter), the CLIP <-> OpenCLIP text map (checked against diffusers'
convert_open_clip_checkpoint), name parsing, family detection, block IDs, reference key lists."""
from __future__ import annotations

import pytest
import torch

from tests.support import models
from lokr_core.base.errors import LoKrKeyError
from lokr_core.keymap import (build_index, diffusers_to_ldm, family_target, hf_to_openclip, kohya_name,
                              layout_from_config, layout_from_diffusers_keys, layout_from_ldm_keys, ldm_block_of,
                              ldm_to_diffusers, model_family, openclip_weight_to_hf, split_name, underscore,
                              unet_module_map, unet_rules)
from lokr_core.keymap.family import family_signals, families_conflict, factor_dims
from lokr_core.tensor.factors import LoKrFactors

CONFIGS = {"tiny": models.TINY_UNET, "sd15": models.SD15_UNET, "sd21": models.SD21_UNET, "sdxl": models.SDXL_UNET}


@pytest.fixture(scope="module")
def meta_unets():
    return {k: models.unet(c, device="meta") for k, c in CONFIGS.items()}


# ------------------------------------------------------------------ diffusers <-> LDM UNet
@pytest.mark.parametrize("kind", list(CONFIGS))
def test_unet_map_matches_diffusers_single_file_converter(meta_unets, kind):
    """Every key of the UNet -> LDM with our map -> diffusers' convert_ldm_unet_checkpoint -> same key."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    unet = meta_unets[kind]
    rules = unet_rules(layout_from_config(unet.config))
    sd = unet.state_dict()
    ldm = {"model.diffusion_model." + diffusers_to_ldm(k, rules): k for k in sd}
    assert len(ldm) == len(sd)
    back = convert_ldm_unet_checkpoint(ldm, dict(unet.config))
    assert back == {k: k for k in sd}
    # and the reverse direction of our own map agrees
    assert all(ldm_to_diffusers(l[len("model.diffusion_model."):], rules) == k for l, k in ldm.items())


def test_tiny_unet_ldm_checkpoint_loads_back_identical_through_diffusers():
    """A random tiny UNet saved as an LDM state dict with our map loads back bit-identical via diffusers."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    src = models.tiny_unet(seed=3)
    rules = unet_rules(layout_from_config(src.config))
    ckpt = {"model.diffusion_model." + diffusers_to_ldm(k, rules): v.clone() for k, v in src.state_dict().items()}
    dst = models.tiny_unet(seed=4)
    dst.load_state_dict(convert_ldm_unet_checkpoint(ckpt, dict(src.config)), strict=True)
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k
    sample, t, ehs = models.unet_inputs()
    with torch.no_grad():
        assert torch.equal(src(sample, t, ehs).sample, dst(sample, t, ehs).sample)


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_layout_inferred_from_keys_equals_config(meta_unets, kind):
    unet = meta_unets[kind]
    lay = layout_from_config(unet.config)
    rules = unet_rules(lay)
    keys = list(unet.state_dict())
    assert layout_from_diffusers_keys(keys) == lay
    assert layout_from_ldm_keys([diffusers_to_ldm(k, rules) for k in keys]) == lay
    assert lay.num_input_blocks == len({".".join(diffusers_to_ldm(k, rules).split(".")[:2])
                                        for k in keys if diffusers_to_ldm(k, rules).startswith("input_blocks")})


def test_known_unet_names():
    sd15 = unet_rules(layout_from_config(models.SD15_UNET))
    sdxl = unet_rules(layout_from_config(models.SDXL_UNET))
    assert diffusers_to_ldm("down_blocks.1.attentions.0.proj_in", sd15) == "input_blocks.4.1.proj_in"
    assert diffusers_to_ldm("down_blocks.0.downsamplers.0.conv", sd15) == "input_blocks.3.0.op"
    assert diffusers_to_ldm("down_blocks.3.resnets.1.conv2.weight", sd15) == "input_blocks.11.0.out_layers.3.weight"
    assert diffusers_to_ldm("up_blocks.0.upsamplers.0.conv", sd15) == "output_blocks.2.1.conv"
    assert diffusers_to_ldm("up_blocks.1.upsamplers.0.conv", sd15) == "output_blocks.5.2.conv"
    assert diffusers_to_ldm("up_blocks.3.resnets.2.conv_shortcut", sd15) == "output_blocks.11.0.skip_connection"
    assert diffusers_to_ldm("mid_block.resnets.1.time_emb_proj", sd15) == "middle_block.2.emb_layers.1"
    assert diffusers_to_ldm("time_embedding.linear_2", sd15) == "time_embed.2"
    assert diffusers_to_ldm("conv_norm_out", sd15) == "out.0"
    assert diffusers_to_ldm("down_blocks.1.attentions.0.transformer_blocks.1.attn1.to_q", sdxl) == \
        "input_blocks.4.1.transformer_blocks.1.attn1.to_q"
    assert diffusers_to_ldm("add_embedding.linear_1", sdxl) == "label_emb.0.0"
    assert ldm_to_diffusers("output_blocks.8.0.in_layers.2", sdxl) == "up_blocks.2.resnets.2.conv1"
    assert diffusers_to_ldm("add_embedding.linear_1", sd15) is None  # SD1.5 has none
    assert ldm_to_diffusers("input_blocks.99.0.op", sd15) is None
    assert diffusers_to_ldm("down_blocks.0.resnets.0.unknown_part", sd15) is None


def test_unet_module_map(meta_unets):
    unet = meta_unets["sdxl"]
    paths = [n for n, _ in unet.named_modules()]
    m = unet_module_map(unet.config, paths)
    assert m["down_blocks.2.attentions.1.transformer_blocks.9.ff.net.2"] == \
        "input_blocks.8.1.transformer_blocks.9.ff.net.2"
    assert "" not in m and "down_blocks" not in m  # containers with no LDM name are left out
    assert len(set(m.values())) == len(m)


def test_layout_errors():
    with pytest.raises(LoKrKeyError, match="down_block_types"):
        layout_from_config({"block_out_channels": (32,)})
    with pytest.raises(LoKrKeyError, match="input_blocks"):
        layout_from_ldm_keys(["out.0.weight"])
    with pytest.raises(LoKrKeyError, match="down_blocks"):
        layout_from_diffusers_keys(["conv_in.weight"])


# ------------------------------------------------------------------ CLIP <-> OpenCLIP
def test_openclip_map_matches_diffusers_converter():
    """HF CLIP weights -> OpenCLIP keys with our map (q/k/v fused) -> diffusers' convert_open_clip_checkpoint."""
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint

    te = models.clip_text(models.TINY_CLIP, with_projection=True, seed=5)
    hf = {k[len("text_model."):] if k.startswith("text_model.") else k: v for k, v in te.state_dict().items()}
    prefix = "conditioner.embedders.1.model."
    ckpt, covered = {}, []
    fused: dict[str, dict[int, torch.Tensor]] = {}
    for key, v in hf.items():
        path, _, param = key.rpartition(".")
        oc = hf_to_openclip(path)
        if oc is None:
            continue
        covered.append(key)
        if oc[1] is None:
            ckpt[f"{prefix}{oc[0]}.{param}"] = v
        else:
            fused.setdefault(f"{prefix}{oc[0]}_{param}", {})[oc[1]] = v
    for k, parts in fused.items():
        ckpt[k] = torch.cat([parts[i] for i in range(3)])
    back = convert_open_clip_checkpoint(te, ckpt, prefix=prefix)
    assert len(covered) > 20
    for key in covered:
        got = back["text_model." + key] if "text_model." + key in back else back[key]
        assert torch.equal(got, hf[key]), key
    # the reverse direction: every OpenCLIP weight key names the HF modules it came from
    for k in ckpt:
        rest = k[len(prefix):]
        for path, block in openclip_weight_to_hf(rest):
            if block is None:
                assert torch.equal(ckpt[k], hf[path + ".weight"])
            else:
                d = ckpt[k].shape[0] // 3
                assert torch.equal(ckpt[k][block * d:(block + 1) * d], hf[path + ".weight"])


def test_text_map_cases():
    assert hf_to_openclip("encoder.layers.3.self_attn.k_proj") == ("transformer.resblocks.3.attn.in_proj", 1)
    assert hf_to_openclip("encoder.layers.3.mlp.fc2") == ("transformer.resblocks.3.mlp.c_proj", None)
    assert hf_to_openclip("final_layer_norm") == ("ln_final", None)
    assert hf_to_openclip("text_projection") is None
    assert openclip_weight_to_hf("transformer.resblocks.0.attn.in_proj_weight") == [
        ("encoder.layers.0.self_attn.q_proj", 0), ("encoder.layers.0.self_attn.k_proj", 1),
        ("encoder.layers.0.self_attn.v_proj", 2)]
    assert openclip_weight_to_hf("transformer.resblocks.0.attn.in_proj_bias") == []
    assert openclip_weight_to_hf("positional_embedding") == []


# ------------------------------------------------------------------ file names
@pytest.mark.parametrize("name,expected", [
    ("lora_unet_down_blocks_0_attentions_0_proj_in", ("unet", "down_blocks_0_attentions_0_proj_in")),
    ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", ("unet", "input_blocks_4_1_transformer_blocks_0_attn1_to_q")),
    ("lora_te_text_model_encoder_layers_0_self_attn_q_proj", ("te1", "text_model_encoder_layers_0_self_attn_q_proj")),
    ("lora_te_encoder_layers_0_self_attn_q_proj", ("te1", "encoder_layers_0_self_attn_q_proj")),
    ("lora_te1_text_model_encoder_layers_0_mlp_fc1", ("te1", "text_model_encoder_layers_0_mlp_fc1")),
    ("lora_te2_text_model_encoder_layers_31_mlp_fc2", ("te2", "text_model_encoder_layers_31_mlp_fc2")),
    ("lycoris_down_blocks_0_resnets_0_conv1", (None, "down_blocks_0_resnets_0_conv1")),
    ("base_model.model.down_blocks.0.attentions.0.to_out.0", (None, "down_blocks_0_attentions_0_to_out_0")),
    ("base_model.model.unet.conv_in", ("unet", "conv_in")),
    ("unet.base_model.model.conv_in", ("unet", "conv_in")),
    ("text_encoder.base_model.model.text_model.encoder.layers.0.mlp.fc1", ("te1", "text_model_encoder_layers_0_mlp_fc1")),
    ("base_model.model.text_encoder_2.text_model.encoder.layers.0.mlp.fc1", ("te2", "text_model_encoder_layers_0_mlp_fc1")),
    ("text_encoder.text_model.final_layer_norm", ("te1", "text_model_final_layer_norm")),
    ("model.diffusion_model.input_blocks.1.1.proj_in", ("unet", "input_blocks_1_1_proj_in")),
    ("diffusion_model.out.2", ("unet", "out_2")),
    ("cond_stage_model.model.transformer.resblocks.0.attn.out_proj", ("te1", "transformer_resblocks_0_attn_out_proj")),
    ("conditioner.embedders.1.model.transformer.resblocks.0.mlp.c_fc", ("te2", "transformer_resblocks_0_mlp_c_fc")),
    ("some.module", (None, "some_module")),
])
def test_split_name(name, expected):
    assert split_name(name) == expected


def test_kohya_name_and_underscore():
    assert kohya_name("unet", "down_blocks.0.resnets.0.conv1") == "lora_unet_down_blocks_0_resnets_0_conv1"
    assert kohya_name("te2", "text_model.encoder.layers.0.mlp.fc1") == "lora_te2_text_model_encoder_layers_0_mlp_fc1"
    assert underscore("to_out.0") == "to_out_0"


# ------------------------------------------------------------------ families
def _lin(out: int, inp: int) -> LoKrFactors:
    return LoKrFactors(w1=torch.zeros(4, 4, device="meta"), w2=torch.zeros(out // 4, inp // 4, device="meta"))


def test_model_family():
    assert model_family(["lora_te1_text_model_encoder_layers_0_mlp_fc1", "lora_te2_text_model_encoder_layers_0_mlp_fc1"]) == "sdxl"
    assert model_family(["lora_unet_input_blocks_4_1_transformer_blocks_3_attn1_to_q"]) == "sdxl"
    assert model_family(["lora_unet_down_blocks_3_resnets_0_conv1"]) is None  # SD1 or SD2: names cannot tell
    assert family_signals(["lora_unet_down_blocks_3_resnets_0_conv1"]) == {"sd1/sd2"}
    k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    assert model_family([k], {k: _lin(320, 768)}) == "sd1"
    assert model_family([k], {k: _lin(320, 1024)}) == "sd2"
    assert model_family([k], {k: (320, 2048)}) == "sdxl"
    assert model_family(["cond_stage_model.model.transformer.resblocks.0.attn.out_proj"]) == "sd2"
    q = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    assert model_family([q], {q: (1024, 1024)}) == "sd2"
    assert model_family([]) is None
    assert families_conflict("sdxl", "sd1/sd2") and families_conflict("sd1", "sd2")
    assert not families_conflict("sd1", "sd1/sd2") and not families_conflict(None, "sdxl")


def test_factor_dims():
    assert factor_dims(_lin(320, 768)) == (320, 768)
    conv = LoKrFactors(w1=torch.zeros(4, 4), w2_a=torch.zeros(80, 2), w2_b=torch.zeros(2, 80 * 9))
    assert factor_dims(conv) == (320, 320 * 9)
    tucker = LoKrFactors(w1=torch.zeros(4, 4), t2=torch.zeros(2, 2, 3, 3), w2_a=torch.zeros(2, 80), w2_b=torch.zeros(2, 80))
    assert factor_dims(tucker) == (320, 320, 3, 3)


def test_family_target_key_lists():
    sd1 = family_target("sd1")
    assert sd1["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] == (320, 768)
    assert sd1["cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight"] == (768, 3072)
    sd2 = family_target("sd2")
    assert sd2["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"] == (3072, 1024)
    xl = family_target("sdxl")
    assert xl["model.diffusion_model.label_emb.0.0.weight"] == (1280, 2816)
    assert xl["conditioner.embedders.1.model.transformer.resblocks.31.mlp.c_fc.weight"] == (5120, 1280)
    assert xl["conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"] == (768, 768)
    assert family_target("sdxl", "diffusers")["text_encoder_2.text_projection.weight"] == (1280, 1280)
    with pytest.raises(TypeError):
        family_target("sdxl")["x"] = (1,)  # read-only
    with pytest.raises(LoKrKeyError, match="expected one of"):
        family_target("flux")
    with pytest.raises(LoKrKeyError, match="layout"):
        family_target("sd1", "comfy")


# ------------------------------------------------------------------ block IDs
@pytest.mark.parametrize("key,block", [
    ("model.diffusion_model.input_blocks.4.1.proj_in.weight", "IN04"),
    ("diffusion_model.output_blocks.11.1.transformer_blocks.0.attn1.to_q.weight", "OUT11"),
    ("lora_unet_input_blocks_0_0", "IN00"),
    ("lora_unet_middle_block_1_proj_out", "MID"),
    ("model.diffusion_model.out.2.weight", "BASE"),
    ("model.diffusion_model.time_embed.0.weight", "BASE"),
    ("lora_te1_text_model_encoder_layers_0_mlp_fc1", "BASE"),
    ("mid_block.attentions.0.proj_in", "MID"),
    ("conv_in", "IN00"),
])
def test_ldm_block_of(key, block):
    assert ldm_block_of(key) == block


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_ldm_block_of_diffusers_names_agree_with_ldm_names(meta_unets, kind):
    unet = meta_unets[kind]
    lay = layout_from_config(unet.config)
    rules = unet_rules(lay)
    for name, mod in unet.named_modules():
        if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
            ldm = diffusers_to_ldm(name, rules)
            assert ldm_block_of(name, lay) == ldm_block_of(ldm), name
            assert ldm_block_of("lora_unet_" + underscore(name), lay) == ldm_block_of(ldm), name


def test_ldm_block_of_needs_layout_for_diffusers_names():
    with pytest.raises(LoKrKeyError, match="layout"):
        ldm_block_of("down_blocks.1.attentions.0.proj_in")
    with pytest.raises(LoKrKeyError, match="levels"):
        ldm_block_of("down_blocks.7.resnets.0.conv1", layout_from_config(models.SDXL_UNET))


def test_build_index_rejects_unknown_targets():
    with pytest.raises(LoKrKeyError, match="expected an nn.Module"):
        build_index(42)
    with pytest.raises(LoKrKeyError, match="expected one of"):
        build_index({"vae": torch.nn.Linear(2, 2)})
    with pytest.raises(LoKrKeyError, match="tensor or a shape"):
        build_index({"model.diffusion_model.out.2.weight": "x"})


def test_family_target_openclip_bare_parameters():
    xl = family_target("sdxl")
    assert xl["conditioner.embedders.1.model.text_projection"] == (1280, 1280)
    assert xl["conditioner.embedders.1.model.positional_embedding"] == (77, 1280)
    assert "cond_stage_model.model.text_projection" not in family_target("sd2")  # CLIPTextModel: no projection
