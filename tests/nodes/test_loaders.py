"""LoKr Loader nodes, patch object and key glue against ComfyUI stand-ins (no ComfyUI needed).

Numbers are checked against lycoris-lora's own ``LokrModule.get_merged_weight``; bad input
(wrong family, wrong shapes, corrupt / missing file, NaN strength) must raise a clear error and
leave the input MODEL / CLIP unchanged.
"""
from __future__ import annotations

import copy
import math
import subprocess
import sys

import torch
from safetensors.torch import save_file
from torch import nn

from tests.support import comfy_standins as cs
from tests.support.comfy_pack import ROOT, load_pack, pack_module
from tests.support.lokr_node_fixtures import lycoris_module, merged_reference, state_dict_of
from tests.support.node_env import SPECS, assert_untouched

errors = pack_module("lokr_core.base.errors")


class _Unwrap:
    """A node instance whose ``load`` runs the node's FUNCTION and returns the plain result tuple
    (the ``ui`` part checked elsewhere)."""

    def __init__(self, node):
        self.node = node

    def load(self, *a, **kw):
        out = getattr(self.node, self.node.FUNCTION)(*a, **kw)
        assert out["ui"]["lokr_report"][0]["matched"] >= 1
        return out["result"]


class _L:
    def __init__(self, mod):
        self.mod = mod

    def __getattr__(self, name):
        obj = getattr(self.mod, name)
        if name in ("LoKrLoader", "LoKrLoaderModelOnly"):
            cls = obj

            class Wrapped:
                VALIDATE_INPUTS = cls.VALIDATE_INPUTS

                def __new__(_c):
                    return _Unwrap(cls())
            return Wrapped
        return obj


def _loader_module():
    return _L(pack_module("nodes.loaders"))


def _check_against_lycoris(env, patcher, names, strength):
    sd = patcher.patched_state_dict()
    for name in names:
        key, w0 = env["refs"][name]
        ref = merged_reference(env["mods"][name], w0, strength)
        torch.testing.assert_close(sd[key], ref, rtol=1e-5, atol=1e-6)


def test_loader_matches_lycoris_and_leaves_inputs_unchanged(env):
    L = _loader_module()
    snap_m, snap_c = cs.snapshot(env["model"]), cs.snapshot(env["clip"].patcher)
    new_model, new_clip = L.LoKrLoader().load(env["model"], env["clip"], "test.safetensors", 0.7, 1.3)
    assert new_model is not env["model"] and new_clip is not env["clip"]
    assert cs.unchanged(env["model"], snap_m) and cs.unchanged(env["clip"].patcher, snap_c)
    unet_names = [n for n, k, _ in SPECS if k.startswith("diffusion_model")]
    _check_against_lycoris(env, new_model, unet_names, 0.7)
    _check_against_lycoris(env, new_clip.patcher, ["lora_te_text_model_encoder_layers_0_mlp_fc1"], 1.3)
    # weights without a module are untouched
    sd = new_model.patched_state_dict()
    base = env["model"].model.state_dict()
    assert torch.equal(sd["diffusion_model.time_embed.0.weight"], base["diffusion_model.time_embed.0.weight"])
    assert len(new_model.patches) == len(unet_names)


def test_loader_model_only_and_strength_zero_is_bit_identical(env):
    L = _loader_module()
    (m,) = L.LoKrLoaderModelOnly().load(env["model"], "test.safetensors", 1.0)
    assert set(m.patches) == {k + ".weight" for n, k, _ in SPECS if k.startswith("diffusion_model")}
    _check_against_lycoris(env, m, [SPECS[2][0]], 1.0)  # Tucker conv, exact
    m0, c0 = L.LoKrLoader().load(env["model"], env["clip"], "test.safetensors", 0.0, 0.0)
    base = env["model"].model.state_dict()
    for k, v in m0.patched_state_dict().items():
        assert torch.equal(v, base[k])
    # a strength-0 patch registered anyway (e.g. by hooks) also leaves weights bit-identical
    m1, _ = L.LoKrLoader().load(env["model"], env["clip"], "test.safetensors", 1.0, 1.0)
    for lst in m1.patches.values():
        lst[:] = [(0.0,) + tuple(p[1:]) for p in lst]
    for k, v in m1.patched_state_dict().items():
        assert torch.equal(v, base[k])


def test_patch_fp16_compute_dtype_rounds_once(env):
    """ComfyUI 0.8.0 hands an fp16 copy: ΔW must be formed in fp32 and rounded once on write."""
    L = _loader_module()
    m, _ = L.LoKrLoader().load(env["model"], env["clip"], "test.safetensors", 1.0, 1.0)
    name = SPECS[0][0]
    key, w0 = env["refs"][name]
    got = m.patched_state_dict(compute_dtype=torch.float16)[key]
    ref = merged_reference(env["mods"][name], w0.half().float(), 1.0)
    ulp = torch.finfo(torch.float16).eps * ref.abs().clamp_min(2 ** -14)
    assert ((got.float() - ref).abs() <= ulp + 1e-7).all()


