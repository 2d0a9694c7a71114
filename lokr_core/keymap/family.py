"""Which Stable Diffusion family a LoKr file or a target model belongs to.

Evidence, strongest first: text-encoder prefixes (``lora_te1_``/``lora_te2_``, ``text_encoder_2.``,
``conditioner.`` -> SDXL; ``cond_stage_model.model.`` -> SD2; ``cond_stage_model.transformer.`` -> SD1),
the cross-attention ``attn2.to_k`` / ``to_v`` input width read from the factors (768 SD1, 1024 SD2,
2048 SDXL), text q/k/v widths (1024 SD2, 1280 SDXL), and UNet structure in the names
(``transformer_blocks_1+``, ``label_emb``/``add_embedding`` -> SDXL; a fourth level, ``input_blocks_9..11``,
``output_blocks_9..11`` -> SD1 or SD2).
"""
from __future__ import annotations

import re
from typing import Iterable, Mapping

from ..base.peft_names import strip_peft_prefix
from ..tensor.factors import LoKrFactors
from .kohya import split_name

FAMILY_BY_CROSS_DIM = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
FAMILY_LABELS = {"sd1": "SD1.x", "sd2": "SD2.x", "sdxl": "SDXL", "sd1/sd2": "SD1.x or SD2.x"}
SD12 = "sd1/sd2"

_SDXL_STRUCT = re.compile(r"(^|_)(transformer_blocks_[1-9]|label_emb|add_embedding)")
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


def family_signals(names: Iterable[str], factors: Mapping[str, object] | None = None) -> set[str]:
    """Every family the evidence points to: a subset of {"sd1", "sd2", "sdxl", "sd1/sd2"}.

    ``factors``: optional {name: LoKrFactors or weight shape (out, in, ...)}.
    """
    out: set[str] = set()
    factors = factors or {}
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
        f = factors.get(name)
        dims = factor_dims(f) if isinstance(f, LoKrFactors) else _plain_shape(f)
        if dims is not None and len(dims) >= 2:
            if rest.endswith(("attn2_to_k", "attn2_to_v")) and dims[1] in FAMILY_BY_CROSS_DIM:
                out.add(FAMILY_BY_CROSS_DIM[dims[1]])
            elif _TEXT_PROJ.search(rest) and dims[0] in (1024, 1280):
                out.add("sd2" if dims[0] == 1024 else "sdxl")
    return out


def pick_family(signals: set[str]) -> str | None:
    """One family from :func:`family_signals`: "sdxl" > "sd2" > "sd1"; only "sd1/sd2" evidence gives "sd1/sd2"."""
    for fam in ("sdxl", "sd2", "sd1", SD12):
        if fam in signals:
            return fam
    return None


def model_family(names: Iterable[str], factors: Mapping[str, object] | None = None) -> str | None:
    """"sd1" | "sd2" | "sdxl" | None for a LoKr file's module names (and factors or shapes, when given).

    None when the evidence cannot tell (e.g. SD1 vs SD2 from names alone: use
    ``family_signals`` to see "sd1/sd2").
    """
    fam = pick_family(family_signals(names, factors))
    return None if fam == SD12 else fam


def families_conflict(a: str | None, b: str | None) -> bool:
    """True when two family verdicts (each maybe "sd1/sd2" or None) cannot both be right."""
    if a is None or b is None or a == b:
        return False
    if SD12 in (a, b):
        return "sdxl" in (a, b)
    return True
