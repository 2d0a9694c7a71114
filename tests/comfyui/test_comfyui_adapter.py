"""Our LoKr patch as a ComfyUI weight adapter, and the GPU-only weight paths run on the CPU (COMFYUI_PATH).

On a tiny SD1.5 checkpoint, patches made by the LoKr Loader's own plan_patches / apply_plan for
every layout (full, split W1 / W2 / both, Tucker 3x3, 1x1 conv, DoRA on both axes, a block
weight != 1) plus a fused row target with an offset (GEGLU ``ff.net.0.proj`` rows 1280:2560):

- contract (0.3.64, 0.8.0, 0.28.0): ``isinstance(p, WeightAdapterBase)``; ``type(p)(p.loaded_keys,
  p.weights)`` and a copy with every tensor staged into another buffer give the same weight
  through ``comfy.lora.calculate_weight``; the full patch == lycoris-lora;
- 0.28.0 dynamic VRAM: ``comfy.model_patcher.LowVramPatch.memory_required()`` == the 1024-aligned
  factor bytes; ``prepare()`` into a uint8 buffer puts every factor in it; ``__call__`` == the full
  patch; the sequence ``comfy.ops.cast_modules_with_vbar`` runs (prepare without copy, copy into a
  pinned stand-in buffer, gather into the destination) too; core's ``BypassForwardHook`` runs our h();
- lowvram (0.3.64, 0.8.0, 0.28.0): ``patch_model(lowvram_model_memory=1 MiB)`` leaves every patched
  weight to a LowVramPatch; ``comfy.ops.cast_bias_weight`` and a UNet forward (3 timesteps) equal
  the full patch; ``partially_unload`` of a fully patched model too;
- ``ModelPatcherDynamic`` reroutes a CPU load device to ``ModelPatcher`` (it cannot load without
  CUDA: docs/comfyui.md, "ComfyUI's adapter contract").
Run: ``COMFYUI_PATH=$BENCH/ComfyUI $BENCH/venv/bin/python -m pytest -q tests/comfyui/test_comfyui_adapter.py``.
"""
from __future__ import annotations

import copy
import importlib

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import comfy_env
from tests.support.lokr_node_fixtures import lycoris_module, merged_reference, state_dict_of

U = "diffusion_model."
TB = "input_blocks.1.1.transformer_blocks.0."
# layout -> (kohya name, ComfyUI module key, LokrModule options, expected lokr_core layout)
LAYOUTS = {
    "full": ("lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_k", U + TB + "attn1.to_k",
             dict(dim=64, factor=8), "full"),
    "split_w2": ("lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q", U + TB + "attn1.to_q",
                 dict(dim=4, factor=8), "split-w2"),
    "split_w1": ("lora_unet_middle_block_1_transformer_blocks_0_ff_net_0_proj",
                 U + "middle_block.1.transformer_blocks.0.ff.net.0.proj",
                 dict(dim=32, factor=-1, decompose_both=True, unbalanced_factorization=True), "split-w1"),
    "split_both": ("lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_q", U + TB + "attn2.to_q",
                   dict(dim=2, factor=8, decompose_both=True), "split-both"),
    "tucker_3x3": ("lora_unet_input_blocks_1_0_in_layers_2", U + "input_blocks.1.0.in_layers.2",
                   dict(dim=4, factor=8, use_tucker=True), "tucker"),
    "conv_1x1": ("lora_unet_input_blocks_1_1_proj_in", U + "input_blocks.1.1.proj_in", dict(dim=4, factor=8), "split-w2"),
    "dora_out": ("lora_unet_input_blocks_1_1_transformer_blocks_0_ff_net_2", U + TB + "ff.net.2",
                 dict(dim=4, factor=8, weight_decompose=True, wd_on_out=True), "split-w2"),
    "dora_in": ("lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k", U + TB + "attn2.to_k",
                dict(dim=4, factor=8, weight_decompose=True, wd_on_out=False), "split-w2"),
    "block_weight": ("lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_out_0", U + TB + "attn1.to_out.0",
                     dict(dim=4, factor=8), "split-w2"),
}
BLOCK = {U + TB + "attn1.to_out.0.weight": 0.5}  # per-weight block multiplier (every other weight: 1)
FUSED_KEY, FUSED_ROWS = U + TB + "ff.net.0.proj.weight", (0, 1280, 1280)  # GEGLU: the gate half
STRENGTH = 0.9
NAMES = list(LAYOUTS) + ["fused_rows"]