def test_patch_function_offset_and_base_class(env, monkeypatch):
    P = pack_module("nodes.patch")
    LoKrFactors = pack_module("lokr_core.tensor.factors").LoKrFactors

    g = torch.Generator().manual_seed(1)
    f = LoKrFactors(w1=torch.randn(2, 4, generator=g), w2=torch.randn(3, 2, generator=g))
    w = torch.randn(6, 8, generator=g)
    ref_delta = torch.kron(f.w1, f.w2)
    patch = P.make_patch(f, 0.5)
    # a non-identity ComfyUI `function` is applied to ΔW (slow path)
    out = patch.calculate_weight(w.clone(), "k", 2.0, 1.0, None, lambda a: a * 3)
    torch.testing.assert_close(out, w + 3 * 2.0 * 0.5 * ref_delta)
    # offset: ComfyUI narrows the weight and relies on the in-place update of that view
    big = torch.randn(16, 8, generator=g)
    view = big.narrow(0, 4, 6)
    before = big.clone()
    patch.calculate_weight(view, "k", 1.0, 1.0, (0, 4, 6), None)
    torch.testing.assert_close(big[4:10], before[4:10] + 0.5 * ref_delta)
    assert torch.equal(big[:4], before[:4]) and torch.equal(big[10:], before[10:])
    assert P.is_identity(None) and P.is_identity(lambda a: a) and not P.is_identity(lambda a: a * 2)
    # subclass of ComfyUI's WeightAdapterBase when it exists
    for k, v in cs.fake_comfy_weight_adapter().items():
        monkeypatch.setitem(sys.modules, k, v)
    P.lokr_patch_class.cache_clear()
    try:
        assert isinstance(P.make_patch(f, 1.0), cs.WeightAdapterBase)
    finally:
        P.lokr_patch_class.cache_clear()
    assert patch.with_block_weight(0.5).block_weight == 0.5 and patch.block_weight == 1.0


def test_dora_module_matches_lycoris(env, tmp_path):
    L = _loader_module()
    key = "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k"
    name = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k"
    w0 = env["model"].model.get_submodule(key).weight.detach().clone()
    mod = lycoris_module(name, copy.deepcopy(env["model"].model.get_submodule(key)), dim=2, weight_decompose=True)
    save_file(state_dict_of({name: mod}), str(env["loras"] / "dora.safetensors"))
    (m,) = L.LoKrLoaderModelOnly().load(env["model"], "dora.safetensors", 1.0)
    torch.testing.assert_close(m.patched_state_dict()[key + ".weight"], merged_reference(mod, w0, 1.0),
                               rtol=1e-5, atol=1e-6)
    (m0,) = L.LoKrLoaderModelOnly().load(env["model"], "dora.safetensors", 0.0)
    assert torch.equal(m0.patched_state_dict()[key + ".weight"], w0)


def test_lycoris_and_transformers5_names_resolve(env):
    L = _loader_module()
    sd = {k.replace(SPECS[1][0], "lycoris_middle_block_1_proj_out"): v
          for k, v in state_dict_of({SPECS[1][0]: env["mods"][SPECS[1][0]]}).items()}
    sd.update({k.replace(SPECS[4][0], "lora_te_encoder_layers_0_mlp_fc1"): v  # transformers-5 name
               for k, v in state_dict_of({SPECS[4][0]: env["mods"][SPECS[4][0]]}).items()})
    save_file(sd, str(env["loras"] / "names.safetensors"))
    m, c = L.LoKrLoader().load(env["model"], env["clip"], "names.safetensors", 1.0, 1.0)
    assert set(m.patches) == {SPECS[1][1] + ".weight"}
    assert set(c.patcher.patches) == {SPECS[4][1] + ".weight"}
    _check_against_lycoris(env, m, [SPECS[1][0]], 1.0)
    _check_against_lycoris(env, c.patcher, [SPECS[4][0]], 1.0)


def test_peft_adapter_matches_peft(env):
    """A PEFT LoKr adapter (base_model.model.* names, alpha/r from adapter_config.json) equals peft's ΔW."""
    from peft import LoKrConfig, get_peft_model

    L = _loader_module()
    targets = ["diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q",
               "diffusion_model.output_blocks.3.0.in_layers.2"]
    base = copy.deepcopy(env["model"].model)
    peft_model = get_peft_model(base, LoKrConfig(r=2, alpha=3.0, target_modules=targets, init_weights=False,
                                                 use_effective_conv2d=True))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if ".lokr_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    peft_model.save_pretrained(str(env["loras"] / "peft"))
    (m,) = L.LoKrLoaderModelOnly().load(env["model"], "peft/adapter_model.safetensors", 1.0)
    sd = m.patched_state_dict()
    w = env["model"].model.state_dict()
    for t in targets:
        with torch.no_grad():
            delta = peft_model.base_model.model.get_submodule(t).get_delta_weight("default")
        torch.testing.assert_close(sd[t + ".weight"], w[t + ".weight"] + delta, rtol=1e-5, atol=1e-6)


