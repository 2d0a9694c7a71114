"""``lokr resize IN -o OUT --rank R``: lower the rank of a LoKr file's split factors (SVD)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import tqdm_progress


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "resize", help="lower the rank of a LoKr file",
        description="Re-fit the split factors (W2, and W1 when split) of every module at a lower rank by "
                    "truncated SVD (Tucker: HOSVD), keeping dW as close as possible; full factors and modules "
                    "already at or below the rank are copied. alpha is rescaled so the scale is unchanged.")
    p.add_argument("input", help="LoKr .safetensors file (LyCORIS / kohya or PEFT)")
    p.add_argument("-o", "--output", required=True, help="output .safetensors (must not be the input)")
    p.add_argument("--rank", type=int, required=True, help="new rank")
    p.add_argument("--save-dtype", choices=["fp16", "bf16", "fp32"], default=None,
                   help="factor dtype in the file (default: keep each factor's dtype)")
    p.add_argument("--report-json", metavar="PATH", help="also write the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..base.atomic import atomic_write_text, check_output
    from ..ops.extract import format_extract_report, resize_lokr, save_extracted

    check_output(args.output, [args.input])
    if args.report_json:
        check_output(args.report_json, [args.input, args.output])
    with tqdm_progress("resizing", unit="module", enabled=not args.no_progress) as progress:
        weights, report = resize_lokr(args.input, args.rank, progress=progress)
    save_extracted(weights, args.output, dtype=args.save_dtype, inputs=[args.input])
    print(format_extract_report(report), file=sys.stderr)
    if args.report_json:
        atomic_write_text(json.dumps(report, indent=1), args.report_json, inputs=[args.input])
    t = report["totals"]
    print(f"wrote {args.output} ({t['modules']} modules resized to rank {args.rank}, {t['skipped']} copied)")
    return 0
