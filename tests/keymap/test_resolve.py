"""lokr_core.keymap.resolve: every module of a lycoris-lora full-preset LoKr resolves on full-size SD1.5 and
SDXL models (meta device) in every naming style, against modules, LDM checkpoints, ComfyUI and
diffusers state dicts; SD2.1's fused OpenCLIP q/k/v; nearest candidates; shape and family mismatches."""
from __future__ import annotations

import json

import pytest
import torch

from tests.support import models
from tests.support.keylists import lycoris_full_preset, text_canonical, text_styles, unet_styles
from lokr_core.base.errors import LoKrKeyError
from lokr_core.tensor.factors import LoKrFactors
from lokr_core.keymap import diffusers_to_ldm, family_target, layout_from_config, ldm_block_of, unet_rules
from lokr_core.keymap.resolve import NEAREST_LIMIT, ResolveReport, model_family, resolve


@pytest.fixture(scope="module")
def sd15():
    unet = models.unet(models.SD15_UNET, device="meta")
    te = models.clip_text(models.CLIP_L, device="meta")
    rules = unet_rules(layout_from_config(unet.config))
    return dict(unet=unet, te=te, to_ldm=lambda p: diffusers_to_ldm(p, rules),
                unet_mods=lycoris_full_preset(unet), te_mods=lycoris_full_preset(te))


@pytest.fixture(scope="module")
def sdxl():
    unet = models.unet(models.SDXL_UNET, device="meta")
    te1 = models.clip_text(models.CLIP_L, device="meta")
    te2 = models.clip_text(models.OPENCLIP_G, device="meta", with_projection=True)
    rules = unet_rules(layout_from_config(unet.config))
    return dict(unet=unet, te1=te1, te2=te2, to_ldm=lambda p: diffusers_to_ldm(p, rules),
                unet_mods=lycoris_full_preset(unet), te1_mods=lycoris_full_preset(te1),
                te2_mods=lycoris_full_preset(te2))


def _check_all(report: ResolveReport, expected: dict[str, str]) -> None:
    assert report.ok, report.format()
    assert report.matched == expected


# ------------------------------------------------------------------ SD1.5, every style, every target kind
def test_sd15_every_module_every_style_on_modules(sd15):
    target = {"unet": sd15["unet"], "text_encoder": sd15["te"]}
    assert len(sd15["unet_mods"]) > 250 and len(sd15["te_mods"]) == 72
    shapes = {m.path: m.shape for m in sd15["unet_mods"]}
    for style, names in unet_styles(sd15["unet_mods"], sd15["to_ldm"]).items():
        report = resolve(names, target, shapes={n: shapes[p] for n, p in names.items()})
        _check_all(report, {n: "unet." + p for n, p in names.items()})
        assert report.family == "sd1" and report.target_family == "sd1", style
    for style, names in text_styles(sd15["te_mods"], "te").items():
        _check_all(resolve(names, target), {n: "text_encoder." + p for n, p in names.items()})
    # the lone UNet as target: module paths, text-encoder names reported as skipped, not unmatched
    names = unet_styles(sd15["unet_mods"], sd15["to_ldm"])["kohya_diffusers"]
    te_names = text_styles(sd15["te_mods"], "te")["kohya"]
    report = resolve(list(names) + list(te_names), sd15["unet"])
    assert report.matched == names and report.ok
    assert report.skipped == {n: "te1" for n in te_names}


def test_sd15_lycoris_names_use_lycoris_own_naming(sd15):
    # lycoris-lora names CLIPTextModel modules without text_model_ (transformers 5 layout)
    te_names = {m.name: m.path for m in sd15["te_mods"]}
    unet_names = {m.name: m.path for m in sd15["unet_mods"]}
    shapes = {m.name: m.shape for m in sd15["te_mods"] + sd15["unet_mods"]}
    report = resolve(list(te_names) + list(unet_names), {"unet": sd15["unet"], "text_encoder": sd15["te"]}, shapes)
    assert report.ok, report.format()
    assert report.matched == {**{n: "text_encoder." + p for n, p in te_names.items()},
                              **{n: "unet." + p for n, p in unet_names.items()}}


