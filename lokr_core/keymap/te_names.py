"""Text encoders of DiT models (T5, UMT5, Qwen2.5-VL, Qwen3, Llama, Gemma) as ComfyUI and trainers name them.

ComfyUI holds each text encoder as ``<encoder>.transformer.<model path>`` (``t5xxl.transformer.encoder.block.0...``,
``qwen25_7b.transformer.model.layers.0...``) and saves checkpoints with ``text_encoders.`` before
that. LoKr files name those modules with the same prefixes, with ``text_encoders.transformer.`` (the
encoder name left out), with kohya ``lora_te1_`` / ``lora_te2_`` / ``lora_te3_`` (T5 is ``lora_te2_``
or ``lora_te3_`` next to CLIP-L, ``lora_te3_`` next to CLIP-L and CLIP-G) or ``lora_te_`` (a lone
language-model encoder, without its ``model.`` level), or with diffusers' pipeline parts
``text_encoder.`` .. ``text_encoder_4.``.

Components: ``te1`` / ``te2`` (CLIP-L or -H / CLIP-G, :mod:`.clip_text`), ``t5`` (T5 / UMT5 encoders)
and ``llm`` (decoder language models used as encoders). Model paths of a language model are filed
without its wrapper levels (``model.``, ``model.language_model.``, ``language_model.model.``), so
transformers' ``Qwen2Model``, ``Qwen2_5_VLForConditionalGeneration`` and ComfyUI's layout meet.
"""
from __future__ import annotations

T5_ENCODERS = ("t5xxl", "umt5xxl", "pile_t5xl", "t5base")
"""ComfyUI names of T5-style encoders (``encoder.block.N.layer.M...`` paths, as in transformers)."""

LLM_ENCODERS = ("qwen25_7b", "qwen25_3b", "qwen3_06b", "qwen3_2b", "qwen3_4b", "qwen3_8b", "llama", "gemma2_2b",
                "gemma3_4b", "gemma3_12b", "mistral3_24b", "ministral3_3b")
"""ComfyUI names of language-model encoders (``model.layers.N.self_attn.q_proj`` ...)."""

CLIP_ENCODERS = {"clip_l": "te1", "clip_h": "te1", "clip_g": "te2"}
"""ComfyUI names of CLIP encoders -> component."""

ENCODER_FAMILIES: dict[str, tuple[str, ...]] = {
    "t5xxl": ("flux", "chroma", "sd3", "hidream", "pixart"), "umt5xxl": ("wan",), "pile_t5xl": ("auraflow",),
    "qwen25_7b": ("qwen_image",), "qwen25_3b": ("omnigen2",), "qwen3_4b": ("zimage",), "gemma2_2b": ("lumina2",),
    "llama": ("hidream",), "clip_g": ("sd3", "hidream"), "clip_l": ("flux", "sd3", "hidream"),
}
"""ComfyUI encoder name -> DiT families whose ComfyUI text-encoder model has it (CLIP names only
narrow a verdict; alone they say SD)."""

TEXT_COMPONENTS = ("te1", "te2", "t5", "llm")
"""Text-encoder components of a target, in lookup order."""

LLM_TYPES = ("qwen2", "qwen2_5_vl", "qwen2_5_vl_text", "qwen3", "llama", "gemma", "gemma2", "gemma3", "gemma3_text",
             "mistral")
T5_TYPES = ("t5", "umt5", "mt5")
"""transformers ``config.model_type`` of language-model / T5 encoders."""

_LLM_WRAPPERS = ("model.language_model.", "language_model.model.", "language_model.", "model.")


def encoder_component(name: str) -> str | None:
    """Component of a ComfyUI encoder name (``t5xxl`` -> ``t5``, ``qwen25_7b`` -> ``llm``, ``clip_g`` -> ``te2``)."""
    if name in CLIP_ENCODERS:
        return CLIP_ENCODERS[name]
    return "t5" if name in T5_ENCODERS else "llm" if name in LLM_ENCODERS else None


def state_prefixes() -> dict[str, str]:
    """Checkpoint / ComfyUI key prefix of each encoder -> component (``text_encoders.t5xxl.transformer.``,
    ``t5xxl.transformer.``, ...)."""
    out = {}
    for name in (*CLIP_ENCODERS, *T5_ENCODERS, *LLM_ENCODERS):
        out[f"text_encoders.{name}.transformer."] = out[f"{name}.transformer."] = encoder_component(name)
    return out


