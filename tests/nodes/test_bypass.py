"""Bypass mode (``apply = "bypass"``) of the loader nodes against ComfyUI stand-ins (no ComfyUI needed).

The stand-in ModelPatcher calls the injections' ``inject`` / ``eject`` as ComfyUI does on load /
unload. Reference: each layer run with the weight patch mode computes (``patched_state_dict``),
whose numbers tests/test_nodes_loaders.py checks against lycoris-lora; Tucker and DoRA files come
from lycoris-lora's own LokrModule. Checked: bypass == patch per layer (Linear, 1x1 / 3x3 conv,
Tucker, text encoder), weights never written, inputs keep no injection, eject restores the base
outputs, a bad ``apply`` and DoRA raise a clear error with nothing changed.
"""
from __future__ import annotations

import copy
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from tests.support import comfy_standins as cs
from tests.support.comfy_pack import pack_module
from tests.support.lokr_node_fixtures import lycoris_module, state_dict_of

SPECS = [  # (file module, ComfyUI module, LokrModule options)
    ("lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q",
     "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q", dict(dim=2, decompose_both=True)),
    ("lora_unet_input_blocks_1_1_proj_in", "diffusion_model.input_blocks.1.1.proj_in", dict(dim=2, factor=4)),
    ("lora_unet_input_blocks_0_0", "diffusion_model.input_blocks.0.0", dict(dim=2, factor=4)),
    ("lora_unet_output_blocks_3_0_in_layers_2", "diffusion_model.output_blocks.3.0.in_layers.2",
     dict(dim=2, use_tucker=True)),
    ("lora_unet_output_blocks_5_1_transformer_blocks_0_ff_net_2",
     "diffusion_model.output_blocks.5.1.transformer_blocks.0.ff.net.2", dict(dim=16, factor=4)),  # full / full
    ("lora_te_text_model_encoder_layers_0_mlp_fc1", "clip_l.transformer.text_model.encoder.layers.0.mlp.fc1",
     dict(dim=2, factor=4)),
]
BYPASS, PATCH = "bypass", "patch weights"


@pytest.fixture
def env(tmp_path, monkeypatch):
    loras = tmp_path / "loras"
    loras.mkdir()
    monkeypatch.setitem(sys.modules, "folder_paths", cs.folder_paths_module(str(loras), str(tmp_path)))
    unet, clip = cs.tiny_unet(), cs.tiny_clip()
    mods = {}
    for i, (name, key, kw) in enumerate(SPECS):
        src = unet if key.startswith("diffusion_model") else clip
        mods[name] = lycoris_module(name, copy.deepcopy(src.get_submodule(key)), seed=i, **kw)
    save_file(state_dict_of(mods), str(loras / "test.safetensors"))
    return dict(loras=loras, model=cs.ModelPatcher(unet), clip=cs.CLIP(clip),
                L=pack_module("nodes.loaders"), S=pack_module("nodes.stack"),
                errors=pack_module("lokr_core.base.errors"))


def _probe(layer: nn.Module) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if isinstance(layer, nn.Linear):
        return torch.randn(3, 5, layer.in_features, generator=g)
    return torch.randn(2, layer.in_channels, 7, 7, generator=g)


