"""Block-weight vectors (sd-webui-lora-block-weight / Inspire-Pack LBW syntax), mapped BY BLOCK ID.

A vector is comma-separated; its first value is BASE (text encoders and every UNet weight outside
the input/middle/output blocks), then one value per UNet block in LDM numbering
(docs/block-weights.md, Block IDs):

- SD1.x / SD2.x: 17 values (BASE, IN01, IN02, IN04, IN05, IN07, IN08, MID, OUT03..OUT11) or
  26 values (BASE, IN00..IN11, MID, OUT00..OUT11);
- SDXL: 12 values (BASE, IN04, IN05, IN07, IN08, MID, OUT00..OUT05) or 20 values (BASE, IN00..IN08,
  MID, OUT00..OUT08).

Any other length is refused with the expected IDs. The result always holds every block of the
family's full layout (26 or 20 IDs): blocks a 17/12-value vector does not name get 1.0 (as
sd-webui-lora-block-weight does), so what is applied is visible.

Tokens: numbers; ``A`` / ``a`` (= A/2), ``B`` / ``b`` (= B/2) from the caller; ``R`` (uniform 0..3)
and ``U`` (uniform -1.5..1.5), drawn in vector order from ``random.Random(seed)`` and rounded to 2
decimals (the same ranges as Inspire, not its numpy stream). ``NAME:values`` lines use the values;
a bare preset name (``SD-ALL``, ``SDXL-OUTALL``, ... from Inspire's ``resources/lbw-preset.txt``)
uses the preset. The ``%`` form ``%default=1,base=0.5,in=0.5,mid=0,out3-5=0,in4=0.2`` names
blocks by LDM ID (``in4`` is IN04, ``out3-5`` OUT03..OUT05), not by position among the blocks a
file happens to contain as Inspire does; ``default`` fills every block, ``base`` (default: the
default) BASE, then the other items apply in the order written.

Transformer (DiT) families (``flux``, ``sd3``, ``zimage``, ``wan``, ... :mod:`.family_signatures`)
have block IDs ``double N`` / ``single N`` (Flux, Flux.2, Chroma, HunyuanVideo, HiDream, AuraFlow),
``joint N`` (SD3) or ``layers N`` (the others), counted from 0, plus BASE (everything outside those
blocks). Their vector is BASE, then every block in that order: Flux.1 58 values (BASE, double
0..18, single 0..37), which is Inspire-Pack's Flux vector for a file that touches every block
(Inspire counts only the blocks a file has; here a value always lands on its block ID); or the
short form of one value per group (Flux: BASE, double, single). The block counts are the family's
best-known model (``DEFAULT_BLOCKS``) or the caller's ``blocks`` ({"double": 8, "single": 24} for
Flux.2 Klein 9B, from :func:`lokr_core.keymap.family_signatures.dit_block_counts` of the model's
keys). ``%`` items name groups and IDs: ``%default=0,base=1,double=1,single3-5=0.5`` (numbers are
block IDs, from 0). Presets: :data:`DIT_PRESETS`.
"""
from __future__ import annotations

import math
import random
import re
from typing import Mapping

from ..base.errors import LoKrConfigError, LoKrKeyError
from .blocks import block_id, ldm_block_of
from .family_signatures import DEFAULT_BLOCKS, LABELS as DIT_LABELS
from .ldm_unet import UNetLayout


def _ids(prefix: str, numbers) -> tuple[str, ...]:
    return tuple(f"{prefix}{i:02d}" for i in numbers)


SD_17 = ("BASE",) + _ids("IN", (1, 2, 4, 5, 7, 8)) + ("MID",) + _ids("OUT", range(3, 12))
SD_26 = ("BASE",) + _ids("IN", range(12)) + ("MID",) + _ids("OUT", range(12))
SDXL_12 = ("BASE",) + _ids("IN", (4, 5, 7, 8)) + ("MID",) + _ids("OUT", range(6))
SDXL_20 = ("BASE",) + _ids("IN", range(9)) + ("MID",) + _ids("OUT", range(9))
LAYOUTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sd1": (SD_17, SD_26), "sd2": (SD_17, SD_26), "sdxl": (SDXL_12, SDXL_20)}
"""family -> (attention-only layout, full layout)."""
FAMILY_ALIASES = {"sd1": "sd1", "sd15": "sd1", "sd1.5": "sd1", "sd2": "sd2", "sd21": "sd2", "sd2.1": "sd2",
                  "sdxl": "sdxl", "sd1/sd2": "sd1"}


