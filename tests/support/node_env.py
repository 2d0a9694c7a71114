"""The CPU node tests' set-up: a stand-in MODEL / CLIP, a ``loras`` folder and one LoKr file made by lycoris-lora.

:data:`SPECS` lists the file's modules (Linear split, full/full, Tucker conv, 3x3 conv, text
encoder); :func:`make_env` builds everything in ``tmp_path`` and installs a stand-in
``folder_paths``; :func:`assert_untouched` checks that a failing call raised the expected error
and left the input MODEL / CLIP as they were.
"""
from __future__ import annotations

import copy
import sys
from typing import Any, Callable

import pytest
from safetensors.torch import save_file

from tests.support import comfy_standins as cs
from tests.support.lokr_node_fixtures import lycoris_module, state_dict_of

# (file module name, ComfyUI key prefix, LokrModule options)
SPECS = [
    ("lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q",
     "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q", dict(dim=2, decompose_both=True)),
    ("lora_unet_middle_block_1_proj_out", "diffusion_model.middle_block.1.proj_out", dict(dim=2, factor=8)),
    ("lora_unet_output_blocks_3_0_in_layers_2", "diffusion_model.output_blocks.3.0.in_layers.2",
     dict(dim=2, use_tucker=True)),
    ("lora_unet_output_blocks_5_1_transformer_blocks_0_ff_net_2",
     "diffusion_model.output_blocks.5.1.transformer_blocks.0.ff.net.2", dict(dim=16, factor=4)),  # full/full
    ("lora_te_text_model_encoder_layers_0_mlp_fc1", "clip_l.transformer.text_model.encoder.layers.0.mlp.fc1",
     dict(dim=2, factor=4)),
]


def make_env(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> dict:
    """{loras, out, model, clip, mods, refs}: folders, stand-in MODEL / CLIP, lycoris modules and base weights.

    ``loras/test.safetensors`` holds every :data:`SPECS` module; ``refs[name]`` is
    (ComfyUI weight key, the weight before any patch).
    """
    loras, out = tmp_path / "loras", tmp_path / "output"
    loras.mkdir()
    out.mkdir()
    monkeypatch.setitem(sys.modules, "folder_paths", cs.folder_paths_module(str(loras), str(out)))
    unet, clip = cs.tiny_unet(), cs.tiny_clip()
    mods, refs = {}, {}
    for i, (name, key, kw) in enumerate(SPECS):
        layer = (unet if key.startswith("diffusion_model") else clip).get_submodule(key)
        mods[name] = lycoris_module(name, copy.deepcopy(layer), seed=i, **kw)
        refs[name] = (key + ".weight", layer.weight.detach().clone())
    save_file(state_dict_of(mods), str(loras / "test.safetensors"))
    return dict(loras=loras, out=out, model=cs.ModelPatcher(unet), clip=cs.CLIP(clip), mods=mods, refs=refs)


def assert_untouched(env: dict, fn: Callable[[], Any], exc: type, *words: str) -> BaseException:
    """``fn()`` raises ``exc`` whose text holds every word, and the env's MODEL / CLIP are unchanged."""
    snap_m, snap_c = cs.snapshot(env["model"]), cs.snapshot(env["clip"].patcher)
    with pytest.raises(exc) as ei:
        fn()
    for w in words:
        assert w in str(ei.value), str(ei.value)
    assert cs.unchanged(env["model"], snap_m) and cs.unchanged(env["clip"].patcher, snap_c)
    return ei.value
