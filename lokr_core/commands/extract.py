"""``lokr extract BASE TUNED -o OUT --rank R``: make a LoKr from the difference of two checkpoints."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import tqdm_progress


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "extract", help="extract a LoKr from two checkpoints (nearest Kronecker product)",
        description="Fit a LoKr to the weight difference TUNED - BASE of every UNet / text-encoder weight "
                    "(nearest Kronecker product, then W2 truncated to the rank; Tucker for 3x3 convs) and "
                    "write it as a LyCORIS safetensors file. Prints, per module, the relative error "
                    "||dW - dW_lokr|| / ||dW|| and that of a LoRA with the same parameter count.")
    p.add_argument("base", help="base checkpoint: LDM .safetensors file or diffusers folder")
    p.add_argument("tuned", help="fine-tuned checkpoint of the same architecture")
    p.add_argument("-o", "--output", required=True, help="output LoKr .safetensors (must not be an input)")
    p.add_argument("--rank", type=int, required=True, help="LoKr rank (inner dim of the split W2)")
    p.add_argument("--factor", type=int, default=-1, help="factorization limit (-1: most balanced, default)")
    p.add_argument("--decompose-both", action="store_true", help="split W1 too (when rank < max(W1 dims)/2)")
    p.add_argument("--conv", choices=["tucker", "flat", "skip"], default="tucker",
                   help="3x3 convs: Tucker W2 (default), flat split W2, or not extracted")
    p.add_argument("--targets", nargs="+", metavar="REGEX",
                   help="only modules whose kohya name or checkpoint key matches one of these regexes")
    p.add_argument("--min-rel-change", type=float, default=1e-6,
                   help="skip weights with ||dW||/||W|| at or below this (default 1e-6)")
    p.add_argument("--device", help="where to compute (cpu, cuda, cuda:1; default: cuda if available, else cpu)")
    p.add_argument("--save-dtype", choices=["fp16", "bf16", "fp32"], default="fp16", help="factor dtype in the file")
    p.add_argument("--no-lora-compare", action="store_true", help="skip the equal-size LoRA comparison (faster)")
    p.add_argument("--no-hash", action="store_true", help="do not store the inputs' sha256 in the metadata (faster)")
    p.add_argument("--report-json", metavar="PATH", help="also write the full report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..base.atomic import atomic_write_text, check_output
    from ..ops.extract import extract_lokr, format_extract_report

    inputs = [args.base, args.tuned]
    if args.report_json:
        check_output(args.report_json, inputs + [args.output])
    with tqdm_progress("extracting", unit="weight", enabled=not args.no_progress) as progress:
        _, report = extract_lokr(args.base, args.tuned, args.rank, factor=args.factor,
                                 decompose_both=args.decompose_both, conv=args.conv, targets=args.targets,
                                 device=args.device, progress=progress, min_rel_change=args.min_rel_change,
                                 compare_lora=not args.no_lora_compare, out=args.output,
                                 save_dtype=args.save_dtype, hash_sources=not args.no_hash)
    print(format_extract_report(report, limit=None), file=sys.stderr)
    if args.report_json:
        atomic_write_text(json.dumps(report, indent=1), args.report_json, inputs=inputs)
    t = report["totals"]
    print(f"wrote {args.output} ({t['modules']} modules, relative error {t['rel_error']:.4f})")
    return 0
