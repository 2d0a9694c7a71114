"""``lokr info FILE [--json] [--against CKPT]``: what a LoKr file holds (:mod:`lokr_core.ops.report`)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import add_scale_rule


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("info", help="show what a LoKr file holds",
                              description="Show modules per block, layouts, ranks, scales, DoRA, training "
                                          "metadata and warnings of a LoKr file; with --against, which modules "
                                          "match a checkpoint.")
    p.add_argument("file", help="LoKr file (.safetensors, kohya/LyCORIS) or PEFT adapter folder")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--against", metavar="CKPT", help="checkpoint (.safetensors) or diffusers folder to resolve against")
    p.add_argument("--top-tags", type=int, default=20, metavar="N", help="training tags to show (default 20)")
    add_scale_rule(p)
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..formats.checkpoint import checkpoint_shapes
    from ..formats.io import load_lokr
    from ..ops.report import format_report, summarize

    weights = load_lokr(args.file)
    target = checkpoint_shapes(args.against) if args.against else None
    summary = summarize(weights, target, scale_rule=args.scale_rule, top_n=args.top_tags)
    if args.json:
        from ..base.jsonable import jsonable

        print(json.dumps(jsonable(summary), indent=2))
    else:
        print(format_report(summary))
    if summary.get("warnings"):
        print(f"lokr info: {len(summary['warnings'])} warning(s), see above", file=sys.stderr)
    return 0
