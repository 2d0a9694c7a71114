"""``lokr info FILE [--json] [--against CKPT]``: what a LoKr file holds (:mod:`lokr_core.ops.report`)
and what the files beside it say (:mod:`lokr_core.formats.sidecar`: trigger words, base model,
preview, source link; ``sidecar`` in the JSON).

``lokr info --stale DIR [--remove] [--json]``: the temporary files killed writes left in ``DIR``
(:mod:`lokr_core.base.tempfiles`), and with ``--remove`` removes those whose writer is gone."""
from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from . import add_scale_rule

if TYPE_CHECKING:
    from ..formats.sidecar import SidecarInfo


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("info", help="show what a LoKr file holds",
                              description="Show modules per block, layouts, ranks, scales, DoRA, training "
                                          "metadata and warnings of a LoKr file; with --against, which modules "
                                          "match a checkpoint.")
    p.add_argument("file", nargs="?", help="LoKr file (.safetensors, kohya/LyCORIS) or PEFT adapter folder")
    p.add_argument("--stale", metavar="DIR", help="instead of a file: list the temporary files that killed writes "
                                                  "left in DIR (.<name>.lokr-<pid>-<hex>.tmp)")
    p.add_argument("--remove", action="store_true", help="with --stale: remove the ones whose writer is gone")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--against", metavar="CKPT", help="checkpoint (.safetensors) or diffusers folder to resolve against")
    p.add_argument("--top-tags", type=int, default=20, metavar="N", help="training tags to show (default 20)")
    add_scale_rule(p)
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..formats.checkpoint import checkpoint_shapes
    from ..formats.io import load_lokr
    from ..formats.sidecar import read_sidecar
    from ..ops.report import format_report, summarize

    if args.stale is not None or args.remove:
        if args.file is not None or args.against or args.stale is None:
            print("lokr info: error: --stale DIR takes no FILE / --against; --remove needs --stale DIR", file=sys.stderr)
            return 1
        return run_stale(args.stale, remove=args.remove, as_json=args.json)
    if args.file is None:
        print("lokr info: error: give a FILE (or --stale DIR)", file=sys.stderr)
        return 1
    weights = load_lokr(args.file)
    target = checkpoint_shapes(args.against) if args.against else None
    summary = summarize(weights, target, scale_rule=args.scale_rule, top_n=args.top_tags)
    side = read_sidecar(args.file, dict(getattr(weights, "metadata", {}) or {}), top_n=args.top_tags)
    if args.json:
        from ..base.jsonable import jsonable

        print(json.dumps(jsonable({**summary, "sidecar": side.as_dict()}), indent=2))
    else:
        print(format_report(summary))
        for line in sidecar_lines(side):
            print(line)
    if summary.get("warnings"):
        print(f"lokr info: {len(summary['warnings'])} warning(s), see above", file=sys.stderr)
    return 0


def run_stale(folder: str, *, remove: bool, as_json: bool) -> int:
    """``lokr info --stale DIR``: list the project's temp files in ``folder`` (stale ones, and those
    still being written, which are never removed); ``remove``: remove the stale ones. Returns 0."""
    from pathlib import Path

    from ..base.errors import LoKrFormatError, where
    from ..base.tempfiles import age_text, list_temps, remove_temp

    if not Path(folder).is_dir():
        raise LoKrFormatError(f"{where(folder, None)}is not a folder; expected the folder to look for temporary files in")
    temps = list_temps(folder)
    ages = {t.path: age_text(t.path) for t in temps}
    removed = {str(t.path) for t in temps if t.stale and remove and remove_temp(t)}
    rows = [{"path": str(t.path), "target": t.target, "pid": t.pid, "bytes": t.size, "folder": t.is_dir,
             "stale": t.stale, "removed": str(t.path) in removed} for t in temps]
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    stale = [t for t in temps if t.stale]
    if not temps:
        print(f"No temporary files of comfyui-lokr in {folder}.")
    for t in temps:
        state = ("removed" if str(t.path) in removed else "stale: writer gone") if t.stale else \
            f"being written by running process {t.pid}: kept"
        print(f"{t.path.name}  {t.size / 2**20:.1f} MiB  for {t.target!r}  {ages[t.path]} old  ({state})")
    if stale and not remove:
        mib = sum(t.size for t in stale) / 2**20
        print(f"{len(stale)} stale temporary file(s), {mib:.1f} MiB; remove them with: lokr info --stale {folder} --remove")
    return 0


def sidecar_lines(side: SidecarInfo) -> list[str]:
    """The text lines of a :class:`~lokr_core.formats.sidecar.SidecarInfo` for ``lokr info``:
    trigger words (with where they came from), base model, title, preferred weight, preview,
    source link, notes' first line, and each skipped sidecar or ignored value as ``NOTE:``; facts
    not found print nothing."""
    lines: list[str] = []
    if side.trigger_words:
        lines.append("Trigger words (all sources): " + ", ".join(side.trigger_words)
                     + f"  (from {', '.join(side.origins('trigger_words'))})")
    labels = (("base_model", "Base model:"), ("title", "Title:"), ("preferred_weight", "Preferred weight:"),
              ("preview", "Preview:"), ("source_url", "Source:"))
    for key, label in labels:
        value = getattr(side, key)
        if value is not None:
            lines.append(f"{label:<10} {value}  (from {', '.join(side.origins(key))})")
    if side.thumbnail is not None and side.preview is None:
        lines.append("Preview:   embedded thumbnail (header modelspec.thumbnail)")
    if side.notes:
        first = side.notes.splitlines()[0]
        lines.append(f"Notes:     {first[:200]}" + (" ..." if len(first) > 200 or "\n" in side.notes else ""))
    lines += [f"NOTE: sidecar: {p}" for p in side.problems]
    return lines