def test_keys_helpers():
    K = pack_module("nodes.keys")
    cands = list(K.name_candidates("base_model.model.down_blocks.0.attentions.0.proj_in"))
    assert "lora_unet_down_blocks_0_attentions_0_proj_in" in cands
    assert "lora_te_text_model_encoder_layers_0_mlp_fc1" in list(K.name_candidates("lora_te_encoder_layers_0_mlp_fc1"))
    assert "lora_te2_text_model_encoder_layers_1_mlp_fc2" in list(
        K.name_candidates("text_encoder_2.encoder.layers.1.mlp.fc2"))
    matched, unmatched = K.match_names(["lycoris_a_b", "zzz"], {"lora_unet_a_b": "diffusion_model.a.b.weight"})
    assert matched == {"lycoris_a_b": "diffusion_model.a.b.weight"} and unmatched == ["zzz"]
    sd = {"x.weight": torch.zeros(12, 4)}
    assert K.target_shape("x.weight", sd) == (12, 4)
    assert K.target_shape(("x.weight", (0, 4, 4)), sd) == (4, 4)
    assert K.base_key(("x.weight", (0, 4, 4))) == "x.weight"
    generic = K.unet_key_map(cs.ModelPatcher(cs.tiny_unet()))
    assert generic["lora_unet_middle_block_1_proj_out"] == "diffusion_model.middle_block.1.proj_out.weight"
    clip_map = K.clip_key_map(cs.CLIP(cs.tiny_clip()))
    assert clip_map["lora_te1_text_model_encoder_layers_0_mlp_fc1"].startswith("clip_l.")


# ------------------------------------------------------------------------------------- bad input
def test_wrong_family_and_wrong_shape_raise_and_change_nothing(env):
    L = _loader_module()
    other = lycoris_module("lora_unet_down_blocks_5_x", nn.Linear(32, 32), dim=2)
    save_file(state_dict_of({"lora_unet_down_blocks_5_x": other}), str(env["loras"] / "fam.safetensors"))
    assert_untouched(env, lambda: L.LoKrLoader().load(env["model"], env["clip"], "fam.safetensors", 1.0, 1.0),
                      errors.LoKrKeyError, "fam.safetensors", "lora_unet_down_blocks_5_x", "model family")
    # right name, wrong shape (an SDXL-sized cross-attention key): nothing registered
    bad = lycoris_module("lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k", nn.Linear(48, 32), dim=2)
    good = env["mods"][SPECS[0][0]]
    save_file(state_dict_of({SPECS[0][0]: good, "lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k": bad}),
              str(env["loras"] / "shape.safetensors"))
    assert_untouched(env, lambda: L.LoKrLoader().load(env["model"], env["clip"], "shape.safetensors", 1.0, 1.0,
                                                      strict=True),
                      errors.LoKrShapeError, "shape.safetensors", "attn2_to_k", "(32, 24)")
    # only the wrong-shape module in the file: no module fits, a clear error even when not strict
    save_file(state_dict_of({"lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k": bad}),
              str(env["loras"] / "allbad.safetensors"))
    assert_untouched(env, lambda: L.LoKrLoader().load(env["model"], env["clip"], "allbad.safetensors", 1.0, 1.0),
                      errors.LoKrShapeError, "allbad.safetensors", "attn2_to_k", "(32, 24)")


def test_lenient_default_applies_the_good_modules_and_lists_the_bad(env):
    """Not strict (the default): a module whose shape does not fit is skipped with its reason; the others
    apply exactly (lycoris-lora), the unpatched weights stay as they were, the inputs are unchanged."""
    bad_name = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k"
    bad = lycoris_module(bad_name, nn.Linear(48, 32), dim=2)
    good_name = SPECS[0][0]
    save_file(state_dict_of({good_name: env["mods"][good_name], bad_name: bad}), str(env["loras"] / "part.safetensors"))
    loaders = pack_module("nodes.loaders")
    snap_m, snap_c = cs.snapshot(env["model"]), cs.snapshot(env["clip"].patcher)
    for node, args in ((loaders.LoKrLoader(), (env["model"], env["clip"], "part.safetensors", 0.8, 1.0)),
                       (loaders.LoKrLoaderModelOnly(), (env["model"], "part.safetensors", 0.8))):
        out = getattr(node, node.FUNCTION)(*args)
        report = out["ui"]["lokr_report"][0]
        assert report["matched"] == 1 and report["total"] == 2 and list(report["skipped"]) == [bad_name]
        assert "(32, 24)" in report["skipped"][bad_name] and "attn2.to_k" in report["skipped"][bad_name]
        assert list(report["shape_mismatch"]) == [bad_name] and report["unmatched"] == []
        model = out["result"][0]
        _check_against_lycoris(env, model, [good_name], 0.8)
        key = "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
        assert torch.equal(model.patched_state_dict()[key], env["model"].model.state_dict()[key])
    assert cs.unchanged(env["model"], snap_m) and cs.unchanged(env["clip"].patcher, snap_c)


