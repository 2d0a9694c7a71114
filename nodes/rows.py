"""The LoKr Power Loader's ``rows`` value: parsed and checked, nothing else.

The widget value is JSON text of a list of row objects::

    [{"on": true, "file": "sub/name.safetensors", "strength_model": 1.0, "strength_clip": 1.0,
      "linked": true, "blocks": ""}]

A list given in a prompt's API format is str()'d by ComfyUI (a STRING input), so a Python literal
of the same list is read too (``ast.literal_eval``). Keys: ``file`` (required, a name in the
``loras`` folders), ``on`` (default true), ``strength_model`` (default 1), ``strength_clip``
(default = ``strength_model``), ``linked`` (UI hint only, default true), ``blocks`` ("" = none, else a
block-weight preset name or vector). Any other key, or a value of the wrong type, is an error naming
the row (1-based) and the key.
"""
from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass
from typing import Any

from ..lokr_core.base.errors import LoKrError, LoKrFormatError
from .common import lokr_path

KEYS = ("on", "file", "strength_model", "strength_clip", "linked", "blocks")


@dataclass(frozen=True)
class Row:
    """One row: ``index`` = its 0-based position in the list (off rows included); strengths are floats."""

    index: int
    file: str
    on: bool = True
    strength_model: float = 1.0
    strength_clip: float = 1.0
    linked: bool = True
    blocks: str = ""

    def entry(self) -> tuple:
        """``(file, strength_model, strength_clip, blocks)``: the row as a ``nodes.stack`` entry."""
        return (self.file, self.strength_model, self.strength_clip, self.blocks)


def _decode(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip() or "[]"
    try:
        return json.loads(text)
    except ValueError as json_error:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise LoKrFormatError(f"rows: not JSON ({json_error}); expected a JSON list of row objects such as "
                                  '[{"on": true, "file": "name.safetensors", "strength_model": 1.0}]') from None


def _bool(n: int, key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise LoKrFormatError(f"rows: row {n}: {key!r} is {v!r}; expected true or false")
    return v


def _strength(n: int, key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise LoKrFormatError(f"rows: row {n}: {key!r} is {v!r}; expected a finite number")
    return float(v)


def _row(i: int, obj: Any) -> Row:
    n = i + 1
    if not isinstance(obj, dict):
        raise LoKrFormatError(f"rows: row {n} is {obj!r}; expected an object with a 'file' key")
    unknown = [k for k in obj if k not in KEYS]
    if unknown:
        raise LoKrFormatError(f"rows: row {n}: unknown key {unknown[0]!r}; expected only {', '.join(KEYS)}")
    file = obj.get("file")
    if not isinstance(file, str) or not file.strip():
        raise LoKrFormatError(f"rows: row {n}: 'file' is {file!r}; expected a file name from the 'loras' folders")
    sm = _strength(n, "strength_model", obj.get("strength_model", 1.0))
    sc = _strength(n, "strength_clip", obj["strength_clip"]) if "strength_clip" in obj else sm
    blocks = obj.get("blocks", "")
    if blocks is None:
        blocks = ""
    if not isinstance(blocks, str):
        raise LoKrFormatError(f"rows: row {n}: 'blocks' is {blocks!r}; expected \"\" or a block-weight preset "
                              "name or vector text")
    return Row(index=i, file=file, on=_bool(n, "on", obj.get("on", True)), strength_model=sm, strength_clip=sc,
               linked=_bool(n, "linked", obj.get("linked", True)), blocks=blocks.strip())


def parse_rows(value: Any) -> list[Row]:
    """Every row of a ``rows`` value (JSON text, a Python literal, or an already decoded list).

    A single row object is read as a one-row list. Raises LoKrFormatError naming the row and key.
    """
    data = _decode(value)
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, (list, tuple)):
        raise LoKrFormatError(f"rows: is a {type(data).__name__}; expected a list of row objects")
    return [_row(i, obj) for i, obj in enumerate(data)]


def on_rows(rows: list[Row]) -> list[Row]:
    """The rows that are on, in order."""
    return [r for r in rows if r.on]


def check_files(rows: list[Row]) -> None:
    """LoKrFormatError naming the row and file when an on row's file is not in the ``loras`` folders."""
    for r in on_rows(rows):
        try:
            lokr_path(r.file)
        except LoKrError as e:
            raise LoKrFormatError(f"rows: row {r.index + 1} is on but its file is missing: {e}") from None


def rows_error(value: Any) -> str | None:
    """The message for a bad ``rows`` value (syntax, keys, types, missing on-row file), else None."""
    try:
        check_files(parse_rows(value))
    except LoKrError as e:
        return str(e)
    return None
