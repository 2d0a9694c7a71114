"""LoKr Block Weights against ComfyUI stand-ins: values by block ID (numbers vs lycoris-lora).

SD: the stand-in UNet of tests/support/node_env.py. Transformers: stand-in diffusion models with the
weight names and shapes of the tiny ComfyUI 0.28.0 Flux / SD3 / Wan models
(tests/support/dit_tiny_keys.json: two blocks per group), a LoKr file in kohya names made by
lycoris-lora; each weight must equal W + s * m_block * ΔW (ΔW from lycoris).
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from tests.support import comfy_standins as cs
from tests.support.comfy_pack import pack_module
from tests.support.lokr_node_fixtures import lycoris_module, merged_reference, state_dict_of
from tests.support.node_env import SPECS, assert_untouched

# 17-value SD vector: BASE, IN01, IN02, IN04, IN05, IN07, IN08, MID, OUT03..OUT11
VEC17 = "0.5,0.25,1,1,1,1,1,0,2,1,3,1,1,1,1,1,1"
EXPECT = {SPECS[0][0]: 0.25, SPECS[1][0]: 0.0, SPECS[2][0]: 2.0, SPECS[3][0]: 3.0, SPECS[4][0]: 0.5}
KEYS = json.loads((Path(__file__).resolve().parents[1] / "support" / "dit_tiny_keys.json").read_text())


def _bw():
    return pack_module("nodes.block_weights")

errors = pack_module("lokr_core.base.errors")


def test_block_weights_by_block_id(env):
    B = _bw()
    snap = cs.snapshot(env["model"])
    out = B.LoKrBlockWeights().load(env["model"], env["clip"], "test.safetensors", 0.8, 1.0, "custom", VEC17, "auto")
    m, c, text = out["result"]
    assert cs.unchanged(env["model"], snap)
    assert "IN01=0.25" in text and "MID=0" in text and "OUT05=3" in text and "IN00=1" in text
    report = out["ui"]["lokr_report"][0]
    # the stand-in's cross-attention width (24) names neither SD1 (768) nor SD2 (1024)
    assert report["block_family"] == "sd1/sd2" and report["blocks"] is None
    sd, csd = m.patched_state_dict(), c.patcher.patched_state_dict()
    for name, key, _ in SPECS:
        k, w0 = env["refs"][name]
        got = (sd if key.startswith("diffusion_model") else csd)[k]
        strength = EXPECT[name] * (0.8 if key.startswith("diffusion_model") else 1.0)
        if strength == 0:
            assert torch.equal(got, w0)  # a zero block is bit-identical
        else:
            torch.testing.assert_close(got, merged_reference(env["mods"][name], w0, strength), rtol=1e-5, atol=1e-6)


def test_block_weights_preset_and_bad_vector(env):
    B = _bw()
    names = B.preset_names()
    assert "SD-ALL" in names and names[0] == "custom" and "DIT-ALL" in names and "FLUX-DBL-FRONT" in names
    out = B.LoKrBlockWeights().load(env["model"], env["clip"], "test.safetensors", 1.0, 1.0, "SD-NONE", "", "sd1")
    base = env["model"].model.state_dict()
    for k, v in out["result"][0].patched_state_dict().items():
        assert torch.equal(v, base[k])
    assert_untouched(env, lambda: B.LoKrBlockWeights().load(env["model"], env["clip"], "test.safetensors", 1.0, 1.0,
                                                              "custom", "1,1,1", "sd1"),
                      errors.LoKrError, "3 values", "IN01", "test.safetensors")
    # a transformer preset or family on an SD UNet: refused before any work, naming what fits
    assert_untouched(env, lambda: B.LoKrBlockWeights().load(env["model"], env["clip"], "test.safetensors", 1.0, 1.0,
                                                              "DIT-ALL", "", "sd1"),
                      errors.LoKrError, "'DIT-ALL'", "transformer", "SD-ALL")
    assert_untouched(env, lambda: B.LoKrBlockWeights().load(env["model"], env["clip"], "test.safetensors", 1.0, 1.0,
                                                              "custom", "1,1,1", "flux"),
                      errors.LoKrError, "'flux'", "UNet", "auto")
    msg = B.LoKrBlockWeights.VALIDATE_INPUTS(lokr_name="test.safetensors", strength_model=1.0, strength_clip=1.0,
                                             A=float("nan"), B=1.0)
    assert isinstance(msg, str) and "A" in msg and "finite" in msg
    assert B.detect_family(env["model"]) == "sd1/sd2"


def test_family_input_lists_lokr_cores_block_layouts(env):
    B = _bw()
    fams = B.LoKrBlockWeights.INPUT_TYPES()["required"]["family"][0]
    bw = pack_module("lokr_core.keymap.block_weights")
    sig = pack_module("lokr_core.keymap.family_signatures")
    assert fams[:4] == ["auto", "sd1", "sd2", "sdxl"]
    assert set(fams[4:]) == set(sig.DEFAULT_BLOCKS) and {"flux", "sd3", "wan", "zimage"} <= set(fams)
    for fam in fams[1:]:  # every listed family parses its own all-ones % spec
        assert set(bw.parse_block_weights("%default=1", fam).values()) == {1.0}


# ------------------------------------------------------------------------------- transformers
# family in dit_tiny_keys.json -> (kohya module name -> (ComfyUI layer path, its block ID)), vector, {block: value}
DIT = {
    "flux": ({
        "lora_unet_double_blocks_0_img_attn_qkv": ("double_blocks.0.img_attn.qkv", "double 0"),
        "lora_unet_double_blocks_1_txt_mlp_0": ("double_blocks.1.txt_mlp.0", "double 1"),
        "lora_unet_single_blocks_0_linear1": ("single_blocks.0.linear1", "single 0"),
        "lora_unet_single_blocks_1_linear2": ("single_blocks.1.linear2", "single 1"),
        "lora_unet_img_in": ("img_in", "BASE"),
    }, "0.5,2,0,1.5,0.25", {"BASE": 0.5, "double 0": 2.0, "double 1": 0.0, "single 0": 1.5, "single 1": 0.25}),
    "sd3": ({
        "lora_unet_joint_blocks_0_x_block_attn_qkv": ("joint_blocks.0.x_block.attn.qkv", "joint 0"),
        "lora_unet_joint_blocks_1_context_block_attn_qkv": ("joint_blocks.1.context_block.attn.qkv", "joint 1"),
        "lora_unet_joint_blocks_1_x_block_mlp_fc2": ("joint_blocks.1.x_block.mlp.fc2", "joint 1"),
        "lora_unet_context_embedder": ("context_embedder", "BASE"),
    }, "%base=0.5,joint0=2,joint1=0.75", {"BASE": 0.5, "joint 0": 2.0, "joint 1": 0.75}),
    "wan21": ({
        "lora_unet_blocks_0_self_attn_q": ("blocks.0.self_attn.q", "layers 0"),
        "lora_unet_blocks_1_ffn_2": ("blocks.1.ffn.2", "layers 1"),
        "lora_unet_blocks_1_cross_attn_o": ("blocks.1.cross_attn.o", "layers 1"),
        "lora_unet_head_head": ("head.head", "BASE"),
    }, "1.5,0,3", {"BASE": 1.5, "layers 0": 0.0, "layers 1": 3.0}),
}


def dit_env(tmp_path, monkeypatch, family: str, seed: int = 0) -> dict:
    """A stand-in ``family`` diffusion model (every 2-D weight of the tiny ComfyUI model as a Linear,
    ``diffusion_model.`` keys), a CLIP stand-in, and ``loras/dit.safetensors`` with :data:`DIT`'s modules."""
    loras = tmp_path / "loras"
    loras.mkdir()
    monkeypatch.setitem(sys.modules, "folder_paths", cs.folder_paths_module(str(loras), str(tmp_path)))
    torch.manual_seed(seed)
    layers = {"diffusion_model." + k[:-len(".weight")]: nn.Linear(s[1], s[0], bias=False)
              for k, s in KEYS[family]["keys"].items() if k.endswith(".weight") and len(s) == 2}
    root = cs.module_tree(layers)
    specs = DIT[family][0]
    mods, refs = {}, {}
    for i, (name, (path, _)) in enumerate(specs.items()):
        layer = root.get_submodule("diffusion_model." + path)
        mods[name] = lycoris_module(name, copy.deepcopy(layer), dim=2, factor=4, seed=10 + i)
        refs[name] = ("diffusion_model." + path + ".weight", layer.weight.detach().clone())
    save_file(state_dict_of(mods), str(loras / "dit.safetensors"))
    return dict(model=cs.ModelPatcher(root), clip=cs.CLIP(cs.tiny_clip()), mods=mods, refs=refs)


