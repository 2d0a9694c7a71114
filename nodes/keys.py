"""ComfyUI key-map glue: which ComfyUI weight key each module name of a LoKr file patches.

Start from ComfyUI's own map (``comfy.lora.model_lora_keys_unet`` / ``model_lora_keys_clip``,
which knows every model family ComfyUI runs) and look every file name up through a few spellings
ComfyUI lacks: PEFT ``base_model.model.<dotted path>`` (optionally ``unet.`` / ``text_encoder.``),
``lycoris_<path>``, transformers-5 text-encoder names without ``text_model_``, and dotted diffusers
paths. Without ComfyUI (CI stand-ins) a generic map is built from the state-dict keys, the same
"generic" names ComfyUI adds. Values are ComfyUI patch keys in the four forms ComfyUI's map makes:
``key``, ``(key, (dim, start, length))`` (a row block of a fused weight), ``(key, None, function)``
and ``(key, (dim, start, length), function)`` (``function`` transforms ΔW before it is added).

Names the map does not know (Wan ``lycoris_blocks_0_attn1_to_q``, OneTrainer ``lora_transformer_``
for families other than Flux, ...) go to lokr_core's resolver against the model's own weights
(:func:`resolve_names`), whose results become the same patch keys (:func:`patch_key`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

import torch

from ..lokr_core.keymap.resolve import resolve

__all__ = ["unet_key_map", "clip_key_map", "name_candidates", "match_names", "target_shape", "base_key",
           "split_key", "swap_halves", "underscored_aliases", "patch_key", "Resolved", "resolve_names", "weight_shapes"]

_CLIP_PREFIXES = ("clip_l.transformer.", "clip_g.transformer.", "clip_h.transformer.", "transformer.")


def _generic_unet_keys(keys: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k in keys:
        if k.startswith("diffusion_model.") and k.endswith(".weight"):
            path = k[len("diffusion_model."):-len(".weight")]
            out["lora_unet_" + path.replace(".", "_")] = k
            out[k[:-len(".weight")]] = k
    return out


def _generic_clip_keys(keys: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k in keys:
        if not k.endswith(".weight"):
            continue
        out["text_encoders." + k[:-len(".weight")]] = k
        for p in _CLIP_PREFIXES:
            if k.startswith(p):
                tail = k[len(p):-len(".weight")].replace(".", "_")
                te = {"clip_g.transformer.": "lora_te2_"}.get(p, "lora_te_")
                out[te + tail] = k
                if te == "lora_te_":
                    out["lora_te1_" + tail] = k
                break
    return out


def unet_key_map(model: Any) -> dict[str, Any]:
    """File-name -> ComfyUI key for a ModelPatcher's diffusion model (``model.model``)."""
    try:
        import comfy.lora  # type: ignore[import-not-found]
    except Exception:
        return _generic_unet_keys(model.model.state_dict().keys())
    return comfy.lora.model_lora_keys_unet(model.model, {})


def clip_key_map(clip: Any) -> dict[str, Any]:
    """File-name -> ComfyUI key for a CLIP object's text encoder(s) (``clip.cond_stage_model``)."""
    try:
        import comfy.lora  # type: ignore[import-not-found]
    except Exception:
        return _generic_clip_keys(clip.cond_stage_model.state_dict().keys())
    return comfy.lora.model_lora_keys_clip(clip.cond_stage_model, {})


def _underscored(dotted: str) -> str:
    return dotted.replace(".", "_")


def name_candidates(name: str) -> Iterator[str]:
    """Spellings under which ComfyUI's key map may know the file module ``name``, most exact first.

    ``base_model.model.down_blocks.0.attentions.0.proj_in`` -> ... ``lora_unet_down_blocks_0_attentions_0_proj_in``;
    ``base_model.model.layers.0.attention.to_q`` -> ... ``transformer.layers.0.attention.to_q``;
    ``lycoris_input_blocks_1_1_proj_in`` -> ``lora_unet_input_blocks_1_1_proj_in``;
    ``lora_te_encoder_layers_0_mlp_fc1`` (transformers 5) -> ``lora_te_text_model_encoder_layers_0_mlp_fc1``.
    """
    yield name
    n = name
    if n.startswith("base_model.model."):
        n = n[len("base_model.model."):]
        yield n
        if "." in n and not n.startswith(("unet.", "transformer.", "text_encoder")):
            yield "transformer." + n  # a PEFT transformer adapter: ComfyUI maps diffusers DiT names as transformer.<path>
    if n.startswith("lycoris_"):
        yield "lora_unet_" + n[len("lycoris_"):]
    for te in ("lora_te_", "lora_te1_", "lora_te2_"):
        if n.startswith(te + "encoder_"):
            yield te + "text_model_" + n[len(te):]
    if "." in n:
        for prefix, lora in (("unet.", "lora_unet_"), ("transformer.", "lora_unet_"),
                             ("text_encoder.", "lora_te_"), ("text_encoder_2.", "lora_te2_")):
            if n.startswith(prefix):
                tail = n[len(prefix):]
                yield lora + _underscored(tail)
                if lora != "lora_unet_" and tail.startswith("encoder."):
                    yield lora + "text_model_" + _underscored(tail)
                return
        yield "lora_unet_" + _underscored(n)
        yield "lora_te_" + _underscored(n)
        if n.startswith("encoder."):
            yield "lora_te_text_model_" + _underscored(n)