def _lyc(layout: tuple[str, ...], on: str) -> str:
    """A full-layout preset: BASE 1, and 1 on the blocks of group ``on`` (IN, MID, OUT, ALL, NONE)."""
    vals = []
    for bid in layout:
        if on == "ALL":
            vals.append("1")
        elif on == "NONE":
            vals.append("0")
        else:
            vals.append("1" if bid == "BASE" or bid.startswith(on) else "0")
    return ",".join(vals)


PRESETS: dict[str, str] = {
    "SD-NONE": "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0",
    "SD-ALL": "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1",
    "SD-INS": "1,1,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0",
    "SD-IND": "1,0,0,0,1,1,1,0,0,0,0,0,0,0,0,0,0",
    "SD-INALL": "1,1,1,1,1,1,1,0,0,0,0,0,0,0,0,0,0",
    "SD-MIDD": "1,0,0,0,1,1,1,1,1,1,1,1,0,0,0,0,0",
    "SD-MIDD0.2": "1,0,0,0,0,0,0.2,0.4,0.4,0.2,0,0,0,0,0,0,0",
    "SD-MIDD0.8": "1,0,0,0,0,0.5,0.8,0.8,0.4,0,0,0,0,0,0,0,0",
    "SD-MOUT": "1,0,0,0,0,0,1,1,1,1,1,1,1,1,0.5,0,0",
    "SD-OUTD": "1,0,0,0,0,0,0,0,1,1,1,1,0,0,0,0,0",
    "SD-OUTS": "1,0,0,0,0,0,0,0,0,0,0,0,1,1,1,1,1",
    "SD-OUTALL": "1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1",
    "SD-ROUT": "1,1,1,1,1,1,1,1,R,R,R,R,R,R,R,R,R",
    "SD-AOUT": "A,1,1,1,1,1,1,1,1,1,1,1,A,A,A,A,A",
    "SD-AB": "A,B,B,B,B,B,B,B,B,B,B,B,A,A,A,A,A",
    "SD-ALL0.5": "0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5",
    "SD-LyC-NONE": _lyc(SD_26, "NONE"), "SD-LyC-ALL": _lyc(SD_26, "ALL"), "SD-LyC-INALL": _lyc(SD_26, "IN"),
    "SD-LyC-MIDALL": _lyc(SD_26, "MID"), "SD-LyC-OUTALL": _lyc(SD_26, "OUT"),
    "SDXL-NONE": "0,0,0,0,0,0,0,0,0,0,0,0",
    "SDXL-ALL": "1,1,1,1,1,1,1,1,1,1,1,1",
    "SDXL-INALL": "1,1,1,1,1,0,0,0,0,0,0,0",
    "SDXL-MIDALL": "1,0,0,0,0,1,0,0,0,0,0,0",
    "SDXL-OUTALL": "1,0,0,0,0,0,1,1,1,1,1,1",
    "SDXL-LyC-NONE": _lyc(SDXL_20, "NONE"), "SDXL-LyC-ALL": _lyc(SDXL_20, "ALL"),
    "SDXL-LyC-INALL": _lyc(SDXL_20, "IN"), "SDXL-LyC-MIDALL": _lyc(SDXL_20, "MID"),
    "SDXL-LyC-OUTALL": _lyc(SDXL_20, "OUT"),
}
"""Inspire-Pack's SD/SDXL presets (resources/lbw-preset.txt). Its ``*-LyC-*`` presets are written
there as 27/21 values (IN01.., MID split in three); here they are the same intent in the 26/20
layouts above."""

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_PCT_ITEM = re.compile(r"^(default|base|in|mid|out)(\d+)?(?:-(\d+))?=(.+)$")


def _family(family: str) -> str:
    fam = FAMILY_ALIASES.get(str(family).lower())
    if fam is None:
        raise LoKrConfigError(f"block weights: family {family!r} is not known; expected one of sd1, sd2, sdxl, "
                              f"{', '.join(DIT_LABELS)}")
    return fam


