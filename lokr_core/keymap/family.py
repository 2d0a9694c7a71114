"""Which model family a LoKr file or a target model belongs to: SD UNets and transformer (DiT) models.

Transformer families (Flux, SD3, Z-Image, Qwen-Image, Wan, ...) are told apart by their module
names and widths (:mod:`.family_signatures`); when a file's names fit several of them the verdict
names them all, ``"flux/chroma"``, like ``"sd1/sd2"``. A file with DiT names is never read as an SD
family, whatever its text-encoder prefixes say (SD3 / Flux kohya files use ``lora_te1_`` /
``lora_te2_`` too). Text encoders only DiT models use (T5, UMT5, Qwen, Llama, Gemma: their ComfyUI
names, ``lora_te3_``, :mod:`.te_names`) name the families whose ComfyUI text-encoder model holds
them, and narrow a DiT verdict from the diffusion-model names.

SD evidence, strongest first: text-encoder prefixes (``lora_te1_``/``lora_te2_``, ``text_encoder_2.``,
``conditioner.`` -> SDXL; ``cond_stage_model.model.`` -> SD2; ``cond_stage_model.transformer.`` -> SD1),
the cross-attention ``attn2.to_k`` / ``to_v`` input width read from the factors (768 SD1, 1024 SD2,
2048 SDXL), text q/k/v widths (1024 SD2, 1280 SDXL), and UNet structure in the names
(``transformer_blocks_1+`` inside a UNet block, ``label_emb``/``add_embedding`` -> SDXL; a fourth level,
``input_blocks_9..11``, ``output_blocks_9..11`` -> SD1 or SD2).
"""
from __future__ import annotations

import re
from typing import Iterable, Mapping

from ..base.peft_names import strip_peft_prefix
from ..tensor.factors import LoKrFactors
from .family_signatures import LABELS as DIT_LABELS
from .family_signatures import dit_signals, join_families
from . import te_names
from .kohya import split_name

FAMILY_BY_CROSS_DIM = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
SD12 = "sd1/sd2"
SD_FAMILIES = ("sd1", "sd2", "sdxl")


class _Labels(dict):
    """Family id -> display name; a ``/``-joined set of DiT families gets "Flux.1 or Chroma"."""

    def __missing__(self, key: str) -> str:
        parts = str(key).split("/")
        if len(parts) > 1 and all(p in self for p in parts):
            return " or ".join(dict.__getitem__(self, p) for p in parts)
        raise KeyError(key)

    def get(self, key, default=None):  # type: ignore[override]
        try:
            return self[key]
        except KeyError:
            return default


FAMILY_LABELS = _Labels({"sd1": "SD1.x", "sd2": "SD2.x", "sdxl": "SDXL", "sd1/sd2": "SD1.x or SD2.x", **DIT_LABELS})
"""Family id -> display name (SD and DiT ids; ``"flux/chroma"`` -> "Flux.1 or Chroma")."""

_SDXL_STRUCT = re.compile(r"(^|_)((down_blocks|up_blocks|input_blocks|output_blocks|mid_block|middle_block)_.*"
                          r"transformer_blocks_[1-9]|label_emb|add_embedding)")
_SD12_STRUCT = re.compile(r"(^|_)(down_blocks_3|up_blocks_3|input_blocks_(9|10|11)|output_blocks_(9|10|11))_")
_TEXT_PROJ = re.compile(r"self_attn_(q|k|v|out)_proj$")


def factor_dims(f: LoKrFactors) -> tuple[int, ...]:
    """The weight shape the factors give: (out, in, k...) when W2 is full or Tucker, (out, in*k) when split."""
    out_l, in_m = f.w1_shape
    if f.t2 is not None:
        return (out_l * int(f.w2_a.shape[1]), in_m * int(f.w2_b.shape[1])) + tuple(int(s) for s in f.t2.shape[2:])
    if f.w2 is not None:
        return (out_l * int(f.w2.shape[0]), in_m * int(f.w2.shape[1])) + tuple(int(s) for s in f.w2.shape[2:])
    return (out_l * int(f.w2_a.shape[0]), in_m * int(f.w2_b.shape[1]))


def _plain_shape(spec: object) -> tuple[int, ...] | None:
    if isinstance(spec, (tuple, list)) and all(isinstance(s, int) for s in spec):
        return tuple(spec)
    return None


