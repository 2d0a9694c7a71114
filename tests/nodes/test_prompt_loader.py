"""LoKr from Prompt against ComfyUI stand-ins: tags -> files applied in order, numbers vs lycoris-lora,
the same patches as Apply LoKr Stack with the same entries, clear errors that change nothing."""
from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from tests.support import comfy_standins as cs
from tests.support.comfy_pack import ROOT, pack_module
from tests.support.lokr_node_fixtures import lycoris_module, merged_reference, state_dict_of
from tests.support.node_env import assert_untouched

errors = pack_module("lokr_core.base.errors")
Q = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q"
FC1 = "lora_te_text_model_encoder_layers_0_mlp_fc1"


def _node():
    return pack_module("nodes.prompt_loader").LoKrFromPrompt


def _second(env):
    """``sub/second.safetensors``: one more LoKr module on the Linear ``attn1.to_q`` (lycoris-lora made)."""
    (env["loras"] / "sub").mkdir()
    mod = lycoris_module(Q, torch.nn.Linear(32, 32, bias=False), dim=2, seed=9)
    save_file(state_dict_of({Q: mod}), str(env["loras"] / "sub" / "second.safetensors"))
    return mod


def test_tags_apply_in_order_equal_lycoris_and_apply_stack(env):
    second = _second(env)
    (env["loras"] / "test.json").write_text(json.dumps({"activation text": "zxc style"}))
    snap_m, snap_c = cs.snapshot(env["model"]), cs.snapshot(env["clip"].patcher)
    prompt = "a cat, <lora:test:0.5:1.25> best quality\n<lokr:second.safetensors:2>\nnext line"
    out = _node()().load(env["model"], env["clip"], prompt)
    m, c, clean, words, loaded = out["result"]
    assert cs.unchanged(env["model"], snap_m) and cs.unchanged(env["clip"].patcher, snap_c)
    assert clean == "a cat, best quality\nnext line"
    assert words == "zxc style"
    assert loaded == "test.safetensors:0.5:1.25\nsub/second.safetensors:2"
    assert [r["file"] for r in out["ui"]["lokr_report"]] == ["test.safetensors", "sub/second.safetensors"]
    key, w0 = env["refs"][Q]
    ref = merged_reference(second, merged_reference(env["mods"][Q], w0, 0.5), 2.0)
    torch.testing.assert_close(m.patched_state_dict()[key], ref, rtol=1e-5, atol=1e-6)
    ckey, c0 = env["refs"][FC1]
    torch.testing.assert_close(c.patcher.patched_state_dict()[ckey], merged_reference(env["mods"][FC1], c0, 1.25),
                               rtol=1e-5, atol=1e-6)
    sm, sc, _ = pack_module("nodes.stack").apply_stack(
        env["model"], env["clip"], [("test.safetensors", 0.5, 1.25), ("sub/second.safetensors", 2.0, 2.0)])
    for got, want in ((m.patched_state_dict(), sm.patched_state_dict()),
                      (c.patcher.patched_state_dict(), sc.patcher.patched_state_dict())):
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in got)


def test_named_strengths_subfolder_name_and_no_tags(env):
    second = _second(env)
    node = _node()()
    m, c, clean, _, loaded = node.load(env["model"], env["clip"], "<LoRA: sub/second : te=0 : unet=-0.5 >")["result"]
    assert clean == "" and loaded == "sub/second.safetensors:-0.5:0"
    key, w0 = env["refs"][Q]
    torch.testing.assert_close(m.patched_state_dict()[key], merged_reference(second, w0, -0.5), rtol=1e-5, atol=1e-6)
    m, c, clean, words, loaded = node.load(env["model"], env["clip"], "plain prompt, <hypernet:x:1>")["result"]
    assert m is env["model"] and c is env["clip"]
    assert (clean, words, loaded) == ("plain prompt, <hypernet:x:1>", "", "")


def test_unknown_names_all_listed_nothing_changed(env):
    node = _node()()
    e = assert_untouched(env, lambda: node.load(env["model"], env["clip"], "<lora:tset:1> x <lokr:nothere:0.5>"),
                         errors.LoKrKeyError, "'tset' is unknown", "'nothere' is unknown", "test.safetensors")
    assert "nearest" in str(e)
    msg = _node().VALIDATE_INPUTS(prompt="<lora:tset:1>")
    assert isinstance(msg, str) and "'tset' is unknown" in msg
    assert _node().VALIDATE_INPUTS(prompt="<lora:test:0.5>") is True
    assert _node().VALIDATE_INPUTS(prompt=None) is True  # a linked prompt is checked when the node runs


def test_bad_tags_and_bad_file_change_nothing(env):
    node = _node()()
    assert_untouched(env, lambda: node.load(env["model"], env["clip"], "<lora:test:abc> <lora:test:1:2:3>"),
                     errors.LoKrConfigError, "'abc' is not a number", "3 numbers")
    assert isinstance(_node().VALIDATE_INPUTS(prompt="<lora:test:nan>"), str)
    (env["loras"] / "broken.safetensors").write_bytes(b"not a safetensors file")
    assert_untouched(env, lambda: node.load(env["model"], env["clip"], "<lora:test:1> <lora:broken:1>"),
                     errors.LoKrError, "broken.safetensors")


def test_is_changed_follows_prompt_and_tagged_files(env):
    N = _node()
    a = N.IS_CHANGED(prompt="x <lora:test:1>", model=None)
    assert a == N.IS_CHANGED(prompt="x <lora:test:1>") and a != N.IS_CHANGED(prompt="y <lora:test:1>")
    assert "test.safetensors" in a
    path = env["loras"] / "test.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:-4] + bytes(4))  # same size, new bytes and mtime
    os.utime(path, ns=(1, 1))
    assert N.IS_CHANGED(prompt="x <lora:test:1>") != a
    assert N.IS_CHANGED(prompt="<lora:nope:1>") == "<lora:nope:1>"  # the node itself reports the name


def test_prompt_tags_equal_power_loader_rows(env):
    """The same files and strengths as tags and as LoKr Power Loader rows (one row off): the same patches,
    bit for bit, and the same trigger_words / loaded texts."""
    if not (ROOT / "nodes" / "power_loader.py").is_file():
        pytest.skip("LoKr Power Loader (nodes/power_loader.py) is not in this checkout yet")
    _second(env)
    (env["loras"] / "test.json").write_text(json.dumps({"activation text": "zxc style"}))
    rows = json.dumps([{"on": True, "file": "test.safetensors", "strength_model": 0.5, "strength_clip": 1.25},
                       {"on": False, "file": "gone.safetensors", "strength_model": 1.0},
                       {"on": True, "file": "sub/second.safetensors", "strength_model": 2.0}])
    pm, pc, _, pwords, ploaded = _node()().load(env["model"], env["clip"],
                                                "x <lora:test:0.5:1.25> <lokr:sub/second:2>")["result"]
    wm, wc, wwords, wloaded, _ = pack_module("nodes.power_loader").LoKrPowerLoader().load(
        env["model"], env["clip"], rows)["result"]
    assert (pwords, ploaded) == (wwords, wloaded)
    for got, want in ((pm.patched_state_dict(), wm.patched_state_dict()),
                      (pc.patcher.patched_state_dict(), wc.patcher.patched_state_dict())):
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in got)
    key, _ = env["refs"][Q]
    assert not torch.equal(pm.patched_state_dict()[key], env["model"].patched_state_dict()[key])
