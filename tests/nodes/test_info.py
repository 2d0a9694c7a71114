"""LoKr Info against ComfyUI stand-ins: the file report and the match against the connected model."""
from __future__ import annotations

from safetensors.torch import save_file
from torch import nn

from tests.support import comfy_standins as cs
from tests.support.comfy_pack import pack_module
from tests.support.lokr_node_fixtures import lycoris_module, state_dict_of


def test_info_reports_file_and_match(env):
    I = pack_module("nodes.info")
    out = I.LoKrInfo().info("test.safetensors", "file", env["model"], env["clip"])
    text = out["result"][0]
    assert out["ui"]["text"] == [text]
    assert "test.safetensors" in text and "tucker" in text and "full" in text
    assert "Against the connected model: 5/5 modules match (4 diffusion model, 1 text encoder)" in text
    assert out["ui"]["lokr_report"][0]["matched"] == 5
    (bare,) = I.LoKrInfo().info("test.safetensors")["result"]
    assert "Against the connected model" not in bare
    assert I.LoKrInfo.VALIDATE_INPUTS(lokr_name="nope.safetensors") != True  # noqa: E712


def test_info_lists_mismatch_and_unmatched_without_raising(env):
    I = pack_module("nodes.info")
    bad = lycoris_module("lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k", nn.Linear(48, 32), dim=2)
    stray = lycoris_module("lora_unet_down_blocks_9_zz", nn.Linear(32, 32), dim=2)
    save_file(state_dict_of({"lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k": bad,
                             "lora_unet_down_blocks_9_zz": stray}), str(env["loras"] / "bad.safetensors"))
    snap = cs.snapshot(env["model"])
    text = I.LoKrInfo().info("bad.safetensors", "file", env["model"], None)["result"][0]
    assert "SHAPE MISMATCH" in text and "attn2.to_k" in text and "unmatched: lora_unet_down_blocks_9_zz" in text
    assert "0/2 modules match" in text
    assert cs.unchanged(env["model"], snap)