@pytest.mark.parametrize("family", list(DIT))
def test_dit_block_weights_by_block_id(tmp_path, monkeypatch, family):
    """auto: the model's family and block counts (two per group) are read from its weights; each weight
    gets W + s * value(its block) * ΔW; a zero block stays bit-identical; the vector names DiT blocks."""
    B = _bw()
    e = dit_env(tmp_path, monkeypatch, family)
    specs, vector, expect = DIT[family]
    out = B.LoKrBlockWeights().load(e["model"], e["clip"], "dit.safetensors", 0.8, 1.0, "custom", vector, "auto")
    m, _c, text = out["result"]
    report = out["ui"]["lokr_report"][0]
    fam = {"wan21": "wan"}.get(family, family)
    groups = {"flux": {"double": 2, "single": 2}, "sd3": {"joint": 2}, "wan21": {"layers": 2}}[family]
    assert report["block_family"] == fam and report["blocks"] == groups, report
    assert report["block_weights"] == expect and list(report["block_weights"])[0] == "BASE"
    assert text == ", ".join(f"{k}={v:g}" for k, v in expect.items())
    assert report["matched"] == len(specs), report
    sd = m.patched_state_dict()
    for name, (_, block) in specs.items():
        key, w0 = e["refs"][name]
        strength = 0.8 * expect[block]
        if strength == 0:
            assert torch.equal(sd[key], w0), name
        else:
            torch.testing.assert_close(sd[key], merged_reference(e["mods"][name], w0, strength), rtol=1e-5, atol=1e-6)


