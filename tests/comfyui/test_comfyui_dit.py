"""LoKr files for tiny DiT models in every key format, through our loader and ComfyUI core (COMFYUI_PATH).

For each tiny family built with the running ComfyUI's own classes (tests/comfyui/dit_models.py:
Flux, SD3, Lumina 2, Qwen-Image, Wan 2.1; a family this ComfyUI has no class for skips) and each key
format (SimpleTuner ``lycoris_`` / PEFT ``transformer.`` / ``base_model.model.`` / OneTrainer
``lora_transformer_`` + diffusers names; ai-toolkit ``diffusion_model.`` / kohya ``lora_unet_`` +
ComfyUI names), a LoKr file covers every Linear weight with lycoris-lora's ``LokrModule`` per target;
the expected ΔW is placed as ComfyUI's own key map places it (lokr_core's DiT tables where the map has
no diffusers name: Wan). Our LoKr loader must apply every module at the fp32 floor in patch and
bypass mode; core (``comfy.sd.load_lora_for_models``) is measured and recorded, not asserted
(docs/dit-support.md is the table, written by tools/dit_support_table.py from the same code).
Run: ``COMFYUI_PATH=$BENCH/ComfyUI $BENCH/venv/bin/python -m pytest -q tests/comfyui/test_comfyui_dit.py``.
"""
from __future__ import annotations

import pytest

import comfy_env
import dit_models
import dit_support

FLOOR = 1e-4
"""Largest relative error (max |W - W_expected| / max |ΔW|) accepted: fp32 rounding, bypass probes included."""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    comfy_env.setup_comfy()
    path = tmp_path_factory.mktemp("dit") / "loras"
    dit_support.loras_folder(path)
    return path


@pytest.mark.parametrize("fmt", dit_support.FORMATS)
@pytest.mark.parametrize("family", dit_models.FAMILIES)
def test_every_module_applies_at_the_fp32_floor(folder, family, fmt, record_property):
    row = dit_support.measure(family, fmt, folder)
    record_property("dit_support", {k: row[k] for k in ("modules",) + dit_support.WAYS})
    n, report = row["modules"], row["report"]
    assert n > 0 and report["unmatched"] == [] and report["skipped"] == {}, report
    for way in ("pack patch", "pack bypass"):
        applied, err = row[way]
        assert applied == n and err < FLOOR, (way, row[way], n)
    assert 0 <= row["core"][0] <= n
    assert report["model_family"] and report["model_family_label"]
    if report["family"] is not None:  # the file's verdict agrees with the model's
        assert set(report["family"].split("/")) & set(report["model_family"].split("/")), report