def _expected(fam: str) -> str:
    short, full = LAYOUTS[fam]
    return (f"expected {len(short)} values ({', '.join(short)}) or {len(full)} values ({', '.join(full)})")


def _number(text: str, what: str) -> float:
    if not _NUMBER.match(text):
        raise LoKrConfigError(f"block weights: {what} {text!r} is not a number or one of A, a, B, b, R, U")
    value = float(text)
    if not math.isfinite(value):
        raise LoKrConfigError(f"block weights: {what} {text!r} is not finite")
    return value


def _token(tok: str, pos: int, a: float, b: float, rng: random.Random) -> float:
    if tok == "A":
        return float(a)
    if tok == "a":
        return a / 2
    if tok == "B":
        return float(b)
    if tok == "b":
        return b / 2
    if tok in ("R", "r"):
        return round(rng.uniform(0.0, 3.0), 2)
    if tok in ("U", "u"):
        return round(rng.uniform(-1.5, 1.5), 2)
    return _number(tok, f"value {pos + 1}")


def _percent_start(spec: str, item_re: re.Pattern, expected: str, ids) -> tuple[list[tuple], dict[str, float]]:
    """(parsed items (group, lo, hi, value text), {block ID: value} after ``default=`` and ``base=``)
    of a ``%`` spec; LoKrConfigError naming an item ``item_re`` does not match (``expected``: the
    accepted forms, for the message)."""
    parsed = []
    for item in (x.strip().replace(" ", "") for x in spec[1:].split(",") if x.strip()):
        m = item_re.match(item)
        if not m:
            raise LoKrConfigError(f"block weights: item {item!r} of {spec!r} is not understood{expected}")
        parsed.append(m.groups())
    default = next((_number(v, "default") for g, lo, hi, v in parsed if g == "default"), 1.0)
    values = {bid: default for bid in ids}
    for g, lo, hi, v in parsed:
        if g == "base":
            values["BASE"] = _number(v, "base")
    return parsed, values


def _percent(spec: str, fam: str) -> dict[str, float]:
    full = LAYOUTS[fam][1]
    parsed, values = _percent_start(spec, _PCT_ITEM, "; expected default=V, base=V, in=V, mid=V, out=V, inN=V, "
                                    "outN=V or inN-M=V / outN-M=V", full)
    for g, lo, hi, v in parsed:
        if g in ("default", "base"):
            continue
        value = _number(v, item_name := f"{g}{lo or ''}{'-' + hi if hi else ''}")
        if g == "mid":
            if lo is not None:
                raise LoKrConfigError(f"block weights: {item_name!r}: the middle block has no number; write mid=V")
            values["MID"] = value
            continue
        head = "IN" if g == "in" else "OUT"
        if lo is None:
            for bid in full:
                if bid.startswith(head):
                    values[bid] = value
            continue
        for n in range(int(lo), int(hi if hi is not None else lo) + 1):
            bid = f"{head}{n:02d}"
            if bid not in values:
                raise LoKrConfigError(f"block weights: {item_name!r} names {bid}, which a {fam} UNet does not have; "
                                      f"blocks are {', '.join(b for b in full if b.startswith(head))}")
            values[bid] = value
    return values


DIT_KINDS = ("double", "single", "joint", "layers")
"""DiT block groups, in vector order."""

DIT_PRESETS: dict[str, str] = {
    "DIT-ALL": "%default=1", "DIT-NONE": "%default=0", "DIT-BASE-ONLY": "%default=0,base=1",
    "DIT-BLOCKS-ONLY": "%default=1,base=0", "DIT-HALF": "%default=0.5",
    "FLUX-DOUBLE-ONLY": "%default=0,base=1,double=1", "FLUX-SINGLE-ONLY": "%default=0,base=1,single=1",
    "FLUX-DBL-FRONT": "%default=0,base=1,double0-5=1", "FLUX-DBL-MID": "%default=0,base=1,double6-12=1",
    "FLUX-DBL-TAIL": "%default=0,base=1,double13-18=1",
}
"""DiT presets, written as ``%`` specs so they fit every depth. ``FLUX-DBL-FRONT/MID/TAIL`` are
Inspire-Pack's names with their intent (thirds of Flux.1's 19 double blocks on, singles off), not
its positional values."""

