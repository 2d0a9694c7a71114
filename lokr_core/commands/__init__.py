"""Subcommands of the ``lokr`` command line, one module each (``add_parser(subparsers)``, ``run(args)``).

Shared helpers for them live here: :func:`parse_scale_rule`, :func:`tqdm_progress`.
"""
from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from typing import Callable, Iterator


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
def tqdm_progress(desc: str, unit: str = "tensor", enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A ``progress(done, total)`` callable drawing a tqdm bar on stderr (closed on exit)."""
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if not enabled:
            return
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False)
        bar.update(done - bar.n)

    try:
        yield progress
    finally:
        if bar is not None:
            bar.close()
