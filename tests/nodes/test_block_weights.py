"""LoKr Block Weights against ComfyUI stand-ins: values by block ID (numbers vs lycoris-lora)."""
from __future__ import annotations

import torch

from tests.support import comfy_standins as cs
from tests.support.comfy_pack import pack_module
from tests.support.lokr_node_fixtures import merged_reference
from tests.support.node_env import SPECS, assert_untouched

# 17-value SD vector: BASE, IN01, IN02, IN04, IN05, IN07, IN08, MID, OUT03..OUT11
VEC17 = "0.5,0.25,1,1,1,1,1,0,2,1,3,1,1,1,1,1,1"
EXPECT = {SPECS[0][0]: 0.25, SPECS[1][0]: 0.0, SPECS[2][0]: 2.0, SPECS[3][0]: 3.0, SPECS[4][0]: 0.5}


def _bw():
    return pack_module("nodes.block_weights")

errors = pack_module("lokr_core.base.errors")


def test_block_weights_by_block_id(env):
    B = _bw()
    snap = cs.snapshot(env["model"])
    out = B.LoKrBlockWeights().load(env["model"], env["clip"], "test.safetensors", 0.8, 1.0, "custom", VEC17, "auto")
    m, c, text = out["result"]
    assert cs.unchanged(env["model"], snap)
    assert "IN01=0.25" in text and "MID=0" in text and "OUT05=3" in text and "IN00=1" in text
    assert out["ui"]["lokr_report"][0]["family"] == "sd1"
    sd, csd = m.patched_state_dict(), c.patcher.patched_state_dict()
    for name, key, _ in SPECS:
        k, w0 = env["refs"][name]
        got = (sd if key.startswith("diffusion_model") else csd)[k]
        strength = EXPECT[name] * (0.8 if key.startswith("diffusion_model") else 1.0)
        if strength == 0:
            assert torch.equal(got, w0)  # a zero block is bit-identical
        else:
            torch.testing.assert_close(got, merged_reference(env["mods"][name], w0, strength), rtol=1e-5, atol=1e-6)


def test_block_weights_preset_and_bad_vector(env):
    B = _bw()
    assert "SD-ALL" in B.preset_names() and B.preset_names()[0] == "custom"
    out = B.LoKrBlockWeights().load(env["model"], env["clip"], "test.safetensors", 1.0, 1.0, "SD-NONE", "", "sd1")
    base = env["model"].model.state_dict()
    for k, v in out["result"][0].patched_state_dict().items():
        assert torch.equal(v, base[k])
    assert_untouched(env, lambda: B.LoKrBlockWeights().load(env["model"], env["clip"], "test.safetensors", 1.0, 1.0,
                                                              "custom", "1,1,1", "sd1"),
                      errors.LoKrError, "3 values", "IN01", "test.safetensors")
    msg = B.LoKrBlockWeights.VALIDATE_INPUTS(lokr_name="test.safetensors", strength_model=1.0, strength_clip=1.0,
                                             A=float("nan"), B=1.0)
    assert isinstance(msg, str) and "A" in msg and "finite" in msg
    assert B.detect_family(env["model"]) == "sd1"
