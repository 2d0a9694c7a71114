"""LoKrConfig: every field of PEFT 0.21.2's ``LoKrConfig``, validated, and its adapter_config.json.

The field names, defaults and JSON layout follow PEFT, so a config PEFT writes loads here and a
config written here loads in PEFT. Validation covers PEFT's own check (``layers_pattern`` needs
``layers_to_transform``) plus the ones PEFT defers to injection time or lacks (r > 0, dropout in
[0, 1], known ``init_weights``, types, regexes that compile).
"""
from __future__ import annotations

import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping, Union

from ..base.peft_names import CONFIG_NAME
from ..base.errors import LoKrConfigError, LoKrError, LoKrFormatError, where

__all__ = ["LoKrConfig", "CONFIG_NAME", "PEFT_BASE_KEYS", "pattern_key"]

"""File name PEFT uses for an adapter's config."""

PEFT_BASE_KEYS: dict[str, Any] = {
    "auto_mapping": None, "base_model_name_or_path": None, "inference_mode": False,
    "peft_type": "LOKR", "revision": None, "task_type": None,
}
"""Keys of PEFT's base ``PeftConfig`` (not LoKr settings) and the values written for them.
``peft_version`` is left out so that PEFT fills in its own."""

_IGNORED_KEYS = frozenset(PEFT_BASE_KEYS) | {"peft_version", "runtime_config"}


