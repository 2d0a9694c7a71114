"""The scale of one LoKr module: ΔW = scale * kron(W1, W2) (docs/math.md, Scale).

Rules (``rule`` argument of :func:`module_scale`):

- ``"file"``: the convention of the file the module came from. PEFT files (``peft_r`` given):
  ``alpha / r`` from adapter_config.json. LyCORIS / kohya files: 1 when W1 and W2 are both full
  (whatever alpha says); otherwise ``alpha / rank`` with rank = ``w2_b.shape[0]``, else
  ``w1_b.shape[0]``; missing or zero alpha -> 1.
- ``"peft"``: ``alpha / r`` always: r and alpha from the PEFT config when given, else the stored
  alpha and the module's rank (``metadata_dim`` for a full/full module, which stores no rank).
- ``"metadata-dim"``: like ``"file"``, but a full/full module uses ``alpha / metadata_dim``
  (``ss_network_dim``): the scale such files were trained with (ComfyUI issue #15114).
- ``"none"``: 1.
- a number: that number.
"""
from __future__ import annotations

import math
from typing import Mapping

from ..base.errors import LoKrFormatError, where
from .factors import LoKrFactors

RULES = ("file", "peft", "metadata-dim", "none")
"""Named scale rules; a plain number is accepted too."""

ScaleRule = str | float | int


def lycoris_scale(factors: LoKrFactors) -> float:
    """The LyCORIS / kohya rule: 1 for full/full; else alpha / rank (alpha missing or 0 -> 1)."""
    alpha = factors.alpha
    if factors.full_full or alpha is None or alpha == 0:
        return 1.0
    return float(alpha) / float(factors.rank)


def module_scale(factors: LoKrFactors, rule: ScaleRule = "file", *, peft_r: int | None = None,
                 peft_alpha: float | None = None, metadata_dim: int | None = None,
                 file: str | None = None, module: str | None = None) -> float:
    """The scalar multiplying kron(W1, W2) for ``factors`` under ``rule`` (see the module docstring).

    ``peft_r`` / ``peft_alpha``: the module's r and alpha from a PEFT config (rank_pattern and
    alpha_pattern already applied); their presence marks the module as coming from a PEFT file.
    ``metadata_dim``: ``ss_network_dim`` from the file's metadata. ``file`` / ``module`` only name
    the module in errors. Raises LoKrFormatError for an unknown rule or a rule that cannot be
    computed for this module.
    """
    at = where(file, module)
    if isinstance(rule, bool):
        raise LoKrFormatError(f"{at}scale rule {rule!r} is a bool; expected one of {RULES} or a number")
    if isinstance(rule, (int, float)):
        if not math.isfinite(rule):
            raise LoKrFormatError(f"{at}scale rule {rule!r} is not finite; expected a finite number")
        return float(rule)
    if rule == "none":
        return 1.0
    is_peft = peft_r is not None
    if rule == "file":
        if is_peft:
            return _peft_ratio(peft_alpha, peft_r, at)
        return lycoris_scale(factors)
    if rule == "peft":
        if is_peft:
            return _peft_ratio(peft_alpha, peft_r, at)
        rank = factors.rank if factors.rank is not None else metadata_dim
        if factors.alpha is None or factors.alpha == 0:
            return 1.0
        if rank is None:
            raise LoKrFormatError(f"{at}scale rule 'peft' needs a rank, but this full/full module stores none "
                                  "and the file has no ss_network_dim; expected rule 'file' or a number")
        if not math.isfinite(factors.alpha):
            raise LoKrFormatError(f"{at}scale rule 'peft' with alpha {factors.alpha}; expected a finite alpha")
        return float(factors.alpha) / float(rank)
    if rule == "metadata-dim":
        if is_peft:
            return _peft_ratio(peft_alpha, peft_r, at)
        if (factors.full_full and metadata_dim and factors.alpha is not None and factors.alpha != 0
                and math.isfinite(factors.alpha)):
            return float(factors.alpha) / float(metadata_dim)
        return lycoris_scale(factors)
    raise LoKrFormatError(f"{at}unknown scale rule {rule!r}; expected one of {RULES} or a number")


def _peft_ratio(alpha: float | None, r: int, at: str) -> float:
    if not r:
        raise LoKrFormatError(f"{at}PEFT r is {r!r}; expected a positive rank")
    return float(r if alpha is None else alpha) / float(r)


def metadata_dim(metadata: Mapping[str, str] | None) -> int | None:
    """``ss_network_dim`` from kohya metadata as an int, or None when absent / not a number."""
    if not metadata:
        return None
    raw = metadata.get("ss_network_dim")
    try:
        value = int(float(raw)) if raw is not None else None
    except (TypeError, ValueError):
        return None
    return value if value and value > 0 else None


def is_ambiguous(factors: LoKrFactors, dim: int | None) -> bool:
    """True for the ComfyUI #15114 case: full/full module whose finite, non-zero alpha differs from
    the training dim ``dim`` (``ss_network_dim``); the file rule (scale 1) and the rule the file was
    likely trained with (alpha / dim) then disagree."""
    alpha = factors.alpha
    return bool(factors.full_full and dim and alpha is not None and alpha != 0
                and math.isfinite(alpha) and float(alpha) != float(dim))
