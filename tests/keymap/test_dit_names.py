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


# ------------------------------------------------------------------ AuraFlow, PixArt (full-size ComfyUI names)
COMFY = json.loads((Path(__file__).parents[1] / "support" / "comfy_dit_keys.json").read_text())
TINY_DIFFUSERS = {
    "auraflow": ("AuraFlowTransformer2DModel", dict(
        sample_size=8, patch_size=2, in_channels=4, num_mmdit_layers=2, num_single_dit_layers=2, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16, out_channels=4, pos_embed_max_size=64)),
    "pixart_sigma": ("PixArtTransformer2DModel", dict(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2, cross_attention_dim=16,
        sample_size=8, patch_size=2, caption_channels=16, norm_type="ada_norm_single", use_additional_conditions=True)),
}


def _comfy_diffusers_map(fam: str) -> dict[str, tuple[str, tuple[int, int] | None]]:
    """ComfyUI's LoRA key map of ``fam`` for diffusers names: diffusers path -> (ComfyUI key, rows)."""
    out = {}
    for name, target in COMFY[fam]["lora_keys"].items():
        if name.startswith("transformer."):
            key, rows = (target, None) if isinstance(target, str) else target
            out[name[len("transformer."):]] = (key, None if rows is None else (rows[1], rows[1] + rows[2]))
    return out


@pytest.mark.parametrize("fam", sorted(TINY_DIFFUSERS))
def test_diffusers_names_on_full_size_comfy_weights(fam: str) -> None:
    from lokr_core.keymap.resolve import resolve

    cmap = _comfy_diffusers_map(fam)
    assert len(cmap) >= 10
    target = {"model." + k: tuple(s) for k, s in COMFY[fam]["weights"].items()}
    names = {"lycoris_" + p.replace(".", "_"): p for p in cmap}
    names.update({"transformer." + p: p for p in cmap})
    report = resolve(list(names), target)
    assert not report.unmatched and not report.ambiguous, report.format()
    for n, p in names.items():
        key, rows = cmap[p]
        assert report.matched[n] == "model." + key and report.rows.get(n) == rows, n
    if fam == "auraflow":  # the final modulation: its (shift, scale) halves are swapped between the layouts
        assert resolve(["transformer.norm_out.linear"], target).row_order == {"transformer.norm_out.linear": "swap_halves"}


@pytest.mark.parametrize("fam", sorted(TINY_DIFFUSERS))
def test_comfy_names_on_tiny_diffusers_models(fam: str) -> None:
    """Original (ComfyUI) names in kohya form on a diffusers model: one-to-one weights match, fused
    ones are split over the diffusers weights ComfyUI's map puts in their rows, in row order."""
    import diffusers
    import torch

    from lokr_core.keymap.resolve import resolve

    cls, kwargs = TINY_DIFFUSERS[fam]
    torch.manual_seed(0)
    model = getattr(diffusers, cls)(**kwargs)
    have = {n for n, m in model.named_modules() if getattr(m, "weight", None) is not None}
    by_key: dict[str, list[tuple[tuple[int, int] | None, str]]] = {}
    for p, (key, rows) in _comfy_diffusers_map(fam).items():
        if p in have:
            by_key.setdefault(key, []).append((rows, p))
    names = {"lora_unet_" + k[len("diffusion_model."): -len(".weight")].replace(".", "_"): v for k, v in by_key.items()}
    report = resolve(list(names), model)
    assert not report.unmatched and not report.ambiguous, report.format()
    for n, parts in names.items():
        if len(parts) == 1 and parts[0][0] is None:
            assert report.matched[n] == parts[0][1], n
        else:
            assert [p for p, _ in report.split[n]] == [p for _, p in sorted(parts)], n


def _zimage_spelling(name: str) -> bool:
    n = name.replace(".", "_")
    return "attention_to_" in n or "all_final_layer" in n or "all_x_embedder" in n


@pytest.mark.parametrize("fam", sorted(COMFY))
def test_every_comfy_lora_name_lands_where_comfy_puts_it(fam: str) -> None:
    """Every name of ComfyUI's stored map (every key format) on the full-size ComfyUI weights: same key
    and rows. Where the two disagree the test says why: ComfyUI gives every NextDiT model Z-Image's
    diffusers spelling (on a Lumina 2 model those stay unmatched: Lumina 2 files use ``attn.to_q``),
    and it sizes Flux.2's ``proj_mlp`` rows like Flux.1's 4x MLP (here: every row after q, k, v)."""
    from lokr_core.keymap.resolve import resolve

    entry = COMFY[fam]
    target = {"model." + k: tuple(s) for k, s in entry["weights"].items()}
    report = resolve(list(entry["lora_keys"]), target)
    for name, t in entry["lora_keys"].items():
        key, rows = (t, None) if isinstance(t, str) else t
        rows = None if rows is None else (rows[1], rows[1] + rows[2])
        if fam == "lumina2" and _zimage_spelling(name):
            assert name in report.unmatched, name
        elif fam == "flux2" and name.endswith("proj_mlp"):
            hidden = target["model." + key][1]
            assert report.rows[name] == (3 * hidden, target["model." + key][0]), name
        else:
            assert report.matched.get(name) == "model." + key and report.rows.get(name) == rows, name
