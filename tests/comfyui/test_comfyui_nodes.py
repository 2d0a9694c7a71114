"""Every LoKr loader node, driven as ComfyUI calls it, inside a real ComfyUI (COMFYUI_PATH).

For LoKr Loader, LoKr Loader (model only), LoKr Block Weights (all-ones vector), Apply LoKr
Stack and LoKr from Prompt (a ``<lora:...>`` tag without extension), in both ``apply`` modes: the
weights ComfyUI patches (patch mode) equal lycoris-lora's merged weight at the fp32 floor; in bypass
mode the layers' outputs equal the base layer with that merged weight, and the weights stay
bit-identical; strength 0 leaves the weights bit-identical; the input MODEL / CLIP carry no patches
or injections afterwards. Files live in a temporary folder that is registered as a ``loras``
folder. LoKr from Prompt also mixes a plain LoRA tag (ComfyUI's own loader) with a LoKr tag, and
gives the same weights as LoKr Power Loader rows with the same files.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import save_file

import comfy_env
from tests.support.lokr_node_fixtures import lycoris_module, merged_reference, state_dict_of

U = "diffusion_model."
C = "clip_l.transformer.text_model."
SPECS = {  # kohya name -> (ComfyUI key, LokrModule options): Linear, 1x1 conv, 3x3 conv, Tucker, text encoder
    "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q": (U + "input_blocks.1.1.transformer_blocks.0.attn1.to_q",
                                                                    dict(dim=4, decompose_both=True, factor=8)),
    "lora_unet_input_blocks_1_1_proj_in": (U + "input_blocks.1.1.proj_in", dict(dim=4, factor=8)),
    "lora_unet_input_blocks_1_0_in_layers_2": (U + "input_blocks.1.0.in_layers.2", dict(dim=4, factor=8)),
    "lora_unet_output_blocks_1_0_in_layers_2": (U + "output_blocks.1.0.in_layers.2", dict(dim=4, factor=8, use_tucker=True)),
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (C + "encoder.layers.0.self_attn.q_proj", dict(dim=4, factor=8)),
}
FILE = "nodes_lokr.safetensors"
SM, SC = 0.8, 1.2


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    comfy_env.setup_comfy()
    import folder_paths

    tmp = tmp_path_factory.mktemp("comfy_nodes")
    model, clip, _vae = comfy_env.load_checkpoint(comfy_env.cached_tiny_sd15(tmp))
    comfy_env.load_pack()
    mods = {}
    for i, (name, (key, kw)) in enumerate(SPECS.items()):
        root = model.model if key.startswith(U) else clip.cond_stage_model
        layer = copy.deepcopy(root.get_submodule(key)).float()
        mods[name] = lycoris_module(name, layer, seed=30 + i, **kw)
    loras = tmp / "loras"
    loras.mkdir()
    save_file(state_dict_of(mods), str(loras / FILE))
    folder_paths.add_model_folder_path("loras", str(loras))
    return dict(model=model, clip=clip, mods=mods, node=lambda m: comfy_env.pack_module(f"nodes.{m}"))


def _layer(env, key):
    root = env["model"].model if key.startswith(U) else env["clip"].cond_stage_model
    return root.get_submodule(key)


def _expected(env, name, strength):
    key = SPECS[name][0]
    return merged_reference(env["mods"][name], _layer(env, key).weight.detach().float(), strength)


def _run_node(env, node: str, apply: str, sm: float = SM, sc: float = SC):
    """(MODEL, CLIP) out of ``node`` called as ComfyUI calls it (CLIP is the input for model-only)."""
    n = env["node"]
    if node == "LoKrLoader":
        out = n("loaders").LoKrLoader().load(env["model"], env["clip"], FILE, sm, sc, "file", "interpolate", apply)
        return out["result"]
    if node == "LoKrLoaderModelOnly":
        out = n("loaders").LoKrLoaderModelOnly().load_model_only(env["model"], FILE, sm, "file", "interpolate", apply)
        return out["result"][0], env["clip"]
    if node == "LoKrBlockWeights":
        out = n("block_weights").LoKrBlockWeights().load(env["model"], env["clip"], FILE, sm, sc, "custom",
                                                         ",".join(["1"] * 17), "sd1", apply=apply)
        return out["result"][:2]
    if node == "LoKrFromPrompt":
        out = n("prompt_loader").LoKrFromPrompt().load(env["model"], env["clip"], f"a cat, <lora:{FILE[:-12]}:{sm}:{sc}>",
                                                       "file", apply)
        _, _, clean, _, loaded = out["result"]
        assert clean == "a cat" and loaded.split(":")[0] == FILE
        return out["result"][:2]
    stack = [(FILE, sm, sc)]
    out = n("stack").ApplyLoKrStack().apply(env["model"], env["clip"], stack, "file", apply)
    return out["result"]


def _sides(name):
    return "model" if SPECS[name][0].startswith(U) else "clip"


def _patched(env, m, c):
    """Effective weights: ComfyUI's own patch_model for each side."""
    u = [k + ".weight" for k, _ in SPECS.values() if k.startswith(U)]
    t = [k + ".weight" for k, _ in SPECS.values() if not k.startswith(U)]
    out = comfy_env.patched_weights(m, u)
    out.update(comfy_env.patched_weights(c.patcher, t))
    return out


