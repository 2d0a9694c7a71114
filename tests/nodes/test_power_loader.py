"""LoKr Power Loader against ComfyUI stand-ins: rows (on/off, order, linked clip, blocks) vs lycoris-lora.

Weights of the rows that are on must equal W + s * ΔW with ΔW from lycoris-lora's LokrModule
(tests/support/lokr_node_fixtures.py); rows that are off change nothing; every bad ``rows`` value
raises an error naming the row / key / file before the model or clip is touched.
"""
from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from tests.support import comfy_standins as cs
from tests.support.comfy_pack import pack_module
from tests.support.lokr_node_fixtures import lycoris_module, merged_reference, state_dict_of
from tests.support.node_env import SPECS, assert_untouched

errors = pack_module("lokr_core.base.errors")
SECOND = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q"
TE = SPECS[4][0]
# 17-value SD vector: BASE, IN01, IN02, IN04, IN05, IN07, IN08, MID, OUT03..OUT11
VEC17 = "0.5,0.25,1,1,1,1,1,0,2,1,3,1,1,1,1,1,1"
BLOCK = {SPECS[0][0]: 0.25, SPECS[1][0]: 0.0, SPECS[2][0]: 2.0, SPECS[3][0]: 3.0, SPECS[4][0]: 0.5}


def _node():
    return pack_module("nodes.power_loader").LoKrPowerLoader


def _second(env, seed: int = 9) -> torch.nn.Module:
    """``loras/sub/second.safetensors``: one lycoris module on the first SPECS weight."""
    mod = lycoris_module(SECOND, torch.nn.Linear(32, 32, bias=False), dim=2, seed=seed)
    (env["loras"] / "sub").mkdir(exist_ok=True)
    save_file(state_dict_of({SECOND: mod}), str(env["loras"] / "sub" / "second.safetensors"))
    return mod


def _weights(env, m, c) -> dict:
    sd, csd = m.patched_state_dict(), c.patcher.patched_state_dict()
    return {name: (sd if key.startswith("diffusion_model") else csd)[env["refs"][name][0]] for name, key, _ in SPECS}


def _close(got, ref):
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def test_on_rows_equal_lycoris_off_rows_change_nothing(env):
    second = _second(env)
    rows = json.dumps([{"on": True, "file": "test.safetensors", "strength_model": 0.5, "strength_clip": 2.0},
                       {"on": False, "file": "sub/second.safetensors", "strength_model": 1.0},
                       {"on": False, "file": "never/written.safetensors"}])
    snap = cs.snapshot(env["model"])
    out = _node()().load(env["model"], env["clip"], rows)
    m, c, words, loaded, stack = out["result"]
    assert cs.unchanged(env["model"], snap)
    got = _weights(env, m, c)
    for name, key, _ in SPECS:
        s = 0.5 if key.startswith("diffusion_model") else 2.0
        _close(got[name], merged_reference(env["mods"][name], env["refs"][name][1], s))
    assert loaded == "test.safetensors:0.5:2" and stack == [("test.safetensors", 0.5, 2.0)] and words == ""
    status = out["ui"]["lokr_power"][0]
    assert [(r["index"], r["kind"], r["on"]) for r in status["rows"]] == [(0, "lokr", True), (1, "off", False),
                                                                          (2, "off", False)]
    assert status["rows"][0]["matched"] == status["rows"][0]["total"] == len(SPECS)
    assert [r["file"] for r in out["ui"]["lokr_report"]] == ["test.safetensors"]
    # the off row's file alone: nothing at all happens
    (m2, c2, *_), = [_node()().load(env["model"], env["clip"], rows.replace('"on": true', '"on": false'))["result"]]
    assert m2 is env["model"] and c2 is env["clip"]
    assert not torch.equal(got[SECOND], merged_reference(second, got[SECOND], 1.0))  # the off row would change it


def test_rows_apply_in_order_after_incoming_stack_linked_clip_default(env):
    second = _second(env)
    (env["loras"] / "test.json").write_text(json.dumps({"activation text": "zxc style"}))
    (env["loras"] / "sub" / "second.civitai.info").write_text(json.dumps({"trainedWords": ["qwe", "ZXC style"]}))
    rows = [{"file": "sub/second.safetensors", "strength_model": 2.0}, {"file": "test.safetensors", "strength_model": 0.5}]
    incoming = [("test.safetensors", 0.25, 0.0)]
    out = _node()().load(env["model"], env["clip"], json.dumps(rows), lora_stack=incoming)
    m, c, words, loaded, stack = out["result"]
    assert [r["file"] for r in out["ui"]["lokr_report"]] == ["test.safetensors", "sub/second.safetensors",
                                                               "test.safetensors"]
    assert stack == [("test.safetensors", 0.25, 0.0), ("sub/second.safetensors", 2.0, 2.0), ("test.safetensors", 0.5, 0.5)]
    assert loaded.splitlines() == ["test.safetensors:0.25:0", "sub/second.safetensors:2", "test.safetensors:0.5"]
    assert words == "qwe, ZXC style" and incoming == [("test.safetensors", 0.25, 0.0)]
    key, w0 = env["refs"][SECOND]
    step = merged_reference(env["mods"][SECOND], w0, 0.25)  # incoming stack first, then the rows in order
    step = merged_reference(second, step, 2.0)
    _close(m.patched_state_dict()[key], merged_reference(env["mods"][SECOND], step, 0.5))
    assert [(p[0], p[1].source) for p in m.patches[key]] == [(0.25, "test.safetensors"), (2.0, "second.safetensors"),
                                                             (0.5, "test.safetensors")]
    # linked default: strength_clip missing -> the model strength (the incoming 0 on the clip adds nothing)
    te_key, te_w0 = env["refs"][TE]
    _close(c.patcher.patched_state_dict()[te_key], merged_reference(env["mods"][TE], te_w0, 0.5))
    # reordered rows: reports, stack and patches follow the new order
    out2 = _node()().load(env["model"], env["clip"], json.dumps(rows[::-1]))
    assert [r["file"] for r in out2["ui"]["lokr_report"]] == ["test.safetensors", "sub/second.safetensors"]
    assert [(p[0], p[1].source) for p in out2["result"][0].patches[key]] == [(0.5, "test.safetensors"),
                                                                             (2.0, "second.safetensors")]


