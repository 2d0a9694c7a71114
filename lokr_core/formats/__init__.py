"""Readers and writers of LoKr files, and the tensor sources they read from.

A *tensor source* gives key list, shapes and dtypes without reading tensor data, and one tensor
on demand: :class:`SafetensorsSource` (a .safetensors file, through ``safe_open``; only the header
is read at open) and :class:`DictSource` (a state dict already in memory).
"""
from __future__ import annotations

import os
from typing import Mapping

import torch

from ..errors import LoKrFormatError, where

_ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": getattr(torch, "float8_e4m3fn", torch.float32),
    "F8_E5M2": getattr(torch, "float8_e5m2", torch.float32),
}


class SafetensorsSource:
    """Lazy view of one safetensors file: ``keys``, ``shape(key)``, ``dtype(key)``, ``get(key)``, ``metadata``.

    Opening reads and checks the header only (a truncated or corrupt file raises LoKrFormatError
    naming it); tensors are read by ``get`` one at a time.
    """

    def __init__(self, path: str | os.PathLike):
        from safetensors import safe_open

        self.name = str(path)
        self._fh = None
        try:
            with safe_open(self.name, framework="pt") as fh:
                self.keys: list[str] = list(fh.keys())
                self.metadata: dict[str, str] = dict(fh.metadata() or {})
                self._shapes = {}
                self._dtypes = {}
                for k in self.keys:
                    sl = fh.get_slice(k)
                    self._shapes[k] = tuple(int(d) for d in sl.get_shape())
                    self._dtypes[k] = _ST_DTYPES.get(sl.get_dtype(), torch.float32)
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
        try:
            fh = self._handle()
            return {k: fh.get_tensor(k) for k in keys}
        except Exception as exc:
            raise LoKrFormatError(f"{where(self.name, None)}cannot read tensors {keys[:3]} ({exc}); expected a "
                                  "complete safetensors file") from None


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


TensorSource = SafetensorsSource | DictSource


# ------------------------------------------------------------------------ key grouping (shared)
LOKR_PARAMS = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")
SHARED_PARAMS = ("alpha", "dora_scale")
OTHER_PARAMS: dict[str, str] = {
    "lora_up.weight": "lora", "lora_down.weight": "lora", "lora_mid.weight": "lora",
    "lora_A.weight": "lora", "lora_B.weight": "lora", "lora_magnitude_vector": "lora",
    "hada_w1_a": "loha", "hada_w1_b": "loha", "hada_w2_a": "loha", "hada_w2_b": "loha",
    "hada_t1": "loha", "hada_t2": "loha",
    "diff": "diff", "diff_b": "diff", "w_norm": "norm", "b_norm": "norm",
    "ia3_l": "ia3", "on_input": "ia3", "oft_blocks": "oft", "oft_diag": "oft", "oft_R": "oft",
    "rescale": "oft", "boft_R": "boft", "boft_s": "boft",
    "a1.weight": "glora", "a2.weight": "glora", "b1.weight": "glora", "b2.weight": "glora",
    "weight": "full", "bias": "full",
}
_SUFFIXES = sorted(list(LOKR_PARAMS) + list(SHARED_PARAMS) + list(OTHER_PARAMS), key=len, reverse=True)


def split_key(key: str) -> tuple[str, str]:
    """(module name, param) for a file key: the longest known param suffix after a ``.``, else the
    last dotted part (``"a.b.lokr_w1"`` -> ``("a.b", "lokr_w1")``, ``"x.lora_up.weight"`` -> ``("x", "lora_up.weight")``)."""
    for suffix in _SUFFIXES:
        if key.endswith("." + suffix):
            return key[: -len(suffix) - 1], suffix
    if "." in key:
        module, param = key.rsplit(".", 1)
        return module, param
    return key, ""


def group_keys(keys: list[str]) -> dict[str, dict[str, str]]:
    """module name -> {param: file key}, in file order."""
    groups: dict[str, dict[str, str]] = {}
    for key in keys:
        module, param = split_key(key)
        groups.setdefault(module, {})[param] = key
    return groups


def module_kind(params: Mapping[str, str]) -> str:
    """``"lokr"`` when any ``lokr_*`` param is present, else the kind of its other params (``"lora"``,
    ``"loha"``, ``"diff"``, ``"norm"``, ``"ia3"``, ``"oft"``, ``"full"``, ...) or ``"unknown"``."""
    if any(p in LOKR_PARAMS for p in params):
        return "lokr"
    for p in params:
        if p in OTHER_PARAMS:
            return OTHER_PARAMS[p]
    return "unknown"
