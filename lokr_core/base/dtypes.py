"""The one safetensors dtype table, and the parser of ``--dtype`` / ``dtype=`` arguments.

safetensors names a tensor's dtype by a short code (``"F16"``, ``"BF16"``, ...): :data:`ST_CODES`
maps torch dtypes to codes, :data:`TORCH_DTYPES` codes back to torch dtypes (only the dtypes this
torch build has). Readers use it to report a tensor's dtype from the header alone; the streamed
checkpoint writer uses it to write headers.
"""
from __future__ import annotations

import torch

from .errors import LoKrConfigError


def _codes() -> dict[torch.dtype, str]:
    codes: dict[torch.dtype, str] = {
        torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
        torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
        torch.bool: "BOOL",
    }
    for name, code in (("float8_e4m3fn", "F8_E4M3"), ("float8_e5m2", "F8_E5M2"), ("uint16", "U16"),
                       ("uint32", "U32"), ("uint64", "U64")):
        if hasattr(torch, name):  # newer torch builds only
            codes[getattr(torch, name)] = code
    return codes


ST_CODES: dict[torch.dtype, str] = _codes()
"""torch dtype -> safetensors dtype code."""

TORCH_DTYPES: dict[str, torch.dtype] = {code: dt for dt, code in ST_CODES.items()}
"""safetensors dtype code -> torch dtype."""

DTYPE_NAMES: dict[str, torch.dtype] = {
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32}
"""The names :func:`parse_dtype` accepts."""


def parse_dtype(dtype: str | torch.dtype | None, caller: str = "merge") -> torch.dtype | None:
    """``"fp16" | "bf16" | "fp32"`` (or a floating torch.dtype, or None) -> torch.dtype or None.

    LoKrConfigError (naming ``caller``) for a non-floating dtype or an unknown name.
    """
    if dtype is None or isinstance(dtype, torch.dtype):
        if isinstance(dtype, torch.dtype) and not dtype.is_floating_point:
            raise LoKrConfigError(f"{caller}: dtype must be a floating dtype, got {dtype}")
        return dtype
    key = str(dtype).lower()
    if key not in DTYPE_NAMES:
        raise LoKrConfigError(f"{caller}: dtype {dtype!r} is not known; expected one of fp16, bf16, fp32")
    return DTYPE_NAMES[key]
