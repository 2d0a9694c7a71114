"""LoKr Block Weights, LoKr Stack / Apply LoKr Stack against ComfyUI stand-ins (numbers vs lycoris-lora)."""
from __future__ import annotations

import importlib

import pytest
import torch
from safetensors.torch import save_file

import comfy_standins as cs
from lokr_node_fixtures import lycoris_module, merged_reference, state_dict_of
from test_nodes_loaders import SPECS, _assert_untouched, env  # noqa: F401  (env is a fixture)

# 17-value SD vector: BASE, IN01, IN02, IN04, IN05, IN07, IN08, MID, OUT03..OUT11
VEC17 = "0.5,0.25,1,1,1,1,1,0,2,1,3,1,1,1,1,1,1"
EXPECT = {SPECS[0][0]: 0.25, SPECS[1][0]: 0.0, SPECS[2][0]: 2.0, SPECS[3][0]: 3.0, SPECS[4][0]: 0.5}


def _bw():
    return importlib.import_module("nodes.block_weights")


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
    from lokr_core import LoKrError

    B = _bw()
    assert "SD-ALL" in B.preset_names() and B.preset_names()[0] == "custom"
    out = B.LoKrBlockWeights().load(env["model"], env["clip"], "test.safetensors", 1.0, 1.0, "SD-NONE", "", "sd1")
    base = env["model"].model.state_dict()
    for k, v in out["result"][0].patched_state_dict().items():
        assert torch.equal(v, base[k])
    _assert_untouched(env, lambda: B.LoKrBlockWeights().load(env["model"], env["clip"], "test.safetensors", 1.0, 1.0,
                                                              "custom", "1,1,1", "sd1"),
                      LoKrError, "3 values", "IN01", "test.safetensors")
    msg = B.LoKrBlockWeights.VALIDATE_INPUTS(lokr_name="test.safetensors", strength_model=1.0, strength_clip=1.0,
                                             A=float("nan"), B=1.0)
    assert isinstance(msg, str) and "A" in msg and "finite" in msg
    assert B.detect_family(env["model"]) == "sd1"


def _stack():
    return importlib.import_module("nodes.stack")


def test_stack_builds_and_chains_lora_stack(env):
    S = _stack()
    incoming = [("other_pack_lora.safetensors", 0.5, 0.5)]
    (out,) = S.LoKrStack().stack(lora_stack=None, lokr_1="test.safetensors", strength_model_1=0.5,
                                 strength_clip_1=0.25, lokr_2="None", lokr_3="None")
    assert out == [("test.safetensors", 0.5, 0.25)]
    (env["loras"] / "other_pack_lora.safetensors").write_bytes(b"")  # a file another stacker listed
    entries = S.stack_entries(incoming, lokr_1="test.safetensors", strength_model_1=1.0, strength_clip_1=1.0)
    assert entries[0] == incoming[0] and entries[1] == ("test.safetensors", 1.0, 1.0) and len(incoming) == 1


def test_apply_stack_equals_sequential_loaders(env):
    S = _stack()
    name = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q"
    second = lycoris_module(name, torch.nn.Linear(32, 32, bias=False), dim=2, seed=9)
    save_file(state_dict_of({name: second}), str(env["loras"] / "second.safetensors"))
    snap = cs.snapshot(env["model"])
    stack = [("test.safetensors", 0.5, 1.0), ("second.safetensors", 2.0, 0.0)]
    out = S.ApplyLoKrStack().apply(env["model"], env["clip"], stack)
    m, c = out["result"]
    assert cs.unchanged(env["model"], snap) and len(out["ui"]["lokr_report"]) == 2
    key, w0 = env["refs"][name]
    step1 = merged_reference(env["mods"][name], w0, 0.5)
    ref = merged_reference(second, step1, 2.0)
    torch.testing.assert_close(m.patched_state_dict()[key], ref, rtol=1e-5, atol=1e-6)
    assert len(m.patches[key]) == 2


def test_apply_stack_bad_entries_change_nothing(env):
    from lokr_core import LoKrError

    S = _stack()
    apply = S.ApplyLoKrStack().apply
    _assert_untouched(env, lambda: apply(env["model"], env["clip"], [("test.safetensors", 1.0, 1.0),
                                                                      ("missing.safetensors", 1.0, 1.0)]),
                      LoKrError, "missing.safetensors")
    _assert_untouched(env, lambda: apply(env["model"], env["clip"], [("test.safetensors", float("nan"), 1.0)]),
                      LoKrError, "entry 0", "strength_model", "finite")
    _assert_untouched(env, lambda: apply(env["model"], env["clip"], [("test.safetensors", 1.0)]),
                      LoKrError, "entry 0", "expected (file, strength_model, strength_clip)")
    save_file({"lora_unet_x.lora_up.weight": torch.zeros(4, 2), "lora_unet_x.lora_down.weight": torch.zeros(2, 4)},
              str(env["loras"] / "plain_lora.safetensors"))
    _assert_untouched(env, lambda: apply(env["model"], env["clip"], [("plain_lora.safetensors", 1.0, 1.0)]),
                      LoKrError, "plain_lora.safetensors", "no LoKr module")
    msg = S.LoKrStack.VALIDATE_INPUTS(lokr_1="nope.safetensors", strength_model_1=1.0)
    assert isinstance(msg, str) and "nope.safetensors" in msg
    assert S.LoKrStack.VALIDATE_INPUTS(lokr_1="None", strength_model_1=1.0) is True
    with pytest.raises(LoKrError, match="finite"):
        S.LoKrStack().stack(lokr_1="test.safetensors", strength_model_1=float("inf"), strength_clip_1=1.0)