def test_sd15_on_ldm_checkpoint_and_comfyui_keys(sd15):
    ckpt = family_target("sd1")
    names = unet_styles(sd15["unet_mods"], sd15["to_ldm"])["kohya_diffusers"]
    te = text_styles(sd15["te_mods"], "te")["kohya"]
    shapes = {**{n: m.shape for n, m in zip(names, sd15["unet_mods"])},
              **{n: m.shape for n, m in zip(te, sd15["te_mods"])}}
    report = resolve(list(names) + list(te), ckpt, shapes)
    expected = {n: f"model.diffusion_model.{sd15['to_ldm'](p)}.weight" for n, p in names.items()}
    expected.update({n: f"cond_stage_model.transformer.text_model.{text_canonical(p)}.weight" for n, p in te.items()})
    _check_all(report, expected)
    assert all(k in ckpt for k in report.matched.values())
    # ComfyUI model keys: diffusion_model.<LDM path>.weight
    comfy = {k[len("model."):]: v for k, v in ckpt.items() if k.startswith("model.diffusion_model.")}
    report = resolve(names, comfy, shapes)
    _check_all(report, {n: k[len("model."):] for n, k in expected.items() if n in names})
    # block IDs come with the match
    for n, p in names.items():
        assert report.blocks[n] == ldm_block_of(sd15["to_ldm"](p))


def test_sd15_on_diffusers_state_dicts(sd15):
    unet_sd = {k: tuple(v.shape) for k, v in sd15["unet"].state_dict().items()}
    names = unet_styles(sd15["unet_mods"], sd15["to_ldm"])["kohya_ldm"]
    _check_all(resolve(names, unet_sd), {n: p + ".weight" for n, p in names.items()})
    pipe = family_target("sd1", "diffusers")
    te = text_styles(sd15["te_mods"], "te")["kohya_transformers5"]
    report = resolve(list(names) + list(te), pipe)
    _check_all(report, {**{n: f"unet.{p}.weight" for n, p in names.items()},
                        **{n: f"text_encoder.{p}.weight" for n, p in te.items()}})


# ------------------------------------------------------------------ SDXL
def test_sdxl_every_module_every_style(sdxl):
    target = {"unet": sdxl["unet"], "text_encoder": sdxl["te1"], "text_encoder_2": sdxl["te2"]}
    assert len(sdxl["unet_mods"]) > 700 and len(sdxl["te2_mods"]) == 193
    for style, names in unet_styles(sdxl["unet_mods"], sdxl["to_ldm"]).items():
        report = resolve(names, target)
        _check_all(report, {n: "unet." + p for n, p in names.items()})
        assert report.family == "sdxl" and report.target_family == "sdxl", style
    for te, comp in (("te1", "text_encoder."), ("te2", "text_encoder_2.")):
        for style, names in text_styles(sdxl[te + "_mods"], te).items():
            _check_all(resolve(names, target), {n: comp + p for n, p in names.items()})


def test_sdxl_kohya_ldm_names_on_ldm_checkpoint(sdxl):
    ckpt = family_target("sdxl")
    names = unet_styles(sdxl["unet_mods"], sdxl["to_ldm"])["kohya_ldm"]
    te1 = text_styles(sdxl["te1_mods"], "te1")["kohya"]
    te2 = text_styles(sdxl["te2_mods"], "te2")["kohya"]
    shapes = {n: m.shape for n, m in zip(names, sdxl["unet_mods"])}
    shapes.update({n: m.shape for n, m in zip(te1, sdxl["te1_mods"])})
    shapes.update({n: m.shape for n, m in zip(te2, sdxl["te2_mods"])})
    report = resolve(list(names) + list(te1) + list(te2), ckpt, shapes)
    # text_projection of OpenCLIP-G is a transposed bare parameter in LDM files: reported, not guessed
    proj = "lora_te2_text_model_text_projection"
    assert list(report.unmatched) == [proj] and not report.shape_mismatch and not report.ambiguous
    assert "transposed parameter 'conditioner.embedders.1.model.text_projection'" in report.notes[proj]
    assert f"{proj} -> the checkpoint stores it as the bare transposed" in report.format()
    assert len(report.matched) == len(shapes) - 1
    assert all(k in ckpt for k in report.matched.values())
    q = "lora_te2_text_model_encoder_layers_5_self_attn_v_proj"
    assert report.matched[q] == "conditioner.embedders.1.model.transformer.resblocks.5.attn.in_proj_weight"
    assert report.rows[q] == (2560, 3840)