def require(attr_path: str) -> None:
    """Skip unless ComfyUI has ``module:attr`` (the API is checked, not the version number)."""
    mod_name, attr = attr_path.split(":")
    try:
        ok = hasattr(importlib.import_module(mod_name), attr)
    except ImportError:
        ok = False
    if not ok:
        pytest.skip(f"this ComfyUI has no {mod_name}.{attr} (0.28.0 has it)")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Tiny SD1.5, a LoKr file with every layout, the patched MODEL (loader path) and references."""
    comfy_env.setup_comfy()
    tmp = tmp_path_factory.mktemp("adapter")
    model, clip, _ = comfy_env.load_checkpoint(comfy_env.cached_tiny_sd15(tmp))
    comfy_env.load_pack()
    loaders = comfy_env.pack_module("nodes.planning")
    patch_mod = comfy_env.pack_module("nodes.patch")
    io = comfy_env.pack_module("lokr_core.formats.io")
    mods, base = {}, {}
    for i, (layout, (name, key, kw, _)) in enumerate(LAYOUTS.items()):
        layer = model.model.get_submodule(key)
        base[key + ".weight"] = layer.weight.detach().float().clone()
        mods[layout] = lycoris_module(name, copy.deepcopy(layer).float(), seed=30 + i, **kw)
    path = tmp / "layouts.safetensors"
    save_file(state_dict_of({LAYOUTS[k][0]: m for k, m in mods.items()}), str(path))
    weights = io.load_lokr(str(path))
    plan = loaders.plan_patches(weights, model, None, multiplier=lambda k: BLOCK.get(k, 1.0))
    patched, _ = loaders.apply_plan(plan, model, None, STRENGTH, 0.0)
    # fused row target: a LoKr for a (1280, 320) Linear added to rows 1280:2560 of ff.net.0.proj
    fused_layer = nn.Linear(320, 1280, bias=False)
    fused_w = model.model.get_submodule(FUSED_KEY[:-len(".weight")]).weight.detach().float()
    fused_layer.weight.data.copy_(fused_w[1280:])
    mods["fused_rows"] = lycoris_module("lora_unet_fused", fused_layer, dim=4, factor=8, seed=50)
    fpath = tmp / "fused.safetensors"
    save_file(state_dict_of({"lora_unet_fused": mods["fused_rows"]}), str(fpath))
    fw = io.load_lokr(str(fpath))
    fpatch = patch_mod.make_patch(fw.modules["lora_unet_fused"], fw.scale("lora_unet_fused", "file"),
                                  module="lora_unet_fused")
    assert patched.add_patches({(FUSED_KEY, FUSED_ROWS): fpatch}, STRENGTH)
    base[FUSED_KEY] = fused_w.clone()
    ref = {}
    for layout, (name, key, _, want_layout) in LAYOUTS.items():
        assert weights.modules[name].layout == want_layout, (layout, weights.modules[name].layout)
        k = key + ".weight"
        ref[k] = merged_reference(mods[layout], base[k], STRENGTH * BLOCK.get(k, 1.0))
    ref[FUSED_KEY] = base[FUSED_KEY].clone()
    ref[FUSED_KEY][1280:] = merged_reference(mods["fused_rows"], fused_w[1280:], STRENGTH)
    assert not model.patches  # the input MODEL keeps no patches
    return dict(model=model, patched=patched, base=base, ref=ref, plan=plan)


def key_of(layout: str) -> str:
    return FUSED_KEY if layout == "fused_rows" else LAYOUTS[layout][1] + ".weight"


@pytest.fixture(scope="module")
def full(env):
    """Every patched weight after ComfyUI's full patch (ModelPatcher.patch_model), fp32 copies."""
    return comfy_env.patched_weights(env["patched"], list(env["ref"]))


def _factor_tensors(patch) -> list[torch.Tensor]:
    return [t for t in patch.weights[0] if t is not None]


