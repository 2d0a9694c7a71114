"""LoKr Stack / Apply LoKr Stack against ComfyUI stand-ins: LORA_STACK chaining, numbers vs lycoris-lora."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from tests.support import comfy_standins as cs
from tests.support.comfy_pack import pack_module
from tests.support.lokr_node_fixtures import lycoris_module, merged_reference, state_dict_of
from tests.support.node_env import assert_untouched

errors = pack_module("lokr_core.base.errors")


def _stack():
    return pack_module("nodes.stack")


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
    S = _stack()
    apply = S.ApplyLoKrStack().apply
    assert_untouched(env, lambda: apply(env["model"], env["clip"], [("test.safetensors", 1.0, 1.0),
                                                                      ("missing.safetensors", 1.0, 1.0)]),
                      errors.LoKrError, "missing.safetensors")
    assert_untouched(env, lambda: apply(env["model"], env["clip"], [("test.safetensors", float("nan"), 1.0)]),
                      errors.LoKrError, "entry 0", "strength_model", "finite")
    assert_untouched(env, lambda: apply(env["model"], env["clip"], [("test.safetensors", 1.0)]),
                      errors.LoKrError, "entry 0", "expected (file, strength_model, strength_clip)")
    save_file({"lora_unet_x.lora_up.weight": torch.zeros(4, 2), "lora_unet_x.lora_down.weight": torch.zeros(2, 4)},
              str(env["loras"] / "plain_lora.safetensors"))
    assert_untouched(env, lambda: apply(env["model"], env["clip"], [("plain_lora.safetensors", 1.0, 1.0)]),
                      errors.LoKrError, "plain_lora.safetensors", "no LoKr module")
    msg = S.LoKrStack.VALIDATE_INPUTS(lokr_1="nope.safetensors", strength_model_1=1.0)
    assert isinstance(msg, str) and "nope.safetensors" in msg
    assert S.LoKrStack.VALIDATE_INPUTS(lokr_1="None", strength_model_1=1.0) is True
    with pytest.raises(errors.LoKrError, match="finite"):
        S.LoKrStack().stack(lokr_1="test.safetensors", strength_model_1=float("inf"), strength_clip_1=1.0)
