"""``lokr demo``: the embedded end-to-end run (tiny random SD-shaped models, no downloads)."""
from __future__ import annotations

import argparse
import json
import tempfile


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo", help="run the embedded demo: inject, save (PEFT + LyCORIS), reload, apply, merge, report",
        description="Builds a tiny SD-shaped UNet and CLIP text encoder with random weights, injects LoKr, "
                    "saves it in both formats, reloads, applies and merges it, and prints what it measured.")
    parser.add_argument("--out", default=None, help="folder for the files (default: a temporary folder)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON at the end")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from .demo_run import run_demo

    if args.out is None:
        with tempfile.TemporaryDirectory(prefix="lokr-demo-") as tmp:
            figures = run_demo(tmp, seed=args.seed)
    else:
        figures = run_demo(args.out, seed=args.seed)
    print(json.dumps(figures, indent=2) if args.json else
          f"demo done in {figures['seconds']} s: ΔW PEFT vs LyCORIS {figures['max_rel_delta_peft_vs_lycoris']:.1e}, "
          f"merge {figures['max_rel_merge_error']:.1e}, bypass {figures['rel_output_error_bypass']:.1e}, "
          f"checkpoint {figures['checkpoint_rel_error']:.1e} (relative errors)")
    bad = [k for k in ("max_rel_delta_peft_vs_lycoris", "max_rel_merge_error", "rel_output_error_bypass",
                       "checkpoint_rel_error") if not figures[k] < 1e-4]
    if bad:
        print(f"demo: these figures exceed 1e-4: {bad}")
        return 3
    return 0
