"""PEFT export paths of DiT LoKr files (formats/peft_paths.py) against ComfyUI-layout and diffusers targets.

A PEFT adapter adds its ΔW to one whole module. The reference for which diffusers module is one
whole ComfyUI weight, a row block of a fused one, or a modulation whose (shift, scale) halves are
swapped is ComfyUI 0.28.0's own LoRA key map (tests/support/dit_tiny_keys.json); the file's modules
come from lycoris-lora on a tiny diffusers Flux model (tests/keymap/test_dit_resolve.Case).
"""
from __future__ import annotations

from pathlib import Path

import pytest

import lokr_core as lk
from lokr_core.base.errors import LoKrKeyError
from lokr_core.formats.peft_paths import peft_module_paths
from tests.keymap.test_dit_resolve import KEYS, PREFIX, Case


@pytest.fixture(scope="module")
def flux() -> Case:
    return Case("flux")


def _comfy_target(family: str) -> dict[str, tuple[int, ...]]:
    return {PREFIX + k: tuple(s) for k, s in KEYS[family]["keys"].items()}


def _pick(case: Case, kind: str) -> list[str]:
    """diffusers paths of the file's modules that are, in ComfyUI's map, ``whole`` weights of the same
    shape, ``rows`` of a fused weight, or ``swapped`` modulations."""
    shapes = {k[: -len(".weight")]: tuple(s) for k, s in KEYS[case.family]["keys"].items()}
    out = []
    for path, (key, rows, swap) in case.oracle.items():
        if path not in case.ref:
            continue
        whole = rows is None and not swap and shapes.get(key[: -len(".weight")]) == tuple(case.ref[path].shape)
        if {"whole": whole, "rows": rows is not None, "swapped": swap}[kind]:
            out.append(path)
    return sorted(out)


def _file(case: Case, folder: Path, paths: list[str]):
    f, names = case.save(folder, lambda n, p: n if p in paths else None)
    return lk.load_lokr(f), names


@pytest.mark.parametrize("kind", ["swapped", "rows"])
def test_modules_that_are_not_one_whole_comfy_module_are_refused(flux: Case, kind: str, tmp_path: Path) -> None:
    whole, odd = _pick(flux, "whole")[:2], _pick(flux, kind)[:1]
    assert whole and odd, f"ComfyUI's Flux map has {kind} modules and whole ones"
    w, names = _file(flux, tmp_path, whole + odd)
    target = _comfy_target("flux")
    report = w.resolve(target)
    assert sorted(report.matched) == sorted(names), "every module resolves onto the ComfyUI layout"
    (bad,) = [n for n, p in names.items() if p in odd]
    with pytest.raises(LoKrKeyError, match=bad):
        peft_module_paths(w, target)
    with pytest.raises(LoKrKeyError, match=bad):
        lk.save_lokr(w, tmp_path / "peft", format="peft", model=target)
    assert not (tmp_path / "peft").exists()


def test_whole_modules_get_comfy_paths(flux: Case, tmp_path: Path) -> None:
    whole = _pick(flux, "whole")[:3]
    w, names = _file(flux, tmp_path, whole)
    paths, shapes = peft_module_paths(w, _comfy_target("flux"))
    for n, p in names.items():
        key = flux.oracle[p][0]
        assert paths[n] == (PREFIX + key)[: -len(".weight")]
        assert shapes[n] == tuple(KEYS["flux"]["keys"][key])


def test_fused_original_module_split_over_diffusers_modules_is_refused(flux: Case, tmp_path: Path) -> None:
    fused = sorted({flux.oracle[p][0] for p in _pick(flux, "rows")})[0]
    name = "lora_unet_" + fused[: -len(".weight")].replace(".", "_")
    report = lk.resolve([name], flux.model)
    assert name in report.split, report.format()
    w = type("W", (), {"module_names": [name], "source": None, "resolve": lambda self, t: report})()
    with pytest.raises(LoKrKeyError, match=name):
        peft_module_paths(w, flux.model)