def name_prefixes() -> dict[str, str]:
    """File module-name prefixes of text encoders -> component hint (``te`` / ``te3`` / ``te4``: any
    text encoder the target holds; see :func:`search_order`)."""
    out = state_prefixes()
    out.update({"text_encoders.transformer.": "te", "lora_te3_": "te3", "lycoris_te3_": "te3",
                "text_encoder_3.": "te3", "text_encoder_4.": "te4"})
    return out


def search_order(hint: str, components) -> list[list[str]]:
    """Components to look a text-encoder name up in, as tries in order: the hinted one first, then
    the non-CLIP encoders (CLIP-L and CLIP-G share names, so a ``te1`` / ``te2`` name never falls back
    to the other CLIP). ``te`` / ``te3`` / ``te4`` / ``t5`` / ``llm`` fall back to every text encoder."""
    held = [c for c in TEXT_COMPONENTS if c in components]
    first = [hint] if hint in components else []
    rest = [c for c in held if c not in first and (hint not in ("te1", "te2") or c in ("t5", "llm"))]
    return [t for t in (first, rest) if t]


def llm_path(path: str) -> str:
    """A language-model encoder path without its wrapper levels: ``model.layers.0.self_attn.q_proj``
    and ``model.language_model.layers.0...`` -> ``layers.0.self_attn.q_proj``."""
    for w in _LLM_WRAPPERS:
        if path.startswith(w) and path[len(w):].startswith(("layers.", "embed_tokens", "norm")):
            return path[len(w):]
    return path


def text_aliases(path: str) -> tuple[str, ...]:
    """Underscore names a text-encoder weight at model ``path`` is filed under besides its own:
    for language models the path without wrappers and with each wrapper (``layers_0_...``,
    ``model_layers_0_...``, ``model_language_model_layers_0_...``); () for other paths."""
    bare = llm_path(path)
    if bare == path and not path.startswith(("layers.", "embed_tokens")):
        return ()
    return tuple(dict.fromkeys((w + bare).replace(".", "_") for w in ("", *_LLM_WRAPPERS)))


_SLOT_ENCODERS = {"lora_te3_": ("clip_l", "t5xxl"), "lycoris_te3_": ("clip_l", "t5xxl"),
                  "text_encoder_3.": ("clip_l", "clip_g", "t5xxl"), "text_encoder_4.": ("llama",)}
"""Numbered text-encoder prefixes -> the encoders they imply: ComfyUI's key map gives ``lora_te3_``
to T5 next to CLIP-L (Flux, SD3, HiDream); diffusers' third part is SD3 / HiDream's T5, the fourth
HiDream's Llama."""


def file_encoders(names) -> set[str]:
    """ComfyUI encoder names a file's module names imply (``text_encoders.t5xxl.transformer.*`` ->
    t5xxl; ``lora_te3_*`` -> clip_l and t5xxl, see :data:`_SLOT_ENCODERS`)."""
    from ..base.peft_names import strip_peft_prefix

    prefixes = {p: e for e in (*CLIP_ENCODERS, *T5_ENCODERS, *LLM_ENCODERS)
                for p in (f"text_encoders.{e}.transformer.", f"{e}.transformer.")}
    out: set[str] = set()
    for name in names:
        bare = strip_peft_prefix(name)
        hit = next((e for p, e in prefixes.items() if bare.startswith(p)), None)
        if hit:
            out.add(hit)
            continue
        out.update(next((v for p, v in _SLOT_ENCODERS.items() if bare.startswith(p)), ()))
    return out


def file_families(encoders) -> set[str]:
    """DiT families a file's text-encoder names fit (the ComfyUI encoder names it uses, e.g.
    {"t5xxl", "clip_l"}); empty when no non-CLIP encoder is named."""
    names = [e for e in encoders if e in ENCODER_FAMILIES]
    if not any(e not in CLIP_ENCODERS for e in names):
        return set()
    fams: set[str] | None = None
    for e in names:
        fams = set(ENCODER_FAMILIES[e]) if fams is None else fams & set(ENCODER_FAMILIES[e])
    return fams or set()
