"""Measure how LoKr files for tiny DiT models apply: our loader (patch, bypass) and ComfyUI core.

Shared by tests/comfyui/test_comfyui_dit.py and tools/dit_support_table.py (docs/dit-support.md), so
the table and the test come from the same code. Run inside a real ComfyUI (``comfy_env.setup_comfy``).

For one tiny model (``dit_models.build``) and one key format (:data:`FORMATS`), :func:`make_file`
writes a LoKr file covering every Linear weight of the model, one lycoris-lora ``LokrModule`` per
target; the expected ΔW is placed as ComfyUI's own key map places it (its ``transformer.<diffusers
path>`` entries: a whole weight, a row block of a fused weight, or the (shift, scale) swap function),
and, for Linear weights that map has no diffusers name for (Wan, some Lumina 2 modulations), as
lokr_core's DiT name tables place it. :func:`measure` applies the file three ways and returns, per
way, the modules applied (their target rows changed) and the largest relative error over them:
max |W_got - W_expected| / max |ΔW| on the module's rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import save_file
from torch import nn

import comfy_env
from tests.support.lokr_node_fixtures import lycoris_module, state_dict_of

U = "diffusion_model."
DIFFUSERS_FORMATS = {
    "lycoris": lambda d: "lycoris_" + d.replace(".", "_"),
    "transformer.": lambda d: "transformer." + d,
    "base_model.model.": lambda d: "base_model.model." + d,
    "lora_transformer": lambda d: "lora_transformer_" + d.replace(".", "_"),
}
"""Key formats that name diffusers module paths -> file module name of a diffusers path."""
ORIGINAL_FORMATS = {
    "diffusion_model.": lambda p: U + p,
    "lora_unet": lambda p: "lora_unet_" + p.replace(".", "_"),
}
"""Key formats that name ComfyUI (original) module paths -> file module name of such a path."""
FORMATS = tuple(DIFFUSERS_FORMATS) + tuple(ORIGINAL_FORMATS)
WAYS = ("pack patch", "pack bypass", "core")


@dataclass(frozen=True)
class Target:
    """Where one file module's ΔW goes: ``key`` (``diffusion_model.<path>.weight``), ``offset`` (dim 0,
    start, length) or None, ``function`` applied to ΔW (None: as it is)."""

    key: str
    offset: tuple[int, int, int] | None = None
    function: Callable | None = None


def _linear_keys(patcher: Any) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in patcher.model.state_dict().items()
            if k.startswith(U) and k.endswith(".weight") and v.ndim == 2
            and isinstance(patcher.model.get_submodule(k[:-len(".weight")]), nn.Linear)}


def diffusers_targets(patcher: Any) -> dict[str, Target]:
    """{diffusers module path: Target} for every Linear weight: ComfyUI's key map first (the first of its
    names for a target: Flux.1's ``ff.net.0.proj`` before the Flux.2 alias ``ff.linear_in``), then
    lokr_core's DiT tables (``keymap.dit_names.translate``) for weights that map does not name."""
    import comfy.lora

    linear = _linear_keys(patcher)
    out: dict[str, Target] = {}
    for name, key in comfy.lora.model_lora_keys_unet(patcher.model, {}).items():
        if not name.startswith("transformer."):
            continue
        k, off, fn = (key, None, None) if isinstance(key, str) else (key[0], key[1], key[2] if len(key) > 2 else None)
        t = Target(k, tuple(off) if off else None, fn)
        if k in linear and all((o.key, o.offset) != (t.key, t.offset) for o in out.values()):
            out[name[len("transformer."):]] = t  # one name per target: the map also has Flux.2 aliases
    covered = {t.key for t in out.values()}
    dit_names = comfy_env.pack_module("lokr_core.keymap.dit_names")
    tr = dit_names.translate({k[len(U):-len(".weight")]: s for k, s in linear.items()})
    for path, alias, rows in tr.aliases:
        key = U + path + ".weight"
        if key not in covered and alias not in out:
            out[alias] = Target(key, (0, rows[0], rows[1] - rows[0]) if rows else None)
    return out


def original_targets(patcher: Any) -> dict[str, Target]:
    """{ComfyUI module path: Target} for every Linear weight (the whole weight)."""
    return {k[len(U):-len(".weight")]: Target(k) for k in _linear_keys(patcher)}


def targets_for(patcher: Any, fmt: str) -> dict[str, Target]:
    """{file module name: Target} of key format ``fmt`` on ``patcher``'s model."""
    if fmt in DIFFUSERS_FORMATS:
        return {DIFFUSERS_FORMATS[fmt](d): t for d, t in diffusers_targets(patcher).items()}
    return {ORIGINAL_FORMATS[fmt](p): t for p, t in original_targets(patcher).items()}