def _aligned(t: torch.Tensor) -> int:
    return (t.numel() * t.element_size() + 1023) // 1024 * 1024


def restage(value, buffers: list):
    """A patch-list value with every tensor copied into its own new uint8 buffer, adapters rebuilt
    as ComfyUI does (``type(v)(v.loaded_keys, weights)``); ``buffers`` collects the buffers."""
    import comfy.weight_adapter

    if isinstance(value, torch.Tensor):
        buf = torch.empty(value.numel() * value.element_size(), dtype=torch.uint8)
        buffers.append(buf)
        view = buf.view(value.dtype).view(value.shape)
        view.copy_(value)
        return view
    if isinstance(value, comfy.weight_adapter.WeightAdapterBase):
        return type(value)(value.loaded_keys, restage(value.weights, buffers))
    if isinstance(value, (tuple, list)):
        return type(value)(restage(v, buffers) for v in value)
    return value


def _calc(patch_list, weight, key):
    import comfy.lora

    return comfy.lora.calculate_weight(patch_list, weight.clone(), key)


def test_every_patch_is_a_weight_adapter_keeping_the_shape(env):
    import comfy.lora
    import comfy.weight_adapter

    patched = env["patched"]
    assert set(patched.patches) == set(env["ref"])
    for key, plist in patched.patches.items():
        weight = patched.model.get_parameter(key)
        for entry in plist:
            assert isinstance(entry[1], comfy.weight_adapter.WeightAdapterBase), key
            assert entry[1].calculate_shape(key) is None
        if hasattr(comfy.lora, "calculate_shape"):  # 0.28.0 dynamic load: a changed shape forces a full load
            assert comfy.lora.calculate_shape(plist, weight, key) == weight.shape


