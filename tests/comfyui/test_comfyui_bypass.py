"""Bypass mode (``apply = "bypass"``) inside a real ComfyUI (COMFYUI_PATH; 0.3.64, 0.8.0, 0.28.0).

The reference is patch mode through ComfyUI's own ModelPatcher (whose weights
tests/comfyui/test_comfyui_patch.py checks against core's LoraLoader and lycoris-lora):

- every layer kind (Linear split / full, 1x1 conv, 3x3 conv with padding, the stride-2 downsample
  conv, Tucker, full W2 conv, text-encoder layers): the layer outputs, the diffusion model output,
  the CLIP conditioning and the latent sampled with a fixed seed (comfy.sample) equal patch mode to
  float tolerance; the weights stay bit-identical in bypass after sampling; the input MODEL / CLIP
  keep no injection; unloading ejects the hooks (outputs equal the base model's again);
- block weights != 1, two loaders chained in bypass, bypass after a patch-mode loader, Apply LoKr
  Stack; a tiny Flux with fused q / k / v / mlp row targets ``(key, (0, start, length))`` and the
  ``swap_scale_shift`` function target;
- DoRA in bypass and non-LoKr modules on a ComfyUI without bypass support: a clear error, nothing
  changed; on 0.28.0 non-LoKr modules run through ComfyUI's own bypass and equal patch mode.
Run: ``COMFYUI_PATH=$BENCH/ComfyUI $BENCH/venv/bin/python -m pytest -q tests/comfyui/test_comfyui_bypass.py``.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import comfy_env
from tests.support.lokr_node_fixtures import lycoris_module, state_dict_of

U = "diffusion_model."
C = "clip_l.transformer.text_model."
# kohya name -> (ComfyUI module, LokrModule options): one of every layer kind bypass covers
LAYERS = {
    "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q":  # Linear, W1 and W2 split
        (U + "input_blocks.1.1.transformer_blocks.0.attn1.to_q", dict(dim=4, decompose_both=True, factor=8)),
    "lora_unet_input_blocks_1_1_transformer_blocks_0_ff_net_2":  # Linear with bias, W1 full, W2 split
        (U + "input_blocks.1.1.transformer_blocks.0.ff.net.2", dict(dim=4, factor=8)),
    "lora_unet_middle_block_1_transformer_blocks_0_attn2_to_k":  # Linear 768 -> 640, full / full
        (U + "middle_block.1.transformer_blocks.0.attn2.to_k", dict(dim=100000, factor=4)),
    "lora_unet_input_blocks_1_1_proj_in": (U + "input_blocks.1.1.proj_in", dict(dim=4, factor=8)),  # 1x1 conv
    "lora_unet_input_blocks_1_0_in_layers_2": (U + "input_blocks.1.0.in_layers.2", dict(dim=4, factor=8)),  # 3x3, pad 1
    "lora_unet_input_blocks_2_0_op": (U + "input_blocks.2.0.op", dict(dim=4, factor=8)),  # 3x3, stride 2 downsample
    "lora_unet_output_blocks_1_0_in_layers_2":  # 3x3 960 -> 640, Tucker
        (U + "output_blocks.1.0.in_layers.2", dict(dim=4, factor=8, use_tucker=True)),
    "lora_unet_input_blocks_3_0_out_layers_3": (U + "input_blocks.3.0.out_layers.3", dict(dim=100000, factor=16)),  # full W2 conv
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (C + "encoder.layers.0.self_attn.q_proj", dict(dim=4, factor=8)),
    "lora_te_text_model_encoder_layers_0_mlp_fc1": (C + "encoder.layers.0.mlp.fc1", dict(dim=100000, factor=8)),
}
BYPASS, PATCH = "bypass", "patch weights"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    comfy = comfy_env.setup_comfy()

    tmp = tmp_path_factory.mktemp("bypass")
    (tmp / "loras").mkdir()
    comfy_env.set_model_folders("loras", str(tmp / "loras"))
    model, clip, _vae = comfy_env.load_checkpoint(comfy_env.cached_tiny_sd15(tmp))
    pack = comfy_env.load_pack()
    env = dict(comfy=comfy, tmp=tmp, model=model, clip=clip, pack=pack, planning=comfy_env.pack_module("nodes.planning"),
               bypass=comfy_env.pack_module("nodes.bypass"), errors=comfy_env.pack_module("lokr_core.base.errors"))
    _unload()
    with torch.no_grad():
        env["cond"] = _encode(clip, "a photo of a cat")
        env["uncond"] = _encode(clip, "")
    env["files"] = {"all": _make(env, LAYERS, "all.safetensors")}
    yield env
    _unload()


# ------------------------------------------------------------------------------------------ helpers
def _unload() -> None:
    import comfy.model_management as mm

    mm.unload_all_models()


@contextlib.contextmanager
def _loaded(patcher):
    """``patcher`` loaded the way ComfyUI loads a model for sampling (patches applied, injections in); unloaded after."""
    import comfy.model_management as mm

    _unload()
    mm.load_models_gpu([patcher])
    try:
        with torch.no_grad():
            yield patcher
    finally:
        _unload()


def _encode(clip, text):
    tokens = clip.tokenize(text)
    cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    _unload()
    return [[cond, {"pooled_output": pooled}]]


def _layer(env, key, root=None):
    key = key[:-len(".weight")] if key.endswith(".weight") else key
    root = root if root is not None else (env["model"].model if key.startswith(U) else env["clip"].cond_stage_model)
    return root.get_submodule(key)


def _make(env, specs, fname, seed=0):
    mods = {}
    for i, (name, (key, kw)) in enumerate(specs.items()):
        mods[name] = lycoris_module(name, copy.deepcopy(_layer(env, key)).float(), seed=seed + i, **kw)
    path = env["tmp"] / "loras" / fname
    save_file(state_dict_of(mods), str(path))
    return path.name


def _apply(env, fname, sm, sc, apply, model=None, clip=None, multiplier=None):
    L = env["planning"]
    path = str(env["tmp"] / "loras" / fname)
    weights = comfy_env.pack_module("lokr_core.formats.io").load_lokr(path)
    model = env["model"] if model is None else model
    clip = env["clip"] if clip is None else clip
    plan = L.plan_patches(weights, model, clip, multiplier=multiplier, other_state_dict=L.other_state_dict_from_file(path))
    return L.apply_plan(plan, model, clip, sm, sc, apply)


def _probe(layer, seed=0):
    """A random input for ``layer``: (2, 7, in) for a Linear, (2, in, 9, 9) for a conv (odd size: stride / padding show)."""
    g = torch.Generator().manual_seed(seed)
    if isinstance(layer, nn.Linear):
        return torch.randn(2, 7, layer.in_features, generator=g)
    return torch.randn(2, layer.in_channels, 9, 9, generator=g)


def _layer_outputs(env, patcher_m, patcher_c, keys, root=None):
    """{key: layer(probe)} with ``patcher_m`` (and the CLIP or its patcher ``patcher_c``) loaded."""
    out = {}
    for patcher, prefix in ((patcher_m, U), (getattr(patcher_c, "patcher", patcher_c), C)):
        ks = keys if root is not None else [k for k in keys if k.startswith(prefix)]
        if patcher is None or not ks:
            continue
        with _loaded(patcher):
            for k in ks:
                layer = _layer(env, k, root)
                out[k] = layer(_probe(layer)).clone()
    return out


def _unet_out(env, patcher, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, 8, 8, generator=g)
    with _loaded(patcher):
        return patcher.model.apply_model(x, torch.tensor([2.0]), c_crossattn=env["cond"][0][0]).clone()  # sigma 2: eps counts twice


def _sample(env, model, pos=None, neg=None, seed=7, steps=3):
    import comfy.sample

    latent = torch.zeros(1, 4, 8, 8)
    noise = comfy.sample.prepare_noise(latent, seed)
    _unload()
    try:
        with torch.no_grad():
            return comfy.sample.sample(model, noise, steps, 4.0, "euler", "normal", pos or env["cond"], neg or env["uncond"],
                                       latent, denoise=1.0, disable_pbar=True, seed=seed)
    finally:
        _unload()


def _state(patcher):
    return {k: v.detach().clone() for k, v in patcher.model.state_dict().items()}


def _no_injections(patcher):
    return not getattr(patcher, "injections", {}) and not patcher.patches


def _our_hooks(env, root):
    """Layers of ``root`` carrying a forward hook made by nodes.bypass."""
    mod = env["bypass"].__name__
    return [n for n, m in root.named_modules() for h in m._forward_hooks.values()
            if getattr(h, "__module__", None) == mod]


def _close(a, b, effect_ref=None, rtol=1e-4, atol=1e-4):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
    if effect_ref is not None:  # the LoKr changes the result clearly: the comparison is not trivial
        assert (a - effect_ref).abs().max() > 50 * atol


# ------------------------------------------------------------------------------------------ tests
def test_every_layer_kind_bypass_equals_patch_and_weights_stay(env):
    fname = env["files"]["all"]
    keys = [k for k, _ in LAYERS.values()]
    base_sd_m, base_sd_c = _state(env["model"]), _state(env["clip"].patcher)
    base = _layer_outputs(env, env["model"], env["clip"].patcher, keys)
    pm, pc = _apply(env, fname, 0.8, 1.2, PATCH)
    bm, bc = _apply(env, fname, 0.8, 1.2, BYPASS)
    assert _no_injections(env["model"]) and _no_injections(env["clip"].patcher)  # inputs not mutated
    assert not bm.patches and not bc.patcher.patches  # bypass registers no weight patch
    assert len(env["bypass"].bypass_set_of(bm).entries) == 8 and len(env["bypass"].bypass_set_of(bc.patcher).entries) == 2
    ref = _layer_outputs(env, pm, pc, keys)
    got = _layer_outputs(env, bm, bc, keys)
    for k in keys:
        _close(got[k], ref[k], base[k])
    # after unloading: no hook left, the layers give the base outputs again, weights bit-identical
    assert not _our_hooks(env, env["model"].model) and not _our_hooks(env, env["clip"].cond_stage_model)
    again = _layer_outputs(env, env["model"], env["clip"].patcher, keys)
    for k in keys:
        assert torch.equal(again[k], base[k]), k
    for sd, ref_sd in ((_state(env["model"]), base_sd_m), (_state(env["clip"].patcher), base_sd_c)):
        assert all(torch.equal(sd[k], ref_sd[k]) for k in ref_sd)


def test_model_output_conditioning_and_sampled_latent_equal_patch_mode(env):
    fname = env["files"]["all"]
    pm, pc = _apply(env, fname, 0.9, 1.1, PATCH)
    bm, bc = _apply(env, fname, 0.9, 1.1, BYPASS)
    base_out, pout, bout = _unet_out(env, env["model"]), _unet_out(env, pm), _unet_out(env, bm)
    _close(bout, pout, base_out)
    with torch.no_grad():
        pcond, bcond = _encode(pc, "a photo of a cat"), _encode(bc, "a photo of a cat")
    _close(bcond[0][0], pcond[0][0], env["cond"][0][0])
    _close(bcond[0][1]["pooled_output"], pcond[0][1]["pooled_output"])
    sd_before = _state(bm)
    base_lat = _sample(env, env["model"])
    p_lat = _sample(env, pm, pcond, env["uncond"])
    b_lat = _sample(env, bm, bcond, env["uncond"])
    _close(b_lat, p_lat, base_lat, rtol=1e-3, atol=1e-3)
    sd_after = _state(bm)
    assert all(torch.equal(sd_after[k], sd_before[k]) for k in sd_before)  # bypass never writes a weight
    assert not _our_hooks(env, env["model"].model)
    assert _no_injections(env["model"]) and _no_injections(env["clip"].patcher)


def test_block_weights_chains_and_stack_in_bypass_equal_patch_mode(env):
    pack = env["pack"]
    a = env["files"]["all"]
    b = _make(env, {n: LAYERS[n] for n in list(LAYERS)[:2] + list(LAYERS)[-1:]}, "b.safetensors", seed=40)
    keys = [LAYERS[n][0] for n in list(LAYERS)[:2]] + [LAYERS[n][0] for n in list(LAYERS)[3:6]] + [LAYERS[list(LAYERS)[-1]][0]]
    # block weights (26 values: BASE, IN00..IN11, MID, OUT00..OUT11)
    vec = ",".join(["0.5"] + ["0.7", "1.5", "0.0"] + ["1"] * 9 + ["0.0"] + ["1.3"] * 12)
    node = pack.NODE_CLASS_MAPPINGS["LoKrBlockWeights"]()
    run = lambda mode: node.load(env["model"], env["clip"], a, 1.0, 1.0, "custom", vec, "sd1", apply=mode)["result"]  # noqa: E731
    (pm, pc, _), (bm, bc, _) = run(PATCH), run(BYPASS)
    plain_m, plain_c = _apply(env, a, 1.0, 1.0, PATCH)
    ref, got, plain = (_layer_outputs(env, m, c, keys) for m, c in ((pm, pc), (bm, bc), (plain_m, plain_c)))
    for k in keys:
        _close(got[k], ref[k])
    assert not torch.allclose(got[keys[2]], plain[keys[2]], atol=1e-3)  # IN01 x 1.5: block weights took effect
    # two loaders chained in bypass; bypass after a patch-mode loader
    m1, c1 = _apply(env, a, 0.8, 1.0, BYPASS)
    m2, c2 = _apply(env, b, -0.6, 0.9, BYPASS, m1, c1)
    assert len(env["bypass"].bypass_set_of(m1).entries) == 8  # the first clone keeps its own set
    assert len(env["bypass"].bypass_set_of(m2).entries) == 10 and len(env["bypass"].bypass_set_of(c2.patcher).entries) == 3
    pm1, pc1 = _apply(env, a, 0.8, 1.0, PATCH)
    pm2, pc2 = _apply(env, b, -0.6, 0.9, PATCH, pm1, pc1)
    mixed_m, mixed_c = _apply(env, b, -0.6, 0.9, BYPASS, pm1, pc1)
    assert mixed_m.patches and env["bypass"].bypass_set_of(mixed_m).entries
    only_a = _layer_outputs(env, pm1, pc1, keys)
    ref = _layer_outputs(env, pm2, pc2, keys)
    for cand in (_layer_outputs(env, m2, c2, keys), _layer_outputs(env, mixed_m, mixed_c, keys)):
        for k in keys:
            _close(cand[k], ref[k])
        assert not torch.allclose(cand[keys[0]], only_a[keys[0]], atol=1e-3)  # both terms on the shared layer
    _close(_unet_out(env, m2), _unet_out(env, pm2))
    # Apply LoKr Stack in bypass
    stack = [(a, 0.8, 1.0), (b, -0.6, 0.9)]
    apply_node = pack.NODE_CLASS_MAPPINGS["ApplyLoKrStack"]()
    sm, sc = apply_node.apply(env["model"], env["clip"], stack, apply=BYPASS)["result"][:2]
    got = _layer_outputs(env, sm, sc, keys)
    for k in keys:
        _close(got[k], ref[k])
    assert _no_injections(env["model"]) and _no_injections(env["clip"].patcher)
    assert not _our_hooks(env, env["model"].model)


def _tiny_flux():
    import comfy.ldm.flux.model as flux_model
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models

    uc = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=32, context_in_dim=32, hidden_size=64,
              mlp_ratio=4.0, num_heads=2, depth=1, depth_single_blocks=1, axes_dim=[8, 12, 12], theta=10000,
              patch_size=2, qkv_bias=True, guidance_embed=True)
    if "txt_ids_dims" in {f.name for f in dataclasses.fields(flux_model.FluxParams)}:  # 0.28.0
        uc["txt_ids_dims"] = []
    cfg = comfy.supported_models.Flux(uc)
    cfg.set_inference_dtype(torch.float32, None)
    model = comfy.model_base.Flux(cfg, device="cpu")
    comfy_env._fill_(model, 3)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


FLUX_ROWS = {  # diffusers-named modules -> (dim 0, start, length) row blocks of the fused qkv / linear1 weights
    "transformer.transformer_blocks.0.attn.to_q": (64, 64),
    "transformer.transformer_blocks.0.attn.to_v": (64, 64),
    "transformer.transformer_blocks.0.attn.add_k_proj": (64, 64),
    "transformer.single_transformer_blocks.0.attn.to_k": (64, 64),
    "transformer.single_transformer_blocks.0.proj_mlp": (64, 256),
}
FLUX_FUNCTION = {"transformer.norm_out.linear": (64, 128)}  # -> (final_layer.adaLN_modulation.1, None, swap_scale_shift)


def _flux_bypass_equals_patch(env, specs, fname, layer_keys, n_weights):
    """Tiny Flux + a LoKr over ``specs`` (diffusers name -> (in, out)): bypass == patch per layer and for the model."""
    flux = _tiny_flux()
    mods = {n.replace(".", "_").replace("transformer_", "lora_transformer_", 1):
            lycoris_module(n, nn.Linear(*shape), dim=4, factor=4, seed=i) for i, (n, shape) in enumerate(specs.items())}
    save_file(state_dict_of(mods), str(env["tmp"] / "loras" / fname))
    pm, _ = _apply(env, fname, 0.9, 0.0, PATCH, model=flux, clip=None)
    bm, _ = _apply(env, fname, 0.9, 0.0, BYPASS, model=flux, clip=None)
    assert len(pm.patches) == n_weights and not bm.patches
    assert len(env["bypass"].bypass_set_of(bm).entries) == len(specs)
    keys = [U + k for k in layer_keys]
    base, ref, got = (_layer_outputs(env, p, None, keys, root=flux.model) for p in (flux, pm, bm))
    for k in keys:
        _close(got[k], ref[k], base[k])
    g = torch.Generator().manual_seed(2)
    x, ctx, y = torch.randn(1, 16, 8, 8, generator=g), torch.randn(1, 5, 32, generator=g), torch.randn(1, 32, generator=g)

    def run(p):
        with _loaded(p):
            return p.model.apply_model(x, torch.tensor([0.5]), c_crossattn=ctx, y=y, guidance=torch.tensor([3.5])).clone()
    _close(run(bm), run(pm), run(flux))
    assert not flux.patches and not getattr(flux, "injections", {}) and not _our_hooks(env, flux.model)


def test_fused_row_targets_tiny_flux(env):
    import comfy.lora

    key_map = comfy.lora.model_lora_keys_unet(_tiny_flux().model, {})
    assert key_map["transformer.transformer_blocks.0.attn.to_v"] == (U + "double_blocks.0.img_attn.qkv.weight", (0, 128, 64))
    assert key_map["transformer.single_transformer_blocks.0.proj_mlp"] == (U + "single_blocks.0.linear1.weight", (0, 192, 256))
    _flux_bypass_equals_patch(env, FLUX_ROWS, "flux_rows.safetensors",
                              ["double_blocks.0.img_attn.qkv", "double_blocks.0.txt_attn.qkv", "single_blocks.0.linear1"], 3)


def test_function_target_swap_scale_shift_tiny_flux(env):
    import comfy.lora

    target = comfy.lora.model_lora_keys_unet(_tiny_flux().model, {})["transformer.norm_out.linear"]
    assert target[:2] == (U + "final_layer.adaLN_modulation.1.weight", None) and callable(target[2])
    _flux_bypass_equals_patch(env, FLUX_FUNCTION, "flux_fn.safetensors", ["final_layer.adaLN_modulation.1"], 1)


def test_dora_in_bypass_is_a_clear_error_and_changes_nothing(env):
    name = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_q"
    key = U + "input_blocks.1.1.transformer_blocks.0.attn2.to_q"
    specs = dict(list(LAYERS.items())[:1])
    specs[name] = (key, dict(dim=4, factor=8, weight_decompose=True))
    fname = _make(env, specs, "dora.safetensors", seed=60)
    before = _state(env["model"])
    with pytest.raises(env["errors"].LoKrConfigError) as ei:
        _apply(env, fname, 1.0, 1.0, BYPASS)
    msg = str(ei.value)
    assert name in msg and "DoRA" in msg and "patch weights" in msg and fname in msg, msg
    node = env["pack"].NODE_CLASS_MAPPINGS["LoKrLoaderModelOnly"]()
    with pytest.raises(env["errors"].LoKrConfigError, match="DoRA"):
        node.load_model_only(env["model"], fname, 1.0, apply=BYPASS)
    assert _no_injections(env["model"]) and _no_injections(env["clip"].patcher)
    assert not _our_hooks(env, env["model"].model)
    after = _state(env["model"])
    assert all(torch.equal(after[k], before[k]) for k in before)
    pm, _ = _apply(env, fname, 1.0, 1.0, PATCH)  # patch mode takes the same file
    assert set(pm.patches) == {k + ".weight" for k, _ in specs.values()}


def _lora_pair(env, fname, with_lokr):
    g = torch.Generator().manual_seed(4)
    sd = state_dict_of({n: lycoris_module(n, copy.deepcopy(_layer(env, LAYERS[n][0])).float(), seed=70, **LAYERS[n][1])
                        for n in list(LAYERS)[:1]}) if with_lokr else {}
    lora = "lora_unet_input_blocks_1_1_proj_out"
    sd[f"{lora}.lora_down.weight"] = torch.randn(4, 320, 1, 1, generator=g) * 0.1
    sd[f"{lora}.lora_up.weight"] = torch.randn(320, 4, 1, 1, generator=g) * 0.1
    sd[f"{lora}.alpha"] = torch.tensor(2.0)
    lin = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_v"
    sd[f"{lin}.lora_down.weight"] = torch.randn(4, 320, generator=g) * 0.1
    sd[f"{lin}.lora_up.weight"] = torch.randn(320, 4, generator=g) * 0.1
    save_file(sd, str(env["tmp"] / "loras" / fname))
    return [U + "input_blocks.1.1.proj_out", U + "input_blocks.1.1.transformer_blocks.0.attn1.to_v"]


def test_non_lokr_modules_bypass_on_028_clear_error_before(env):
    """Mixed file (LoKr + LoRA modules) in the loader, and a plain LoRA file in Apply LoKr Stack."""
    lora_keys = _lora_pair(env, "mixed.safetensors", True)
    _lora_pair(env, "plain_lora.safetensors", False)
    keys = lora_keys + [LAYERS[list(LAYERS)[0]][0]]
    stack_node = env["pack"].NODE_CLASS_MAPPINGS["ApplyLoKrStack"]()
    if not env["bypass"].core_bypass_supported():
        with pytest.raises(env["errors"].LoKrConfigError) as ei:
            _apply(env, "mixed.safetensors", 0.7, 1.0, BYPASS)
        msg = str(ei.value)
        assert "0.28.0" in msg and "mixed.safetensors" in msg and ("proj_out" in msg or "attn1.to_v" in msg), msg
        with pytest.raises(env["errors"].LoKrConfigError, match="0.28.0"):
            stack_node.apply(env["model"], env["clip"], [("plain_lora.safetensors", 0.7, 1.0)], apply=BYPASS)
        assert _no_injections(env["model"]) and _no_injections(env["clip"].patcher)
        return
    pm, pc = _apply(env, "mixed.safetensors", 0.7, 1.0, PATCH)
    bm, bc = _apply(env, "mixed.safetensors", 0.7, 1.0, BYPASS)
    base, ref, got = (_layer_outputs(env, m, c, keys) for m, c in ((env["model"], env["clip"].patcher), (pm, pc), (bm, bc)))
    for k in keys:
        _close(got[k], ref[k], base[k])
    assert not _our_hooks(env, env["model"].model)
    again = _layer_outputs(env, env["model"], None, lora_keys)  # ComfyUI's own hooks ejected too
    for k in lora_keys:
        assert torch.equal(again[k], base[k]), k
    import comfy.sd
    import comfy.utils

    sm = stack_node.apply(env["model"], env["clip"], [("plain_lora.safetensors", 0.7, 1.0)], apply=BYPASS)["result"][0]
    cm = comfy.sd.load_lora_for_models(env["model"], env["clip"], comfy.utils.load_torch_file(
        str(env["tmp"] / "loras" / "plain_lora.safetensors")), 0.7, 1.0)[0]
    ref, got = _layer_outputs(env, cm, None, lora_keys), _layer_outputs(env, sm, None, lora_keys)
    for k in lora_keys:
        _close(got[k], ref[k], base[k])
    assert _no_injections(env["model"]) and _no_injections(env["clip"].patcher)


def test_bad_apply_value_is_a_clear_error(env):
    with pytest.raises(env["errors"].LoKrConfigError) as ei:
        _apply(env, env["files"]["all"], 1.0, 1.0, "bypas")
    assert "bypas" in str(ei.value) and "bypass" in str(ei.value) and "patch weights" in str(ei.value)
    assert _no_injections(env["model"]) and _no_injections(env["clip"].patcher)
