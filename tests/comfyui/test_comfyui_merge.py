"""LoKr Merge Checkpoint inside a real ComfyUI (COMFYUI_PATH; 0.3.64, 0.8.0, 0.28.0), tiny SD1.5 checkpoint.

Reference: ComfyUI's own CheckpointSave on the same MODEL / CLIP / VAE (the LoKr applied by our LoKr
Loader, patched by ComfyUI's ModelPatcher), and lycoris-lora's merged weight for the LoKr modules.

- same key set, shapes and dtypes as CheckpointSave; untouched tensors bit-identical; patched ones
  equal to CheckpointSave's and to lycoris-lora's W + s * ΔW at the fp32 floor;
- extra keys kept as CheckpointSave writes them: ``v_pred`` / ``ztsnr`` (v-prediction model with a
  zero-terminal-SNR ModelSamplingDiscrete), ``edm_vpred.sigma_*`` (ModelSamplingContinuousEDM);
- the written file, loaded by CheckpointLoaderSimple, samples (KSampler, fixed seed) and decodes the
  same latents and image as the LoKr Loader on the base checkpoint;
- Cancel mid-merge and a prefix outside the output folder write nothing; the inputs keep their
  weights and patches.
Run: ``COMFYUI_PATH=$BENCH/ComfyUI $BENCH/venv/bin/python -m pytest -q tests/comfyui/test_comfyui_merge.py``.
"""
from __future__ import annotations

import copy
import os
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import comfy_env
from tests.support.lokr_node_fixtures import lycoris_module, merged_reference, state_dict_of

U = "diffusion_model."
C = "clip_l.transformer.text_model."
LOKR = "merge_lokr.safetensors"
STRENGTH_MODEL, STRENGTH_CLIP = 0.8, 1.2
SPECS = {  # kohya name -> (ComfyUI key, LokrModule options): linear, 3x3 conv, Tucker conv, text encoder
    "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q": (U + "input_blocks.1.1.transformer_blocks.0.attn1.to_q",
                                                                    dict(dim=4, decompose_both=True, factor=8)),
    "lora_unet_input_blocks_1_0_in_layers_2": (U + "input_blocks.1.0.in_layers.2", dict(dim=4, factor=8)),
    "lora_unet_output_blocks_1_0_in_layers_2": (U + "output_blocks.1.0.in_layers.2", dict(dim=4, factor=8, use_tucker=True)),
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (C + "encoder.layers.0.self_attn.q_proj", dict(dim=4, factor=8)),
}


def file_key(comfy_key: str) -> str:
    """ComfyUI module key -> its weight's name in an SD1.5 checkpoint file."""
    if comfy_key.startswith(U):
        return "model." + comfy_key + ".weight"
    return "cond_stage_model." + comfy_key[len("clip_l."):] + ".weight"




def _layer(model, clip, key):
    root = model.model if key.startswith(U) else clip.cond_stage_model
    return root.get_submodule(key)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    comfy_env.setup_comfy()
    import folder_paths
    import nodes

    tmp = tmp_path_factory.mktemp("merge")
    for d in ("loras", "checkpoints", "output"):
        (tmp / d).mkdir()
    shutil.copyfile(comfy_env.cached_tiny_sd15(tmp), tmp / "checkpoints" / "tiny_sd15.safetensors")
    folder_paths.add_model_folder_path("loras", str(tmp / "loras"))
    folder_paths.add_model_folder_path("checkpoints", str(tmp / "checkpoints"))
    folder_paths.add_model_folder_path("checkpoints", str(tmp / "output"))
    old_out = folder_paths.get_output_directory()
    folder_paths.set_output_directory(str(tmp / "output"))
    pack = comfy_env.load_pack()
    model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint("tiny_sd15.safetensors")[:3]
    assert type(model.model.model_config).__name__ == "SD15"
    mods = {}
    for i, (name, (key, kw)) in enumerate(SPECS.items()):
        mods[name] = lycoris_module(name, copy.deepcopy(_layer(model, clip, key)).float(), seed=30 + i, **kw)
    save_file(state_dict_of(mods), str(tmp / "loras" / LOKR))
    base = {name: _layer(model, clip, key).weight.detach().float().clone() for name, (key, _) in SPECS.items()}
    yield dict(tmp=tmp, out=tmp / "output", nodes=nodes, pack=pack, model=model, clip=clip, vae=vae, mods=mods,
               base=base, merge=comfy_env.pack_module("nodes.merge"))
    folder_paths.set_output_directory(old_out)
    shutil.rmtree(tmp, ignore_errors=True)  # each merged / saved checkpoint is ~1 GB (fp32 CLIP-L and VAE)


def _loaded(env, model=None, apply="patch weights"):
    """(MODEL, CLIP) from the LoKr Loader node on ``model`` (default: the base checkpoint's)."""
    loader = env["pack"].NODE_CLASS_MAPPINGS["LoKrLoader"]()
    out = loader.load(model or env["model"], env["clip"], LOKR, STRENGTH_MODEL, STRENGTH_CLIP, apply=apply)
    return out["result"]


