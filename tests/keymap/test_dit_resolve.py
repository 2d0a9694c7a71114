"""LoKr files for DiT models in every key format, resolved and applied / merged against references.

Files: lycoris-lora's ``create_lycoris(algo="lokr", preset="full")`` on a tiny diffusers model
(tests/support/dit_models.py), factors random; reference ΔW per module = lycoris' ``get_weight``.
The same tensors are re-keyed to the other formats (PEFT / diffusers ``transformer.`` and
``base_model.model.``, OneTrainer ``lora_transformer_``, kohya ``lora_unet_`` + original path,
ai-toolkit ``diffusion_model.`` + original path).

Original (ComfyUI) layout: keys of the same tiny model built with ComfyUI 0.28.0's classes
(tests/support/dit_tiny_keys.json, written by tools/comfy_dit_keylists.py). Which original weight (and
rows) a diffusers module is comes from a reference, never from lokr_core: ComfyUI's own LoRA key
map stored in that file (Flux, SD3, Z-Image, Qwen-Image), diffusers' single-file converter run on
tagged tensors (Wan; Lumina 2 for all but q/k/v, whose rows are [heads, kv heads, kv heads] x head
dim from the model config, since ComfyUI's map places Lumina 2's k / v at full-width offsets).
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

import lokr_core as lk
from lokr_core.keymap.resolve import resolve
from lokr_core.ops.merge import merge_into_state_dict
from tests.support import dit_models
from tests.support.lokr_fixtures import _randomize_, lycoris_reference

KEYS = json.loads((Path(__file__).parents[1] / "support" / "dit_tiny_keys.json").read_text())
PREFIX = "model.diffusion_model."
ATOL = 1e-5


def _weights(keys: dict) -> dict[str, tuple[int, ...]]:
    return {k: tuple(s) for k, s in keys.items()}


def _tagged_map(family: str, convert, drop=()) -> dict[str, tuple[str, tuple[int, int] | None, bool]]:
    """diffusers path -> (original key, rows, swapped) found by running ``convert`` on tensors whose
    values name their key and position."""
    shapes = {k: s for k, s in _weights(KEYS[family]["keys"]).items() if not any(x in k for x in drop)}
    sd, spans, base = {}, [], 0
    for k, s in shapes.items():
        n = math.prod(s)
        sd[k] = torch.arange(base, base + n, dtype=torch.float64).reshape(s)
        spans.append((base, base + n, k))
        base += n
    out = convert(dict(sd))
    found = {}
    for dk, t in out.items():
        if not dk.endswith(".weight") or t.ndim < 2:
            continue
        first = int(t.flatten()[0])
        b0, _, ok = next(sp for sp in spans if sp[0] <= first < sp[1])
        row = (first - b0) // math.prod(sd[ok].shape[1:])
        block = sd[ok][row:row + t.shape[0]]
        same = block.shape == t.shape and torch.equal(block, t.double())
        rows = None if (row == 0 and t.shape[0] == sd[ok].shape[0]) else (row, row + t.shape[0])
        found[dk[: -len(".weight")]] = (ok, rows, not same)
    return found


def _oracle(family: str) -> dict[str, tuple[str, tuple[int, int] | None, bool]]:
    """diffusers module path -> (original weight key, rows or None, (shift, scale) halves swapped)."""
    from diffusers.loaders import single_file_utils as sf

    if family == "wan21":
        return _tagged_map(family, sf.convert_wan_transformer_to_diffusers)
    if family == "lumina2":
        found = _tagged_map(family, sf.convert_lumina2_to_diffusers, drop=(".qkv.",))
        cfg = dit_models.COMFY_CONFIGS["lumina2"]
        hd = cfg["dim"] // cfg["n_heads"]
        q, kv = cfg["n_heads"] * hd, cfg["n_kv_heads"] * hd
        for k in KEYS[family]["keys"]:
            if k.endswith(".attention.qkv.weight"):
                base = k[: -len(".attention.qkv.weight")]
                for name, rows in (("to_q", (0, q)), ("to_k", (q, q + kv)), ("to_v", (q + kv, q + 2 * kv))):
                    found[f"{base}.attn.{name}"] = (k, rows, False)
        return found
    out = {}
    for path, (key, offset, fn) in KEYS[family]["diffusers_map"].items():
        if key.endswith(".weight"):
            out[path] = (key, None if offset is None else (offset[1], offset[1] + offset[2]), bool(fn))
    return out


class Case:
    """A tiny diffusers model, lycoris LoKr modules on it, their reference ΔW and the oracle map."""

    def __init__(self, family: str):
        from lycoris import create_lycoris

        self.family = family
        self.model = dit_models.build(family)
        net = create_lycoris(self.model, 1.0, linear_dim=4, linear_alpha=2.0, algo="lokr", factor=4, preset="full")
        paths = {id(m): n for n, m in self.model.named_modules()}
        gen = torch.Generator().manual_seed(1)
        self.path_of, self.ref, self.tensors = {}, {}, {}
        for lo in net.loras:
            _randomize_(lo, gen)
            path = paths[id(lo.org_module[0])]
            self.path_of[lo.lora_name] = path
            self.ref[path] = lycoris_reference(lo.eval())
            for param, t in lo.state_dict().items():
                if param != "scalar":
                    self.tensors[(lo.lora_name, param)] = t.detach().float().clone().contiguous()
        self.oracle = _oracle(family)

    def save(self, folder: Path, rename) -> tuple[Path, dict[str, str]]:
        """A LoKr file with module names ``rename(lycoris name, diffusers path)`` (None: left out);
        returns (file, {file name: diffusers path})."""
        from safetensors.torch import save_file

        names = {n: rename(n, p) for n, p in self.path_of.items()}
        sd = {f"{names[n]}.{param}": t for (n, param), t in self.tensors.items() if names[n] is not None}
        f = folder / f"{self.family}_{abs(hash(tuple(sorted(sd))))}.safetensors"
        save_file(sd, str(f))
        return f, {new: self.path_of[n] for n, new in names.items() if new is not None}


@pytest.fixture(scope="module", params=dit_models.FAMILIES)
def case(request) -> Case:
    return Case(request.param)


DIFFUSERS_FORMATS = {
    "lycoris": lambda n, p: n,
    "transformer.": lambda n, p: "transformer." + p,
    "base_model.model.": lambda n, p: "base_model.model." + p,
    "lora_transformer_": lambda n, p: "lora_transformer_" + p.replace(".", "_"),
}


def _original(case: Case, prefix: str):
    """Rename to the original path for modules that are one whole original weight, else None."""
    def rename(n: str, p: str) -> str | None:
        hit = case.oracle.get(p)
        if hit is None or hit[1] is not None or hit[2]:
            return None
        o = hit[0][: -len(".weight")]
        return prefix + (o.replace(".", "_") if prefix.endswith("_") else o)
    return rename


ORIGINAL_FORMATS = {"lora_unet_": "lora_unet_", "diffusion_model.": "diffusion_model."}


def _check_applied(case: Case, model: torch.nn.Module, names: dict[str, str]) -> None:
    before = dict(case.model.named_parameters())
    after = dict(model.named_parameters())
    for name, path in names.items():
        delta = after[path + ".weight"].detach() - before[path + ".weight"].detach()
        torch.testing.assert_close(delta, case.ref[path].reshape(delta.shape), atol=ATOL, rtol=1e-4, msg=name)


@pytest.mark.parametrize("fmt", list(DIFFUSERS_FORMATS) + list(ORIGINAL_FORMATS))
def test_apply_on_diffusers_model(case: Case, fmt: str, tmp_path: Path) -> None:
    rename = DIFFUSERS_FORMATS.get(fmt) or _original(case, ORIGINAL_FORMATS[fmt])
    f, names = case.save(tmp_path, rename)
    if fmt in ORIGINAL_FORMATS and case.family != "qwen_image":
        assert len(names) >= len(case.path_of) // 2, "the oracle names most modules one to one"
    w = lk.load_lokr(f)
    report = w.resolve(case.model)
    assert sorted(report.matched) == sorted(names) and report.ok, report.format()
    model = copy.deepcopy(case.model)
    result = lk.apply_lokr(model, w)
    assert not result.unmatched
    _check_applied(case, model, names)


def _comfy_state(family: str, prefix: str, seed: int = 2) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {prefix + k: torch.randn(s, generator=gen) for k, s in _weights(KEYS[family]["keys"]).items()}


@pytest.mark.parametrize("fmt,prefix", [(f, PREFIX) for f in ("lycoris", "transformer.", "lora_transformer_")]
                         + [("lycoris", "diffusion_model."), ("lycoris", ""), ("lora_unet_", PREFIX),
                            ("diffusion_model.", "")])
def test_merge_into_comfy_layout(case: Case, fmt: str, prefix: str, tmp_path: Path) -> None:
    base = DIFFUSERS_FORMATS.get(fmt) or _original(case, ORIGINAL_FORMATS[fmt])
    shapes = _weights(KEYS[case.family]["keys"])

    def rename(n: str, p: str) -> str | None:  # leave out weights the two tiny configs size differently
        hit = case.oracle.get(p)
        if hit is not None and not hit[2]:
            rows = hit[1] or (0, shapes[hit[0]][0])
            if (rows[1] - rows[0],) + shapes[hit[0]][1:] != tuple(case.ref[p].shape):
                return None
        return base(n, p)

    f, names = case.save(tmp_path, rename)
    state = _comfy_state(case.family, prefix)
    expected = {k: torch.zeros_like(t) for k, t in state.items()}
    swapped, missing = [], []
    for name, path in names.items():
        hit = case.oracle.get(path)
        if hit is None:
            missing.append(path)
            continue
        key, rows, swap = hit
        if swap:  # ComfyUI's map: (key, None, swap_scale_shift): ΔW's (shift, scale) halves exchanged
            swapped.append(name)
        block = expected[prefix + key] if rows is None else expected[prefix + key][rows[0]:rows[1]]
        d = case.ref[path].reshape(block.shape)
        block += torch.cat([d[len(d) // 2:], d[: len(d) // 2]]) if swap else d
    assert not missing, f"the reference maps no original weight for {missing}"
    if case.family in ("flux", "sd3") and fmt in DIFFUSERS_FORMATS:
        assert swapped, "norm_out.linear is in the file and its halves are swapped in ComfyUI's map"
    w = lk.load_lokr(f)
    report = w.resolve(state)
    assert not report.unmatched and report.ok, report.format()
    assert report.row_order == {name: "swap_halves" for name in swapped}
    result = merge_into_state_dict(state, [(w, 1.0)])
    for k, t in state.items():
        torch.testing.assert_close(result.state_dict[k] - t, expected[k], atol=ATOL, rtol=1e-4, msg=k)
    if fmt in DIFFUSERS_FORMATS and case.family not in ("qwen_image", "wan21"):
        assert report.rows, "q / k / v land as row blocks of fused original weights"


def test_fused_original_names_on_diffusers_model_are_split_by_rows(case: Case) -> None:
    fused = sorted({hit[0] for p, hit in case.oracle.items() if hit[1] is not None and p in case.ref})
    if not fused:
        pytest.skip(f"{case.family}: no fused weights in the original layout")
    names = {"lora_unet_" + k[: -len(".weight")].replace(".", "_"): k for k in fused}
    report = resolve(list(names), case.model)
    assert not report.unmatched and sorted(report.split) == sorted(names), report.format()
    for n, key in names.items():
        want = sorted((rows, p) for p, (k, rows, _) in case.oracle.items() if k == key and p in case.ref)
        assert [(rows, p) for p, rows in report.split[n]] == want, n


def test_unmatched_dit_names_list_nearest_candidates(case: Case) -> None:
    path = next(p for p in case.ref if p.endswith(("to_q", ".q")))
    typo = "lycoris_" + path.replace(".", "_") + "q"
    report = resolve([typo], case.model)
    assert path in report.unmatched[typo], report.format()
