"""Our LoKr patches inside a real ComfyUI (COMFYUI_PATH; 0.3.64 and 0.8.0), on a tiny SD1.5 checkpoint.

- files ComfyUI core applies correctly (full / split W1 and W2, 1x1 and 3x3 conv, text encoder):
  our patched weights == core LoraLoader's (comfy.sd.load_lora_for_models), through ComfyUI's own
  ModelPatcher.patch_model;
- Tucker and DoRA (core gets them wrong) == lycoris-lora's merged weight; a PEFT LoKr adapter
  (core cannot load it) == peft's get_delta_weight;
- strength 0 -> bit-identical weights; the input MODEL / CLIP keep no patches.
Run: ``COMFYUI_PATH=$BENCH/ComfyUI $BENCH/venv/bin/python -m pytest -q tests/comfyui/test_comfyui_patch.py``.
"""
from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import save_file

import comfy_env
from tests.support.lokr_node_fixtures import lycoris_module, merged_reference, peft_lokr_adapter, state_dict_of

U = "diffusion_model."
C = "clip_l.transformer.text_model."
CORE_OK = {  # kohya name -> (ComfyUI key, LokrModule options)
    "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q": (U + "input_blocks.1.1.transformer_blocks.0.attn1.to_q",
                                                                    dict(dim=4, decompose_both=True, factor=8)),
    "lora_unet_input_blocks_1_1_proj_in": (U + "input_blocks.1.1.proj_in", dict(dim=4, factor=8)),
    "lora_unet_input_blocks_1_0_in_layers_2": (U + "input_blocks.1.0.in_layers.2", dict(dim=4, factor=8)),
    "lora_unet_middle_block_1_transformer_blocks_0_attn2_to_k": (U + "middle_block.1.transformer_blocks.0.attn2.to_k",
                                                                  dict(dim=64, factor=4)),
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (C + "encoder.layers.0.self_attn.q_proj",
                                                             dict(dim=4, factor=8)),
}
EXACT = {
    "lora_unet_output_blocks_1_0_in_layers_2": (U + "output_blocks.1.0.in_layers.2", dict(dim=4, factor=8, use_tucker=True)),
    "lora_unet_input_blocks_3_1_transformer_blocks_0_ff_net_2": (U + "input_blocks.3.1.transformer_blocks.0.ff.net.2",
                                                                  dict(dim=4, factor=8, weight_decompose=True)),
}


@pytest.fixture(scope="module")
def comfy_setup(tmp_path_factory):
    comfy = comfy_env.setup_comfy()
    tmp = tmp_path_factory.mktemp("comfy")
    ckpt = comfy_env.cached_tiny_sd15(tmp)
    model, clip, vae = comfy_env.load_checkpoint(ckpt)
    assert type(model.model.model_config).__name__ == "SD15"
    pack = comfy_env.load_pack()
    return dict(comfy=comfy, tmp=tmp, model=model, clip=clip, vae=vae, pack=pack)


def _layer(env, key):
    root = env["model"].model if key.startswith(U) else env["clip"].cond_stage_model
    return root.get_submodule(key[:-len(".weight")] if key.endswith(".weight") else key)


def _base(env, key):
    return _layer(env, key).weight.detach().float().clone()


def _make(env, specs, fname, seed=0):
    mods = {}
    for i, (name, (key, kw)) in enumerate(specs.items()):
        layer = copy.deepcopy(_layer(env, key)).float()
        mods[name] = lycoris_module(name, layer, seed=seed + i, **kw)
    path = env["tmp"] / fname
    save_file(state_dict_of(mods), str(path))
    return mods, str(path)


def _ours(env, path, sm, sc, scale_rule="file"):
    loaders = comfy_env.pack_module("nodes.planning")
    weights = comfy_env.pack_module("lokr_core.formats.io").load_lokr(path)
    plan = loaders.plan_patches(weights, env["model"], env["clip"], scale_rule=scale_rule,
                                other_state_dict=loaders.other_state_dict_from_file(path))
    return loaders.apply_plan(plan, env["model"], env["clip"], sm, sc)


def _weights(env, m, c, keys):
    u = [k + ".weight" for k in keys if k.startswith(U)]
    t = [k + ".weight" for k in keys if not k.startswith(U)]
    out = comfy_env.patched_weights(m, u) if u else {}
    if t:
        out.update(comfy_env.patched_weights(c.patcher, t))
    return out


def test_patch_class_is_a_comfy_weight_adapter(comfy_setup):
    import comfy.weight_adapter

    patch = comfy_env.pack_module("nodes.patch")
    assert issubclass(patch.lokr_patch_class(), comfy.weight_adapter.WeightAdapterBase)