def test_sd21_fused_qkv_rows_match_diffusers_split():
    """q/k/v of SD2's OpenCLIP map to the row blocks diffusers' converter cuts out of in_proj_weight."""
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint

    te = models.clip_text(models.TINY_CLIP, with_projection=True)
    d = models.TINY_CLIP["hidden_size"]
    w = torch.randn(3 * d, d)
    ckpt = {"cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight": w,
            "cond_stage_model.model.transformer.resblocks.0.attn.out_proj.weight": torch.randn(d, d)}
    hf = convert_open_clip_checkpoint(te, ckpt, prefix="cond_stage_model.model.")
    names = [f"lora_te_text_model_encoder_layers_0_self_attn_{x}_proj" for x in "qkv"]
    report = resolve(names + ["lora_te_text_model_encoder_layers_0_self_attn_out_proj"], ckpt)
    assert report.ok, report.format()
    for name, x in zip(names, "qkv"):
        a, b = report.rows[name]
        assert torch.equal(w[a:b], hf[f"text_model.encoder.layers.0.self_attn.{x}_proj.weight"])
    assert report.family is None and report.target_family is None


def test_sd21_checkpoint_family_and_shapes():
    ckpt = family_target("sd2")
    k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    q = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    report = resolve([k, q], ckpt, {k: (320, 1024), q: (1024, 1024)})
    assert report.ok and report.family == "sd2" and report.target_family == "sd2"
    assert report.rows == {q: (0, 1024)}


# ------------------------------------------------------------------ reporting what is wrong
def test_sdxl_file_on_sd15_model_says_so(sd15, sdxl):
    names = list(unet_styles(sdxl["unet_mods"], sdxl["to_ldm"])["kohya_ldm"]) + \
        list(text_styles(sdxl["te2_mods"], "te2")["kohya"])
    report = resolve(names, {"unet": sd15["unet"], "text_encoder": sd15["te"]})
    assert not report.ok
    assert report.family_mismatch == "this file is for SDXL, the model is SD1.x"
    assert "WRONG MODEL: this file is for SDXL, the model is SD1.x" in report.format()
    assert set(report.skipped.values()) == {"te2"}
    some = "lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q"
    assert report.unmatched[some][0] == "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    assert 1 <= len(report.unmatched[some]) <= 3
    # nearest names are searched for the first NEAREST_LIMIT unmatched names only
    lists = list(report.unmatched.values())
    assert len(lists) > NEAREST_LIMIT and all(lists[:NEAREST_LIMIT]) and not any(lists[NEAREST_LIMIT:])
    assert "(not searched)" in report.format(limit=10_000)


def test_unmatched_typo_gets_nearest_candidates(sd15):
    report = resolve(["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_qq",
                      "lora_unet_totally_unknown"], sd15["unet"])
    cands = report.unmatched["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_qq"]
    assert cands[0] == "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    assert len(cands) == 3
    assert isinstance(report.unmatched["lora_unet_totally_unknown"], list)
    text = report.format()
    assert "unmatched (2)" in text and "nearest: down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q" in text


def test_shape_mismatch_with_lycoris_factors():
    """Factors made by lycoris-lora's LokrModule for one layer, checked against the right and a wrong layer."""
    from lycoris.modules.lokr import LokrModule

    unet = models.tiny_unet()
    layer = unet.get_submodule("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k")
    mod = LokrModule("lora_unet_x", layer, lora_dim=2, alpha=1.0)
    sd = mod.state_dict()
    f = LoKrFactors(**{k[len("lokr_"):]: v for k, v in sd.items() if k.startswith("lokr_")})
    right = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    wrong = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_ff_net_0_proj"
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    report = resolve([right, wrong], unet, shapes={right: f, wrong: f})
    assert report.matched == {right: "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"}
    expected_target = tuple(unet.get_submodule("down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj").weight.shape)
    assert report.shape_mismatch == {wrong: (expected_target, tuple(layer.weight.shape))}
    assert not report.ok and "shape mismatch (1)" in report.format()
    assert all(torch.equal(v, unet.state_dict()[k]) for k, v in before.items())  # nothing touched


