"""Layer 6, the top: the ``lokr`` command line (:mod:`.cli`) and its subcommands, one module each.

Each subcommand module (``info``, ``merge``, ``convert``, ``demo``, ``extract``, ``resize``) has
``add_parser(subparsers)`` and ``run(args)``; :mod:`.demo_run` is the embedded end-to-end demo.
Shared helpers for them live here: :func:`parse_scale_rule`, :func:`tqdm_progress`. Nothing in
the library imports from this layer.
"""
from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from typing import Iterator

from ..base.progress import BarProgress


def parse_scale_rule(text: str) -> str | float:
    """``--scale-rule`` value: a rule name (``file``, ``peft``, ``metadata-dim``, ``none``) or a number."""
    try:
        return float(text)
    except ValueError:
        return text


def add_scale_rule(parser: argparse.ArgumentParser) -> None:
    """Add ``--scale-rule`` (default ``file``) to ``parser``."""
    parser.add_argument("--scale-rule", default="file", type=parse_scale_rule, metavar="RULE",
                        help="how alpha scales each module: file (the file's convention, default), peft "
                             "(alpha/r), metadata-dim (alpha/ss_network_dim for full/full modules), none (1), "
                             "or a number")


@contextmanager
def tqdm_progress(desc: str, unit: str = "tensor", enabled: bool = True) -> Iterator[BarProgress]:
    """A ``progress(done, total)`` callable drawing a tqdm bar on stderr (closed on exit)."""

    def open_bar(total: int) -> object:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False)

    progress = BarProgress(open_bar, enabled)
    try:
        yield progress
    finally:
        progress.close()