def _with_weight(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``layer`` run on ``x`` with ``weight`` in place of its own (same bias, stride, padding)."""
    if isinstance(layer, nn.Linear):
        return F.linear(x, weight, layer.bias)
    return F.conv2d(x, weight, layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups)


def _outputs(patcher: cs.ModelPatcher, keys: list[str]) -> dict[str, torch.Tensor]:
    """{key: layer(probe)} with ``patcher``'s injections in (ComfyUI's load), ejected afterwards."""
    patcher.inject_model()
    try:
        with torch.no_grad():
            return {k: patcher.model.get_submodule(k)(_probe(patcher.model.get_submodule(k))) for k in keys}
    finally:
        patcher.eject_model()


def _patch_outputs(patcher: cs.ModelPatcher, keys: list[str]) -> dict[str, torch.Tensor]:
    sd = patcher.patched_state_dict()
    with torch.no_grad():
        return {k: _with_weight(patcher.model.get_submodule(k), _probe(patcher.model.get_submodule(k)), sd[k + ".weight"])
                for k in keys}


def _sides(keys):
    return [k for k in keys if k.startswith("diffusion_model")], [k for k in keys if not k.startswith("diffusion_model")]


def _check_equal(bm, bc, pm, pc, keys, base):
    unet_keys, clip_keys = _sides(keys)
    got = {**_outputs(bm, unet_keys), **_outputs(bc.patcher, clip_keys)}
    ref = {**_patch_outputs(pm, unet_keys), **_patch_outputs(pc.patcher, clip_keys)}
    for k in keys:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-5)
        assert (got[k] - base[k]).abs().max() > 1e-3, k  # the LoKr changes the layer


def test_loader_bypass_equals_patch_and_changes_nothing(env):
    keys = [k for _, k, _ in SPECS]
    unet_keys, clip_keys = _sides(keys)
    snap_m, snap_c = cs.snapshot(env["model"]), cs.snapshot(env["clip"].patcher)
    base = {**_outputs(env["model"], unet_keys), **_outputs(env["clip"].patcher, clip_keys)}
    node = env["L"].LoKrLoader()
    bm, bc = node.load(env["model"], env["clip"], "test.safetensors", 0.7, 1.3, apply=BYPASS)["result"]
    pm, pc = node.load(env["model"], env["clip"], "test.safetensors", 0.7, 1.3)["result"]
    assert not bm.patches and not bc.patcher.patches and bm.get_injections(pack_module("nodes.bypass").INJECTION_KEY)
    assert cs.unchanged(env["model"], snap_m) and cs.unchanged(env["clip"].patcher, snap_c)  # inputs: no injection
    _check_equal(bm, bc, pm, pc, keys, base)
    assert cs.unchanged(env["model"], snap_m) and cs.unchanged(env["clip"].patcher, snap_c)  # weights never written
    again = {**_outputs(env["model"], unet_keys), **_outputs(env["clip"].patcher, clip_keys)}
    for k in keys:
        assert torch.equal(again[k], base[k]), k  # ejected: base outputs again
    assert not any(m._forward_hooks for m in env["model"].model.modules())


def test_model_only_chained_and_stack_in_bypass(env):
    keys = [k for _, k, _ in SPECS if k.startswith("diffusion_model")]
    L, S = env["L"], env["S"]
    base = _outputs(env["model"], keys)
    (m1,) = L.LoKrLoaderModelOnly().load_model_only(env["model"], "test.safetensors", 0.5, apply=BYPASS)["result"]
    (m2,) = L.LoKrLoaderModelOnly().load_model_only(m1, "test.safetensors", 0.25, apply=BYPASS)["result"]
    (p1,) = L.LoKrLoaderModelOnly().load_model_only(env["model"], "test.safetensors", 0.75)["result"]
    got, ref = _outputs(m2, keys), _patch_outputs(p1, keys)  # 0.5 + 0.25 in two bypass sets == 0.75 patched
    for k in keys:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-5)
    B = pack_module("nodes.bypass")
    assert len(B.bypass_set_of(m1).entries) == len(keys) and len(B.bypass_set_of(m2).entries) == 2 * len(keys)
    sm, sc = S.ApplyLoKrStack().apply(env["model"], env["clip"], [("test.safetensors", 0.5, 1.0),
                                                                  ("test.safetensors", 0.25, 0.0)], apply=BYPASS)["result"][:2]
    got = _outputs(sm, keys)
    for k in keys:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-5)
        assert not torch.equal(got[k], base[k])
    assert not env["model"].injections and not env["model"].patches


def test_bad_apply_value_and_dora_raise_and_change_nothing(env):
    errors, L = env["errors"], env["L"]
    snap_m, snap_c = cs.snapshot(env["model"]), cs.snapshot(env["clip"].patcher)
    with pytest.raises(errors.LoKrConfigError) as ei:
        L.LoKrLoader().load(env["model"], env["clip"], "test.safetensors", 1.0, 1.0, apply="bypas")
    assert "'bypas'" in str(ei.value) and BYPASS in str(ei.value) and PATCH in str(ei.value)
    name, key = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k", \
        "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k"
    dora = lycoris_module(name, copy.deepcopy(env["model"].model.get_submodule(key)), dim=2, weight_decompose=True)
    ok = lycoris_module(SPECS[0][0], copy.deepcopy(env["model"].model.get_submodule(SPECS[0][1])), **SPECS[0][2])
    save_file(state_dict_of({SPECS[0][0]: ok, name: dora}), str(env["loras"] / "dora.safetensors"))
    with pytest.raises(errors.LoKrConfigError) as ei:
        L.LoKrLoader().load(env["model"], env["clip"], "dora.safetensors", 1.0, 1.0, apply=BYPASS)
    msg = str(ei.value)
    assert name in msg and "dora.safetensors" in msg and "DoRA" in msg and PATCH in msg, msg
    with pytest.raises(errors.LoKrConfigError, match="DoRA"):
        env["S"].ApplyLoKrStack().apply(env["model"], env["clip"], [("test.safetensors", 1.0, 1.0),
                                                                    ("dora.safetensors", 1.0, 1.0)], apply=BYPASS)
    assert cs.unchanged(env["model"], snap_m) and cs.unchanged(env["clip"].patcher, snap_c)
    assert not any(m._forward_hooks for m in env["model"].model.modules())


def test_row_block_and_function_entries_equal_patch_weight():
    """Bypass entries with ComfyUI's ``(dim 0, start, length)`` row block and a ``function`` on ΔW
    (Flux's swap_scale_shift) == the layer run with the weight the same patch computes in patch mode."""
    B, P = pack_module("nodes.bypass"), pack_module("nodes.patch")
    LoKrFactors = pack_module("lokr_core.tensor.factors").LoKrFactors

    g = torch.Generator().manual_seed(5)
    layer = nn.Linear(8, 24)
    root = cs.module_tree({"diffusion_model.fused": layer})
    rows = P.make_patch(LoKrFactors(w1=torch.randn(2, 2, generator=g), w2=torch.randn(4, 4, generator=g)), 0.5)
    whole = P.make_patch(LoKrFactors(w1=torch.randn(4, 2, generator=g), w2=torch.randn(6, 4, generator=g)), 1.0)

    def swap(w):  # ComfyUI's swap_scale_shift: the two halves of the output rows exchanged
        a, b = w.chunk(2, dim=0)
        return torch.cat([b, a], dim=0)
    key = "diffusion_model.fused.weight"
    weight = layer.weight.detach().clone()
    rows.calculate_weight(weight.narrow(0, 8, 8), key, 0.7, 1.0, (0, 8, 8), None)
    weight = whole.calculate_weight(weight, key, -0.4, 1.0, None, swap)
    entries = [B.BypassEntry(key, rows, 0.7, (0, 8, 8)), B.BypassEntry(key, whole, -0.4, None, swap)]
    patcher = cs.ModelPatcher(root)
    patcher.set_injections(B.INJECTION_KEY, B.bypass_injections(patcher, root, entries))
    x = torch.randn(3, 8, generator=g)
    with torch.no_grad():
        base = layer(x)
        patcher.inject_model()
        got = layer(x)
        patcher.eject_model()
        assert torch.equal(layer(x), base)
        ref = F.linear(x, weight, layer.bias)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert (got - base)[:, :8].abs().max() > 1e-3 and (got - base)[:, 8:16].abs().max() > 1e-3
