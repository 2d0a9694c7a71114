"""The JSON view of report values, for ``lokr info --json`` and the ComfyUI panel's routes."""
from __future__ import annotations

import math
from typing import Any, Mapping


def jsonable(value: Any) -> Any:
    """``value`` safe for strict JSON: tuples / sets as lists, non-str keys as str, tensors as lists,
    inf / nan as strings (browsers' ``JSON.parse`` rejects ``Infinity`` / ``NaN``, which LoKr
    alphas such as 1e10 or inf produce), anything else unknown as its ``str``."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if hasattr(value, "tolist"):  # torch tensors, numpy scalars
        return jsonable(value.tolist())
    return str(value)