def test_equals_core_loraloader_for_files_core_handles(comfy_setup):
    import comfy.sd
    import comfy.utils

    env = comfy_setup
    _, path = _make(env, CORE_OK, "core_ok.safetensors")
    keys = [k for k, _ in CORE_OK.values()]
    m, c = _ours(env, path, 0.8, 1.2)
    assert not env["model"].patches and not env["clip"].patcher.patches  # inputs untouched
    ours = _weights(env, m, c, keys)
    cm, cc = comfy.sd.load_lora_for_models(env["model"], env["clip"], comfy.utils.load_torch_file(path), 0.8, 1.2)
    core = _weights(env, cm, cc, keys)
    for k in keys:
        k = k + ".weight"
        assert not torch.equal(ours[k], _base(env, k)), k
        torch.testing.assert_close(ours[k], core[k], rtol=1e-5, atol=1e-6)


def test_tucker_and_dora_equal_lycoris(comfy_setup):
    env = comfy_setup
    mods, path = _make(env, EXACT, "exact.safetensors", seed=10)
    m, c = _ours(env, path, 1.0, 1.0)
    got = _weights(env, m, c, [k for k, _ in EXACT.values()])
    for name, (key, _) in EXACT.items():
        ref = merged_reference(mods[name], _base(env, key + ".weight"), 1.0)
        torch.testing.assert_close(got[key + ".weight"], ref, rtol=1e-5, atol=1e-6)


def test_peft_adapter_equals_peft(comfy_setup):
    env = comfy_setup
    diff = {"down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q": U + "input_blocks.1.1.transformer_blocks.0.attn1.to_q",
            "down_blocks.0.resnets.0.conv1": U + "input_blocks.1.0.in_layers.2"}
    pm = peft_lokr_adapter({p: _layer(env, key) for p, key in diff.items()}, str(env["tmp"] / "peft"))
    m, c = _ours(env, str(env["tmp"] / "peft" / "adapter_model.safetensors"), 1.0, 1.0)
    got = _weights(env, m, c, list(diff.values()))
    for path_, key in diff.items():
        with torch.no_grad():
            delta = pm.base_model.model.get_submodule(path_).get_delta_weight("default")
        torch.testing.assert_close(got[key + ".weight"], _base(env, key + ".weight") + delta, rtol=1e-5, atol=1e-6)


def test_strength_zero_is_bit_identical_and_nodes_listed(comfy_setup):
    env = comfy_setup
    _, path = _make(env, CORE_OK, "zero.safetensors")
    keys = [k for k, _ in CORE_OK.values()]
    m, c = _ours(env, path, 1.0, 1.0)
    for plist in list(m.patches.values()) + list(c.patcher.patches.values()):
        plist[:] = [(0.0,) + tuple(p[1:]) for p in plist]
    got = _weights(env, m, c, keys)
    for k in keys:
        assert torch.equal(got[k + ".weight"], _layer(env, k).weight.detach().float())
    classes = env["pack"].NODE_CLASS_MAPPINGS
    assert {"LoKrLoader", "LoKrLoaderModelOnly", "LoKrBlockWeights", "LoKrStack", "ApplyLoKrStack", "LoKrInfo",
            "LoKrMergeCheckpoint"} <= set(classes)


def test_mixed_file_lora_modules_go_to_core(comfy_setup):
    """LoRA modules in a LoKr file are applied by ComfyUI's own loader: the whole file == core's result."""
    import comfy.sd
    import comfy.utils

    env = comfy_setup
    name = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q"
    mods, _ = _make(env, {name: CORE_OK[name]}, "tmp_lokr.safetensors", seed=20)
    sd = state_dict_of(mods)
    g = torch.Generator().manual_seed(4)
    lora = "lora_unet_input_blocks_1_1_proj_out"
    sd[f"{lora}.lora_down.weight"] = torch.randn(4, 320, 1, 1, generator=g) * 0.05
    sd[f"{lora}.lora_up.weight"] = torch.randn(320, 4, 1, 1, generator=g) * 0.05
    sd[f"{lora}.alpha"] = torch.tensor(2.0)
    path = str(env["tmp"] / "mixed.safetensors")
    save_file(sd, path)
    keys = [CORE_OK[name][0], U + "input_blocks.1.1.proj_out"]
    m, c = _ours(env, path, 0.7, 1.0)
    ours = _weights(env, m, c, keys)
    cm, cc = comfy.sd.load_lora_for_models(env["model"], env["clip"], comfy.utils.load_torch_file(path), 0.7, 1.0)
    core = _weights(env, cm, cc, keys)
    for k in keys:
        assert not torch.equal(ours[k + ".weight"], _base(env, k + ".weight")), k
        torch.testing.assert_close(ours[k + ".weight"], core[k + ".weight"], rtol=1e-5, atol=1e-6)
