"""A safetensors file written one tensor at a time: header first, then each tensor's bytes.

:func:`header_bytes` builds the header for entries in write order, :func:`tensor_bytes` gives a
tensor's stored bytes, :func:`write_safetensors` writes a whole {name: tensor} dict this way,
calling a check before each tensor (a cancelled prompt stops the write between tensors). Files
read back with ``safetensors.safe_open`` / ``load_file`` like those ``save_file`` writes.
"""
from __future__ import annotations

import json
import struct
from typing import Any, BinaryIO, Callable, Mapping, Sequence

import torch

from .dtypes import ST_CODES


def header_bytes(entries: Sequence[tuple[str, str, tuple[int, ...], int]], metadata: Mapping[str, str] | None) -> bytes:
    """safetensors header for (key, dtype code, shape, nbytes) entries in write order, 8-byte padded."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for key, code, shape, nbytes in entries:
        header[key] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * ((8 - len(raw) % 8) % 8)
    return struct.pack("<Q", len(raw)) + raw


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """The bytes of ``t`` as safetensors stores them (CPU, contiguous, native little-endian)."""
    t = t.detach().to("cpu").contiguous()
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


def _order(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Write order: larger item sizes first (every tensor then starts aligned to its item size)."""
    return sorted(tensors, key=lambda k: -tensors[k].element_size())


def safetensors_size(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> int:
    """Bytes :func:`write_safetensors` writes for ``tensors`` (header included)."""
    entries = [(k, ST_CODES[t.dtype], tuple(t.shape), t.numel() * t.element_size()) for k, t in tensors.items()]
    return len(header_bytes(entries, metadata)) + sum(e[3] for e in entries)


def write_safetensors(fh: BinaryIO, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None,
                      before_tensor: Callable[[], None] | None = None) -> int:
    """Write ``tensors`` (CPU, contiguous; dtypes of :data:`ST_CODES`) as safetensors to the open file
    ``fh``; ``before_tensor()`` is called before each tensor's bytes. Returns the bytes written."""
    order = _order(tensors)
    entries = [(k, ST_CODES[tensors[k].dtype], tuple(tensors[k].shape), tensors[k].numel() * tensors[k].element_size())
               for k in order]
    head = header_bytes(entries, metadata)
    fh.write(head)
    written = len(head)
    for key in order:
        if before_tensor is not None:
            before_tensor()
        data = tensor_bytes(tensors[key])
        fh.write(data)
        written += data.nbytes
    return written