_DIT_ITEM = re.compile(r"^(default|base|double|single|joint|layers)(\d+)?(?:-(\d+))?=(.+)$")


def dit_layout(family: str, blocks: Mapping[str, int] | None = None) -> tuple[str, ...]:
    """Block IDs of a DiT family, in vector order: BASE, then each group's ``kind N`` from 0.

    ``blocks``: {kind: count} of the actual model (default: ``DEFAULT_BLOCKS[family]``)."""
    counts = dict(blocks) if blocks else dict(DEFAULT_BLOCKS.get(family, {}))
    bad = [k for k in counts if k not in DIT_KINDS]
    if bad or not counts:
        raise LoKrConfigError(f"block weights for {family}: block groups {sorted(counts) or 'none'} are not "
                              f"known; expected counts of {', '.join(DIT_KINDS)}")
    return ("BASE",) + tuple(f"{k} {i}" for k in DIT_KINDS for i in range(int(counts.get(k, 0))))


def _dit_percent(spec: str, family: str, layout: tuple[str, ...]) -> dict[str, float]:
    parsed, values = _percent_start(spec, _DIT_ITEM, f" for {family}; expected default=V, base=V, double=V, "
                                    "single=V, joint=V, layers=V or doubleN=V / singleN-M=V", layout)
    for g, lo, hi, v in parsed:
        if g in ("default", "base"):
            continue
        value = _number(v, f"{g}{lo or ''}")
        ids = [b for b in layout if b.startswith(g + " ")]
        if not ids:
            raise LoKrConfigError(f"block weights: {family} has no {g} blocks; its groups are "
                                  f"{', '.join(sorted({b.split(' ')[0] for b in layout if b != 'BASE'}))}")
        if lo is not None:
            wanted = [f"{g} {n}" for n in range(int(lo), int(hi if hi is not None else lo) + 1)]
            missing = [w for w in wanted if w not in values]
            if missing:
                raise LoKrConfigError(f"block weights: {g}{lo}{'-' + hi if hi else ''} names {missing[0]}, which this "
                                      f"{family} model does not have; {g} blocks are {ids[0]}..{ids[-1]}")
            ids = wanted
        for bid in ids:
            values[bid] = value
    return values


def _parse_dit(text: str, family: str, blocks: Mapping[str, int] | None, a: float, b: float,
               seed: int) -> dict[str, float]:
    layout = dit_layout(family, blocks)
    groups = ("BASE",) + tuple(k for k in DIT_KINDS if any(x.startswith(k + " ") for x in layout))
    text = DIT_PRESETS.get(text, text)
    if not text.startswith("%") and ":" in text:
        text = text.split(":", 1)[1].strip()
        text = DIT_PRESETS.get(text, text)
    if text.startswith("%"):
        return _dit_percent(text, family, layout)
    tokens = [t.strip() for t in text.split(",")]
    if tokens and tokens[-1] == "":
        tokens.pop()
    rng = random.Random(seed)
    if len(tokens) == len(layout):
        return dict(zip(layout, (_token(t, i, a, b, rng) for i, t in enumerate(tokens))))
    if len(tokens) == len(groups):
        per_group = dict(zip(groups, (_token(t, i, a, b, rng) for i, t in enumerate(tokens))))
        return {bid: per_group[bid.split(" ")[0]] for bid in layout}
    counts = ", ".join(f"{k} 0..{sum(1 for x in layout if x.startswith(k + ' ')) - 1}" for k in groups[1:])
    raise LoKrConfigError(f"block weights for {family}: {len(tokens)} values given; expected {len(layout)} values "
                          f"(BASE, {counts}) or {len(groups)} values ({', '.join(groups)}), a % spec "
                          f"(%default=1,base=1,{groups[1]}=0.5) or a preset ({', '.join(DIT_PRESETS)})")