def test_block_preset_per_row(env):
    rows = [{"file": "test.safetensors", "strength_model": 0.8, "strength_clip": 1.0, "blocks": VEC17}]
    m, c, *_ = _node()().load(env["model"], env["clip"], json.dumps(rows))["result"]
    got = _weights(env, m, c)
    for name, key, _ in SPECS:
        k, w0 = env["refs"][name]
        s = BLOCK[name] * (0.8 if key.startswith("diffusion_model") else 1.0)
        if s == 0:
            assert torch.equal(got[name], w0)
        else:
            _close(got[name], merged_reference(env["mods"][name], w0, s))
    # a preset on one row, none on the other: each row keeps its own
    second = _second(env)
    rows = [{"file": "test.safetensors", "blocks": "SD-NONE"}, {"file": "sub/second.safetensors", "blocks": ""}]
    out = _node()().load(env["model"], env["clip"], json.dumps(rows))
    got = _weights(env, *out["result"][:2])
    for name, key, _ in SPECS:
        k, w0 = env["refs"][name]
        if name == SECOND:
            _close(got[name], merged_reference(second, w0, 1.0))
        else:  # SD-NONE: every block 0, the text encoder's BASE too
            assert torch.equal(got[name], w0), name
    assert out["ui"]["lokr_report"][0]["blocks"] == "SD-NONE"


def test_python_literal_rows_as_comfyui_str_them(env):
    rows = str([{"on": True, "file": "test.safetensors", "strength_model": 1.0, "linked": True, "blocks": ""}])
    assert "True" in rows and _node().VALIDATE_INPUTS(rows) is True
    m, c, *_ = _node()().load(env["model"], env["clip"], rows)["result"]
    name = SPECS[0][0]
    _close(_weights(env, m, c)[name], merged_reference(env["mods"][name], env["refs"][name][1], 1.0))
    assert _node()().load(env["model"], env["clip"], "")["result"][0] is env["model"]  # empty = no rows


@pytest.mark.parametrize("rows, words", [
    ("[{\"file\": \"test.safetensors\",}", ("not JSON", "expected a JSON list")),
    ('{"rows": []}', ("row 1", "unknown key 'rows'")),
    ('[{"file": "test.safetensors", "strenght_model": 1}]', ("row 1", "unknown key 'strenght_model'", "strength_model")),
    ('[{"file": "test.safetensors"}, {"file": "test.safetensors", "strength_model": NaN}]',
     ("row 2", "'strength_model'", "finite")),
    ('[{"file": "test.safetensors", "strength_clip": "1"}]', ("row 1", "'strength_clip'", "finite number")),
    ('[{"file": "test.safetensors", "on": "yes"}]', ("row 1", "'on'", "true or false")),
    ('[{"file": "test.safetensors", "blocks": 3}]', ("row 1", "'blocks'", "preset")),
    ('[{"strength_model": 1}]', ("row 1", "'file'", "loras")),
    ('[{"file": "test.safetensors"}, {"on": true, "file": "gone/missing.safetensors"}]',
     ("row 2", "missing", "gone/missing.safetensors")),
    ('"test.safetensors"', ("rows", "list of row objects")),
])
def test_bad_rows_raise_clear_errors_and_change_nothing(env, rows, words):
    assert_untouched(env, lambda: _node()().load(env["model"], env["clip"], rows), errors.LoKrError, *words)
    msg = _node().VALIDATE_INPUTS(rows)
    assert isinstance(msg, str) and all(w in msg for w in words), msg


def test_bad_block_text_and_stack_change_nothing(env):
    rows = json.dumps([{"file": "test.safetensors"}, {"file": "test.safetensors", "blocks": "1,1,1"}])
    assert_untouched(env, lambda: _node()().load(env["model"], env["clip"], rows), errors.LoKrError,
                     "entry 1", "test.safetensors", "'1,1,1'", "IN01")
    ok = json.dumps([{"file": "test.safetensors"}])
    assert_untouched(env, lambda: _node()().load(env["model"], env["clip"], ok, lora_stack=[("gone.safetensors", 1.0, 1.0)]),
                     errors.LoKrError, "gone.safetensors")
    assert_untouched(env, lambda: _node()().load(env["model"], env["clip"], ok, lora_stack="test.safetensors"),
                     errors.LoKrError, "LORA_STACK is a str")


def test_is_changed_follows_on_row_files(env):
    N = _node()
    _second(env)
    rows = json.dumps([{"file": "test.safetensors"}, {"on": False, "file": "sub/second.safetensors"}])
    first = N.IS_CHANGED(rows=rows)
    assert first == N.IS_CHANGED(rows=rows) and "test.safetensors" in first
    _second(env, seed=3)  # the off row's file rewritten: no rerun
    assert N.IS_CHANGED(rows=rows) == first
    path = env["loras"] / "test.safetensors"
    data = bytearray(path.read_bytes())
    st = os.stat(path)
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: the content hash tells
    assert N.IS_CHANGED(rows=rows) != first
    turned_on = rows.replace('"on": false', '"on": true')
    assert "sub/second.safetensors" in N.IS_CHANGED(rows=turned_on)
