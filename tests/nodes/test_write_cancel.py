"""Cancel (ComfyUI's interrupt) while the Merge Checkpoint / Extract nodes write, and the free-space check, on CPU stand-ins.

``comfy.model_management`` is stood in by a module with ComfyUI's own interrupt logic (a flag set
by ``interrupt_current_processing``, raised and cleared by ``throw_exception_if_processing_interrupted``);
the flag is set from inside the write, after a few tensors went to the temp file, as the server's
/interrupt would. The write stops, the temp file is removed, the models are unchanged, and the next
run writes the file. (The Merge Checkpoint case against real ComfyUI: tests/comfyui/test_comfyui_merge.py.)
"""
from __future__ import annotations

import os
import sys
import types

import pytest
import torch

from tests.commands.test_extract_cli import _pair
from tests.nodes.test_extract import comfy_folders  # noqa: F401 - fixture
from tests.nodes.test_merge import _VAE
from tests.support import comfy_standins as cs
from tests.support.comfy_pack import pack_module


class InterruptProcessingException(BaseException):
    """ComfyUI's exception for a cancelled prompt (a BaseException in current ComfyUI)."""


def _model_management(interrupt_at: int, seen: list) -> types.ModuleType:
    mm = types.ModuleType("comfy.model_management")
    state = {"flag": False, "calls": 0}
    mm.InterruptProcessingException = InterruptProcessingException

    def interrupt_current_processing(value=True):
        state["flag"] = value

    def throw_exception_if_processing_interrupted():
        state["calls"] += 1
        seen.append(sorted(n for d, _, fs in os.walk(seen[0]) for n in fs) if seen else None)
        if state["calls"] == interrupt_at:
            interrupt_current_processing()  # the user presses Cancel now
        if state["flag"]:
            state["flag"] = False
            raise InterruptProcessingException()
    mm.interrupt_current_processing = interrupt_current_processing
    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    mm.unload_all_models = lambda: None
    mm.state = state
    return mm


def _install(monkeypatch, folder, interrupt_at: int):
    seen: list = [str(folder)]
    comfy = types.ModuleType("comfy")
    mm = _model_management(interrupt_at, seen)
    comfy.model_management = mm
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
    return mm, seen


def _files(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


def test_cancel_while_merge_checkpoint_writes(env, monkeypatch):
    L = pack_module("nodes.planning")
    M = pack_module("nodes.merge")
    m, c, _ = L.load_and_apply(L.WeightsCache(), env["model"], env["clip"], "test.safetensors", 0.5, 1.0)
    snap_m, snap_c = cs.snapshot(m), cs.snapshot(c.patcher)
    mm, seen = _install(monkeypatch, env["out"], interrupt_at=3)
    with pytest.raises(InterruptProcessingException):
        M.LoKrMergeCheckpoint().merge(m, c, _VAE(), "checkpoints/merged", "fp32")
    assert mm.state["calls"] == 3
    during = seen[-1]  # what the output folder held when Cancel came: the temp file only
    assert len(during) == 1 and during[0].startswith(".merged_00001_.safetensors.lokr-") and during[0].endswith(".tmp")
    assert _files(env["out"]) == []
    assert cs.unchanged(m, snap_m) and cs.unchanged(c.patcher, snap_c)
    (path,) = M.LoKrMergeCheckpoint().merge(m, c, _VAE(), "checkpoints/merged", "fp32")["result"]  # next prompt
    assert _files(env["out"]) == ["checkpoints/merged_00001_.safetensors"] and os.path.getsize(path) > 0
    assert mm.state["calls"] > 3 and not mm.state["flag"]


def test_cancel_while_extract_writes(comfy_folders, monkeypatch):  # noqa: F811 - fixture
    extract = pack_module("nodes.extract")
    ckpts, loras = comfy_folders
    _pair(ckpts)
    before = {p: (ckpts / p).read_bytes() for p in os.listdir(ckpts)}
    mm, seen = _install(monkeypatch, loras, interrupt_at=2)
    args = dict(base_checkpoint="base.safetensors", tuned_checkpoint="tuned.safetensors", rank=2, factor=-1,
                decompose_both=False, conv="tucker", filename="mine", save_dtype="fp16", device="cpu",
                overwrite=False)
    with pytest.raises(InterruptProcessingException):
        extract.LoKrExtract().extract(**args)
    assert mm.state["calls"] == 2 and seen[-1][0].startswith(".mine.safetensors.lokr-")
    assert os.listdir(loras) == [] and {p: (ckpts / p).read_bytes() for p in os.listdir(ckpts)} == before
    _, path = extract.LoKrExtract().extract(**args)
    assert os.listdir(loras) == ["mine.safetensors"] and path == str(loras / "mine.safetensors")


def test_merge_node_refuses_without_room_before_merging(env, monkeypatch):
    import shutil
    from collections import namedtuple

    L = pack_module("nodes.planning")
    M = pack_module("nodes.merge")
    errors = pack_module("lokr_core.base.errors")
    m, c, _ = L.load_and_apply(L.WeightsCache(), env["model"], env["clip"], "test.safetensors", 0.5, 1.0)
    snap = cs.snapshot(m)
    need = M.estimated_size(m, c, _VAE(), None)
    want = sum(t.numel() * t.element_size() for o in (m.model, c.cond_stage_model, _VAE().first_stage_model)
               for t in o.state_dict().values())
    assert need == want and M.estimated_size(m, c, _VAE(), torch.float16) < need
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(1 << 40, 0, need - 1))
    computed = []
    monkeypatch.setattr(M, "checkpoint_state_dict", lambda *a, **k: computed.append(1))
    with pytest.raises(errors.LoKrWriteError, match=rf"checkpoints/merged'.*needs about {need} bytes.*{need - 1} bytes"):
        M.LoKrMergeCheckpoint().merge(m, c, _VAE(), "checkpoints/merged", "keep")
    assert computed == [] and _files(env["out"]) == [] and cs.unchanged(m, snap)


def test_merge_node_output_folder_error_is_a_clear_lokr_error(env):
    L = pack_module("nodes.planning")
    M = pack_module("nodes.merge")
    errors = pack_module("lokr_core.base.errors")
    m, c, _ = L.load_and_apply(L.WeightsCache(), env["model"], env["clip"], "test.safetensors", 0.5, 1.0)
    (env["out"] / "checkpoints").write_text("a file where the sub-folder should be")
    with pytest.raises(errors.LoKrWriteError, match=r"checkpoints/merged'.*cannot be written.*nothing was written"):
        M.LoKrMergeCheckpoint().merge(m, c, _VAE(), "checkpoints/merged", "fp16")
    assert _files(env["out"]) == ["checkpoints"]