def parse_block_weights(spec: str, family: str, *, a: float = 4.0, b: float = 1.0, seed: int = 0,
                        inverse: bool = False, blocks: Mapping[str, int] | None = None) -> dict[str, float]:
    """Parse a block-weight vector, preset name or ``%`` spec for ``family`` ("sd1", "sd2", "sdxl",
    or a DiT family: "flux", "sd3", "zimage", "wan", ...; a ``/``-joined verdict uses its first).

    Returns {block ID: multiplier} for every block of the family's full layout, in layout order.
    ``inverse`` gives 1 - value for every block (Inspire's "inverse"). ``blocks``: {kind: count} of
    the model for DiT families (default: the family's best-known model). Raises LoKrConfigError on
    an unknown token, a non-finite number or a length other than the family's layouts (naming the
    expected IDs); nothing else is affected.
    """
    dit = str(family).split("/")[0].lower()
    if dit in DIT_LABELS:
        text = (spec or "").strip()
        if not text:
            raise LoKrConfigError(f"block weights for {dit}: the vector is empty; expected values BASE first, "
                                  f"a % spec or a preset ({', '.join(DIT_PRESETS)})")
        if text in PRESETS:
            raise LoKrConfigError(f"block weights: preset {text!r} is for SD UNets (expected one of sd1, sd2, sdxl as "
                                  f"the family); for {dit} use a DiT preset ({', '.join(DIT_PRESETS)}) or a vector")
        values = _parse_dit(text, dit, blocks, a, b, seed)
        return {k: 1.0 - v for k, v in values.items()} if inverse else values
    fam = _family(family)
    short, full = LAYOUTS[fam]
    text = (spec or "").strip()
    if not text:
        raise LoKrConfigError(f"block weights: the vector is empty; {_expected(fam)}, or a preset name "
                              f"({', '.join(n for n in PRESETS if n.startswith('SDXL' if fam == 'sdxl' else 'SD-'))})")
    text = PRESETS.get(text, text)
    if not text.startswith("%") and ":" in text:
        text = text.split(":", 1)[1].strip()
        text = PRESETS.get(text, text)
    if text.startswith("%"):
        values = _percent(text, fam)
    else:
        tokens = [t.strip() for t in text.split(",")]
        if tokens and tokens[-1] == "":
            tokens.pop()
        if len(tokens) not in (len(short), len(full)):
            inspire = {"sd1": 27, "sd2": 27, "sdxl": 21}[fam]
            hint = (f" ({inspire} values is Inspire-Pack's LyCORIS layout with IN00 missing and MID split in "
                    f"three; write the {len(full)}-value layout, or use the *-LyC-* preset names)"
                    if len(tokens) == inspire else "")
            raise LoKrConfigError(f"block weights for {fam}: {len(tokens)} values given; {_expected(fam)}{hint}")
        rng = random.Random(seed)
        numbers = [_token(t, i, a, b, rng) for i, t in enumerate(tokens)]
        ids = short if len(tokens) == len(short) else full
        values = {bid: 1.0 for bid in full}
        values.update(zip(ids, numbers))
    if inverse:
        values = {k: 1.0 - v for k, v in values.items()}
    return values


def block_multiplier(block_values: Mapping[str, float], key: str, layout: UNetLayout | None = None,
                     family: str | None = None) -> float:
    """The multiplier of the block holding weight ``key`` (any naming style; see ``keymap.blocks``).

    ``family``: the model's family when known; else a DiT vector's groups tell how diffusers'
    ``transformer_blocks N`` reads (double -> Flux-like, joint -> SD3, else layers). Raises
    LoKrKeyError when the key's block is not in ``block_values`` (a vector of another family).
    """
    if any(" " in k for k in block_values):
        if family is None:
            family = "flux" if "double 0" in block_values else "sd3" if "joint 0" in block_values else "wan"
        bid = block_id(key, family, layout)
    else:
        bid = ldm_block_of(key, layout)
    if bid not in block_values:
        raise LoKrKeyError(f"block weights: key {key!r} is in block {bid}, which the vector does not have "
                           f"(it has {', '.join(block_values)}); was it parsed for another model family?")
    return float(block_values[bid])


def format_block_weights(block_values: Mapping[str, float]) -> str:
    """``BASE=1, IN00=1, ..., OUT11=0.5`` (DiT: ``BASE=1, double 0=1, ..., single 37=0``): the
    populated vector, for display."""
    return ", ".join(f"{k}={v:g}" for k, v in block_values.items())