def _layer_input(layer, g):
    if isinstance(layer, torch.nn.Linear):
        return torch.randn(2, 3, layer.in_features, generator=g)
    return torch.randn(1, layer.in_channels, 8, 8, generator=g)


def _bypass_outputs(env, m, c):
    """Each adapted layer's output with the patcher's injections in (weights snapshotted before and after)."""
    import comfy.model_management as mm

    mm.unload_all_models()
    g = torch.Generator().manual_seed(7)
    out, weights_same = {}, True
    for patcher in (m, c.patcher):
        before = {k: v.detach().clone() for k, v in patcher.model.state_dict().items()}
        patcher.patch_model()
        try:
            for name, (key, _) in SPECS.items():
                if key.startswith(U) != (patcher is m):
                    continue
                layer = _layer(env, key)
                x = _layer_input(layer, g).to(layer.weight.dtype)
                with torch.no_grad():
                    out[name] = (x, layer(x).float())
        finally:
            patcher.unpatch_model(patcher.offload_device)
        after = patcher.model.state_dict()
        weights_same &= all(torch.equal(before[k], after[k]) for k in before)
    return out, weights_same


def _reference_output(layer, x, weight):
    w = weight.to(layer.weight.dtype)
    bias = layer.bias
    if isinstance(layer, torch.nn.Linear):
        return torch.nn.functional.linear(x, w, bias).float()
    return torch.nn.functional.conv2d(x, w, bias, layer.stride, layer.padding, layer.dilation, layer.groups).float()


NODES = ["LoKrLoader", "LoKrLoaderModelOnly", "LoKrBlockWeights", "ApplyLoKrStack", "LoKrFromPrompt"]


@pytest.mark.parametrize("node", NODES)
def test_patch_mode_weights_equal_lycoris(env, node):
    m, c = _run_node(env, node, "patch weights")
    assert not env["model"].patches and not env["clip"].patcher.patches
    got = _patched(env, m, c)
    for name, (key, _) in SPECS.items():
        k = key + ".weight"
        if node == "LoKrLoaderModelOnly" and _sides(name) == "clip":
            assert torch.equal(got[k], _layer(env, key).weight.detach().float()), k
            continue
        strength = SM if _sides(name) == "model" else SC
        torch.testing.assert_close(got[k], _expected(env, name, strength), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("node", NODES)
def test_bypass_mode_outputs_equal_lycoris_weights_untouched(env, node):
    m, c = _run_node(env, node, "bypass")
    assert not env["model"].injections and not env["clip"].patcher.injections
    assert not m.patches and not c.patcher.patches  # nothing patched into the weights
    outs, weights_same = _bypass_outputs(env, m, c)
    assert weights_same
    for name, (x, y) in outs.items():
        layer = _layer(env, SPECS[name][0])
        if node == "LoKrLoaderModelOnly" and _sides(name) == "clip":
            ref = _reference_output(layer, x, layer.weight.detach().float())
        else:
            ref = _reference_output(layer, x, _expected(env, name, SM if _sides(name) == "model" else SC))
        torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)
    # after eject, every layer computes as before
    for name, (x, _y) in outs.items():
        layer = _layer(env, SPECS[name][0])
        with torch.no_grad():
            torch.testing.assert_close(layer(x).float(), _reference_output(layer, x, layer.weight.detach().float()))


