"""LoKr Block Weights on a tiny Flux built with ComfyUI's own classes (COMFYUI_PATH).

The model (tests/comfyui/dit_models.py: two double and two single blocks, hidden size 64) is read
by the node as ``flux`` with {"double": 2, "single": 2}; a LoKr file in kohya names and SimpleTuner
``lycoris_`` diffusers names (fused q / k / v row blocks of ComfyUI's ``qkv`` / ``linear1``) is
applied with a per-block vector. Expected: every adapted weight equals W + s * m_block * ΔW (ΔW
from lycoris-lora, a row block only on its rows) in patch mode; in bypass mode each layer's output
equals the layer with that weight and the weights stay bit-identical; a zero block is untouched.
"""
from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import save_file

import comfy_env
import dit_models
from tests.support.lokr_node_fixtures import lycoris_module, merged_reference, state_dict_of

D = "diffusion_model."
H = 64  # hidden size of the tiny Flux
# file module -> (ComfyUI weight, rows (start, length) or None, block ID)
SPECS = {
    "lora_unet_double_blocks_0_img_attn_qkv": ("double_blocks.0.img_attn.qkv", None, "double 0"),
    "lycoris_transformer_blocks_1_attn_to_k": ("double_blocks.1.img_attn.qkv", (H, H), "double 1"),
    "lora_unet_double_blocks_1_txt_mlp_2": ("double_blocks.1.txt_mlp.2", None, "double 1"),
    "lycoris_single_transformer_blocks_0_attn_to_q": ("single_blocks.0.linear1", (0, H), "single 0"),
    "lora_unet_single_blocks_1_linear2": ("single_blocks.1.linear2", None, "single 1"),
    "lora_unet_img_in": ("img_in", None, "BASE"),
}
VECTOR = "0.5,2,0,1.5,0.25"  # BASE, double 0, double 1, single 0, single 1
VALUES = {"BASE": 0.5, "double 0": 2.0, "double 1": 0.0, "single 0": 1.5, "single 1": 0.25}
FILE = "flux_blocks.safetensors"
SM = 0.8


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    comfy_env.setup_comfy()

    model = dit_models.build("flux")
    comfy_env.load_pack()
    tmp = tmp_path_factory.mktemp("comfy_dit_blocks")
    mods = {}
    for i, (name, (path, rows, _)) in enumerate(SPECS.items()):
        layer = copy.deepcopy(model.model.get_submodule(D + path)).float()
        if rows is not None:  # the diffusers projection is one row block of ComfyUI's fused weight
            part = torch.nn.Linear(layer.in_features, rows[1], bias=False)
            with torch.no_grad():
                part.weight.copy_(layer.weight[rows[0]:rows[0] + rows[1]])
            layer = part
        mods[name] = lycoris_module(name, layer, dim=4, factor=4, seed=50 + i)
    loras = tmp / "loras"
    loras.mkdir()
    save_file(state_dict_of(mods), str(loras / FILE))
    comfy_env.set_model_folders("loras", str(loras))
    return dict(model=model, mods=mods, node=comfy_env.pack_module("nodes.block_weights"))


def _expected(env) -> dict[str, torch.Tensor]:
    """ComfyUI weight key -> W with every module's s * m_block * ΔW added (on its rows)."""
    out = {}
    for name, (path, rows, block) in SPECS.items():
        key = D + path + ".weight"
        w = out.get(key, env["model"].model.get_submodule(D + path).weight.detach().float().clone())
        if rows is None:
            w = merged_reference(env["mods"][name], w, SM * VALUES[block])
        else:
            lo, n = rows
            w[lo:lo + n] = merged_reference(env["mods"][name], w[lo:lo + n], SM * VALUES[block])
        out[key] = w
    return out


def _run(env, apply: str):
    out = env["node"].LoKrBlockWeights().load(env["model"], None, FILE, SM, 1.0, "custom", VECTOR, "auto", apply=apply)
    return out["result"][0], out["ui"]["lokr_report"][0], out["result"][2]


def test_flux_block_vector_patch_mode(env):
    m, report, text = _run(env, "patch weights")
    assert report["block_family"] == "flux" and report["blocks"] == {"double": 2, "single": 2}, report
    assert report["model_family"] == "flux", report
    assert report["matched"] == len(SPECS) and not report["unmatched"], report
    assert report["block_weights"] == VALUES and text.startswith("BASE=0.5, double 0=2, double 1=0"), text
    expected = _expected(env)
    got = comfy_env.patched_weights(m, list(expected))
    for key, w in expected.items():
        torch.testing.assert_close(got[key], w, rtol=1e-5, atol=1e-6, msg=key)
    w0 = env["model"].model.get_submodule(D + "double_blocks.1.txt_mlp.2").weight.detach().float()
    assert torch.equal(got[D + "double_blocks.1.txt_mlp.2.weight"], w0)  # block value 0: bit-identical
    assert not env["model"].patches  # the input MODEL is never changed


def test_flux_block_vector_bypass_mode(env):
    import comfy.model_management as mm

    m, report, _ = _run(env, "bypass")
    expected = _expected(env)
    mm.unload_all_models()
    before = {k: v.detach().clone() for k, v in m.model.state_dict().items()}
    g = torch.Generator().manual_seed(5)
    m.patch_model()
    try:
        for key, w in expected.items():
            layer = m.model.get_submodule(key[:-len(".weight")])
            x = torch.randn(2, 3, layer.in_features, generator=g)
            with torch.no_grad():
                got = layer(x).float()
            ref = torch.nn.functional.linear(x, w, layer.bias)
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5, msg=key)
    finally:
        m.unpatch_model(m.offload_device)
    after = m.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not env["model"].injections and not env["model"].patches  # the input MODEL carries nothing