def test_loKr_weights_object_is_accepted():
    from lycoris.modules.lokr import LokrModule
    from lokr_core.formats.weights import LoKrWeights

    unet = models.tiny_unet()
    paths = ["conv_in", "down_blocks.0.attentions.0.proj_in", "up_blocks.1.attentions.0.transformer_blocks.0.ff.net.2"]
    mods = {}
    for p in paths:
        sd = LokrModule("n", unet.get_submodule(p), lora_dim=2, alpha=1.0).state_dict()
        mods["lora_unet_" + p.replace(".", "_")] = LoKrFactors(
            **{k[len("lokr_"):]: v for k, v in sd.items() if k.startswith("lokr_")}, alpha=float(sd["alpha"]))
    w = LoKrWeights.from_factors(mods, source="x.safetensors")
    report = resolve(w, unet)
    assert report.ok and report.source == "x.safetensors"
    assert report.matched == {"lora_unet_" + p.replace(".", "_"): p for p in paths}
    assert report.blocks == {"lora_unet_conv_in": "IN00", "lora_unet_down_blocks_0_attentions_0_proj_in": "IN01",
                             "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_ff_net_2": "OUT02"}
    assert json.loads(json.dumps(report.to_dict()))["ok"] is True
    assert "LoKr 'x.safetensors': 3 of 3 modules matched" in report.format()


def test_ambiguous_without_component_resolved_by_shape(sdxl):
    target = {"text_encoder": sdxl["te1"], "text_encoder_2": sdxl["te2"]}
    name = "base_model.model.text_model.encoder.layers.0.self_attn.q_proj"
    report = resolve([name], target)
    te1_q = "text_encoder." + next(n for n, _ in sdxl["te1"].named_modules() if n.endswith("layers.0.self_attn.q_proj"))
    assert report.ambiguous == {name: [te1_q, "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj"]}
    assert not report.ok and "ambiguous (1)" in report.format()
    report = resolve([name], target, shapes={name: (1280, 1280)})
    assert report.matched == {name: "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj"}


def test_model_family_reexported():
    assert model_family(["lora_te2_text_model_encoder_layers_0_mlp_fc1"]) == "sdxl"


@pytest.mark.parametrize("bad,match", [
    ("lora_unet_conv_in", "iterable of module names"),
    (42, "iterable of module names"),
    ([1, 2], "must be strings"),
])
def test_bad_names_raise(bad, match):
    unet = models.tiny_unet()
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    with pytest.raises(LoKrKeyError, match=match):
        resolve(bad, unet)
    assert all(torch.equal(v, unet.state_dict()[k]) for k, v in before.items())


def test_bad_target_raises():
    with pytest.raises(LoKrKeyError, match="expected an nn.Module"):
        resolve(["lora_unet_conv_in"], "model.safetensors")


def test_generic_module_and_unknown_checkpoint_parts():
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    report = resolve(["lycoris_0", "lora_unet_2", "base_model.model.2"], net)
    assert report.matched == {"lycoris_0": "0", "lora_unet_2": "2", "base_model.model.2": "2"}
    assert report.target_family is None
    ckpt = {"model.diffusion_model.out.2.weight": (4, 320, 3, 3), "first_stage_model.decoder.conv_out.weight": (3, 128, 3, 3),
            "model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3)}
    report = resolve(["lora_unet_conv_out", "lora_unet_out_2", "first_stage_model.decoder.conv_out",
                      "lora_unet_decoder_conv_out"], ckpt)
    assert report.matched == {"lora_unet_out_2": "model.diffusion_model.out.2.weight",
                              "lora_unet_conv_out": "model.diffusion_model.out.2.weight",
                              "first_stage_model.decoder.conv_out": "first_stage_model.decoder.conv_out.weight"}
    # VAE keys are not offered to UNet names, neither as matches nor as candidates
    assert set(report.unmatched) == {"lora_unet_decoder_conv_out"}
    assert all(k.startswith("model.diffusion_model.") for c in report.unmatched.values() for k in c)


def test_comfyui_clip_keys(sdxl):
    """ComfyUI holds SDXL's text encoders as clip_l.transformer.* / clip_g.transformer.* (transformers layout)."""
    pipe = family_target("sdxl", "diffusers")
    comfy = {}
    for k, v in pipe.items():
        for src, dst in (("text_encoder.", "clip_l.transformer."), ("text_encoder_2.", "clip_g.transformer.")):
            if k.startswith(src):
                comfy[dst + k[len(src):]] = v
    te1 = text_styles(sdxl["te1_mods"], "te1")["kohya"]
    te2 = text_styles(sdxl["te2_mods"], "te2")["kohya_transformers5"]
    report = resolve(list(te1) + list(te2), comfy)
    assert report.ok, report.format()
    assert report.matched["lora_te2_encoder_layers_31_mlp_fc2"] == "clip_g.transformer.text_model.encoder.layers.31.mlp.fc2.weight"
    assert all(k in comfy for k in report.matched.values()) and len(report.matched) == len(te1) + len(te2)
    assert report.target_family == "sdxl"
