"""LDM block IDs of UNet weights: ``BASE``, ``IN00``..``IN11``, ``MID``, ``OUT00``..``OUT11``.

The IDs follow the LDM numbering (``input_blocks.N``, ``middle_block``, ``output_blocks.N``; conv_in
is ``input_blocks.0.0`` = IN00) that sd-webui-lora-block-weight and Inspire-Pack use. Everything
outside those blocks (time/label embeddings, conv_norm_out, conv_out, text encoders) is BASE.
:func:`block_id` adds the transformer (DiT) groups (``double N``, ``single N``, ``joint N``,
``layers N``) for every model family.
"""
from __future__ import annotations

import re

from ..base.errors import LoKrKeyError
from .ldm_unet import UNetLayout

_LDM = re.compile(r"(?:^|[._])(input_blocks|output_blocks)[._](\d+)(?:$|[._])|(?:^|[._])middle_block(?:$|[._])")
_DIFF = re.compile(r"(?:^|[._])(down_blocks|up_blocks)[._](\d+)[._](resnets|attentions|downsamplers|upsamplers)[._](\d+)")
_MID = re.compile(r"(?:^|[._])mid_block(?:$|[._])")
_CONV_IN = re.compile(r"(?:^|[._])conv_in(?:$|[._])")


def ldm_block_of(key: str, layout: UNetLayout | None = None) -> str:
    """Block ID of a weight key or module name in any style.

    LDM keys (``model.diffusion_model.input_blocks.4.1.proj_in.weight``, ComfyUI
    ``diffusion_model.output_blocks.3...``, kohya ``lora_unet_input_blocks_4_1_...``) need nothing
    more; diffusers names (``down_blocks.1.attentions.0...``, ``lora_unet_down_blocks_1_...``) need the
    UNet ``layout`` (``keymap.ldm_unet.layout_from_config``) to be numbered, and raise LoKrKeyError
    without it. Anything else is ``BASE``.
    """
    m = _LDM.search(key)
    if m:
        if m.group(1) is None:
            return "MID"
        return ("IN" if m.group(1) == "input_blocks" else "OUT") + f"{int(m.group(2)):02d}"
    m = _DIFF.search(key)
    if m or _MID.search(key):
        if _MID.search(key) and not m:
            return "MID"
        if layout is None:
            raise LoKrKeyError(f"key {key!r}: a diffusers UNet name needs the UNet layout (config) to give its "
                               "LDM block ID; expected layout=keymap.ldm_unet.layout_from_config(unet.config)")
        kind, b, part, j = m.group(1), int(m.group(2)), m.group(3), int(m.group(4))
        if b >= layout.levels:
            raise LoKrKeyError(f"key {key!r}: level {b} does not exist; the UNet layout has {layout.levels} levels")
        if kind == "down_blocks":
            i = 1 + sum(n + 1 for n in layout.layers[:b]) + (layout.layers[b] if part == "downsamplers" else j)
            return f"IN{i:02d}"
        ups = tuple(reversed(layout.layers))
        i = sum(n + 1 for n in ups[:b]) + (ups[b] if part == "upsamplers" else j)
        return f"OUT{i:02d}"
    if _CONV_IN.search(key):
        return "IN00"
    return "BASE"


def block_id(key: str, family: str | None = None, layout: UNetLayout | None = None) -> str:
    """Block of a weight key or module name for any model: LDM IDs for SD UNets (``IN04``, ``MID``,
    :func:`ldm_block_of`), DiT groups for transformers (``double 3``, ``single 12``, ``joint 5``,
    ``layers 7``: :func:`lokr_core.keymap.family_signatures.block_of`), else ``BASE``.

    ``family``: the model's family id or verdict (``"sdxl"``, ``"flux"``, ``"flux/chroma"``, ...)
    when known: an SD family reads only LDM IDs, a DiT family only DiT groups; None tries LDM first.
    A diffusers UNet name without ``layout`` is BASE here (use :func:`ldm_block_of` to get the error).
    """
    from .family_signatures import LABELS, block_of

    fams = set(family.split("/")) if family else set()
    if not fams & set(LABELS):
        try:
            ldm = ldm_block_of(key, layout)
        except LoKrKeyError:
            ldm = "BASE"
        if ldm != "BASE" or fams:
            return ldm
    return block_of(key, family)
