"""``lokr merge CKPT LOKR[:STRENGTH]... -o OUT``: bake LoKr files into a checkpoint (streamed).

Prints the checkpoint's and each file's model family, modules merged, unmatched and skipped."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from . import add_scale_rule, tqdm_progress


def parse_lokr_arg(text: str) -> tuple[str, float | str]:
    """``path[:strength]`` -> (path, strength). The strength is the part after the last ``:`` when it
    parses as a number (so ``C:\\x.safetensors`` stays a path); default 1.0. A non-finite strength
    is returned as is and refused by the merge (exit code 2)."""
    head, sep, tail = text.rpartition(":")
    if sep and head:
        try:
            return head, float(tail)
        except ValueError:
            pass
    return text, 1.0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("merge", help="merge LoKr files into a checkpoint",
                              description="Merge one or more LoKr files into a checkpoint (SD LDM single-file "
                                          ".safetensors, a DiT checkpoint as ComfyUI saves it or a diffusion-model-only "
                                          "file: Flux, SD3, Z-Image / Lumina 2, Qwen-Image, Wan, ...; or a diffusers "
                                          "folder), tensor by tensor, and write a new file atomically. Nothing is "
                                          "written if any LoKr does not fit the checkpoint.")
    p.add_argument("checkpoint", help="input checkpoint (.safetensors) or diffusers folder")
    p.add_argument("lokrs", nargs="+", metavar="LOKR[:STRENGTH]", help="LoKr file, optionally with :strength (default 1)")
    p.add_argument("-o", "--output", required=True, help="output .safetensors (or new folder for diffusers input)")
    p.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], help="output dtype of float tensors (default: keep)")
    p.add_argument("--device", help="where to compute (default: cuda if available, else cpu)")
    p.add_argument("--dora-mode", choices=["interpolate", "lycoris"], default="interpolate",
                   help="DoRA strength rule (default interpolate: 0 -> W, 1 -> W_dora)")
    p.add_argument("--strict", action="store_true",
                   help="refuse the merge (nothing written) when any module is unmatched or not applicable")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_scale_rule(p)
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..ops.merge import merge_checkpoint

    pairs = [parse_lokr_arg(s) for s in args.lokrs]
    with tqdm_progress("merging", enabled=not args.no_progress) as progress:
        result = merge_checkpoint(args.checkpoint, pairs, args.output, dtype=args.dtype, device=args.device,
                                  progress=progress, scale_rule=args.scale_rule, dora_mode=args.dora_mode,
                                  strict=args.strict)
    from ..keymap.family import FAMILY_LABELS

    def label_of(family: str | None) -> str:
        return FAMILY_LABELS.get(family or "", "unknown")

    print(f"checkpoint: {label_of(result.checkpoint_family)}", file=sys.stderr)
    for label, matched in result.matched.items():
        unmatched = result.unmatched.get(label, [])
        skipped = result.skipped.get(label, {})
        print(f"{label} ({label_of(result.families.get(label))}): {len(matched)} modules merged"
              + (f", {len(unmatched)} unmatched (skipped)" if unmatched else "")
              + (f", {len(skipped)} not applicable (skipped)" if skipped else ""), file=sys.stderr)
        for name in unmatched[:10]:
            print(f"  unmatched: {name}", file=sys.stderr)
        for name, why in list(skipped.items())[:10]:
            print(f"  skipped: {name}: {why}", file=sys.stderr)
    print(f"wrote {result.out} ({result.merged_tensors} of {result.tensors} tensors changed, device {result.device}, "
          f"{result.seconds:.1f} s)")
    return 0
