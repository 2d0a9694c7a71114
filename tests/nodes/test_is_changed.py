"""IS_CHANGED of every node that reads a file: the token changes when the file is rewritten under the
same name (new inode, new size / mtime, or same size with the mtime put back), and stays while it is
unchanged. Called as ComfyUI calls it: every input as a keyword, linked inputs as None.
(That ComfyUI then runs the node again: tests/comfyui/test_comfyui_e2e.py.)
"""
from __future__ import annotations

import os
import sys
import types

import pytest
import torch
from safetensors.torch import save_file

from tests.support.comfy_pack import pack_module

nodes = pack_module("nodes")
LINKED = {"MODEL", "CLIP", "VAE", "LORA_STACK"}
FILE_NODES = ["LoKrLoader", "LoKrLoaderModelOnly", "LoKrBlockWeights", "LoKrInfo"]


def comfy_kwargs(cls: type, **values) -> dict:
    """Every input of ``cls`` as ComfyUI passes them to IS_CHANGED: widgets at their default (or
    ``values``), linked inputs None."""
    out = {}
    for group in ("required", "optional"):
        for name, spec in (cls.INPUT_TYPES().get(group) or {}).items():
            kind = spec[0]
            if isinstance(kind, str) and kind in LINKED:
                out[name] = None
            elif isinstance(kind, list):
                out[name] = spec[1].get("default", kind[0] if kind else None) if len(spec) > 1 else kind[0]
            else:
                out[name] = spec[1].get("default") if len(spec) > 1 else None
    out.update(values)
    return out


def rewrite_same_size(path) -> None:
    """Flip the last byte in place and put the modification time back (a copy tool that keeps mtime)."""
    st = os.stat(path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x20
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size and os.stat(path).st_mtime_ns == st.st_mtime_ns


def replace_file(path) -> None:
    """Write a new file beside it and move it over (what trainers and downloaders do)."""
    tmp = path.with_suffix(".tmp")
    save_file({"lora_unet_x.lokr_w1": torch.randn(2, 2), "lora_unet_x.lokr_w2": torch.randn(2, 2)}, str(tmp))
    os.replace(tmp, path)


@pytest.mark.parametrize("class_id", FILE_NODES)
def test_file_nodes_token_follows_the_file(env, class_id):
    cls = nodes.node_mappings()[0][class_id]
    kwargs = comfy_kwargs(cls, lokr_name="test.safetensors")
    first = cls.IS_CHANGED(**kwargs)
    assert first == cls.IS_CHANGED(**kwargs) and "test.safetensors" in first
    rewrite_same_size(env["loras"] / "test.safetensors")
    second = cls.IS_CHANGED(**kwargs)
    assert second != first and second == cls.IS_CHANGED(**kwargs)
    replace_file(env["loras"] / "test.safetensors")
    assert cls.IS_CHANGED(**kwargs) not in (first, second)


def test_missing_or_linked_file_gives_a_steady_token(env):
    cls = nodes.node_mappings()[0]["LoKrLoader"]
    assert cls.IS_CHANGED(**comfy_kwargs(cls, lokr_name="gone.safetensors")) == "missing:gone.safetensors"
    assert cls.IS_CHANGED(**comfy_kwargs(cls, lokr_name=None)) == "missing:None"  # a linked file name


def test_stack_token_covers_each_slot(env):
    cls = nodes.node_mappings()[0]["LoKrStack"]
    save_file({"lora_unet_y.lokr_w1": torch.randn(2, 2), "lora_unet_y.lokr_w2": torch.randn(3, 3)},
              str(env["loras"] / "other.safetensors"))
    kwargs = comfy_kwargs(cls, lokr_1="test.safetensors", lokr_3="other.safetensors", lora_stack=None)
    assert kwargs["lokr_2"] == "None"
    first = cls.IS_CHANGED(**kwargs)
    assert first == cls.IS_CHANGED(**kwargs) and len(first.splitlines()) == 2
    rewrite_same_size(env["loras"] / "other.safetensors")
    second = cls.IS_CHANGED(**kwargs)
    assert second != first and second.splitlines()[0] == first.splitlines()[0]
    assert cls.IS_CHANGED(**comfy_kwargs(cls)) == ""  # every slot None


def test_extract_token_covers_both_checkpoints(tmp_path, monkeypatch):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    mod = types.ModuleType("folder_paths")
    mod.get_folder_paths = lambda name: [str(ckpts)] if name == "checkpoints" else []
    mod.get_filename_list = lambda name: sorted(os.listdir(ckpts)) if name == "checkpoints" else []
    mod.get_full_path = lambda name, f: (str(ckpts / f) if name == "checkpoints" and (ckpts / f).is_file() else None)
    monkeypatch.setitem(sys.modules, "folder_paths", mod)
    for name in ("base.safetensors", "tuned.safetensors"):
        save_file({"model.diffusion_model.x.weight": torch.randn(300, 300)}, str(ckpts / name))  # > 2 x 64 KiB
    cls = nodes.node_mappings()[0]["LoKrExtract"]
    kwargs = comfy_kwargs(cls, base_checkpoint="base.safetensors", tuned_checkpoint="tuned.safetensors")
    first = cls.IS_CHANGED(**kwargs)
    assert first == cls.IS_CHANGED(**kwargs)
    rewrite_same_size(ckpts / "tuned.safetensors")  # the change is in the tail sample
    second = cls.IS_CHANGED(**kwargs)
    assert second != first and second.splitlines()[0] == first.splitlines()[0]


def test_every_node_with_a_file_list_input_has_is_changed(env):
    """A node whose inputs list the loras or checkpoints files reads a file: it must define IS_CHANGED.
    The others (Apply LoKr Stack, Merge Checkpoint) take models and stacks through links only."""
    files = {"test.safetensors"}
    classes = nodes.node_mappings()[0]
    with_files = set()
    for class_id, cls in classes.items():
        specs = {**cls.INPUT_TYPES().get("required", {}), **(cls.INPUT_TYPES().get("optional") or {})}
        if any(isinstance(s[0], list) and files & set(s[0]) for s in specs.values()) or class_id == "LoKrExtract":
            with_files.add(class_id)
            assert callable(getattr(cls, "IS_CHANGED", None)), class_id
    assert with_files >= set(FILE_NODES) | {"LoKrStack", "LoKrExtract"}
    for class_id in ("ApplyLoKrStack", "LoKrMergeCheckpoint"):
        assert class_id not in with_files and not hasattr(classes[class_id], "IS_CHANGED")
