"""nodes/keys.py and the planning step on DiT names, against ComfyUI stand-ins (no ComfyUI needed).

References: ComfyUI 0.28.0's own key map of tiny DiT models, recorded in tests/support/dit_tiny_keys.json
(the weight keys of each model and the ``transformer.<diffusers name>`` targets of its map, with a flag
for the ``swap_scale_shift`` function targets), the Wan layout as ComfyUI names it (``blocks.N.self_attn.q``
is diffusers ``blocks.N.attn1.to_q``) and lycoris-lora's ``LokrModule`` for the numbers.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from tests.support import comfy_standins as cs
from tests.support.comfy_pack import pack_module
from tests.support.lokr_node_fixtures import lycoris_module, merged_reference, state_dict_of

KEYS = json.loads((Path(__file__).parents[1] / "support" / "dit_tiny_keys.json").read_text())
U = "diffusion_model."
K = pack_module("nodes.keys")


def _dit_model(family: str, seed: int = 0) -> cs.ModelPatcher:
    """A stand-in MODEL with every Linear weight of the tiny ComfyUI ``family`` model (ComfyUI's key names)."""
    g = torch.Generator().manual_seed(seed)
    layers = {}
    for key, shape in KEYS[family]["keys"].items():
        if key.endswith(".weight") and len(shape) == 2:
            lin = nn.Linear(shape[1], shape[0], bias=f"{key[:-7]}.bias" in KEYS[family]["keys"])
            with torch.no_grad():
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * 0.02)
            layers[U + key[:-len(".weight")]] = lin
    return cs.ModelPatcher(cs.module_tree(layers))


def test_target_shape_and_split_key_take_every_comfyui_form():
    sd = {"x.weight": torch.zeros(12, 4), "y.weight": (6, 3)}
    fn = K.swap_halves
    assert K.target_shape("x.weight", sd) == (12, 4)
    assert K.target_shape(("x.weight", (0, 4, 4)), sd) == (4, 4)
    assert K.target_shape(("x.weight", None, fn), sd) == (12, 4)
    assert K.target_shape(("x.weight", (0, 8, 4), fn), sd) == (4, 4)
    assert K.target_shape("y.weight", sd) == (6, 3)
    assert K.split_key(("x.weight", None, fn)) == ("x.weight", None, fn)
    assert K.split_key(("x.weight", (0, 8, 4))) == ("x.weight", (0, 8, 4), None)
    assert K.base_key(("x.weight", (0, 8, 4), fn)) == "x.weight"


def test_swap_halves_is_comfyuis_shift_scale_swap():
    t = torch.arange(12.0).reshape(6, 2)
    shift, scale = t.chunk(2, dim=0)  # ComfyUI's swap_scale_shift: (shift, scale) -> (scale, shift)
    assert torch.equal(K.swap_halves(t), torch.cat((scale, shift), dim=0))
    assert K.patch_key("w.weight", (64, 128), "swap_halves")[:2] == ("w.weight", (0, 64, 64))
    assert K.patch_key("w.weight", (64, 128)) == ("w.weight", (0, 64, 64)) and K.patch_key("w.weight") == "w.weight"


@pytest.mark.parametrize("family", ["flux", "sd3", "qwen_image"])  # lumina2: ComfyUI's map names it in
# Z-Image's diffusers names (``attention.to_q``), which its own map places first; the resolver does not
def test_resolver_places_diffusers_names_where_comfyuis_map_does(family):
    """OneTrainer ``lora_transformer_`` names resolved against the model's weights give the targets of
    ComfyUI's own map (``transformer.`` entries): same key, same row block, a function where ComfyUI has one."""
    model = _dit_model(family)
    shapes = K.weight_shapes(model.model)
    dmap = {n: v for n, v in KEYS[family]["diffusers_map"].items() if (U + (v if isinstance(v, str) else v[0])) in shapes}
    names = {"lora_transformer_" + n.replace(".", "_"): n for n in dmap}
    got = K.resolve_names(list(names), shapes)
    assert got.matched, family
    for name, dname in names.items():
        ref = dmap[dname]
        if name not in got.matched:
            continue
        key = got.matched[name]
        ref_key, ref_offset, ref_fn = (ref, None, False) if isinstance(ref, str) else ref
        assert K.base_key(key) == U + ref_key, (name, key, ref)
        assert K.split_key(key)[1] == (tuple(ref_offset) if ref_offset else None), (name, key, ref)
        assert (K.split_key(key)[2] is not None) == bool(ref_fn), (name, key, ref)
    # every Linear of ComfyUI's map is placed (biases and norms have no LoKr)
    linear = [n for n, v in names.items() if len(shapes[U + K.base_key(dmap[v] if isinstance(dmap[v], str) else dmap[v][0])]) == 2]
    assert sorted(n for n in linear if n not in got.matched) == []


