"""File keys -> modules: split ``<module>.<param>`` keys and tell what kind of adapter a module is.

Shared by every reader and by format detection; pure string work on key lists.
"""
from __future__ import annotations

from typing import Mapping

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
