"""``lokr convert IN OUT --to lycoris|peft``: rewrite a LoKr file in the other format (same ΔW).

LyCORIS/kohya -> PEFT needs the dotted module path of every module: the names are resolved against
a full-size model of the file's family (``--family``, default: guessed from the file), built on the
``meta`` device from its config (no weights, no download).
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from ..base.errors import LoKrKeyError, where


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("convert", help="convert a LoKr file between LyCORIS/kohya and PEFT formats",
                              description="Read a LoKr file (LyCORIS/kohya .safetensors or PEFT adapter folder) "
                                          "and write it in the chosen format; the applied ΔW is preserved.")
    p.add_argument("input", help="LoKr file or PEFT adapter folder")
    p.add_argument("output", help="output .safetensors (lycoris) or folder (peft)")
    p.add_argument("--to", required=True, choices=["lycoris", "peft"], help="output format")
    p.add_argument("--family", choices=["sd1", "sd2", "sdxl"],
                   help="model family for LyCORIS -> PEFT module paths (default: guessed from the file)")
    p.add_argument("--against", metavar="MODEL",
                   help="LyCORIS -> PEFT: take module paths from this diffusers folder or checkpoint instead of "
                        "a full-size model of --family")
    p.set_defaults(run=run)
    return p


def peft_name_map(weights: Any, family: str | None, against: str | None = None,
                  ) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """({file module: dotted module path}, {file module: base weight shape}) for a LyCORIS file.

    Paths come from resolving the names against ``against`` (a diffusers folder: keys ``unet.*``,
    ``text_encoder.*``) or else ``family``'s full-size diffusers layout (default family: guessed from
    the file), by :func:`lokr_core.formats.peft_paths.peft_module_paths`: a file touching only the
    UNet gets plain UNet paths; otherwise paths keep their ``unet.`` / ``text_encoder.`` prefix (one
    PEFT adapter per part). Raises LoKrKeyError when the family is unknown or a module does not resolve.
    """
    from ..formats.peft_paths import peft_module_paths

    if against:
        from ..formats.checkpoint import checkpoint_shapes

        target, what = checkpoint_shapes(against), repr(against)
    else:
        from ..keymap.families import family_target
        from ..keymap.family import model_family

        family = family or model_family(list(weights.module_names), dict(weights.modules))
        family = "sd1" if family == "sd1/sd2" else family
        if family not in ("sd1", "sd2", "sdxl"):
            raise LoKrKeyError(f"{where(weights.source, None)}cannot tell the model family of this file; expected "
                               "--family sd1, sd2 or sdxl, or --against MODEL")
        target, what = family_target(family, "diffusers"), f"a {family} model"
    return peft_module_paths(weights, target, what=what,
                             hint="expected --family / --against to name the model this LoKr was trained for")


def run(args: argparse.Namespace) -> int:
    from ..formats.io import load_lokr, save_lokr

    weights = load_lokr(args.input)
    weights.validate_all()  # read every module before writing anything
    kwargs: dict[str, Any] = {}
    if args.to == "peft" and weights.format != "peft":
        kwargs["name_map"], kwargs["shapes"] = peft_name_map(weights, args.family, args.against)
    out = save_lokr(weights, args.output, format=args.to, **kwargs)
    print(f"wrote {out} ({len(weights.module_names)} LoKr modules, format {args.to})")
    others = getattr(weights, "other_modules", {}) or {}
    if others and args.to == "peft":
        print(f"lokr convert: {len(others)} non-LoKr module(s) were not converted", file=sys.stderr)
    return 0