def _tail_matcher(key: str) -> Callable[[str], bool]:
    """A test equivalent to ``re.match(rf"(.*\\.)?({key})$", name)`` (PEFT's get_pattern_key rule).

    Keys made of word characters and dots only (module paths, the common case) are fixed-length
    patterns whose dots match any character: compare the name's tail directly (fast when a
    config carries one key per module). Other keys are compiled once.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.]+", key):
        rx = re.compile(rf"(.*\.)?({key})$")
        return lambda name: rx.match(name) is not None
    n = len(key)
    last = key.rsplit(".", 1)[-1]

    def match(name: str) -> bool:
        if len(name) < n or not name.endswith(last) or (len(name) > n and name[-n - 1] != "."):
            return False
        tail = name[-n:]
        return tail == key or all(k == c or (k == "." and c != "\n") for k, c in zip(key, tail))
    return match


def pattern_key(pattern_keys: Iterable[str], module_name: str) -> str | None:
    """The first key of ``pattern_keys`` that matches ``module_name`` as PEFT's ``get_pattern_key`` does.

    A key matches when ``re.match(rf"(.*\\.)?({key})$", module_name)`` succeeds: the key is a regex
    that must match the whole name or a dot-separated tail of it. Returns None when none matches.
    """
    for key in pattern_keys:
        if _tail_matcher(key)(module_name):
            return key
    return None


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_regex(name: str, pattern: str) -> None:
    try:
        re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as exc:  # "a{99999999999}": OverflowError, not re.error
        raise LoKrConfigError(f"LoKrConfig.{name}: {pattern!r} is not a valid regular expression ({exc})") from None


def _names(name: str, value: Any, *, regex_ok: bool) -> Union[list[str], str, None]:
    """Normalise a module-name field: None, a regex string, or a list of names (sets sorted)."""
    if value is None:
        return None
    if isinstance(value, str):
        if not regex_ok:
            raise LoKrConfigError(f"LoKrConfig.{name}: expected a list of module names, got the string {value!r}")
        if value.lower() != "all-linear":
            _check_regex(name, value)
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else list(value)
        bad = [v for v in items if not isinstance(v, str)]
        if bad:
            raise LoKrConfigError(f"LoKrConfig.{name}: every entry must be a module name (str); got {bad[0]!r}")
        return items
    raise LoKrConfigError(f"LoKrConfig.{name}: expected None, a regex string or a list of module names; "
                          f"got {type(value).__name__}")


def _pattern_dict(name: str, value: Any, check, expected: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise LoKrConfigError(f"LoKrConfig.{name}: expected a dict of module-name pattern -> {expected}, "
                              f"got {type(value).__name__}")
    out = {}
    for key, v in value.items():
        if not isinstance(key, str) or not key:
            raise LoKrConfigError(f"LoKrConfig.{name}: keys must be non-empty module-name patterns, got {key!r}")
        _check_regex(f"{name}[{key!r}]", key)
        if not check(v):
            raise LoKrConfigError(f"LoKrConfig.{name}[{key!r}]: expected {expected}, got {v!r}")
        out[key] = v
    return out


@dataclass
class LoKrConfig:
    """The settings of one LoKr adapter, field for field PEFT 0.21.2's ``LoKrConfig``.

    - ``r`` (rank of split factors) and ``alpha``: scale = alpha / r (per module: ``r_alpha_for``).
    - ``rank_dropout`` / ``module_dropout``: probabilities in [0, 1]; ``rank_dropout_scale``.
    - ``use_effective_conv2d``: Tucker W2 for convs with a kernel other than 1 (see shapes.py).
    - ``decompose_both``: split W1 too; ``decompose_factor``: -1 or the factor passed to factorization.
    - ``target_modules``: list of names (exact or dotted suffix), a regex (full match) or
      ``"all-linear"``; ``exclude_modules``: list or regex, takes precedence.
    - ``init_weights``: True (ΔW = 0), False (random) or ``"lycoris"``.
    - ``layers_to_transform`` (int or list of layer indices) and ``layers_pattern`` (name(s) of the
      ModuleList holding the layers, e.g. ``"layers"``); only used with a list ``target_modules``.
    - ``rank_pattern`` / ``alpha_pattern``: module-name regex -> r / alpha for matching modules.
    - ``modules_to_save``: names of extra modules trained fully and saved.

    Raises LoKrConfigError (naming the field) for a value PEFT would refuse or cannot use.
    """

    r: int = 8
    alpha: float = 8
    rank_dropout: float = 0.0
    module_dropout: float = 0.0
    use_effective_conv2d: bool = False
    decompose_both: bool = False
    decompose_factor: int = -1
    rank_dropout_scale: bool = False
    target_modules: Union[list[str], str, None] = None
    exclude_modules: Union[list[str], str, None] = None
    init_weights: Union[bool, Literal["lycoris"]] = True
    layers_to_transform: Union[list[int], int, None] = None
    layers_pattern: Union[list[str], str, None] = None
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    modules_to_save: Union[list[str], None] = None

    def __post_init__(self) -> None:
        if not _is_int(self.r) or self.r <= 0:
            raise LoKrConfigError(f"LoKrConfig.r: expected a positive integer, got {self.r!r}")
        if not _is_number(self.alpha):
            raise LoKrConfigError(f"LoKrConfig.alpha: expected a finite number, got {self.alpha!r}")
        for name in ("rank_dropout", "module_dropout"):
            v = getattr(self, name)
            if not _is_number(v) or not 0.0 <= v <= 1.0:
                raise LoKrConfigError(f"LoKrConfig.{name}: expected a probability in [0, 1], got {v!r}")
        for name in ("use_effective_conv2d", "decompose_both", "rank_dropout_scale"):
            if not isinstance(getattr(self, name), bool):
                raise LoKrConfigError(f"LoKrConfig.{name}: expected True or False, got {getattr(self, name)!r}")
        if not _is_int(self.decompose_factor) or not (self.decompose_factor == -1 or self.decompose_factor > 0):
            raise LoKrConfigError(f"LoKrConfig.decompose_factor: expected -1 or a positive integer, "
                                  f"got {self.decompose_factor!r}")
        self.target_modules = _names("target_modules", self.target_modules, regex_ok=True)
        self.exclude_modules = _names("exclude_modules", self.exclude_modules, regex_ok=True)
        if not (self.init_weights is True or self.init_weights is False or self.init_weights == "lycoris"):
            raise LoKrConfigError(f"LoKrConfig.init_weights: expected True, False or 'lycoris', got {self.init_weights!r}")
        ltt = self.layers_to_transform
        if ltt is not None:
            if isinstance(ltt, (list, tuple)):
                if not all(_is_int(i) and i >= 0 for i in ltt):
                    raise LoKrConfigError(f"LoKrConfig.layers_to_transform: expected non-negative layer indices, got {ltt!r}")
                self.layers_to_transform = list(ltt)
            elif not (_is_int(ltt) and ltt >= 0):
                raise LoKrConfigError(f"LoKrConfig.layers_to_transform: expected an int or a list of ints, got {ltt!r}")
        lp = self.layers_pattern
        if lp is not None:
            if isinstance(lp, (list, tuple)):
                if not all(isinstance(p, str) for p in lp):
                    raise LoKrConfigError(f"LoKrConfig.layers_pattern: expected a name or a list of names, got {lp!r}")
                self.layers_pattern = list(lp)
            elif not isinstance(lp, str):
                raise LoKrConfigError(f"LoKrConfig.layers_pattern: expected a name or a list of names, got {lp!r}")
            for p in ([lp] if isinstance(lp, str) else lp):
                _check_regex("layers_pattern", p)
        if self.layers_pattern and self.layers_to_transform is None:  # PEFT's own check
            raise LoKrConfigError("LoKrConfig.layers_pattern: when layers_pattern is given, layers_to_transform "
                                  "must be given too")
        self.rank_pattern = _pattern_dict("rank_pattern", self.rank_pattern, lambda v: _is_int(v) and v > 0,
                                          "a positive integer rank")
        self.alpha_pattern = _pattern_dict("alpha_pattern", self.alpha_pattern, _is_number, "a finite number")
        if self.modules_to_save is not None:
            mts = self.modules_to_save
            if isinstance(mts, str) or not isinstance(mts, (list, tuple, set, frozenset)) or \
                    not all(isinstance(m, str) and m for m in mts):
                raise LoKrConfigError(f"LoKrConfig.modules_to_save: expected a list of module names, got {mts!r}")
            self.modules_to_save = sorted(mts) if isinstance(mts, (set, frozenset)) else list(mts)

    # ----------------------------------------------------------------- per module
    def r_alpha_for(self, module_name: str) -> tuple[int, float]:
        """(r, alpha) for ``module_name``: ``rank_pattern`` / ``alpha_pattern`` entries win over r / alpha.

        Each dict is searched in insertion order for the first key ``k`` with
        ``re.match(rf"(.*\\.)?({k})$", module_name)`` (PEFT's get_pattern_key); no match -> r / alpha.
        """
        rk = self._first_key("rank_pattern", module_name)
        ak = self._first_key("alpha_pattern", module_name)
        return (self.r if rk is None else self.rank_pattern[rk],
                self.alpha if ak is None else self.alpha_pattern[ak])

    def _first_key(self, field_name: str, module_name: str) -> str | None:
        """pattern_key over one pattern dict, with its matchers built once per set of keys."""
        keys = tuple(getattr(self, field_name))
        cache = self.__dict__.setdefault("_matchers", {})  # per instance, not a dataclass field
        entry = cache.get(field_name)
        if entry is None or entry[0] != keys:
            entry = cache[field_name] = (keys, [(k, _tail_matcher(k)) for k in keys])
        return next((k for k, match in entry[1] if match(module_name)), None)

    # ----------------------------------------------------------------- PEFT dicts and files
    def to_peft_dict(self) -> dict[str, Any]:
        """The dict PEFT's ``LoKrConfig.to_dict()`` gives (lists for sets), base PeftConfig keys included."""
        d: dict[str, Any] = dict(PEFT_BASE_KEYS)
        for f in fields(self):
            v = getattr(self, f.name)
            d[f.name] = dict(v) if isinstance(v, dict) else (list(v) if isinstance(v, list) else v)
        return d

    @classmethod
    def from_peft_dict(cls, d: Mapping[str, Any], *, file: str | None = None) -> "LoKrConfig":
        """Build a config from a PEFT config dict (an adapter_config.json's content).

        PEFT's base keys (``base_model_name_or_path``, ``task_type``, ``peft_version``, ...) are ignored;
        unknown keys (from newer PEFT versions) are ignored with a warning, as PEFT does; ``peft_type``,
        when present, must be ``"LOKR"``.
        Raises LoKrConfigError naming ``file`` and the field.
        """
        at = where(file, None)
        if not isinstance(d, Mapping):
            raise LoKrConfigError(f"{at}expected a PEFT config dict, got {type(d).__name__}")
        peft_type = d.get("peft_type", "LOKR")
        peft_type = getattr(peft_type, "value", peft_type)
        if peft_type != "LOKR":
            raise LoKrConfigError(f"{at}peft_type is {peft_type!r}; expected 'LOKR' (this is not a LoKr adapter)")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        unknown = sorted(str(k) for k in d if k not in known and k not in _IGNORED_KEYS)
        if unknown:  # as PEFT does for configs written by a newer version
            warnings.warn(f"{at}ignoring PEFT config keys this version does not know: {unknown}", stacklevel=2)
        for k in ("rank_pattern", "alpha_pattern"):
            if kwargs.get(k) is None:
                kwargs.pop(k, None)
        try:
            return cls(**kwargs)
        except LoKrConfigError as exc:
            if not file:
                raise
            raise LoKrConfigError(f"{at}{exc}") from None

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write ``adapter_config.json`` into ``save_directory`` (created if missing) as PEFT does:
        JSON, indent 2, sorted keys. The write is atomic (temp file + rename). Returns the file path."""
        from ..base.atomic import atomic_write_text

        directory = Path(save_directory)
        if directory.exists() and not directory.is_dir():
            raise LoKrError(f"{where(str(directory), None)}save_pretrained expects a directory, this is a file")
        directory.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_peft_dict(), indent=2, sort_keys=True)
        return Path(atomic_write_text(text, directory / CONFIG_NAME))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "LoKrConfig":
        """Load a config from a PEFT adapter directory (its ``adapter_config.json``) or from that file.

        Raises LoKrFormatError when the file is missing or is not JSON, LoKrConfigError for bad values.
        """
        p = Path(path)
        file = p / CONFIG_NAME if p.is_dir() else p
        if not file.is_file():
            raise LoKrFormatError(f"{where(str(file), None)}no such file; expected a PEFT adapter directory "
                                  f"holding {CONFIG_NAME}")
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LoKrFormatError(f"{where(str(file), None)}is not valid JSON ({exc}); expected a PEFT "
                                  f"{CONFIG_NAME}") from None
        return cls.from_peft_dict(data, file=str(file))
