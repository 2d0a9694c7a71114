"""keymap.dit_names: row layouts of fused weights and the choice of a family table.

References: ComfyUI 0.28.0's own keys of tiny models (tests/support/dit_tiny_keys.json) and its
LoRA key map stored there; tiny diffusers models (tests/support/dit_models.py).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lokr_core.keymap import dit_names
from tests.support import dit_models

KEYS = json.loads((Path(__file__).parents[1] / "support" / "dit_tiny_keys.json").read_text())


def test_split_rows_layouts() -> None:
    assert [dit_names.split_rows("qkv", j, (192, 64)) for j in range(3)] == [(0, 64), (64, 128), (128, 192)]
    assert [dit_names.split_rows("qkv", j, (128, 64)) for j in range(3)] == [(0, 64), (64, 96), (96, 128)]
    assert dit_names.split_rows("qkv_mlp", 3, (448, 64)) == (192, 448)
    assert dit_names.split_rows("kv", 1, (128, 64)) == (64, 128)
    assert dit_names.split_rows("qkv_mlp", 3, (192, 64)) is None
    with pytest.raises(ValueError):
        dit_names.split_rows("qkvo", 0, (4, 4))


@pytest.mark.parametrize("family,expected", [("flux", "flux"), ("sd3", "sd3"), ("zimage", "zimage"),
                                             ("lumina2", "lumina2"), ("qwen_image", "qwen_image"), ("wan21", "wan")])
def test_pick_table_on_comfy_keys(family: str, expected: str) -> None:
    """ComfyUI's Lumina 2 and Z-Image share one class; Lumina 2's ``adaLN_modulation.1`` tells them apart."""
    paths = [k[: -len(".weight")] for k, s in KEYS[family]["keys"].items() if k.endswith(".weight")]
    fam, side = dit_names.pick_table(paths)
    assert fam == expected and side in ("original", "diffusers")


@pytest.mark.parametrize("family,expected", [("flux", "flux"), ("sd3", "sd3"), ("zimage", "zimage"),
                                             ("lumina2", "lumina2"), ("qwen_image", "qwen_image"), ("wan21", "wan")])
def test_pick_table_on_diffusers_models(family: str, expected: str) -> None:
    model = dit_models.build(family)
    paths = [n[: -len(".weight")] for n, _ in model.named_parameters() if n.endswith(".weight")]
    assert dit_names.pick_table(paths) == (expected, "diffusers")


@pytest.mark.parametrize("family", ["flux", "sd3", "zimage"])
def test_translate_agrees_with_comfy_key_map(family: str) -> None:
    """Every diffusers name ComfyUI maps onto a fused or renamed 2-D weight gets the same key and rows here."""
    shapes = {k[: -len(".weight")]: tuple(s) for k, s in KEYS[family]["keys"].items()
              if k.endswith(".weight") and len(s) >= 2}
    tr = dit_names.translate(shapes)
    ours = {alias: (path, rows) for path, alias, rows in tr.aliases}
    checked = 0
    for dpath, (key, offset, fn) in KEYS[family]["diffusers_map"].items():
        opath = key[: -len(".weight")]
        if opath not in shapes or dpath == opath:
            continue
        if fn:
            assert dpath in tr.unsupported, dpath
            continue
        rows = None if offset is None else (offset[1], offset[1] + offset[2])
        if rows is not None and rows[1] > shapes[opath][0]:
            continue  # ComfyUI's map runs past the fused weight (Lumina 2 grouped-query k / v)
        assert ours.get(dpath) == (opath, rows), dpath
        checked += 1
    assert checked >= 10