def test_full_patch_equals_lycoris(env, full):
    for key, ref in env["ref"].items():
        assert not torch.equal(full[key], env["base"][key]), key
        torch.testing.assert_close(full[key], ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layout", NAMES)
def test_rebuilt_and_restaged_patch_compute_the_same_weight(env, full, layout):
    key = key_of(layout)
    plist = env["patched"].patches[key]
    base = env["base"][key]
    rebuilt = [(s, type(p)(p.loaded_keys, p.weights), sm, off, fn) for s, p, sm, off, fn in plist]
    buffers: list = []
    staged = [(s, restage(p, buffers), sm, off, fn) for s, p, sm, off, fn in plist]
    assert len(buffers) == sum(len(_factor_tensors(p)) for _, p, *_ in plist)
    for (_, p, *_), (_, q, *_) in zip(plist, staged):
        assert all(a.data_ptr() != b.data_ptr() for a, b in zip(_factor_tensors(p), _factor_tensors(q)))
        assert q.params == p.params and q.loaded_keys == p.loaded_keys
    want = _calc(plist, base, key)
    assert torch.equal(_calc(rebuilt, base, key), want)
    assert torch.equal(_calc(staged, base, key), want)
    torch.testing.assert_close(want, full[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layout", NAMES)
def test_lowvram_patch_counts_prepares_and_applies_the_factors(env, full, layout):
    """0.28.0 dynamic VRAM: LowVramPatch.memory_required / prepare(copy) / __call__ on our patch."""
    require("comfy.lora:prefetch_prepared_value")
    import comfy.memory_management as mem
    from comfy.model_patcher import LowVramPatch

    key = key_of(layout)
    patched = env["patched"]
    lvp = LowVramPatch(key, patched.patches)
    factors = [t for _, p, *_ in patched.patches[key] for t in _factor_tensors(p)]
    size = lvp.memory_required()
    assert size == sum(mem.vram_aligned_size(t) for t in factors) == sum(_aligned(t) for t in factors)
    assert size < env["base"][key].numel() * 4  # the factors, not ΔW
    dest = torch.empty((size,), dtype=torch.uint8)  # comfy/ops.py get_cast_buffer, no offload stream
    prepared = lvp.prepare(dest, None, copy=True)
    assert lvp.prepared_patches is prepared
    lo, hi = dest.data_ptr(), dest.data_ptr() + size
    staged = [t for _, p, *_ in prepared for t in _factor_tensors(p)]
    assert len(staged) == len(factors)
    for t, orig in zip(staged, factors):
        assert lo <= t.data_ptr() and t.data_ptr() + t.numel() * t.element_size() <= hi
        assert torch.equal(t, orig)
    got = lvp(env["base"][key].clone())
    torch.testing.assert_close(got, full[key], rtol=1e-6, atol=1e-7)
    lvp.clear_prepared()


def test_lowvram_patch_dynamic_cast_sequence(env, full):
    """comfy/ops.py cast_modules_with_vbar: prepare(dest, copy=False) commits views of a buffer not yet
    filled; prepare(pin, copy=True) fills a pinned (here: plain CPU) buffer; cast_to_gathered copies
    it into dest; then the module's lowvram function runs on the weight."""
    require("comfy.lora:prefetch_prepared_value")
    import comfy.model_management as mm
    from comfy.model_patcher import LowVramPatch

    for layout in ("tucker_3x3", "dora_in", "fused_rows", "split_w1"):
        key = key_of(layout)
        lvp = LowVramPatch(key, env["patched"].patches)
        size = lvp.memory_required()
        dest = torch.zeros((size,), dtype=torch.uint8)
        lvp.prepare(dest, None, copy=False, commit=True)
        pin = torch.empty((size,), dtype=torch.uint8)
        lvp.prepare(pin, None, copy=True, commit=False)
        assert not dest.any()  # nothing copied yet: the committed patches are views of dest
        mm.cast_to_gathered([pin], dest)
        torch.testing.assert_close(lvp(env["base"][key].clone()), full[key], rtol=1e-6, atol=1e-7)
        lvp.clear_prepared()


@pytest.mark.parametrize("layout", ["full", "split_both", "tucker_3x3", "conv_1x1"])
def test_core_bypass_hook_runs_our_h(env, full, layout):
    """ComfyUI's own BypassForwardHook (what core's LoraLoaderBypass installs) with our patch: == patch mode."""
    require("comfy.weight_adapter:bypass")
    from comfy.weight_adapter.bypass import BypassForwardHook

    key = key_of(layout)
    (strength, p, _, _, _), = env["patched"].patches[key]
    layer = copy.deepcopy(env["model"].model.get_submodule(key[:-len(".weight")]))
    hook = BypassForwardHook(layer, type(p)(p.loaded_keys, p.weights), multiplier=strength)
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(2, layer.in_channels, 6, 6, generator=g) if isinstance(layer, nn.Conv2d)
         else torch.randn(2, 5, layer.in_features, generator=g))
    with torch.no_grad():
        hook.inject()
        try:
            got = layer(x)
        finally:
            hook.eject()
        layer.weight.copy_(full[key])
        want = layer(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def _lowvram_weight(module, x):
    import comfy.ops

    return comfy.ops.cast_bias_weight(module, x)[0].detach().float().clone()


def _forward(patcher) -> torch.Tensor:
    """UNet features at 3 timesteps: the input of the output head ``out`` (the tiny checkpoint's
    ``out.0`` GroupNorm has zero weight, so the UNet output itself is 0)."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(3, 4, 8, 8, generator=g)
    ctx = torch.randn(3, 8, 768, generator=g)
    t = torch.tensor([999.0, 500.0, 10.0])
    unet = patcher.model.diffusion_model
    seen = []
    handle = unet.out.register_forward_hook(lambda _m, args, _out: seen.append(args[0].float().clone()))
    try:
        with torch.no_grad():
            unet(x, timesteps=t, context=ctx)
    finally:
        handle.remove()
    return seen[0]


@pytest.fixture(scope="module")
def forward_full(env):
    import comfy.model_management as mm

    mm.unload_all_models()
    patched = env["patched"]
    patched.patch_model(patched.load_device)
    try:
        return _forward(patched)
    finally:
        patched.unpatch_model(patched.offload_device)


def test_lowvram_load_applies_patches_through_cast_bias_weight(env, full, forward_full):
    import comfy.model_management as mm
    from comfy.model_patcher import LowVramPatch

    patched = env["patched"]
    budget = 1024 * 1024
    assert budget < patched.model_size() / 100
    mm.unload_all_models()
    patched.patch_model(patched.load_device, lowvram_model_memory=budget)
    try:
        assert patched.model.model_lowvram and patched.model.lowvram_patch_counter >= len(env["ref"])
        x = torch.zeros(1, dtype=torch.float32)
        for key in env["ref"]:
            module = patched.model.get_submodule(key[:-len(".weight")])
            assert any(isinstance(f, LowVramPatch) for f in module.weight_function), key
            assert torch.equal(module.weight.detach().float(), env["base"][key])  # stored weight untouched
            torch.testing.assert_close(_lowvram_weight(module, x), full[key], rtol=1e-6, atol=1e-7)
        out = _forward(patched)
    finally:
        patched.unpatch_model(patched.offload_device)
    torch.testing.assert_close(out, forward_full, rtol=1e-4, atol=1e-5)
    unpatched = _forward(env["model"])
    assert (out - unpatched).abs().max() > 1e-3  # the LoKr changes the output


def test_partially_unload_moves_patches_to_lowvram_functions(env, full, forward_full):
    import comfy.model_management as mm
    import inspect
    from comfy.model_patcher import LowVramPatch

    patched = env["patched"]
    mm.unload_all_models()
    patched.patch_model(patched.load_device)
    try:
        kwargs = {"memory_to_free": patched.model_size() * 2}
        if "memory_to_free" not in inspect.signature(patched.partially_unload).parameters:
            pytest.skip("this ComfyUI's partially_unload takes no memory_to_free")
        patched.partially_unload(patched.offload_device, **kwargs)
        x = torch.zeros(1, dtype=torch.float32)
        for key in env["ref"]:
            module = patched.model.get_submodule(key[:-len(".weight")])
            assert any(isinstance(f, LowVramPatch) for f in module.weight_function), key
            assert torch.equal(module.weight.detach().float(), env["base"][key])  # backup restored
            torch.testing.assert_close(_lowvram_weight(module, x), full[key], rtol=1e-6, atol=1e-7)
        out = _forward(patched)
    finally:
        patched.unpatch_model(patched.offload_device)
    torch.testing.assert_close(out, forward_full, rtol=1e-4, atol=1e-5)


def test_model_patcher_dynamic_reroutes_cpu_to_model_patcher(env):
    require("comfy.model_patcher:ModelPatcherDynamic")
    import comfy.model_patcher as mp

    cpu = torch.device("cpu")
    p = mp.ModelPatcherDynamic(env["patched"].model, cpu, cpu)
    assert type(p) is mp.ModelPatcher and not p.is_dynamic()


def test_model_merge_nests_our_patches_in_a_list_patch(env):
    """ModelMergeSimple's path: ``model2.get_key_patches()`` gives ``[(weight, convert_func), *patches]``,
    added to model1 with (1 - ratio, ratio); ComfyUI runs our patches on model2's weight inside
    ``calculate_weight``. 0.28.0: a LowVramPatch stages the nested list (model2's weight + our
    factors) and gives the same weight."""
    import comfy.lora

    model, patched, ratio = env["model"], env["patched"], 0.3
    keys = list(env["ref"])
    kp = patched.get_key_patches("diffusion_model.")
    merged = model.clone()
    for k in keys:
        assert merged.add_patches({k: kp[k]}, 1.0 - ratio, ratio)
    got = comfy_env.patched_weights(merged, keys)
    for k in keys:
        want = ratio * env["base"][k] + (1.0 - ratio) * env["ref"][k]
        torch.testing.assert_close(got[k], want, rtol=1e-5, atol=1e-6)
    if not hasattr(comfy.lora, "prefetch_prepared_value"):
        return
    import comfy.memory_management as mem
    from comfy.model_patcher import LowVramPatch

    for layout in ("split_both", "dora_out", "fused_rows"):
        k = key_of(layout)
        lvp = LowVramPatch(k, merged.patches)
        factors = [t for _, p, *_ in patched.patches[k] for t in _factor_tensors(p)]
        assert lvp.memory_required() == mem.vram_aligned_size(kp[k][0][0]) + sum(_aligned(t) for t in factors)
        lvp.prepare(torch.empty((lvp.memory_required(),), dtype=torch.uint8), None, copy=True)
        torch.testing.assert_close(lvp(env["base"][k].clone()), got[k], rtol=1e-6, atol=1e-7)