def test_missing_corrupt_file_and_nan_strength(env):
    L = _loader_module()
    msg = L.LoKrLoader.VALIDATE_INPUTS(lokr_name="nope.safetensors", strength_model=1.0, strength_clip=1.0)
    assert isinstance(msg, str) and "nope.safetensors" in msg and "loras" in msg
    assert_untouched(env, lambda: L.LoKrLoader().load(env["model"], env["clip"], "nope.safetensors", 1.0, 1.0),
                      errors.LoKrError, "nope.safetensors")
    msg = L.LoKrLoader.VALIDATE_INPUTS(lokr_name="test.safetensors", strength_model=float("nan"), strength_clip=1.0)
    assert isinstance(msg, str) and "strength_model" in msg and "finite" in msg
    assert L.LoKrLoaderModelOnly.VALIDATE_INPUTS(lokr_name="test.safetensors", strength_model=1.0) is True
    assert_untouched(env, lambda: L.LoKrLoader().load(env["model"], env["clip"], "test.safetensors", 1.0, math.nan),
                      errors.LoKrError, "strength_clip", "finite")
    (env["loras"] / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    assert_untouched(env, lambda: L.LoKrLoader().load(env["model"], env["clip"], "corrupt.safetensors", 1.0, 1.0),
                      errors.LoKrError, "corrupt.safetensors")


def test_mixed_file_reports_other_modules(env):
    sd = state_dict_of({SPECS[0][0]: env["mods"][SPECS[0][0]]})
    sd["lora_unet_middle_block_1_proj_out.lora_down.weight"] = torch.randn(2, 64)
    sd["lora_unet_middle_block_1_proj_out.lora_up.weight"] = torch.randn(64, 2)
    sd["lora_unet_middle_block_1_proj_out.alpha"] = torch.tensor(2.0)
    save_file(sd, str(env["loras"] / "mixed.safetensors"))
    planning = pack_module("nodes.planning")
    _, _, plan = planning.load_and_apply(planning.WeightsCache(), env["model"], env["clip"], "mixed.safetensors",
                                         1.0, 1.0)
    # without ComfyUI the LoRA module cannot be handed over: it is reported, not silently dropped
    assert plan.other_skipped == ["lora_unet_middle_block_1_proj_out"]
    assert list(plan.matched) == [SPECS[0][0]]


def test_node_definitions_and_pack_entry(env):
    pack = load_pack()
    classes, names = pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS
    assert pack.WEB_DIRECTORY == "./web"
    assert {"LoKrLoader", "LoKrLoaderModelOnly"} <= set(classes)
    assert issubclass(classes["LoKrLoaderModelOnly"], classes["LoKrLoader"])  # as core's LoraLoaderModelOnly
    for cid, cls in classes.items():
        assert cid in names and cls.CATEGORY.startswith("loaders/LoKr") and cls.DESCRIPTION
        assert callable(getattr(cls, cls.FUNCTION)), cid
        for group in cls.INPUT_TYPES().values():
            for inp, spec_ in group.items():
                assert isinstance(spec_, tuple) and spec_[1].get("tooltip"), (cid, inp)


def test_pack_import_is_light():
    """A fresh interpreter loads the pack exactly as ComfyUI does; no diffusers / transformers / peft / lycoris."""
    code = ("import importlib.util, sys; r=sys.argv[1]; n=r.replace('.', '_x_'); "
            "s=importlib.util.spec_from_file_location(n, r + '/__init__.py'); "
            "m=importlib.util.module_from_spec(s); sys.modules[n]=m; s.loader.exec_module(m); "
            "bad=[k for k in ('diffusers','transformers','peft','lycoris') if k in sys.modules]; "
            "print(','.join(sorted(m.NODE_CLASS_MAPPINGS)), bad)")
    r = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, timeout=60, cwd="/")
    assert r.returncode == 0, r.stderr[-2000:]
    expected = ",".join(sorted(pack_module("nodes").node_mappings()[0]))
    assert r.stdout.split() == [expected, "[]"], r.stdout
