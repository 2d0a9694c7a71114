"""LoKr Merge Checkpoint against ComfyUI stand-ins (merged numbers vs lycoris-lora)."""
from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open
from torch import nn

from tests.support import comfy_standins as cs
from tests.support.comfy_pack import pack_module
from tests.support.lokr_node_fixtures import merged_reference
from tests.support.node_env import SPECS

errors = pack_module("lokr_core.base.errors")


class _VAE:
    def __init__(self):
        self.first_stage_model = nn.Conv2d(4, 3, 1)

    def get_sd(self):
        return self.first_stage_model.state_dict()


def _files(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


def test_merge_checkpoint_writes_merged_weights(env):
    L = pack_module("nodes.planning")
    M = pack_module("nodes.merge")
    m, c, _ = L.load_and_apply(L.WeightsCache(), env["model"], env["clip"], "test.safetensors", 0.5, 1.0)
    snap = cs.snapshot(m)
    out = M.LoKrMergeCheckpoint().merge(m, c, _VAE(), "checkpoints/merged", "fp32")
    (path,) = out["result"]
    assert path.endswith("merged_00001_.safetensors") and os.path.isfile(path)
    assert _files(env["out"]) == ["checkpoints/merged_00001_.safetensors"]  # no temp file left
    assert cs.unchanged(m, snap)
    with safe_open(path, "pt") as fh:
        meta = fh.metadata()
        sd = {k: fh.get_tensor(k) for k in fh.keys()}
    merged = json.loads(meta["lokr_merged"])
    assert {(r["file"], r["strength"]) for r in merged} == {("test.safetensors", 0.5), ("test.safetensors", 1.0)}
    assert meta["lokr_merge_dtype"] == "fp32"
    for name, key, _ in SPECS:
        k, w0 = env["refs"][name]
        prefix = "model." if key.startswith("diffusion_model") else "cond_stage_model."
        strength = 0.5 if key.startswith("diffusion_model") else 1.0
        torch.testing.assert_close(sd[prefix + k], merged_reference(env["mods"][name], w0, strength),
                                   rtol=1e-5, atol=1e-6)
    assert "first_stage_model.weight" in sd
    # fp16 output, numbered next to the first
    (p2,) = M.LoKrMergeCheckpoint().merge(m, c, _VAE(), "checkpoints/merged", "fp16")["result"]
    assert p2.endswith("merged_00002_.safetensors")
    with safe_open(p2, "pt") as fh:
        assert fh.get_tensor("model." + SPECS[0][1] + ".weight").dtype == torch.float16


def test_merge_bad_input_writes_nothing(env):
    M = pack_module("nodes.merge")
    with pytest.raises(errors.LoKrError, match="dtype 'int3'"):
        M.LoKrMergeCheckpoint().merge(env["model"], env["clip"], _VAE(), "x", "int3")
    with pytest.raises(errors.LoKrError, match="leaves the output folder"):
        M.LoKrMergeCheckpoint().merge(env["model"], env["clip"], _VAE(), "../escape", "fp16")
    assert _files(env["out"]) == []


def test_merge_refuses_fp8_and_scaled_weights_writes_nothing(env):
    L = pack_module("nodes.planning")
    M = pack_module("nodes.merge")
    m, c, _ = L.load_and_apply(L.WeightsCache(), env["model"], env["clip"], "test.safetensors", 0.5, 1.0)
    key = SPECS[0][1] + ".weight"
    layer = m.model.get_submodule(SPECS[0][1])
    original = layer.weight.data
    try:
        layer.weight.data = original.to(torch.float8_e4m3fn)
        with pytest.raises(errors.LoKrError, match=f"{key}.*float8_e4m3fn.*nothing was written"):
            M.LoKrMergeCheckpoint().merge(m, c, _VAE(), "checkpoints/fp8", "fp16")
        layer.weight.data = original
        layer.register_buffer("scale_weight", torch.ones(()))
        with pytest.raises(errors.LoKrError, match=f"{key}.*with a scale"):
            M.LoKrMergeCheckpoint().merge(m, c, _VAE(), "checkpoints/fp8", "fp16")
    finally:
        layer.weight.data = original
        layer._buffers.pop("scale_weight", None)
    assert _files(env["out"]) == []


class _SavingConfig:
    """ComfyUI model_config stand-in: SD1.5's ``process_*_state_dict_for_saving`` prefixes."""

    def process_unet_state_dict_for_saving(self, sd):
        return {"model.diffusion_model." + k: v for k, v in sd.items()}

    def process_clip_state_dict_for_saving(self, sd):
        return {"cond_stage_model." + k.removeprefix("clip_l."): v for k, v in sd.items()}

    def process_vae_state_dict_for_saving(self, sd):
        return {"first_stage_model." + k: v for k, v in sd.items()}


def _saving_0_8(self, clip_state_dict=None, vae_state_dict=None, clip_vision_state_dict=None):
    """BaseModel.state_dict_for_saving as in ComfyUI 0.3.64 / 0.8.0: reads the UNet from the model."""
    unet = {k.removeprefix("diffusion_model."): v for k, v in self.state_dict().items() if k.startswith("diffusion_model.")}
    sd = self.model_config.process_unet_state_dict_for_saving(unet)
    sd["v_pred"] = torch.tensor([])
    sd.update(self.model_config.process_clip_state_dict_for_saving(clip_state_dict))
    sd.update(self.model_config.process_vae_state_dict_for_saving(vae_state_dict))
    return sd


def _saving_0_28(self, unet_state_dict, clip_state_dict=None, vae_state_dict=None, clip_vision_state_dict=None):
    """BaseModel.state_dict_for_saving as in ComfyUI 0.28.0: the UNet state dict comes first."""
    sd = self.model_config.process_unet_state_dict_for_saving(unet_state_dict)
    sd["v_pred"] = torch.tensor([])
    sd.update(self.model_config.process_clip_state_dict_for_saving(clip_state_dict))
    sd.update(self.model_config.process_vae_state_dict_for_saving(vae_state_dict))
    return sd


@pytest.mark.parametrize("saving", [_saving_0_8, _saving_0_28])
def test_merge_names_through_either_saving_api(env, saving):
    """Both forms of state_dict_for_saving (told apart by their parameters) get the merged UNet."""
    L = pack_module("nodes.planning")
    M = pack_module("nodes.merge")
    m, c, _ = L.load_and_apply(L.WeightsCache(), env["model"], env["clip"], "test.safetensors", 0.5, 1.0)
    m.model.model_config = _SavingConfig()
    m.model.state_dict_for_saving = saving.__get__(m.model)
    assert M.saving_takes_unet(m.model) is (saving is _saving_0_28)
    sd = M.checkpoint_state_dict(m, c, _VAE(), None)
    assert "v_pred" in sd and "first_stage_model.weight" in sd
    assert {k for k in sd if k.startswith("model.")} == {"model." + k for k in m.model.state_dict()}
    for name, key, _ in SPECS:
        k, w0 = env["refs"][name]
        out = "model." + k if key.startswith("diffusion_model") else "cond_stage_model." + k.removeprefix("clip_l.")
        strength = 0.5 if key.startswith("diffusion_model") else 1.0
        torch.testing.assert_close(sd[out], merged_reference(env["mods"][name], w0, strength), rtol=1e-5, atol=1e-6)


def test_merge_refuses_an_unknown_saving_api(env):
    M = pack_module("nodes.merge")
    env["model"].model.model_config = _SavingConfig()
    env["model"].model.state_dict_for_saving = lambda state_dict, clip=None: {}
    with pytest.raises(errors.LoKrError, match=r"state_dict_for_saving\('state_dict', 'clip'\): unknown signature"):
        M.LoKrMergeCheckpoint().merge(env["model"], env["clip"], _VAE(), "x", "fp16")
    assert _files(env["out"]) == []
