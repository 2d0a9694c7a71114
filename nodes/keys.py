"""ComfyUI key-map glue: which ComfyUI weight key each module name of a LoKr file patches.

Start from ComfyUI's own map (``comfy.lora.model_lora_keys_unet`` / ``model_lora_keys_clip``,
which knows every model family ComfyUI runs) and look every file name up through a few spellings
ComfyUI lacks: PEFT ``base_model.model.<dotted path>`` (optionally ``unet.`` / ``text_encoder.``),
``lycoris_<path>``, transformers-5 text-encoder names without ``text_model_``, and dotted diffusers
paths. Without ComfyUI (CI stand-ins) a generic map is built from the state-dict keys, the same
"generic" names ComfyUI adds. Values are ComfyUI patch keys: a state-dict key, or a
``(key, (dim, start, length))`` tuple for fused weights.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping

__all__ = ["unet_key_map", "clip_key_map", "name_candidates", "match_names", "target_shape"]

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
    ``lycoris_input_blocks_1_1_proj_in`` -> ``lora_unet_input_blocks_1_1_proj_in``;
    ``lora_te_encoder_layers_0_mlp_fc1`` (transformers 5) -> ``lora_te_text_model_encoder_layers_0_mlp_fc1``.
    """
    yield name
    n = name
    if n.startswith("base_model.model."):
        n = n[len("base_model.model."):]
        yield n
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


def match_names(names: Iterable[str], key_map: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Split file module ``names`` into (matched: name -> ComfyUI key, unmatched names), order kept."""
    matched: dict[str, Any] = {}
    unmatched: list[str] = []
    for name in names:
        for cand in name_candidates(name):
            if cand in key_map:
                matched[name] = key_map[cand]
                break
        else:
            unmatched.append(name)
    return matched, unmatched


def target_shape(key: Any, state_dict: Mapping[str, Any]) -> tuple[int, ...]:
    """Shape of the weight (or of its ``(dim, start, length)`` slice) that ComfyUI key ``key`` patches.

    ``key``: a state-dict key, ``(key, offset)`` or ``(key, offset, function)``; offset None = the whole weight.
    """
    if isinstance(key, str):
        return tuple(state_dict[key].shape)
    base = tuple(state_dict[key[0]].shape)
    if key[1] is None:
        return base
    dim, _start, length = key[1]
    return base[:dim] + (int(length),) + base[dim + 1:]


def base_key(key: Any) -> str:
    """The state-dict key of a ComfyUI patch key (a str, or a tuple whose first item is the key)."""
    return key if isinstance(key, str) else key[0]
