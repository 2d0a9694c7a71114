"""LoKr Power Loader inside a real ComfyUI (COMFYUI_PATH), on the tiny SD1.5 checkpoint, called as ComfyUI calls it.

Rows: a LoKr file made by lycoris-lora (split Linear, Tucker conv, text encoder), a PEFT LoKr adapter
made by peft, a row that is off, and a plain LoRA file. The weights ComfyUI patches equal
lycoris-lora's merged weight / W + peft's ``get_delta_weight`` at the fp32 floor; the off row's
weight stays bit-identical; the LoRA row equals core LoraLoader's result (with a block vector:
core's result at the block's strength). Files live in a temporary folder registered as ``loras``.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import save_file

import comfy_env
from tests.support.lokr_node_fixtures import lycoris_module, merged_reference, peft_lokr_adapter, state_dict_of

U = "diffusion_model."
C = "clip_l.transformer.text_model."
LOKR = {  # kohya name -> (ComfyUI key, LokrModule options)
    "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q": (U + "input_blocks.1.1.transformer_blocks.0.attn1.to_q",
                                                                    dict(dim=4, decompose_both=True, factor=8)),
    "lora_unet_output_blocks_1_0_in_layers_2": (U + "output_blocks.1.0.in_layers.2", dict(dim=4, factor=8, use_tucker=True)),
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (C + "encoder.layers.0.self_attn.q_proj", dict(dim=4, factor=8)),
}
PEFT = {"down_blocks.0.resnets.0.conv1": U + "input_blocks.1.0.in_layers.2",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k": U + "input_blocks.1.1.transformer_blocks.0.attn1.to_k"}
OFF = ("lora_unet_input_blocks_1_1_proj_in", U + "input_blocks.1.1.proj_in")
LORA = {"lora_unet_input_blocks_1_1_proj_out": U + "input_blocks.1.1.proj_out",
        "lora_te_text_model_encoder_layers_0_mlp_fc1": C + "encoder.layers.0.mlp.fc1"}
PEFT_FILE = "peft/adapter_model.safetensors"
# SD1.x 17 values: BASE, IN01, IN02, IN04, IN05, IN07, IN08, MID, OUT03..OUT11 (input_blocks.1 = IN01)
HALF_IN01 = ",".join(["1", "0.5"] + ["1"] * 15)


def _plain_lora(layers: dict, seed: int) -> dict:
    """kohya LoRA (rank 4, alpha 2) for {name: layer}: lora_down / lora_up shaped as the layer."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, layer in layers.items():
        w = layer.weight
        tail = tuple(w.shape[2:]) and (1, 1)
        sd[f"{name}.lora_down.weight"] = torch.randn((4, w.shape[1], *tail), generator=g) * 0.05
        sd[f"{name}.lora_up.weight"] = torch.randn((w.shape[0], 4, *tail), generator=g) * 0.05
        sd[f"{name}.alpha"] = torch.tensor(2.0)
    return sd


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    comfy_env.setup_comfy()
    import folder_paths

    tmp = tmp_path_factory.mktemp("comfy_power")
    model, clip, _vae = comfy_env.load_checkpoint(comfy_env.cached_tiny_sd15(tmp))
    comfy_env.load_pack()
    loras = tmp / "loras"
    loras.mkdir()

    def layer(key):
        return (model.model if key.startswith(U) else clip.cond_stage_model).get_submodule(key)

    mods = {name: lycoris_module(name, copy.deepcopy(layer(key)).float(), seed=40 + i, **kw)
            for i, (name, (key, kw)) in enumerate(LOKR.items())}
    save_file(state_dict_of(mods), str(loras / "lokr.safetensors"))
    pm = peft_lokr_adapter({p: layer(key) for p, key in PEFT.items()}, str(loras / "peft"))
    off = lycoris_module(OFF[0], copy.deepcopy(layer(OFF[1])).float(), dim=4, factor=8, seed=50)
    save_file(state_dict_of({OFF[0]: off}), str(loras / "off.safetensors"))
    save_file(_plain_lora({n: layer(k) for n, k in LORA.items()}, 60), str(loras / "plain_lora.safetensors"))
    folder_paths.add_model_folder_path("loras", str(loras))
    return dict(model=model, clip=clip, mods=mods, peft=pm, layer=layer,
                node=comfy_env.pack_module("nodes.power_loader").LoKrPowerLoader)


def _base(env, key):
    return env["layer"](key).weight.detach().float().clone()


