"""The tensor sources LoKr readers read from.

A *tensor source* gives key list, shapes and dtypes without reading tensor data, and one tensor
on demand: :class:`SafetensorsSource` (a .safetensors file, through ``safe_open``; only the header
is read at open), :class:`DictSource` (a state dict already in memory) and :class:`PartsSource`
(several sources seen as one, each key prefixed with its part: a pipeline's PEFT adapters).
"""
from __future__ import annotations

import os
from typing import Mapping

import torch

from ..base.dtypes import TORCH_DTYPES
from ..base.errors import LoKrFormatError, where
from ..base.fingerprint import check_unchanged, stat_token



class SafetensorsSource:
    """Lazy view of one safetensors file: ``keys``, ``shape(key)``, ``dtype(key)``, ``get(key)``, ``metadata``.

    Opening reads and checks the header only (a truncated or corrupt file raises LoKrFormatError
    naming it); tensors are read by ``get`` one at a time. The file's stat token from the header
    read must hold at every tensor read (before and after it): a file rewritten or replaced since
    is a LoKrFormatError, never tensors of another file under this header.
    """

    def __init__(self, path: str | os.PathLike):
        from safetensors import safe_open

        self.name = str(path)
        self._fh = None
        try:
            self._token = stat_token(self.name)
            with safe_open(self.name, framework="pt") as fh:
                self.keys: list[str] = list(fh.keys())
                self.metadata: dict[str, str] = dict(fh.metadata() or {})
                self._shapes = {}
                self._dtypes = {}
                for k in self.keys:
                    sl = fh.get_slice(k)
                    self._shapes[k] = tuple(int(d) for d in sl.get_shape())
                    self._dtypes[k] = TORCH_DTYPES.get(sl.get_dtype(), torch.float32)
            check_unchanged(self.name, self._token)
        except FileNotFoundError:
            raise LoKrFormatError(f"{where(self.name, None)}no such file; expected a .safetensors LoKr file") from None
        except LoKrFormatError:
            raise
        except Exception as exc:  # safetensors raises SafetensorError / OSError for bad headers
            raise LoKrFormatError(f"{where(self.name, None)}is not a readable safetensors file ({exc}); "
                                  "expected a complete, uncorrupted .safetensors file (truncated download?)") from None

    def shape(self, key: str) -> tuple[int, ...]:
        return self._shapes[key]

    def dtype(self, key: str) -> torch.dtype:
        return self._dtypes[key]

    def _handle(self):
        """The open safe_open handle (opened once: parsing a big header on every read is slow)."""
        if self._fh is None:
            from safetensors import safe_open

            self._fh = safe_open(self.name, framework="pt")
        return self._fh

    def get(self, key: str) -> torch.Tensor:
        """Read one tensor (CPU)."""
        return self.get_many([key])[key]

    def get_many(self, keys: list[str]) -> dict[str, torch.Tensor]:
        """Read several tensors (CPU)."""
        check_unchanged(self.name, self._token)
        try:
            fh = self._handle()
            out = {k: fh.get_tensor(k) for k in keys}
        except Exception as exc:
            raise LoKrFormatError(f"{where(self.name, None)}cannot read tensors {keys[:3]} ({exc}); expected a "
                                  "complete safetensors file") from None
        check_unchanged(self.name, self._token)
        return out


class DictSource:
    """A state dict in memory behind the same interface as :class:`SafetensorsSource`."""

    def __init__(self, state_dict: Mapping[str, torch.Tensor], name: str | None = None,
                 metadata: Mapping[str, str] | None = None):
        self.name = name
        bad = [k for k, v in state_dict.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
        if bad:
            raise LoKrFormatError(f"{where(name, None)}entries {bad[:3]} are not str -> tensor; expected a state "
                                  "dict of tensors (a pickle checkpoint's nested dicts must be unpacked first)")
        self._sd = dict(state_dict)
        self.keys = list(self._sd)
        self.metadata = dict(metadata or {})

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self._sd[key].shape)

    def dtype(self, key: str) -> torch.dtype:
        return self._sd[key].dtype

    def get(self, key: str) -> torch.Tensor:
        return self._sd[key]

    def get_many(self, keys: list[str]) -> dict[str, torch.Tensor]:
        return {k: self._sd[k] for k in keys}


class PartsSource:
    """Several sources as one: ``parts[c]``'s key ``k`` is ``f"{c}.{k}"`` here (a PEFT pipeline folder:
    ``unet/adapter_model.safetensors`` + ``text_encoder/...`` -> ``unet.base_model.model...``).
    ``metadata``: every part's entries, the first part's winning; ``name``: the folder."""

    def __init__(self, parts: Mapping[str, "SafetensorsSource | DictSource"], name: str | None = None):
        self.name = name
        self._where: dict[str, tuple[SafetensorsSource | DictSource, str]] = {}
        self.metadata: dict[str, str] = {}
        for part, src in parts.items():
            self._where.update({f"{part}.{k}": (src, k) for k in src.keys})
            for k, v in src.metadata.items():
                self.metadata.setdefault(k, v)
        self.keys = list(self._where)

    def shape(self, key: str) -> tuple[int, ...]:
        src, k = self._where[key]
        return src.shape(k)

    def dtype(self, key: str) -> torch.dtype:
        src, k = self._where[key]
        return src.dtype(k)

    def get(self, key: str) -> torch.Tensor:
        src, k = self._where[key]
        return src.get(k)

    def get_many(self, keys: list[str]) -> dict[str, torch.Tensor]:
        return {key: self.get(key) for key in keys}


TensorSource = SafetensorsSource | DictSource | PartsSource
