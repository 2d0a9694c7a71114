"""Checkpoints as files: their headers and their parts.

A checkpoint is an LDM single-file ``.safetensors`` or a diffusers folder (``unet/``,
``text_encoder/``, ``text_encoder_2/``, ...). :func:`checkpoint_files` lists its safetensors
files per part, :func:`read_keys_shapes` reads one file's {key: shape} and metadata from the
header alone (:func:`read_header`: with a stat token that tells a file rewritten while read),
:func:`streamed_size` estimates a rewritten file's size, :func:`checkpoint_shapes` gives the whole checkpoint's {key: shape} as the
resolver wants it and :func:`file_sha256` fingerprints inputs for the metadata we write (the
streamed writer is :mod:`lokr_core.base.st_writer`).
"""
from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any

import torch

from ..base.dtypes import ST_CODES, TORCH_DTYPES
from ..base.errors import LoKrError, LoKrFormatError, where
from ..base.fingerprint import StatToken, check_unchanged, stat_token
from ..base.st_writer import header_bytes

RESOLVED_COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
"""Sub-folders of a diffusers model whose weights LoKr files adapt (keys prefixed ``<folder>.``)."""


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes; for a folder, of every file in it (sorted relative names + bytes)."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    for q in files:
        if p.is_dir():
            h.update(str(q.relative_to(p)).encode() + b"\0")
        with open(q, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def read_keys_shapes(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """({key: shape}, metadata) of a safetensors file, read from its header only."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            shapes = {k: tuple(int(s) for s in f.get_slice(k).get_shape()) for k in f.keys()}
            return shapes, dict(f.metadata() or {})
    except LoKrError:
        raise
    except Exception as exc:  # safetensors raises its own SafetensorError / OSError
        raise LoKrFormatError(f"{where(str(path), None)}cannot read as safetensors ({exc}); expected a "
                              ".safetensors checkpoint") from None


def read_header(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str], StatToken]:
    """:func:`read_keys_shapes` plus the file's :func:`~lokr_core.base.fingerprint.stat_token`, taken
    before the header read and checked after it; a reader of the tensors checks it again
    (:func:`~lokr_core.base.fingerprint.check_unchanged`), so a file rewritten meanwhile is an error."""
    try:
        token = stat_token(path)
    except OSError:
        token = None
    shapes, meta = read_keys_shapes(path)
    check_unchanged(path, token)  # type: ignore[arg-type]
    return shapes, meta, token  # type: ignore[return-value]


def out_entries(fh: Any, path: Path, dtype: torch.dtype | None) -> list[tuple[str, str, tuple[int, ...], int, torch.dtype]]:
    """(key, dtype code, shape, bytes, dtype) of every tensor of the open ``safe_open`` handle ``fh``
    (of ``path``) as written again with its float tensors cast to ``dtype`` (None: kept), in file
    order. LoKrFormatError naming the file and tensor for a dtype this torch lacks."""
    entries = []
    for key in fh.keys():
        sl = fh.get_slice(key)
        shape = tuple(int(s) for s in sl.get_shape())
        code = sl.get_dtype()
        src_dtype = TORCH_DTYPES.get(code)
        if src_dtype is None:
            raise LoKrFormatError(f"{where(str(path), None)}tensor {key!r} has dtype {code}, which this merge "
                                  "cannot handle; expected a float, int or bool tensor")
        out = dtype if (dtype is not None and src_dtype.is_floating_point) else src_dtype
        entries.append((key, ST_CODES[out], shape, math.prod(shape) * torch.empty((), dtype=out).element_size(), out))
    return entries


def streamed_size(path: Path, dtype: torch.dtype | None, metadata: dict[str, str] | None) -> int:
    """Bytes of ``path`` written again as :func:`out_entries` says with ``metadata`` in the header
    (None: the file's own): the estimate a writer checks the free space with."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            entries = [e[:4] for e in out_entries(f, path, dtype)]
            meta = dict(f.metadata() or {}) if metadata is None else metadata
    except LoKrError:
        raise
    except Exception as exc:  # safetensors raises its own SafetensorError / OSError
        raise LoKrFormatError(f"{where(str(path), None)}cannot read as safetensors ({exc}); expected a "
                              ".safetensors checkpoint") from None
    return len(header_bytes(entries, meta)) + sum(e[3] for e in entries)


def checkpoint_files(ckpt: Path) -> dict[str, list[Path]]:
    """{part: safetensors files}: ``{"": [ckpt]}`` for a file; per sub-folder for a diffusers folder."""
    if ckpt.is_file():
        if ckpt.suffix.lower() != ".safetensors":
            raise LoKrFormatError(f"{where(str(ckpt), None)}is not a .safetensors file; expected a safetensors "
                                  "checkpoint (pickled .ckpt files are not read, for safety)")
        return {"": [ckpt]}
    if ckpt.is_dir():
        comps: dict[str, list[Path]] = {}
        for f in sorted(ckpt.rglob("*.safetensors")):
            rel = f.relative_to(ckpt)
            comps.setdefault(str(rel.parent) if str(rel.parent) != "." else "", []).append(f)
        if not comps:
            raise LoKrFormatError(f"{where(str(ckpt), None)}folder holds no .safetensors files; expected a diffusers "
                                  "folder (unet/diffusion_pytorch_model.safetensors, text_encoder/model.safetensors, ...)")
        return comps
    raise LoKrFormatError(f"{where(str(ckpt), None)}does not exist; expected a checkpoint file or diffusers folder")


def part_prefix(part: str) -> str:
    """The key prefix of a diffusers part's weights (``"text_encoder"`` -> ``"text_encoder."``; ``""`` for a file)."""
    return part.replace(os.sep, ".").replace("/", ".") + "." if part else ""


def checkpoint_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """{key: shape} of a safetensors checkpoint, or of the unet / text_encoder / text_encoder_2 files
    of a diffusers folder (keys prefixed with their sub-folder: ``unet.down_blocks...``)."""
    root = Path(path)
    shapes: dict[str, tuple[int, ...]] = {}
    for comp, files in checkpoint_files(root).items():
        if root.is_dir() and comp not in RESOLVED_COMPONENTS:
            continue
        for f in files:
            s, _ = read_keys_shapes(f)
            prefix = part_prefix(comp)
            shapes.update({prefix + k: v for k, v in s.items()})
    return shapes
