"""Read a safetensors file's tensors one at a time with positioned reads, not a memory map.

``safe_open`` maps the whole file; every page a read touches then stays in the process's resident
set (as file pages) until the file is closed, so streaming a 5 GB checkpoint through it shows 5 GB
of RSS. :class:`TensorReader` reads each tensor's byte range with ``os.preadv`` into a fresh
buffer: a tensor's bytes are in memory only while the caller holds it (the page cache stays the
kernel's). Callers read and check the header with ``safe_open`` first (``read_header``); this
class trusts the offsets that check accepted.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Any

import torch

from ..base.dtypes import TORCH_DTYPES
from ..base.errors import LoKrFormatError, where


class TensorReader:
    """``get(key) -> tensor`` (CPU, private memory) for one safetensors file; a context manager."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self._fd = os.open(self.path, os.O_RDONLY)
        try:
            head = os.pread(self._fd, 8, 0)
            (n,) = struct.unpack("<Q", head)
            header: dict[str, Any] = json.loads(os.pread(self._fd, n, 8))
        except (OSError, ValueError, struct.error) as exc:
            os.close(self._fd)
            raise LoKrFormatError(f"{where(self.path, None)}cannot read the safetensors header ({exc}); expected "
                                  "a complete .safetensors file") from None
        self._base = 8 + n
        self._entries = {k: v for k, v in header.items() if k != "__metadata__"}

    def get(self, key: str) -> torch.Tensor:
        """Tensor ``key`` read from the file into new memory."""
        e = self._entries[key]
        start, stop = (int(x) for x in e["data_offsets"])
        dtype = TORCH_DTYPES.get(e["dtype"])
        if dtype is None:
            raise LoKrFormatError(f"{where(self.path, None)}tensor {key!r} has dtype {e['dtype']}; expected a dtype "
                                  "this torch build has")
        buf = bytearray(stop - start)
        view, done = memoryview(buf), 0
        while done < len(buf):
            got = os.preadv(self._fd, [view[done:]], self._base + start + done)
            if got <= 0:
                raise LoKrFormatError(f"{where(self.path, None)}tensor {key!r} ends past the end of the file; "
                                      "expected a complete .safetensors file (truncated?)")
            done += got
        shape = [int(s) for s in e["shape"]]
        if not buf:
            return torch.empty(shape, dtype=dtype)
        return torch.frombuffer(buf, dtype=dtype).reshape(shape)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "TensorReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