def test_flux_short_form_percent_and_presets(tmp_path, monkeypatch):
    """Flux: one value per group, `%` items by block ID, DiT presets; Flux.2 / Chroma layouts share
    Flux's groups (allowed), SD3's and SD's do not (refused, nothing changed)."""
    B = _bw()
    e = dit_env(tmp_path, monkeypatch, "flux")
    node = B.LoKrBlockWeights()

    def blocks(preset, vector, family="auto"):
        return node.load(e["model"], e["clip"], "dit.safetensors", 1.0, 1.0, preset, vector, family)["ui"][
            "lokr_report"][0]["block_weights"]

    assert blocks("custom", "1,0.5,2") == {"BASE": 1, "double 0": 0.5, "double 1": 0.5, "single 0": 2, "single 1": 2}
    assert blocks("custom", "%default=0,base=1,double1=0.5") == {
        "BASE": 1, "double 0": 0, "double 1": 0.5, "single 0": 0, "single 1": 0}
    assert blocks("FLUX-DOUBLE-ONLY", "") == {"BASE": 1, "double 0": 1, "double 1": 1, "single 0": 0, "single 1": 0}
    assert blocks("custom", "0,1,1,1,1", "chroma") == {"BASE": 0, "double 0": 1, "double 1": 1, "single 0": 1,
                                                       "single 1": 1}
    env = dict(e, refs={})
    for preset, vector, family, words in [
        ("SD-ALL", "", "auto", ("'SD-ALL'", "SD UNets", "DIT-ALL")),
        ("FLUX-DBL-TAIL", "", "auto", ("double 13", "double 0..double 1")),  # this model has 2 double blocks
        ("custom", "1,1,1,1", "auto", ("4 values", "double 0..1", "single 0..1")),
        ("custom", "1,1", "sd3", ("'sd3'", "Flux.1", "double, single")),
        ("custom", VEC17, "sd1", ("'sd1'", "Flux.1")),
    ]:
        assert_untouched(env, lambda: node.load(e["model"], e["clip"], "dit.safetensors", 1.0, 1.0, preset, vector,
                                                family), errors.LoKrError, "dit.safetensors", *words)


def test_dit_multiplier_reads_comfyui_patch_keys():
    """Keys as ComfyUI's map gives them: plain, ``(key, (dim, start, length))`` for a fused qkv row
    block, ``(key, None, function)`` for swapped modulations; each gets its block's value."""
    B = _bw()
    values = {"BASE": 0.5, "double 0": 2.0, "double 1": 3.0, "single 0": 4.0, "single 1": 5.0}
    mult = B.multiplier_for(values, "flux")
    assert mult("diffusion_model.double_blocks.1.img_attn.qkv.weight") == 3.0
    assert mult(("diffusion_model.single_blocks.0.linear1.weight", (0, 0, 64))) == 4.0
    assert mult(("diffusion_model.final_layer.adaLN_modulation.1.weight", None, print)) == 0.5
    assert mult("clip_l.transformer.text_model.encoder.layers.1.mlp.fc1.weight") == 0.5  # text encoders: BASE