def _dims(spec: object) -> tuple[int, ...] | None:
    return factor_dims(spec) if isinstance(spec, LoKrFactors) else _plain_shape(spec)


def family_signals(names: Iterable[str], factors: Mapping[str, object] | None = None) -> set[str]:
    """Every family the evidence points to: a subset of {"sd1", "sd2", "sdxl", "sd1/sd2"}, or one DiT
    verdict (``"flux"``, ``"zimage"``, ``"flux/chroma"``, ...: see :mod:`.family_signatures`; text
    encoders of DiT models narrow it, or give it alone: :func:`lokr_core.keymap.te_names.file_families`).

    ``factors``: optional {name: LoKrFactors or weight shape (out, in, ...)}. DiT names win over SD
    text-encoder evidence (a DiT file's verdict is never an SD family).
    """
    names = list(names)
    factors = factors or {}
    dit = dit_signals(names, {n: d for n in names if (d := _dims(factors.get(n))) is not None})
    text = te_names.file_families(te_names.file_encoders(names))
    if dit:
        return {join_families((set(dit) & text) or dit)}
    if text:
        return {join_families(text)}
    out: set[str] = set()
    for name in names:
        bare = strip_peft_prefix(name)
        hint, rest = split_name(name)
        if hint == "te2" or bare.startswith("conditioner."):
            out.add("sdxl")
        elif bare.startswith("cond_stage_model.model."):
            out.add("sd2")
        elif bare.startswith("cond_stage_model.transformer."):
            out.add("sd1")
        if hint in ("unet", None):
            if _SDXL_STRUCT.search(rest):
                out.add("sdxl")
            elif _SD12_STRUCT.search(rest + "_"):
                out.add(SD12)
        dims = _dims(factors.get(name))
        if dims is not None and len(dims) >= 2:
            if rest.endswith(("attn2_to_k", "attn2_to_v")) and dims[1] in FAMILY_BY_CROSS_DIM:
                out.add(FAMILY_BY_CROSS_DIM[dims[1]])
            elif _TEXT_PROJ.search(rest) and dims[0] in (1024, 1280):
                out.add("sd2" if dims[0] == 1024 else "sdxl")
    return out


def pick_family(signals: set[str]) -> str | None:
    """One verdict from :func:`family_signals`: a DiT verdict as it is; else "sdxl" > "sd2" > "sd1";
    only "sd1/sd2" evidence gives "sd1/sd2"."""
    for sig in signals:
        if sig.split("/")[0] in DIT_LABELS:
            return sig
    for fam in ("sdxl", "sd2", "sd1", SD12):
        if fam in signals:
            return fam
    return None


def model_family(names: Iterable[str], factors: Mapping[str, object] | None = None) -> str | None:
    """One family id ("sd1", "sd2", "sdxl", "flux", "sd3", "zimage", ...) or None for a LoKr file's
    module names (and factors or shapes, when given).

    None when the evidence cannot tell (SD1 vs SD2 from names alone, Flux.1 vs Chroma without
    modulation layers, ...: use ``pick_family(family_signals(...))`` to see "sd1/sd2", "flux/chroma").
    """
    fam = pick_family(family_signals(names, factors))
    return None if fam is None or "/" in fam else fam


def families_conflict(a: str | None, b: str | None) -> bool:
    """True when two family verdicts (each maybe a ``/``-joined set such as "sd1/sd2" or
    "flux/chroma", or None) cannot both be right: they share no family."""
    if a is None or b is None or a == b:
        return False
    return not set(a.split("/")) & set(b.split("/"))


def target_dit_family(shapes: Mapping[str, object]) -> str | None:
    """DiT verdict of a target model from its weights: {key: shape or tensor} in ComfyUI layout
    (``diffusion_model.double_blocks.0...``, with or without ``model.``) or diffusers layout
    (``transformer_blocks.0...``, with or without ``transformer.``); None when it is no known DiT.

    A whole model shows every module, so the verdict is as sure as the names and widths allow.
    """
    dims = {}
    for k, v in shapes.items():
        shape = getattr(v, "shape", v)
        if isinstance(shape, (tuple, list)) or hasattr(shape, "__len__"):
            dims[k] = tuple(int(s) for s in shape)
    keys = [k for k, d in dims.items() if k.endswith(".weight") and len(d) >= 2]
    fams = dit_signals(keys, dims)
    return join_families(fams) if fams else None