def _merge(env, model, clip, prefix, dtype="keep"):
    node = env["pack"].NODE_CLASS_MAPPINGS["LoKrMergeCheckpoint"]()
    (path,) = node.merge(model, clip, env["vae"], prefix, dtype)["result"]
    return path


def _checkpoint_save(env, model, clip, prefix):
    """ComfyUI's CheckpointSave node on the same inputs; returns the path it wrote."""
    import comfy_extras.nodes_model_merging as merging

    merging.CheckpointSave().save(model, clip, env["vae"], prefix)
    folder = env["out"] / os.path.dirname(prefix)
    (name,) = [f for f in os.listdir(folder) if f.startswith(os.path.basename(prefix) + "_")]
    return str(folder / name)


def _read(path):
    with safe_open(path, "pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}, fh.metadata()


def _files(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


def _snapshot(model, clip):
    """Everything the merge must leave alone: each patch list (by identity) and the base weights.

    Models are unloaded first: CheckpointSave or a sampler leaves the shared weights patched
    until ComfyUI unloads the model (the merge unloads it too, restoring the base weights).
    """
    import comfy.model_management

    comfy.model_management.unload_all_models()
    patches = {k: list(v) for k, v in list(model.patches.items()) + list(clip.patcher.patches.items())}
    weights = {name: _layer(model, clip, key).weight.detach().clone() for name, (key, _) in SPECS.items()}
    return patches, weights


def _assert_unchanged(model, clip, snap):
    patches, weights = snap
    now = {k: list(v) for k, v in list(model.patches.items()) + list(clip.patcher.patches.items())}
    assert now.keys() == patches.keys() and all(len(now[k]) == len(v) and all(a is b for a, b in zip(now[k], v))
                                                 for k, v in patches.items())
    for name, (key, _) in SPECS.items():
        assert torch.equal(_layer(model, clip, key).weight.detach(), weights[name]), key


def _assert_like_checkpoint_save(ours, core, patched):
    """Same keys / shapes / dtypes; untouched tensors bit-identical; ``patched`` keys equal at the fp32 floor."""
    assert sorted(ours) == sorted(core)
    for k, v in core.items():
        assert ours[k].shape == v.shape and ours[k].dtype == v.dtype, k
        if k in patched:
            torch.testing.assert_close(ours[k].float(), v.float(), rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(ours[k], v), k


def test_merge_equals_checkpoint_save_and_lycoris(env):
    model, clip = _loaded(env)
    snap = _snapshot(model, clip)
    base_snap = _snapshot(env["model"], env["clip"])
    ours, meta = _read(_merge(env, model, clip, "lokr/same", "keep"))
    _assert_unchanged(model, clip, snap)
    _assert_unchanged(env["model"], env["clip"], base_snap)
    assert not env["model"].patches and not env["clip"].patcher.patches
    core, _ = _read(_checkpoint_save(env, model, clip, "core/same"))
    patched = {file_key(key) for key, _ in SPECS.values()}
    assert any(k.startswith("cond_stage_model.") for k in ours) and any(k.startswith("first_stage_model.") for k in ours)
    _assert_like_checkpoint_save(ours, core, patched)
    for name, (key, _) in SPECS.items():
        strength = STRENGTH_MODEL if key.startswith(U) else STRENGTH_CLIP
        ref = merged_reference(env["mods"][name], env["base"][name], strength)
        assert not torch.equal(ours[file_key(key)].float(), env["base"][name]), key
        torch.testing.assert_close(ours[file_key(key)].float(), ref, rtol=1e-5, atol=1e-6)
    assert meta["lokr_merge_dtype"] == "keep" and LOKR in meta["lokr_merged"]


def test_merge_keeps_vpred_and_model_sampling_keys(env):
    """v_pred / ztsnr (v-prediction model + zsnr sampling) and edm_vpred.* (EDM v-prediction sampling)."""
    import comfy.model_base
    from comfy_extras.nodes_model_advanced import ModelSamplingContinuousEDM, ModelSamplingDiscrete

    base = env["model"]
    vmodel = comfy.model_base.BaseModel(base.model.model_config, model_type=comfy.model_base.ModelType.V_PREDICTION,
                                        device=base.offload_device)
    vmodel.diffusion_model.load_state_dict(base.model.diffusion_model.state_dict())
    vpatcher = type(base)(vmodel, load_device=base.load_device, offload_device=base.offload_device)
    m, c = _loaded(env, vpatcher)
    (m,) = ModelSamplingDiscrete().patch(m, "v_prediction", True)
    (e,) = ModelSamplingContinuousEDM().patch(_loaded(env)[0], "v_prediction", 120.0, 0.002)
    patched = {file_key(key) for key, _ in SPECS.values()}
    for label, model, extra in (("vpred", m, {"v_pred", "ztsnr"}), ("edm", e, {"edm_vpred.sigma_max", "edm_vpred.sigma_min"})):
        ours, _ = _read(_merge(env, model, c, f"lokr/{label}", "keep"))
        core, _ = _read(_checkpoint_save(env, model, c, f"core/{label}"))
        assert extra <= set(core) and not ({"v_pred", "ztsnr", "edm_vpred.sigma_max"} - extra) & set(core)
        _assert_like_checkpoint_save(ours, core, patched)
    torch.testing.assert_close(ours["edm_vpred.sigma_max"], torch.tensor(120.0))


def test_bypass_lokr_is_baked_in(env):
    """A LoKr loaded with apply = bypass (weights untouched) is merged like the patched one."""
    model, clip = _loaded(env, apply="bypass")
    assert not model.patches and not clip.patcher.patches
    snap = _snapshot(model, clip)
    ours, meta = _read(_merge(env, model, clip, "lokr/bypass", "keep"))
    _assert_unchanged(model, clip, snap)
    patched_mode, _ = _read(_merge(env, *_loaded(env), "lokr/patched", "keep"))
    _assert_like_checkpoint_save(ours, patched_mode, {file_key(key) for key, _ in SPECS.values()})
    for name, (key, _) in SPECS.items():
        strength = STRENGTH_MODEL if key.startswith(U) else STRENGTH_CLIP
        ref = merged_reference(env["mods"][name], env["base"][name], strength)
        torch.testing.assert_close(ours[file_key(key)].float(), ref, rtol=1e-5, atol=1e-6)
    assert LOKR in meta["lokr_merged"]


def _sample(env, model, clip, vae):
    """Latents (3 euler steps, seed 7, 64x64) and the decoded image, through ComfyUI's own nodes."""
    nodes = env["nodes"]
    (pos,) = nodes.CLIPTextEncode().encode(clip, "a photo of a cat")
    (neg,) = nodes.CLIPTextEncode().encode(clip, "blurry")
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    (out,) = nodes.common_ksampler(model, 7, 3, 4.0, "euler", "normal", pos, neg, latent)
    (image,) = nodes.VAEDecode().decode(vae, out)
    return out["samples"].clone(), image.clone()


def test_merged_file_samples_like_the_loader(env):
    model, clip = _loaded(env)
    path = _merge(env, model, clip, "lokr/sample", "fp32")
    merged = env["nodes"].CheckpointLoaderSimple().load_checkpoint(os.path.relpath(path, env["out"]))
    assert type(merged[0].model.model_config).__name__ == "SD15" and not merged[0].patches
    want_latent, want_image = _sample(env, model, clip, env["vae"])
    got_latent, got_image = _sample(env, *merged)
    base_latent, _ = _sample(env, env["model"], env["clip"], env["vae"])
    assert not torch.allclose(base_latent, want_latent, rtol=1e-3, atol=1e-3)  # the LoKr changes the result
    torch.testing.assert_close(got_latent, want_latent, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_image, want_image, rtol=1e-4, atol=1e-5)


def test_cancel_and_bad_prefix_write_nothing(env):
    import comfy.model_management as mm

    LoKrError = comfy_env.pack_module("lokr_core.base.errors").LoKrError
    model, clip = _loaded(env)
    snap = _snapshot(model, clip)
    before = _files(env["out"])
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            _merge(env, model, clip, "cancel/merged", "fp16")
    finally:
        mm.interrupt_current_processing(False)
    with pytest.raises(LoKrError, match="leaves the output folder"):
        _merge(env, model, clip, "../escape", "fp16")
    assert _files(env["out"]) == before and not (env["out"] / "cancel").exists()
    assert not os.path.exists(env["tmp"] / "escape_00001_.safetensors")
    _assert_unchanged(model, clip, snap)


def test_cancel_while_the_file_is_written(env, monkeypatch):
    """Cancel pressed while the merged file is being written (its temp file is in the output folder):
    ComfyUI's own interrupt flag and exception; the write stops between tensors, the temp file is
    removed, the inputs keep their weights and patches, and the next prompt writes the file."""
    import comfy.model_management as mm

    model, clip = _loaded(env)
    snap = _snapshot(model, clip)
    before = _files(env["out"])
    real_check = mm.throw_exception_if_processing_interrupted
    seen = []

    def check_and_cancel_once_writing():  # ComfyUI's check; Cancel is pressed once the temp file exists
        temps = [f for f in _files(env["out"]) if os.path.basename(f).startswith(".") and f.endswith(".tmp")]
        if temps and not seen:
            seen.extend(temps)
            mm.interrupt_current_processing(True)
        real_check()
    monkeypatch.setattr(mm, "throw_exception_if_processing_interrupted", check_and_cancel_once_writing)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            _merge(env, model, clip, "cancel_write/merged", "fp16")
    finally:
        mm.interrupt_current_processing(False)
    assert [os.path.basename(f) for f in seen] and ".merged_00001_.safetensors.lokr-" in seen[0]
    assert _files(env["out"]) == before  # the temp file is gone, nothing else written
    _assert_unchanged(model, clip, snap)
    monkeypatch.undo()
    path = _merge(env, model, clip, "cancel_write/merged", "fp16")
    assert _files(env["out"]) == sorted(before + ["cancel_write/merged_00001_.safetensors"])
    ours, _ = _read(path)
    assert all(ours[file_key(key)].dtype == torch.float16 for key, _ in SPECS.values())
