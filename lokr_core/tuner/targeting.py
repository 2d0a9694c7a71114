"""Which modules of a model a LoKrConfig adapts, decided exactly as PEFT 0.21.2 decides it.

Matching rules (PEFT's ``check_target_module_exists`` and ``inject_adapter``):

- ``exclude_modules`` first: a regex string must ``re.fullmatch`` the module name; a list matches
  the exact name or a dotted suffix (``name.endswith("." + entry)``). Excluded modules never match.
- modules named by ``modules_to_save`` (as a dotted component) are never adapted.
- ``target_modules`` as a string: ``re.fullmatch`` against the full module name.
  ``"all-linear"`` (any case): every ``nn.Linear`` (and transformers ``Conv1D``) except the output
  embedding of a transformers model, then treated as a list of names.
- ``target_modules`` as a list: exact name, or dotted suffix; a list of 20 or more names is first
  condensed to the shortest distinguishing suffixes, as PEFT does. Only suffix matches are then
  filtered by ``layers_to_transform``: the layer index is the number after the first
  ``<layers_pattern>.`` in the name (with no pattern: after the second dotted part that is
  followed by a number, PEFT's lazy regex).
- a matched module must be ``nn.Linear``, ``nn.Conv1d`` or ``nn.Conv2d`` (or an adapter layer
  wrapping one, i.e. a module with ``get_base_layer()``); modules inside such a wrapper are skipped.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Iterable

from torch import nn

from .config import LoKrConfig
from ..base.errors import LoKrConfigError, LoKrKeyError

__all__ = ["Target", "find_targets", "modules_to_save_names", "ADAPTABLE_TYPES"]

ADAPTABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d)
"""Module types LoKr can wrap (subclasses included)."""

_MIN_NAMES_TO_CONDENSE = 20  # PEFT's MIN_TARGET_MODULES_FOR_OPTIMIZATION


@dataclass(frozen=True, eq=False)
class Target:
    """One module a config adapts: its dotted ``name`` in the model, the ``module`` itself, and the
    ``r`` / ``alpha`` it gets (rank_pattern / alpha_pattern applied); scale = alpha / r."""

    name: str
    module: nn.Module
    r: int
    alpha: float


# --------------------------------------------------------------------------- helpers
def _base_of(module: nn.Module) -> nn.Module:
    """The wrapped layer of an adapter layer (ours or PEFT's), else the module itself."""
    get_base = getattr(module, "get_base_layer", None)
    if callable(get_base) and isinstance(getattr(module, "base_layer", None), nn.Module):
        return get_base()
    return module


def _is_wrapper(module: nn.Module) -> bool:
    return _base_of(module) is not module


def _is_transformers_conv1d(module: nn.Module) -> bool:
    pu = sys.modules.get("transformers.pytorch_utils")
    conv1d = getattr(pu, "Conv1D", None) if pu is not None else None
    return conv1d is not None and isinstance(module, conv1d)


def _visible_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """named_modules() without the root and without anything inside an adapter wrapper."""
    out: list[tuple[str, nn.Module]] = []
    wrapper_prefixes: list[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(p) for p in wrapper_prefixes):
            continue
        out.append((name, module))
        if _is_wrapper(module):
            wrapper_prefixes.append(name + ".")
    return out


def _output_layer_name(model: nn.Module) -> str | None:
    """Name of a transformers model's output embedding (PEFT leaves it out of 'all-linear')."""
    get_out = getattr(model, "get_output_embeddings", None)
    if not callable(get_out):
        return None
    try:
        out = get_out()
    except (NotImplementedError, AttributeError):
        return None
    if out is None:
        return None
    return next((n for n, m in model.named_modules() if m is out), None)


def _all_linear_names(model: nn.Module, visible: list[tuple[str, nn.Module]]) -> set[str]:
    names = set()
    for name, module in visible:
        base = _base_of(module)
        if isinstance(base, nn.Linear) or _is_transformers_conv1d(base) or \
                (base is not module and "Linear" in type(module).__name__):
            names.add(name)
    names.discard(_output_layer_name(model))
    return names


def _suffixes(name: str) -> list[str]:
    """Dotted tails of ``name``, shortest first: 'a.b.c' -> ['c', 'b.c', 'a.b.c']."""
    parts = name.split(".")
    return [".".join(parts[i:]) for i in range(len(parts) - 1, -1, -1)]


def _condense(targets: set[str], all_names: Iterable[str]) -> set[str]:
    """The shortest tails that pick out ``targets`` and no other module (PEFT condenses >= 20 names).

    Targets are visited in the order of their tail lists; each gets its shortest tail that is not a
    tail of a non-target module, unless an already chosen tail covers it.
    """
    dotted = tuple("." + t for t in targets)
    others = [n for n in all_names if n not in targets and not n.endswith(dotted)]
    taken_by_others = {s for n in others for s in _suffixes(n)}
    chosen: set[str] = set()
    for item, tails in sorted(((t, _suffixes(t)) for t in targets), key=lambda p: p[1]):
        for tail in tails:
            if tail in chosen or tail in taken_by_others:
                continue
            if not any(item.endswith("." + c) for c in chosen):
                chosen.add(tail)
            break
    return chosen if len(chosen) < len(targets) else set(targets)


def _layer_index(name: str, layers_pattern: str | list[str] | None) -> int | None:
    """The layer index PEFT reads from a module name (None when the name has none)."""
    if not layers_pattern:
        m = re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", name)
    else:
        m = None
        for pattern in [layers_pattern] if isinstance(layers_pattern, str) else layers_pattern:
            m = re.match(rf"(?:^|.*?\.){pattern}\.(?P<idx>\d+)\.", name)
            if m is not None:
                break
    return int(m.group("idx")) if m else None


def _excluded(config: LoKrConfig, name: str) -> bool:
    ex = config.exclude_modules
    if ex:
        if isinstance(ex, str):
            if re.fullmatch(ex, name):
                return True
        elif name in ex or any(name.endswith("." + e) for e in ex):
            return True
    return bool(config.modules_to_save) and any(
        re.match(rf"(^|.*\.){m}($|\..*)", name) for m in config.modules_to_save)


def _matches(config: LoKrConfig, targets: str | set[str], name: str) -> bool:
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    if name in targets:
        return True
    if not any(name.endswith("." + t) for t in targets):
        return False
    wanted = config.layers_to_transform
    if wanted is None or (isinstance(wanted, list) and not wanted):
        return True
    idx = _layer_index(name, config.layers_pattern)
    if idx is None:
        return False
    return idx == wanted if isinstance(wanted, int) else idx in wanted


def _examples(visible: list[tuple[str, nn.Module]]) -> str:
    names = [n for n, m in visible if isinstance(_base_of(m), ADAPTABLE_TYPES)]
    leaves = list(dict.fromkeys(n.rsplit(".", 1)[-1] for n in names))
    if not names:
        return "the model has no Linear / Conv1d / Conv2d module"
    return (f"the model's Linear/Conv modules include {', '.join(repr(n) for n in names[:4])}"
            f"{' ...' if len(names) > 4 else ''} (leaf names: {', '.join(leaves[:10])}"
            f"{' ...' if len(leaves) > 10 else ''})")


# --------------------------------------------------------------------------- public
def find_targets(model: nn.Module, config: LoKrConfig) -> list[Target]:
    """Every module ``config`` adapts in ``model``, in ``model.named_modules()`` order, each with
    its (r, alpha). Works on ``meta`` models; changes nothing.

    Raises LoKrConfigError when ``target_modules`` is None or a matched module is not a
    Linear / Conv1d / Conv2d (naming the module and its type), and LoKrKeyError naming the config
    fields and a few module names of the model when nothing is matched.
    """
    if config.target_modules is None:
        raise LoKrConfigError("find_targets: LoKrConfig.target_modules is None; expected a list of module names, "
                              "a regex or 'all-linear' (there is no default target list for this model)")
    visible = _visible_modules(model)
    tm = config.target_modules
    targets: str | set[str]
    if isinstance(tm, str) and tm.lower() == "all-linear":
        targets = _all_linear_names(model, visible)
    elif isinstance(tm, str):
        targets = tm
    else:
        targets = set(tm)
    if isinstance(targets, set) and len(targets) >= _MIN_NAMES_TO_CONDENSE:
        targets = _condense(targets, (n for n, _ in model.named_modules()))

    found: list[Target] = []
    n_excluded = n_unmatched = 0
    for name, module in visible:
        if _excluded(config, name):
            n_excluded += 1
            continue
        if not _matches(config, targets, name):
            n_unmatched += 1
            continue
        base = _base_of(module)
        if not isinstance(base, ADAPTABLE_TYPES):
            raise LoKrConfigError(
                f"find_targets: module {name!r} matches LoKrConfig.target_modules={tm!r} but is a "
                f"{type(base).__name__}; LoKr adapts only Linear, Conv1d and Conv2d modules "
                "(narrow target_modules, e.g. to the module's Linear children)")
        r, alpha = config.r_alpha_for(name)
        found.append(Target(name=name, module=module, r=r, alpha=alpha))

    if not found:
        hint = _examples(visible)
        if n_excluded and not n_unmatched:
            raise LoKrKeyError(f"find_targets: every module was excluded by LoKrConfig.exclude_modules="
                               f"{config.exclude_modules!r} / modules_to_save={config.modules_to_save!r}; {hint}")
        if not n_excluded and not tm:
            raise LoKrKeyError(f"find_targets: LoKrConfig.target_modules is empty ({tm!r}); {hint}")
        layers = ""
        if config.layers_to_transform is not None:
            layers = (f" with layers_to_transform={config.layers_to_transform!r}"
                      f" and layers_pattern={config.layers_pattern!r}")
        excl = ""
        if n_excluded:
            excl = (f" after exclude_modules={config.exclude_modules!r} / "
                    f"modules_to_save={config.modules_to_save!r}")
        raise LoKrKeyError(f"find_targets: no module matched LoKrConfig.target_modules={tm!r}{layers}{excl}; {hint}")
    return found


def modules_to_save_names(model: nn.Module, config: LoKrConfig) -> list[str]:
    """Names of the modules PEFT would train fully and save for ``config.modules_to_save``.

    PEFT's rule: every name from ``model.named_modules(remove_duplicate=False)`` that ends with an
    entry (plain ``str.endswith``, no dot needed). Empty list when the field is None or empty.
    """
    wanted = config.modules_to_save or []
    if not wanted:
        return []
    return [n for n, _ in model.named_modules(remove_duplicate=False)
            if n and any(n.endswith(w) for w in wanted)]
