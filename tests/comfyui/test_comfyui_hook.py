"""LoKr Hook inside a real ComfyUI (COMFYUI_PATH), driven by ComfyUI's own hook machinery and nodes.

- Sampling: three LoKr Hooks chained with ``prev_hooks`` (a Tucker conv, a DoRA Linear, a PEFT
  adapter), scheduled with core's Create Hook Keyframe (1.0 from 0 %, 0.5 from 30 %, 0 from 60 %)
  and Set Hook Keyframes, attached to the positive conditioning only (core's Cond Set Props), run
  by ComfyUI's sampler (``comfy.sample.sample``, euler, 4 steps, cfg 2). A model-function wrapper
  reads the weights the model holds at every model call: for the positive calls they equal
  lycoris-lora's / peft's merged weight at the step's keyframe strength (bit-identical to the base
  at strength 0), for the negative (unhooked) calls they are the base.
- CLIP: core's Set CLIP Hooks with the same hook: the text-encoder weight ComfyUI patches on load
  equals lycoris-lora's at strength_clip; the input CLIP stays as it was.
- Core's Create Hook LoRA on the same Tucker / DoRA file does not give lycoris-lora's weights.
- A plain LoRA file becomes core's own weight hook (W + s * up @ down * alpha / rank); strengths 0
  return prev_hooks as they were.
Lean by design (one tiny SD1.5 checkpoint, 8x8 latent). Run:
``COMFYUI_PATH=$BENCH/ComfyUI $BENCH/venv/bin/python -m pytest -q tests/comfyui/test_comfyui_hook.py``.
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
TUCKER = {"lora_unet_output_blocks_1_0_in_layers_2": (U + "output_blocks.1.0.in_layers.2",
                                                      dict(dim=4, factor=8, use_tucker=True)),
          "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (C + "encoder.layers.0.self_attn.q_proj",
                                                                   dict(dim=4, factor=8))}
DORA = {"lora_unet_input_blocks_1_1_transformer_blocks_0_ff_net_2": (U + "input_blocks.1.1.transformer_blocks.0.ff.net.2",
                                                                      dict(dim=4, factor=8, weight_decompose=True))}
PEFT = {"down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q": U + "input_blocks.1.1.transformer_blocks.0.attn1.to_q",
        "down_blocks.0.resnets.0.conv1": U + "input_blocks.1.0.in_layers.2"}
KEYFRAMES = ((1.0, 0.0), (0.5, 0.3), (0.0, 0.6))  # (strength, start percent)
SM, SC = 0.8, 1.3


def _layer(root, key):
    return root.get_submodule(key)


def _lycoris_file(env, specs, fname, seed):
    """A lycoris-lora file of ``specs``; returns {ComfyUI weight key: reference(strength) -> merged weight}."""
    refs, mods = {}, {}
    for i, (name, (key, kw)) in enumerate(specs.items()):
        layer = _layer(env["model"].model if key.startswith(U) else env["clip"].cond_stage_model, key)
        mods[name] = lycoris_module(name, copy.deepcopy(layer).float(), seed=seed + i, **kw)
        base = layer.weight.detach().float().clone()
        refs[key + ".weight"] = lambda s, m=mods[name], w=base: merged_reference(m, w, s)
    save_file(state_dict_of(mods), str(env["loras"] / fname))
    return refs


def _peft_file(env):
    """A PEFT LoKr adapter (peft's own save_pretrained) on a Linear and a 3x3 conv; references from peft."""
    layers = {path: _layer(env["model"].model, key) for path, key in PEFT.items()}
    pm = peft_lokr_adapter(layers, str(env["loras"] / "peft"), r=4, alpha=6.0, seed=5, std=0.05)
    refs = {}
    for path, key in PEFT.items():
        with torch.no_grad():
            delta = pm.base_model.model.get_submodule(path).get_delta_weight("default").float()
        base = _layer(env["model"].model, key).weight.detach().float().clone()
        refs[key + ".weight"] = lambda s, d=delta, w=base: w + s * d
    return refs


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    comfy_env.setup_comfy()

    tmp = tmp_path_factory.mktemp("comfy_hook")
    model, clip, _vae = comfy_env.load_checkpoint(comfy_env.cached_tiny_sd15(tmp))
    comfy_env.load_pack()
    loras = tmp / "loras"
    loras.mkdir()
    comfy_env.set_model_folders("loras", str(loras))
    env = dict(model=model, clip=clip, loras=loras)
    env["tucker"] = _lycoris_file(env, TUCKER, "tucker.safetensors", seed=40)
    env["dora"] = _lycoris_file(env, DORA, "dora.safetensors", seed=50)
    env["peft"] = _peft_file(env)
    env["hook"] = comfy_env.pack_module("nodes.hook").LoKrHook
    return env


def _nodes():
    from comfy_extras import nodes_hooks

    return nodes_hooks


def _scheduled_hooks(env):
    """Tucker + DoRA + PEFT LoKr Hooks chained by prev_hooks, with core's keyframes set on them."""
    N, H = _nodes(), env["hook"]
    (hooks,) = H().create_hook("tucker.safetensors", SM, SC)
    (hooks,) = H().create_hook("dora.safetensors", SM, SC, prev_hooks=hooks)
    (hooks,) = H().create_hook("peft/adapter_model.safetensors", SM, SC, prev_hooks=hooks)
    kf = None
    for strength, start in KEYFRAMES:
        (kf,) = N.CreateHookKeyframe().create_hook_keyframe(strength_mult=strength, start_percent=start,
                                                            prev_hook_kf=kf)
    (hooks,) = N.SetHookKeyframes().set_hook_keyframes(hooks=hooks, hook_kf=kf)
    return hooks


def _expected_strength(model_sampling, sigma: float) -> float:
    """The keyframe in force at ``sigma``: the last one whose start (as a sigma) is at or above it."""
    out = KEYFRAMES[0][0]
    for strength, start in KEYFRAMES:
        if model_sampling.percent_to_sigma(start) >= sigma:
            out = strength
    return out


def test_hook_keyframes_apply_the_lokr_only_in_their_steps(env):
    import comfy.sample
    import comfy.utils

    hooks = _scheduled_hooks(env)
    assert len(hooks.hooks) == 3
    refs = {**env["tucker"], **env["dora"], **env["peft"]}
    refs = {k: f for k, f in refs.items() if k.startswith(U)}
    base = {k: f(0.0) for k, f in refs.items()}
    model = env["model"].clone()
    calls = []

    def wrapper(apply_model, args):
        calls.append((float(args["timestep"][0]), list(args["cond_or_uncond"]),
                      {k: comfy.utils.get_attr(model.model, k).detach().float().clone() for k in refs}))
        return apply_model(args["input"], args["timestep"], **args["c"])

    model.set_model_unet_function_wrapper(wrapper)
    N = _nodes()
    ctx = torch.zeros(1, 77, 768)
    (positive,) = N.ConditioningSetProperties().set_properties(cond_NEW=[[ctx, {}]], strength=1.0,
                                                               set_cond_area="default", hooks=hooks)
    negative = [[ctx.clone(), {}]]
    latent = torch.zeros(1, 4, 8, 8)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
    comfy.sample.sample(model, noise, 4, 2.0, "euler", "normal", positive, negative, latent, disable_pbar=True, seed=0)
    ms = model.model.model_sampling
    seen = set()
    for sigma, which, weights in calls:
        s = _expected_strength(ms, sigma) if which == [0] else 0.0
        assert which in ([0], [1]), which
        seen.add((which[0], s))
        for k, w in weights.items():
            if s == 0.0:
                assert torch.equal(w, base[k]), (k, sigma, which)
            else:
                torch.testing.assert_close(w, refs[k](s * SM), rtol=1e-5, atol=1e-6, msg=lambda m: f"{k} {sigma}: {m}")
    assert {(0, 1.0), (0, 0.5), (0, 0.0), (1, 0.0)} <= seen, seen
    import comfy.model_management as mm

    mm.unload_all_models()
    for k, w in base.items():  # the shared model holds its own weights again
        assert torch.equal(comfy.utils.get_attr(env["model"].model, k).detach().float(), w), k


def test_set_clip_hooks_patches_the_text_encoder_exactly(env):
    import comfy.hooks

    (hooks,) = env["hook"]().create_hook("tucker.safetensors", SM, SC)
    assert all(isinstance(h, comfy.hooks.WeightHook) for h in hooks.hooks)
    (clip,) = _nodes().SetClipHooks().apply_hooks(clip=env["clip"], schedule_clip=False, apply_to_conds=True,
                                                  hooks=hooks)
    key = next(k for k in env["tucker"] if not k.startswith(U))
    got = comfy_env.patched_weights(clip.patcher, [key])[key]
    torch.testing.assert_close(got, env["tucker"][key](SC), rtol=1e-5, atol=1e-6)
    assert not env["clip"].patcher.hook_patches and env["clip"].patcher.forced_hooks is None
    assert torch.equal(comfy_env.patched_weights(env["clip"].patcher, [key])[key], env["tucker"][key](0.0))


def _hooked_unet_weights(env, hooks, keys):
    """The diffusion-model weights ``hooks`` give at full keyframe strength (registered and applied as
    sampling does), then the model restored."""
    import comfy.hooks
    import comfy.utils

    m = env["model"].clone()
    m.register_all_hook_patches(hooks, comfy.hooks.create_target_dict(comfy.hooks.EnumWeightTarget.Model))
    m.patch_hooks(hooks)
    try:
        return {k: comfy.utils.get_attr(m.model, k).detach().float().clone() for k in keys}
    finally:
        m.patch_hooks(None)


def test_same_as_direct_registration_and_core_hook_is_not_exact(env):
    """Our hook registered by hand == the references; core's Create Hook LoRA on the Tucker / DoRA files is not."""
    refs = {k: f for k, f in {**env["tucker"], **env["dora"]}.items() if k.startswith(U)}
    N, H = _nodes(), env["hook"]
    (ours,) = H().create_hook("dora.safetensors", SM, 0.0, prev_hooks=H().create_hook("tucker.safetensors", SM, 0.0)[0])
    got = _hooked_unet_weights(env, ours, list(refs))
    for k, f in refs.items():
        torch.testing.assert_close(got[k], f(SM), rtol=1e-5, atol=1e-6)
    (core,) = N.CreateHookLora().create_hook("dora.safetensors", SM, 0.0,
                                             prev_hooks=N.CreateHookLora().create_hook("tucker.safetensors", SM, 0.0)[0])
    got = _hooked_unet_weights(env, core, list(refs))
    for k, f in refs.items():  # core's LoKr math: Tucker conv and DoRA (out, 1) scale come out wrong
        assert not torch.allclose(got[k], f(SM), rtol=1e-4, atol=1e-5), k


def test_plain_lora_file_is_cores_hook_and_zero_strengths_keep_prev(env):
    """A file without LoKr modules gives core's own weight hook (same weights as Create Hook LoRA); both
    strengths 0 return prev_hooks' hooks unchanged."""
    import comfy.hooks

    name = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q"
    key = PEFT["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"] + ".weight"
    w = _layer(env["model"].model, key[:-len(".weight")]).weight
    g = torch.Generator().manual_seed(8)
    up, down = torch.randn(w.shape[0], 4, generator=g) * 0.05, torch.randn(4, w.shape[1], generator=g) * 0.05
    save_file({f"{name}.lora_up.weight": up, f"{name}.lora_down.weight": down, f"{name}.alpha": torch.tensor(2.0)},
              str(env["loras"] / "plain_lora.safetensors"))
    (ours,) = env["hook"]().create_hook("plain_lora.safetensors", SM, SC)
    assert [type(h) for h in ours.hooks] == [comfy.hooks.WeightHook]
    got = _hooked_unet_weights(env, ours, [key])[key]
    torch.testing.assert_close(got, w.detach().float() + SM * (up @ down) * (2.0 / 4), rtol=1e-5, atol=1e-6)
    (kept,) = env["hook"]().create_hook("tucker.safetensors", 0.0, 0.0, prev_hooks=ours)
    assert kept.hooks == ours.hooks and kept is not ours