def _weights(m, c, keys):
    out = comfy_env.patched_weights(m, [k + ".weight" for k in keys if k.startswith(U)])
    out.update(comfy_env.patched_weights(c.patcher, [k + ".weight" for k in keys if not k.startswith(U)]))
    return out


def _core_lora(env, name, sm, sc):
    """(MODEL, CLIP) from ComfyUI's own LoraLoader node."""
    import nodes

    return nodes.LoraLoader().load_lora(env["model"], env["clip"], name, sm, sc)


def test_rows_equal_references_off_row_untouched_lora_row_is_core(env):
    rows = [{"on": True, "file": "lokr.safetensors", "strength_model": 0.8, "strength_clip": 1.2},
            {"on": False, "file": "off.safetensors", "strength_model": 1.0},
            {"on": True, "file": PEFT_FILE, "strength_model": 1.0},
            {"on": True, "file": "plain_lora.safetensors", "strength_model": 0.7, "strength_clip": 0.5, "linked": False}]
    assert env["node"].VALIDATE_INPUTS(json.dumps(rows)) is True
    out = env["node"]().load(env["model"], env["clip"], json.dumps(rows))
    m, c, _words, loaded, stack = out["result"]
    assert not env["model"].patches and not env["clip"].patcher.patches  # inputs untouched
    assert [r["kind"] for r in out["ui"]["lokr_power"][0]["rows"]] == ["lokr", "off", "lokr", "lora"]
    assert out["ui"]["lokr_power"][0]["model_family"] == "sd1"
    assert stack == [("lokr.safetensors", 0.8, 1.2), (PEFT_FILE, 1.0, 1.0), ("plain_lora.safetensors", 0.7, 0.5)]
    assert loaded.splitlines()[0] == "lokr.safetensors:0.8:1.2"
    keys = [k for k, _ in LOKR.values()] + list(PEFT.values()) + [OFF[1]] + list(LORA.values())
    got = _weights(m, c, keys)
    for name, (key, _) in LOKR.items():
        ref = merged_reference(env["mods"][name], _base(env, key), 0.8 if key.startswith(U) else 1.2)
        torch.testing.assert_close(got[key + ".weight"], ref, rtol=1e-5, atol=1e-6)
    for path, key in PEFT.items():
        with torch.no_grad():
            delta = env["peft"].base_model.model.get_submodule(path).get_delta_weight("default").float()
        torch.testing.assert_close(got[key + ".weight"], _base(env, key) + delta, rtol=1e-5, atol=1e-6)
    assert torch.equal(got[OFF[1] + ".weight"], _base(env, OFF[1]))
    core = _weights(*_core_lora(env, "plain_lora.safetensors", 0.7, 0.5), list(LORA.values()))
    for key in LORA.values():
        assert not torch.equal(got[key + ".weight"], _base(env, key)), key
        torch.testing.assert_close(got[key + ".weight"], core[key + ".weight"], rtol=1e-5, atol=1e-6)


def test_lora_row_block_vector_is_core_at_the_block_strength(env):
    rows = [{"file": "plain_lora.safetensors", "strength_model": 0.6, "strength_clip": 0.9, "blocks": HALF_IN01}]
    out = env["node"]().load(env["model"], env["clip"], json.dumps(rows))
    assert out["ui"]["lokr_power"][0]["rows"][0]["kind"] == "lora"
    got = _weights(*out["result"][:2], list(LORA.values()))
    core = _weights(*_core_lora(env, "plain_lora.safetensors", 0.3, 0.9), list(LORA.values()))
    for key in LORA.values():
        torch.testing.assert_close(got[key + ".weight"], core[key + ".weight"], rtol=1e-5, atol=1e-6)
    # the same row in bypass mode: no weight is patched, the injections carry it (a ComfyUI without
    # bypass LoRA support: a clear error instead)
    if not comfy_env.pack_module("nodes.bypass").core_bypass_supported():
        errors = comfy_env.pack_module("lokr_core.base.errors")
        with pytest.raises(errors.LoKrConfigError, match="plain_lora.safetensors.*patch weights"):
            env["node"]().load(env["model"], env["clip"], json.dumps(rows), apply="bypass")
        return
    m, c, *_ = env["node"]().load(env["model"], env["clip"], json.dumps(rows), apply="bypass")["result"]
    assert not m.patches and not c.patcher.patches and m.injections and c.patcher.injections
