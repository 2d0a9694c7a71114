"""The LoKr Extract node on tiny LDM-keyed checkpoints (the extraction itself: tests/commands/test_extract_cli.py)."""
from __future__ import annotations

import os
import sys
import types

import pytest

from tests.commands.test_extract_cli import NAME, _files, _pair
from tests.support.comfy_pack import pack_module

errors = pack_module("lokr_core.base.errors")
extract = pack_module("nodes.extract")


@pytest.fixture
def comfy_folders(tmp_path, monkeypatch):
    ckpts, loras = tmp_path / "checkpoints", tmp_path / "loras"
    ckpts.mkdir()
    loras.mkdir()
    mod = types.ModuleType("folder_paths")
    roots = {"checkpoints": str(ckpts), "loras": str(loras)}
    mod.get_folder_paths = lambda name: [roots[name]] if name in roots else []
    mod.get_filename_list = lambda name: sorted(os.listdir(roots[name]))
    mod.get_full_path = lambda name, f: (os.path.join(roots[name], f)
                                         if os.path.isfile(os.path.join(roots[name], f)) else None)
    monkeypatch.setitem(sys.modules, "folder_paths", mod)
    return ckpts, loras


def test_node_extract_saves_to_loras(comfy_folders):
    LoKrExtract = extract.LoKrExtract
    ckpts, loras = comfy_folders
    _pair(ckpts)
    assert extract.NODES["LoKrExtract"] == (LoKrExtract, "LoKr Extract") and LoKrExtract.CATEGORY == "loaders/LoKr"
    spec = LoKrExtract.INPUT_TYPES()["required"]
    assert spec["base_checkpoint"][0] == ["base.safetensors", "tuned.safetensors"]
    assert all("tooltip" in v[1] for v in spec.values())
    args = dict(base_checkpoint="base.safetensors", tuned_checkpoint="tuned.safetensors", rank=2, factor=-1,
                decompose_both=False, conv="tucker", filename="mine", save_dtype="fp16", device="cpu",
                overwrite=False)
    text, path = LoKrExtract().extract(**args)
    assert path == str(loras / "mine.safetensors") and os.path.isfile(path) and NAME in text
    with pytest.raises(errors.LoKrFormatError, match="already exists"):
        LoKrExtract().extract(**args)
    with pytest.raises(errors.LoKrFormatError, match="not a plain file name"):
        LoKrExtract().extract(**{**args, "filename": "../evil"})
    with pytest.raises(errors.LoKrFormatError, match="no such file in the 'checkpoints' folders"):
        LoKrExtract().extract(**{**args, "base_checkpoint": "missing.safetensors", "filename": "other"})
    assert _files(loras) == ["mine.safetensors"]
    assert LoKrExtract.VALIDATE_INPUTS(rank=0, filename="x").startswith("rank is 0")
    assert LoKrExtract.VALIDATE_INPUTS(rank=4, filename="x") is True