def test_wan_lycoris_names_apply_in_patch_and_bypass_with_family_and_nearest(tmp_path, monkeypatch):
    """ComfyUI issue #8285: SimpleTuner ``lycoris_blocks_0_attn1_to_q`` names on Wan, which ComfyUI's map
    lacks, apply through the resolver exactly (lycoris-lora) in both modes; a stray name is listed with
    nearest candidates; the report names the families."""
    import sys

    loras = tmp_path / "loras"
    loras.mkdir()
    monkeypatch.setitem(sys.modules, "folder_paths", cs.folder_paths_module(str(loras), str(tmp_path)))
    model = _dit_model("wan21")
    targets = {"lycoris_blocks_0_attn1_to_q": "blocks.0.self_attn.q", "lycoris_blocks_1_attn2_to_out_0": "blocks.1.cross_attn.o",
               "lycoris_blocks_0_ffn_net_0_proj": "blocks.0.ffn.0", "lycoris_condition_embedder_time_proj": "time_projection.1"}
    mods = {n: lycoris_module(n, model.model.get_submodule(U + p), dim=4, factor=4, seed=i)
            for i, (n, p) in enumerate(targets.items())}
    mods["lycoris_blocks_0_attn1_to_zz"] = lycoris_module("z", nn.Linear(64, 64), dim=4, factor=4, seed=9)
    save_file(state_dict_of(mods), str(loras / "wan.safetensors"))
    planning = pack_module("nodes.planning")
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    patched, _, plan = planning.load_and_apply(planning.WeightsCache(), model, None, "wan.safetensors", 0.7, 0.0)
    report = planning.plan_report(plan, "wan.safetensors")
    assert report["matched"] == 4 and report["unmatched"] == ["lycoris_blocks_0_attn1_to_zz"]
    assert U + "blocks.0.self_attn.q.weight" in report["nearest"]["lycoris_blocks_0_attn1_to_zz"]
    assert (report["family"], report["model_family"]) == ("wan", "wan") and report["model_family_label"]
    sd = patched.patched_state_dict()
    for n, p in targets.items():
        torch.testing.assert_close(sd[U + p + ".weight"], merged_reference(mods[n], before[U + p + ".weight"], 0.7),
                                   rtol=1e-5, atol=1e-6)
    bypassed, _, _ = planning.load_and_apply(planning.WeightsCache(), model, None, "wan.safetensors", 0.7, 0.0,
                                             apply="bypass")
    bypassed.inject_model()
    try:
        for n, p in targets.items():
            layer = model.model.get_submodule(U + p)
            x = torch.eye(layer.in_features)
            got = (layer(x) - (layer.bias if layer.bias is not None else 0)).T
            torch.testing.assert_close(got, sd[U + p + ".weight"], rtol=1e-5, atol=1e-6)
    finally:
        bypassed.eject_model()
    assert all(torch.equal(v, before[k]) for k, v in model.model.state_dict().items())


def test_wrong_family_error_names_both_families(tmp_path, monkeypatch):
    """A Flux file on an SD3 model: no module fits; the error says what the file and the model are."""
    import sys

    loras = tmp_path / "loras"
    loras.mkdir()
    monkeypatch.setitem(sys.modules, "folder_paths", cs.folder_paths_module(str(loras), str(tmp_path)))
    flux = _dit_model("flux")
    names = ["double_blocks.0.img_attn.qkv", "double_blocks.0.img_mod.lin", "single_blocks.0.linear1",
             "single_blocks.1.linear2", "double_blocks.1.txt_mlp.0"]
    mods = {"lora_unet_" + p.replace(".", "_"): lycoris_module(p, flux.model.get_submodule(U + p), dim=4, factor=4)
            for p in names}
    save_file(state_dict_of(mods), str(loras / "flux.safetensors"))
    planning = pack_module("nodes.planning")
    errors = pack_module("lokr_core.base.errors")
    labels = pack_module("lokr_core.keymap.family").FAMILY_LABELS
    with pytest.raises(errors.LoKrError) as ei:
        planning.load_and_apply(planning.WeightsCache(), _dit_model("sd3"), None, "flux.safetensors", 1.0, 0.0)
    text = str(ei.value)
    assert f"the model is {labels['sd3']}" in text and "the file looks like a Flux" in text, text