@pytest.mark.parametrize("node", NODES)
@pytest.mark.parametrize("apply", ["patch weights", "bypass"])
def test_strength_zero_is_bit_identical(env, node, apply):
    m, c = _run_node(env, node, apply, 0.0, 0.0)
    got = _patched(env, m, c)
    for key, _ in SPECS.values():
        assert torch.equal(got[key + ".weight"], _layer(env, key).weight.detach().float()), key
    assert not m.injections and not c.patcher.injections


def test_prompt_tags_mix_lokr_and_plain_lora(env):
    """LoKr from Prompt with a plain LoRA tag (ComfyUI's own loader) and a LoKr tag: the weight is the
    base + 0.7 * up @ down * alpha / rank + lycoris-lora's LoKr ΔW at 0.8."""
    import os

    import folder_paths

    name = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q"
    key = SPECS[name][0]
    w = _layer(env, key).weight
    g = torch.Generator().manual_seed(3)
    up, down = torch.randn(w.shape[0], 4, generator=g) * 0.05, torch.randn(4, w.shape[1], generator=g) * 0.05
    folder = os.path.dirname(folder_paths.get_full_path("loras", FILE))
    save_file({f"{name}.lora_up.weight": up, f"{name}.lora_down.weight": down, f"{name}.alpha": torch.tensor(2.0)},
              os.path.join(folder, "plain_lora.safetensors"))
    node = env["node"]("prompt_loader").LoKrFromPrompt()
    out = node.load(env["model"], env["clip"], "<lora:plain_lora:0.7>, a cat <lokr:nodes_lokr.safetensors:0.8:1.2>")
    m, c, clean, _, loaded = out["result"]
    assert clean == "a cat" and loaded == f"plain_lora.safetensors:0.7\n{FILE}:0.8:1.2"
    assert out["ui"]["lokr_report"][0]["handled_by"] == "ComfyUI LoraLoader"
    got = _patched(env, m, c)
    ref = _expected(env, name, 0.8) + 0.7 * (up @ down) * (2.0 / 4)
    torch.testing.assert_close(got[key + ".weight"], ref, rtol=1e-5, atol=1e-6)
    for other, (k, _) in SPECS.items():
        if other != name:
            torch.testing.assert_close(got[k + ".weight"], _expected(env, other, 0.8 if _sides(other) == "model" else 1.2),
                                       rtol=1e-5, atol=1e-6)
    if not (comfy_env.ROOT / "nodes" / "power_loader.py").is_file():
        return  # LoKr Power Loader not in this checkout yet
    rows = [{"file": "plain_lora.safetensors", "strength_model": 0.7},
            {"file": "sub/off.safetensors", "on": False, "strength_model": 1.0},
            {"file": FILE, "strength_model": 0.8, "strength_clip": 1.2}]
    pm, pc, _, ploaded, _ = env["node"]("power_loader").LoKrPowerLoader().load(env["model"], env["clip"],
                                                                             json.dumps(rows))["result"]
    assert ploaded == loaded
    power = _patched(env, pm, pc)
    assert set(power) == set(got) and all(torch.equal(power[k], got[k]) for k in got)  # same weights as the tags