def make_file(patcher: Any, fmt: str, folder: Path, fname: str, seed: int = 0) -> tuple[dict, dict[str, Target]]:
    """Write ``folder/fname``: one lycoris-lora LokrModule per target of ``fmt``; ({name: ΔW}, {name: Target})."""
    sd = patcher.model.state_dict()
    tgts = targets_for(patcher, fmt)
    mods, deltas = {}, {}
    for i, (name, t) in enumerate(sorted(tgts.items())):
        out_rows, inp = t.offset[2] if t.offset else sd[t.key].shape[0], sd[t.key].shape[1]
        mods[name] = lycoris_module(name, nn.Linear(inp, out_rows), dim=4, factor=4, seed=seed + i)
        with torch.no_grad():
            deltas[name] = mods[name].get_weight((out_rows, inp)).detach().float()
    save_file(state_dict_of(mods), str(folder / fname))
    return deltas, tgts


def expected_weights(patcher: Any, deltas: dict, tgts: dict[str, Target]) -> dict[str, torch.Tensor]:
    """{weight key: W + every placed ΔW} at strength 1."""
    sd = patcher.model.state_dict()
    out = {t.key: sd[t.key].detach().float().clone() for t in tgts.values()}
    for name, t in tgts.items():
        d = deltas[name] if t.function is None else t.function(deltas[name].clone())
        region = out[t.key] if t.offset is None else out[t.key].narrow(0, t.offset[1], t.offset[2])
        region += d
    return out


def bypass_weights(patcher: Any, keys: list[str]) -> dict[str, torch.Tensor]:
    """Effective weights of Linear layers with ``patcher`` loaded (bypass hooks in): layer(I) - layer(0), transposed."""
    import comfy.model_management as mm

    mm.unload_all_models()
    mm.load_models_gpu([patcher])
    out = {}
    try:
        with torch.no_grad():
            for k in keys:
                layer = patcher.model.get_submodule(k[:-len(".weight")])
                n = layer.weight.shape[1]
                out[k] = (layer(torch.eye(n)) - layer(torch.zeros(1, n))).T.float().clone()
    finally:
        mm.unload_all_models()
    return out


def score(base: dict, got: dict, expected: dict, deltas: dict, tgts: dict[str, Target]) -> tuple[int, float]:
    """(modules whose rows changed by more than 1e-3 of their ΔW, max relative error over them); the
    threshold keeps the rounding of a bypass probe (layer(I) - layer(0)) from counting as applied."""
    applied, err = 0, 0.0
    for name, t in tgts.items():
        def rows(w: torch.Tensor) -> torch.Tensor:
            return w if t.offset is None else w.narrow(0, t.offset[1], t.offset[2])
        g, e, b = rows(got[t.key]), rows(expected[t.key]), rows(base[t.key])
        scale = float(deltas[name].abs().max())
        if float((g - b).abs().max()) <= 1e-3 * scale:
            continue
        applied += 1
        err = max(err, float((g - e).abs().max()) / scale)
    return applied, err


def measure(family: str, fmt: str, folder: Path) -> dict[str, Any]:
    """{modules, "pack patch" / "pack bypass" / "core": (applied, max rel error), report} for one family x format."""
    import comfy.lora
    import comfy.sd
    import comfy.utils
    import dit_models

    planning = comfy_env.pack_module("nodes.planning")
    patcher = dit_models.build(family)
    fname = f"{family}_{fmt.strip('.').replace('.', '_')}.safetensors"
    deltas, tgts = make_file(patcher, fmt, folder, fname)
    keys = sorted({t.key for t in tgts.values()})
    base = {k: v.detach().float().clone() for k, v in patcher.model.state_dict().items() if k in keys}
    expected = expected_weights(patcher, deltas, tgts)
    row: dict[str, Any] = {"modules": len(tgts)}
    pm, _, plan = planning.load_and_apply(planning.WeightsCache(), patcher, None, fname, 1.0, 0.0)
    row["report"] = planning.plan_report(plan, fname)
    row["pack patch"] = score(base, comfy_env.patched_weights(pm, keys), expected, deltas, tgts)
    bm, _, _ = planning.load_and_apply(planning.WeightsCache(), patcher, None, fname, 1.0, 0.0, apply="bypass")
    row["pack bypass"] = score(base, bypass_weights(bm, keys), expected, deltas, tgts)
    lora = comfy.utils.load_torch_file(str(folder / fname), safe_load=True)
    cm, _ = comfy.sd.load_lora_for_models(patcher, None, lora, 1.0, 0.0)
    row["core"] = score(base, comfy_env.patched_weights(cm, keys), expected, deltas, tgts)
    return row


def loras_folder(folder: Path) -> None:
    """Point ComfyUI's ``loras`` folder at ``folder`` (the loaders look files up there)."""
    comfy_env.set_model_folders("loras", folder)
