"""LoKr Hook against ComfyUI stand-ins: without ComfyUI's hook system the node says so; the patches a
LoKr weight hook registers (``hook_patches``) are the loader's patch objects, equal lycoris-lora.
The hook system itself is tested in a real ComfyUI (tests/comfyui/test_comfyui_hook.py)."""
from __future__ import annotations

import pytest
import torch

from tests.support.comfy_pack import pack_module
from tests.support.lokr_node_fixtures import merged_reference

errors = pack_module("lokr_core.base.errors")


def _hook():
    return pack_module("nodes.hook")


def _source(env, name="test.safetensors"):
    H = _hook()
    path = str(env["loras"] / name)
    return H.HookSource(name, path, pack_module("nodes.planning").WeightsCache().get(path))


def test_no_hook_system_is_named(env):
    with pytest.raises(errors.LoKrConfigError, match="no hook system"):
        _hook().LoKrHook().create_hook("test.safetensors", 1.0, 1.0)


def test_hook_patches_are_lokr_patches_equal_lycoris(env):
    H, patch = _hook(), pack_module("nodes.patch")
    src = _source(env)
    unet = H.hook_patches(src, env["model"], clip_side=False)
    clip = H.hook_patches(src, env["clip"].patcher, clip_side=True)
    assert set(unet) == {k for k, _ in env["refs"].values() if k.startswith("diffusion_model.")}
    assert set(clip) == {k for k, _ in env["refs"].values() if not k.startswith("diffusion_model.")}
    assert all(patch.is_lokr_patch(p) for p in (*unet.values(), *clip.values()))
    for patcher, patches in ((env["model"], unet), (env["clip"].patcher, clip)):
        m = patcher.clone()
        m.add_patches(patches, 0.7)
        sd = m.patched_state_dict()
        for name, (key, w0) in env["refs"].items():
            if key in patches:
                torch.testing.assert_close(sd[key], merged_reference(env["mods"][name], w0, 0.7), rtol=1e-5, atol=1e-6)


def test_hook_patches_side_without_modules_is_empty(env, tmp_path):
    from safetensors.torch import save_file

    from tests.support.lokr_node_fixtures import lycoris_module, state_dict_of

    name = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q"
    save_file(state_dict_of({name: lycoris_module(name, torch.nn.Linear(32, 32, bias=False), dim=2)}),
              str(env["loras"] / "unet_only.safetensors"))
    src = _source(env, "unet_only.safetensors")
    assert _hook().hook_patches(src, env["clip"].patcher, clip_side=True) == {}
    assert len(_hook().hook_patches(src, env["model"], clip_side=False)) == 1


def test_validate_and_is_changed(env):
    N = _hook().LoKrHook
    assert N.VALIDATE_INPUTS(lokr_name="test.safetensors", strength_model=1.0, strength_clip=0.0) is True
    msg = N.VALIDATE_INPUTS(lokr_name="gone.safetensors", strength_model=1.0, strength_clip=1.0)
    assert isinstance(msg, str) and "gone.safetensors" in msg
    assert "finite" in N.VALIDATE_INPUTS(lokr_name="test.safetensors", strength_model=float("nan"))
    a = N.IS_CHANGED(lokr_name="test.safetensors", strength_model=1.0)
    assert "test.safetensors" in a and a == N.IS_CHANGED(lokr_name="test.safetensors")
    (env["loras"] / "test.safetensors").write_bytes((env["loras"] / "test.safetensors").read_bytes() + b" ")
    assert N.IS_CHANGED(lokr_name="test.safetensors") != a
