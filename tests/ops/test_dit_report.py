"""DiT targets in resolve reports and summaries: the model's family, block groups of matched and
split modules, split modules counted as matched.

References: ComfyUI 0.28.0's weight names and LoRA key map of tiny models (tests/support/dit_tiny_keys.json,
through tests/keymap/test_dit_resolve's oracle: which ComfyUI weight each diffusers module is, so
which numbered block it sits in) and the full-size ComfyUI key lists with their model classes
(tests/support/comfy_dit_keys.json); LoKr files from lycoris-lora on tiny diffusers models.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import lokr_core as lk
from lokr_core.keymap.family import FAMILY_LABELS
from lokr_core.keymap.resolve import resolve
from lokr_core.ops.report import format_report, summarize
from tests.keymap.test_dit_resolve import KEYS, PREFIX, Case
from tests.support import dit_models

FAMILY_ID = {"wan21": "wan"}
"""tiny model name -> family id, where they differ."""

COMFY_GROUPS = {"double_blocks": "double", "single_blocks": "single", "joint_blocks": "joint", "layers": "layers",
                "blocks": "layers", "transformer_blocks": "layers"}
"""ComfyUI's numbered main-stack groups (model code names) -> block kind."""


def comfy_block(key: str) -> str:
    """Block of a ComfyUI weight key, read from its own group and number (refiners, embedders: BASE)."""
    m = re.match(r"(double_blocks|single_blocks|joint_blocks|layers|blocks|transformer_blocks)\.(\d+)\.", key)
    return f"{COMFY_GROUPS[m.group(1)]} {m.group(2)}" if m else "BASE"


@pytest.fixture(scope="module", params=dit_models.FAMILIES)
def case(request) -> Case:
    return Case(request.param)


def test_diffusers_file_on_comfy_checkpoint_names_family_and_blocks(case: Case, tmp_path: Path) -> None:
    f, names = case.save(tmp_path, lambda n, p: n if p in case.oracle else None)
    state = {PREFIX + k: tuple(s) for k, s in KEYS[case.family]["keys"].items()}
    report = lk.load_lokr(f).resolve(state)
    fam = FAMILY_ID.get(case.family, case.family)
    assert report.target_family == fam
    assert f"model: {FAMILY_LABELS[fam]})" in report.format()
    assert report.matched, report.format()
    for name in report.matched:
        assert report.blocks[name] == comfy_block(case.oracle[names[name]][0]), name
    kinds = {b.split(" ")[0] for b in report.blocks.values()}
    assert kinds - {"BASE"}, "the tiny models have numbered blocks"


def test_original_file_on_diffusers_model_split_modules_counted_and_blocked(case: Case, tmp_path: Path) -> None:
    fused = sorted({hit[0] for p, hit in case.oracle.items() if hit[1] is not None and p in case.ref})
    if not fused:
        pytest.skip(f"{case.family}: no fused weights in the original layout")
    names = ["lora_unet_" + k[: -len(".weight")].replace(".", "_") for k in fused]
    report = resolve(names, case.model)
    assert sorted(report.split) == sorted(names), report.format()
    for n, key in zip(names, fused):
        assert report.blocks[n] == comfy_block(key), n
    assert report.target_family is not None and FAMILY_ID.get(case.family, case.family) in report.target_family.split("/")
    assert report.format().startswith(f"LoKr: {len(names)} of {len(names)} modules matched")


def test_summary_counts_split_modules_as_matched(tmp_path: Path) -> None:
    case = Case("flux")
    one_to_one = {p for p, (k, rows, swap) in case.oracle.items() if rows is None and not swap and p in case.ref}
    f, names = case.save(tmp_path, lambda n, p: ("lora_unet_" + case.oracle[p][0][: -len(".weight")].replace(".", "_")
                                                 if p in one_to_one else None))
    w = lk.load_lokr(f)
    fused = sorted({hit[0] for p, hit in case.oracle.items() if hit[1] is not None and p in case.ref})
    split_names = ["lora_unet_" + k[: -len(".weight")].replace(".", "_") for k in fused]
    rep = summarize(w, case.model)["resolve"]
    assert rep["matched"] == rep["total"] == len(names)
    assert rep["target_family_label"] == FAMILY_LABELS["flux"]
    assert "(target family: Flux.1)" in format_report(summarize(w, case.model))
    from lokr_core.ops.report import _resolve_summary

    fake = type("W", (), {"resolve": lambda self, t: resolve(split_names, t)})()
    assert _resolve_summary(fake, case.model, split_names)["matched"] == len(split_names)


COMFY_KEYS = json.loads((Path(__file__).parents[1] / "support" / "comfy_dit_keys.json").read_text())
CLASS_FAMILY = {"Flux": "flux", "Flux2": "flux2", "Chroma": "chroma", "HunyuanVideo": "hunyuan_video", "SD3": "sd3",
                "AuraFlow": "auraflow", "PixArt": "pixart", "HunyuanDiT": "hunyuan_dit", "HiDream": "hidream",
                "Lumina2": None, "Omnigen2": "omnigen2", "QwenImage": "qwen_image", "WAN21": "wan", "WAN22": "wan",
                "LTXV": "ltxv", "GenmoMochi": "mochi", "CosmosPredict2": "cosmos", "Kandinsky5Image": "kandinsky5",
                "Krea2": "krea2", "ErnieImage": "ernie", "ACEStep": "ace"}
"""ComfyUI's model class -> family id (Lumina2 serves Lumina 2 and Z-Image: the key list's name says)."""


@pytest.mark.parametrize("name", sorted(COMFY_KEYS))
def test_target_family_of_full_size_comfy_checkpoints(name: str) -> None:
    entry = COMFY_KEYS[name]
    fam = CLASS_FAMILY[entry["model_class"]] or name
    state = {"model." + k: tuple(s) for k, s in entry["weights"].items()}
    assert resolve([], state).target_family == fam