def underscored_aliases(key_map: Mapping[str, Any]) -> dict[str, Any]:
    """``lora_transformer_`` / ``lycoris_`` + underscore spellings of the map's ``transformer.<diffusers
    path>`` names (OneTrainer / SimpleTuner files), for the families whose diffusers names ComfyUI maps
    only dotted; names the map already has are left out."""
    out: dict[str, Any] = {}
    for k, v in key_map.items():
        if k.startswith("transformer."):
            tail = _underscored(k[len("transformer."):])
            for alias in ("lora_transformer_" + tail, "lycoris_" + tail):
                if alias not in key_map:
                    out.setdefault(alias, v)
    return out


def match_names(names: Iterable[str], key_map: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Split file module ``names`` into (matched: name -> ComfyUI key, unmatched names), order kept.

    Names ComfyUI's map lacks in every spelling are looked up among :func:`underscored_aliases`."""
    matched: dict[str, Any] = {}
    unmatched: list[str] = []
    aliases: dict[str, Any] | None = None
    for name in names:
        for cand in name_candidates(name):
            if cand in key_map:
                matched[name] = key_map[cand]
                break
        else:
            if aliases is None:
                aliases = underscored_aliases(key_map)
            if name in aliases:
                matched[name] = aliases[name]
            else:
                unmatched.append(name)
    return matched, unmatched


def split_key(key: Any) -> tuple[str, tuple | None, Any]:
    """``(state-dict key, offset or None, function or None)`` of a ComfyUI patch key in any of its four forms."""
    if isinstance(key, str):
        return key, None, None
    return key[0], (key[1] if len(key) > 1 else None), (key[2] if len(key) > 2 else None)


def target_shape(key: Any, state_dict: Mapping[str, Any]) -> tuple[int, ...]:
    """Shape of the weight (or of its ``(dim, start, length)`` slice) that ComfyUI key ``key`` patches.

    ``key``: any form of :func:`split_key`; offset None = the whole weight (a function never
    changes the shape). ``state_dict`` values: tensors or shape tuples.
    """
    name, offset, _fn = split_key(key)
    value = state_dict[name]
    base = tuple(int(s) for s in getattr(value, "shape", value))
    if offset is None:
        return base
    dim, _start, length = offset
    return base[:dim] + (int(length),) + base[dim + 1:]


def base_key(key: Any) -> str:
    """The state-dict key of a ComfyUI patch key (a str, or a tuple whose first item is the key)."""
    return split_key(key)[0]


def swap_halves(t: torch.Tensor) -> torch.Tensor:
    """``t`` (rows, ...) with its two row halves swapped: ΔW of a DiT modulation whose (shift, scale)
    halves are in the other order in the model (the same as the transform ComfyUI's own map uses)."""
    half = t.shape[0] // 2
    return torch.cat((t[half:], t[:half]), dim=0)


ROW_FUNCTIONS = {"swap_halves": swap_halves}
"""lokr_core's ``ResolveReport.row_order`` values -> the ΔW transform ComfyUI calls ``function``."""


def patch_key(key: str, rows: tuple[int, int] | None = None, order: str | None = None) -> Any:
    """The ComfyUI patch key for a resolved weight ``key``: ``rows`` (start, stop) of a fused weight
    -> ``(key, (0, start, stop - start))``; ``order`` (``"swap_halves"``) -> a function as third item."""
    offset = (0, int(rows[0]), int(rows[1]) - int(rows[0])) if rows is not None else None
    if order is not None:
        return (key, offset, ROW_FUNCTIONS[order])
    return key if offset is None else (key, offset)


def weight_shapes(module: Any) -> dict[str, tuple[int, ...]]:
    """{state-dict key: shape} of ``module`` (None -> {}); nothing is copied."""
    if module is None:
        return {}
    return {k: tuple(v.shape) for k, v in module.state_dict(keep_vars=True).items()}


@dataclass
class Resolved:
    """What lokr_core's resolver made of names ComfyUI's map left: ``matched`` {name: ComfyUI patch
    key}, ``skipped`` {name: why it cannot be applied}, ``nearest`` {name: up to 3 weight keys}."""

    matched: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    nearest: dict[str, list[str]] = field(default_factory=dict)


def resolve_names(names: list[str], shapes: Mapping[str, tuple[int, ...]],
                  specs: Mapping[str, Any] | None = None) -> Resolved:
    """Resolve file module ``names`` against a model's weights ``shapes`` ({state-dict key: shape}).

    ``specs``: {name: factors or their shapes} so the resolver checks shapes. A module fused in the
    file's layout and split over several weights in the model's (``split``) is skipped: one node
    patch adds its whole ΔW to one weight. Names the resolver cannot place keep their nearest keys.
    """
    out = Resolved()
    if not names or not shapes:
        return out
    try:
        report = resolve(list(names), dict(shapes), dict(specs or {}))
    except Exception:  # a model layout the resolver does not index: leave the names unmatched
        return out
    for name, key in report.matched.items():
        out.matched[name] = patch_key(key, report.rows.get(name), report.row_order.get(name))
    for name, parts in report.split.items():
        out.skipped[name] = (f"one fused module of the file is split over {len(parts)} weights of the model "
                             f"({', '.join(k for k, _ in parts)}); a node patch adds to one weight")
    for name, (target, found) in report.shape_mismatch.items():
        out.skipped[name] = f"shape mismatch: the model's weight is {tuple(target)}, the factors give {tuple(found)}"
    for name, keys in report.ambiguous.items():
        out.skipped[name] = f"ambiguous: could be {', '.join(keys)}"
    out.nearest = {n: list(c) for n, c in report.unmatched.items()}
    return out
