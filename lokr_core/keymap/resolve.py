"""Map a LoKr file's module names onto a target model's weights, and say plainly what did not map.

``resolve(weights_or_names, target)`` accepts every naming style of :mod:`lokr_core.keymap.kohya`
and every target kind of :mod:`lokr_core.keymap.targets`, and returns a :class:`ResolveReport`:
matched names with the target key to use (module path for modules, full ``.weight`` key for state
dicts), unmatched names with their nearest target names, shape mismatches, names for a component
the target does not hold (e.g. text-encoder modules against a UNet), and the model family of the
file and of the target ("this file is for SDXL, the model is SD1.x").
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

from ..base.errors import LoKrFormatError, LoKrKeyError, LoKrShapeError, where
from ..tensor.factors import LoKrFactors
from .blocks import block_id, ldm_block_of
from .family import (DIT_LABELS, FAMILY_LABELS, families_conflict, factor_dims, family_signals, model_family,
                     pick_family, target_dit_family)
from . import dit_names, te_names
from .kohya import TEXT_HINTS, split_name, underscore
from .targets import DIT_COMPONENTS, TargetEntry, TargetIndex, build_index

__all__ = ["ResolveReport", "resolve", "resolve_for", "model_family", "target_family", "block_of_entry"]

NEAREST_LIMIT = 200
"""Nearest candidates are searched for the first NEAREST_LIMIT unmatched names only (a file for
another model family leaves hundreds unmatched; the family message says what is wrong)."""

COMPONENT_LABELS = {"unet": "UNet / diffusion model", "te1": "text encoder 1 (CLIP-L / OpenCLIP-H)",
                    "te2": "text encoder 2 (OpenCLIP-G)", "t5": "T5 text encoder", "llm": "language-model text encoder",
                    "te": "text encoder", "te3": "text encoder 3 (T5)", "te4": "text encoder 4 (Llama)"}


@dataclass
class ResolveReport:
    """What ``resolve`` found.

    - ``matched``: file module name -> target key (only names whose shapes fit, when shapes are known);
    - ``rows``: for matched names whose target is one block of a fused weight (OpenCLIP
      ``attn.in_proj_weight`` holds q, k, v stacked; a DiT's original ``qkv`` / Flux ``linear1``,
      :mod:`lokr_core.keymap.dit_names`): name -> (start, stop) rows of that key's tensor;
    - ``unmatched``: name -> up to 3 nearest target keys (difflib; searched for the first
      ``NEAREST_LIMIT`` unmatched names, [] after that);
    - ``ambiguous``: name -> the several target keys it could mean (shapes could not decide);
    - ``shape_mismatch``: name -> (target weight shape, shape the factors give: (out, in[, k...]) or
      (out, in*k) for a split conv W2);
    - ``skipped``: name -> component ("unet", "te1", "te2") the target does not hold;
    - ``row_order``: matched name -> ``"swap_halves"`` when its ΔW goes onto the target with the two
      halves of its rows swapped (a DiT modulation whose (shift, scale) halves are in the other order
      in the target's layout: Flux / SD3 ``norm_out.linear`` <-> ``final_layer.adaLN_modulation.1``,
      SD3's last ``norm1_context.linear``);
    - ``split``: name -> [(target key, (start, stop) rows of the module's ΔW)] for a module that is
      one fused weight in the file's layout and several weights in the target's (a DiT's original
      ``qkv`` / Flux ``linear1`` onto diffusers ``to_q`` / ``to_k`` / ``to_v`` (+ ``proj_mlp``));
      these names are not in ``matched`` (they have several keys);
    - ``notes``: unmatched name -> why it cannot map onto this target (when known);
    - ``blocks``: matched (or split) name -> block ID of its target weight: LDM IDs for SD UNets
      (``BASE``, ``IN00``.., ``MID``, ``OUT00``..), DiT groups for transformers (``double 3``,
      ``single 12``, ``joint 5``, ``layers 7``, else ``BASE``: :func:`lokr_core.keymap.blocks.block_id`);
    - ``family`` / ``target_family``: "sd1" | "sd2" | "sdxl" | "sd1/sd2", a DiT family id
      ("flux", "sd3", "zimage", ...) or several joined by "/" ("flux/chroma") | None.
    """

    matched: dict[str, str] = field(default_factory=dict)
    unmatched: dict[str, list[str]] = field(default_factory=dict)
    shape_mismatch: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    family: str | None = None
    target_family: str | None = None
    rows: dict[str, tuple[int, int]] = field(default_factory=dict)
    ambiguous: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    blocks: dict[str, str] = field(default_factory=dict)
    source: str | None = None
    notes: dict[str, str] = field(default_factory=dict)
    row_order: dict[str, str] = field(default_factory=dict)
    split: dict[str, list[tuple[str, tuple[int, int]]]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every name of the target's components matched with a fitting shape."""
        return not (self.unmatched or self.shape_mismatch or self.ambiguous)

    @property
    def family_mismatch(self) -> str | None:
        """"this file is for SDXL, the model is SD1.x" when file and target families disagree, else None."""
        if families_conflict(self.family, self.target_family):
            return (f"this file is for {FAMILY_LABELS[self.family]}, the model is "
                    f"{FAMILY_LABELS[self.target_family]}")
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able copy (tuples become lists)."""
        return {"matched": dict(self.matched), "unmatched": {k: list(v) for k, v in self.unmatched.items()},
                "shape_mismatch": {k: [list(a), list(b)] for k, (a, b) in self.shape_mismatch.items()},
                "family": self.family, "target_family": self.target_family,
                "family_mismatch": self.family_mismatch, "rows": {k: list(v) for k, v in self.rows.items()},
                "ambiguous": {k: list(v) for k, v in self.ambiguous.items()}, "skipped": dict(self.skipped),
                "blocks": dict(self.blocks), "source": self.source, "notes": dict(self.notes), "ok": self.ok,
                "row_order": dict(self.row_order),
                "split": {k: [[key, list(r)] for key, r in v] for k, v in self.split.items()}}

    def format(self, limit: int = 20) -> str:
        """Human-readable summary, at most ``limit`` lines per section."""
        placed = len(self.matched) + len(self.split)
        total = placed + len(self.unmatched) + len(self.shape_mismatch) + len(self.ambiguous)
        head = f"LoKr {self.source!r}: " if self.source else "LoKr: "
        fam = FAMILY_LABELS.get(self.family or "", "unknown")
        tfam = FAMILY_LABELS.get(self.target_family or "", "unknown")
        lines = [f"{head}{placed} of {total} modules matched (file: {fam}, model: {tfam})"]
        if self.family_mismatch:
            lines.append(f"WRONG MODEL: {self.family_mismatch}")

        def section(title: str, items: list[str]) -> None:
            if items:
                lines.append(f"{title} ({len(items)}):")
                lines.extend("  " + s for s in items[:limit])
                if len(items) > limit:
                    lines.append(f"  ... and {len(items) - limit} more")

        section("unmatched", [f"{n} -> " + (self.notes[n] if n in self.notes else
                                            f"nearest: {', '.join(c) if c else '(not searched)' if i >= NEAREST_LIMIT else '(none)'}")
                              for i, (n, c) in enumerate(self.unmatched.items())])
        section("shape mismatch", [f"{n}: target weight {a}, the factors give {b}"
                                   for n, (a, b) in self.shape_mismatch.items()])
        section("ambiguous", [f"{n} -> could be {', '.join(c)}" for n, c in self.ambiguous.items()])
        by_comp: dict[str, int] = {}
        for c in self.skipped.values():
            by_comp[c] = by_comp.get(c, 0) + 1
        for c, n in by_comp.items():
            lines.append(f"not in this target: {n} modules of the {COMPONENT_LABELS.get(c, c)}")
        if self.rows:
            lines.append(f"{len(self.rows)} modules map to row blocks of fused weights (q/k/v in one weight)")
        if self.split:
            lines.append(f"{len(self.split)} fused modules are split by rows over separate weights (q/k/v in several)")
        if self.row_order:
            lines.append(f"{len(self.row_order)} modulations go on with their (shift, scale) halves swapped")
        return "\n".join(lines)


def _search_components(hint: str | None, index: TargetIndex) -> list[list[str]]:
    """Components to look a name up in, as tries in order (the first try with a hit wins): all for
    no hint; the hinted one when the target has it; for a text-encoder hint then the other text
    encoders it may mean (:func:`lokr_core.keymap.te_names.search_order`: ``lora_te2_`` is T5 in a
    Flux checkpoint); else unnamed parts ("other": modules / keys of no known part); else none (skipped)."""
    comps = index.components
    if hint is None:
        return [sorted(comps)]
    tries = te_names.search_order(hint, comps) if hint in TEXT_HINTS else [[hint]] if hint in comps else []
    return tries or ([["other"]] if "other" in comps else [])


def _fits(entry: TargetEntry, spec: Any, source: str | None, name: str) -> tuple[bool, tuple[int, ...] | None]:
    """(shape fits, shape the file gives) for a LoKrFactors or a plain shape ``spec``."""
    if isinstance(spec, LoKrFactors):
        try:
            spec.check_target(entry.shape, source, name)
        except LoKrShapeError:
            return False, factor_dims(spec)
        return True, None
    shape = tuple(int(s) for s in spec)
    return shape == tuple(entry.shape), shape


def _features(name: str) -> frozenset:
    """Tokens and token bigrams of an underscore name (for a cheap first similarity pass)."""
    t = name.split("_")
    return frozenset(t) | frozenset(zip(t, t[1:]))


def _nearest(alias: str, comps: Iterable[str], index: TargetIndex, n: int = 3,
             cache: dict | None = None) -> list[str]:
    """Up to ``n`` target keys whose names are closest to ``alias``.

    Names with the same two-token leaf (``to_q``) are searched first (all names when fewer than
    ``n`` share it); a token/bigram overlap (Jaccard) shortlists 3*n of them, ranked by that overlap
    plus difflib's character ratio (so ``to_qq`` is nearer ``to_q`` than ``to_k``).
    """
    cache = {} if cache is None else cache
    comps = tuple(comps)
    pool = cache.get(("pool", comps))
    if pool is None:
        pool = cache[("pool", comps)] = {}
        for c in comps:
            pool.update(index.by_alias.get(c, {}))
    tokens = alias.split("_")
    leaf = "_".join(tokens[-2:])
    names = cache.get(("leaf", comps, leaf))
    if names is None:
        names = [a for a in pool if a.endswith(leaf)]
        if len(names) < n:
            names = list(pool)
        cache[("leaf", comps, leaf)] = names
    feats = _features(alias)
    scored = []
    for a in names:
        f = cache.get(a)
        if f is None:
            f = cache[a] = _features(a)
        scored.append((len(feats & f) / len(feats | f), a))
    scored.sort(key=lambda x: -x[0])
    chars = difflib.SequenceMatcher(autojunk=False)
    chars.set_seq2(alias)
    ranked = []
    for j, a in scored[:3 * n]:
        if j <= 0:
            continue
        chars.set_seq1(a)
        ranked.append((-(j + chars.ratio()), a))
    out: list[str] = []
    for _, a in sorted(ranked):
        for e in pool[a]:
            if e.key not in out:
                out.append(e.key)
        if len(out) >= n:
            break
    return out[:n]


def _as_names(weights_or_names: Any, shapes: Mapping[str, Any] | None) -> tuple[list[str], dict[str, Any], str | None]:
    mods = getattr(weights_or_names, "modules", None)
    if isinstance(mods, Mapping):
        names = list(getattr(weights_or_names, "module_names", None) or mods)
        shape_of = getattr(weights_or_names, "shapes", None)
        # LoKrWeights.shapes(name) gives the factors without reading tensor data (lazy files)
        specs = {n: shape_of(n) for n in names} if callable(shape_of) else dict(mods)
        specs.update(shapes or {})
        return names, specs, getattr(weights_or_names, "source", None)
    if isinstance(weights_or_names, (str, bytes)) or not isinstance(weights_or_names, Iterable):
        raise LoKrKeyError(f"resolve: expected a LoKrWeights or an iterable of module names, got "
                           f"{type(weights_or_names).__name__}")
    names = list(weights_or_names)
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise LoKrKeyError(f"resolve: module names must be strings; got {bad[0]!r}")
    return names, dict(shapes or {}), None


def resolve(weights_or_names: Any, target: Any, shapes: Mapping[str, Any] | None = None) -> ResolveReport:
    """Resolve file module names against ``target``.

    ``weights_or_names``: a LoKrWeights (its ``.modules`` give names and factors) or an iterable of
    file module names; ``shapes``: optional {name: LoKrFactors or weight shape tuple} for shape
    checks (and shape-based choice between otherwise ambiguous targets). ``target``: an nn.Module, a
    {"unet"/"text_encoder"/"text_encoder_2": module} dict, or a state dict / {key: shape} in LDM,
    ComfyUI or diffusers layout. Nothing is modified. Raises LoKrKeyError for a target or names of
    an unsupported type.
    """
    names, specs, source = _as_names(weights_or_names, shapes)
    index = build_index(target)
    report = ResolveReport(source=source)
    feature_cache: dict = {}
    moves: dict[str, dict] = {}
    report.family = pick_family(family_signals(names, specs))
    report.target_family = target_family(index)
    for name in names:
        hint, alias = split_name(name)
        tries = _search_components(hint, index)
        if not tries:
            report.skipped[name] = hint or "?"
            continue
        comps, entries = tries[0], []
        for comps in tries:
            entries = index.lookup(comps, alias)
            if entries:
                break
        if not entries:
            comps = [c for t in tries for c in t]
        spec = specs.get(name)
        if len(entries) > 1 and spec is not None:
            fitting = [e for e in entries if _fits(e, spec, source, name)[0]]
            entries = fitting or entries
        if not entries:
            move = None
            for c in comps:
                if c not in moves:
                    moves[c] = layout_moves(index, c)
                move = move or moves[c].get(alias)
            if move is not None:
                _place_move(report, name, move, spec, index)
                continue
            report.unmatched[name] = (_nearest(alias, comps, index, cache=feature_cache)
                                      if len(report.unmatched) < NEAREST_LIMIT else [])
            why = next((index.unsupported[c][alias] for c in comps if alias in index.unsupported.get(c, {})), None)
            if why:
                report.notes[name] = why
            continue
        if len(entries) > 1:
            report.ambiguous[name] = [e.key for e in entries]
            continue
        entry = entries[0]
        if spec is not None:
            fits, found = _fits(entry, spec, source, name)
            if not fits:
                report.shape_mismatch[name] = (tuple(entry.shape), found)
                continue
        report.matched[name] = entry.key
        if entry.rows is not None:
            report.rows[name] = entry.rows
        report.blocks[name] = block_of_entry(entry, index, _block_family(report))
    return report


def refuse_duplicates(report: ResolveReport) -> None:
    """LoKrFormatError when two modules of one file land on the same weight the same way (same rows,
    same order, same split): one module stored under two naming schemes (``unet.x`` and
    ``lycoris_x``), which would be applied twice. (A list of names may hold both forms on purpose.)"""
    seen: dict[Any, str] = {}
    places = [(n, (k, report.rows.get(n), report.row_order.get(n))) for n, k in report.matched.items()]
    places += [(n, ("split", tuple(parts))) for n, parts in report.split.items()]
    for name, place in places:
        if place in seen:
            key = place[1][0][0] if place[0] == "split" else place[0]
            raise LoKrFormatError(f"{where(report.source, name)}adapts the same weight {key!r} as module "
                                  f"{seen[place]!r} (one module under two names?); expected each module once")
        seen[place] = name


def layout_moves(index: TargetIndex, comp: str) -> dict[str, tuple[str, list[TargetEntry]]]:
    """Names of ``comp`` that no weight is filed under but a row operation on ΔW places.

    For a DiT part (``index.dit[comp]``), the other-layout names :mod:`lokr_core.keymap.dit_names`
    leaves unsupported: underscore name -> (``"swap_halves"``, [the weight]) for a modulation whose
    (shift, scale) halves are in the other order, or (``"split"``, [weights in row order]) for a
    fused original weight the target holds as separate weights (parts in the fused row order, same
    input width). {} for other parts.
    """
    tr = index.dit.get(comp)
    unsupported = index.unsupported.get(comp, {})
    if tr is None or tr.family is None or not unsupported:
        return {}
    other = "original" if tr.side == "diffusers" else "diffusers"
    by_path = {e.path: e for e in index.entries if e.component == comp and e.rows is None}
    found: dict[str, tuple[str, list[tuple[int, TargetEntry]]]] = {}
    for path, i, pair in dit_names._hits(tr.family, tr.side, by_path):
        alias = underscore(dit_names._fill(getattr(pair, other), i))
        if alias not in unsupported:
            continue
        if pair.swap is not None and by_path[path].shape[0] % 2 == 0:
            found[alias] = ("swap_halves", [(0, by_path[path])])
        elif pair.part is not None and tr.side == "diffusers":
            found.setdefault(alias, ("split", []))[1].append((pair.part, by_path[path]))
    moves = {}
    for alias, (kind, parts) in found.items():
        parts.sort(key=lambda p: p[0])
        if [p for p, _ in parts] == list(range(len(parts))) and len({e.shape[1:] for _, e in parts}) == 1:
            moves[alias] = (kind, [e for _, e in parts])
    return moves


def _place_move(report: ResolveReport, name: str, move: tuple[str, list[TargetEntry]], spec: Any,
                index: TargetIndex) -> None:
    """Record ``name`` placed by a row operation (``layout_moves``), or its shape mismatch."""
    kind, entries = move
    first = entries[0]
    shape = (sum(e.shape[0] for e in entries),) + tuple(first.shape[1:])
    if spec is not None:
        fits, found = _fits(replace(first, shape=shape), spec, report.source, name)
        if not fits:
            report.shape_mismatch[name] = (shape, found)
            return
    if kind == "swap_halves":
        report.matched[name] = first.key
        report.row_order[name] = kind
    else:
        start, parts = 0, []
        for e in entries:
            parts.append((e.key, (start, start + e.shape[0])))
            start += e.shape[0]
        report.split[name] = parts
    report.blocks[name] = block_of_entry(first, index, _block_family(report))


def resolve_for(weights: Any, target: Any) -> ResolveReport:
    """``weights.resolve(target)`` when the weights resolve themselves (``LoKrWeights`` does, from
    shapes only, without reading tensors), else :func:`resolve` on them: what apply, merge and the
    report call."""
    if hasattr(weights, "resolve"):
        return weights.resolve(target)
    return resolve(weights, target)


def _block_family(report: ResolveReport) -> str | None:
    """The family verdict block groups are read with: the target's, narrowed to the families the
    file's verdict shares with it ("flux/sd3" and "sd3" -> "sd3"); the file's when the target has none."""
    target, file = report.target_family, report.family
    if target and file:
        shared = [f for f in target.split("/") if f in file.split("/")]
        if shared:
            return "/".join(shared)
    return target or file


def block_of_entry(entry: TargetEntry, index: TargetIndex, family: str | None = None) -> str:
    """Block ID of a target entry: for a DiT part (``index.dit``) its group (``double 3``, ``layers 7``,
    BASE) by :func:`lokr_core.keymap.blocks.block_id` with ``family`` (the target's or the file's
    verdict); for an SD UNet its LDM ID; text encoders and unknown modules: BASE. A part no DiT
    table renames (Qwen-Image keeps the diffusers names) is a DiT part when ``family`` is a DiT one."""
    dit_family = bool(family) and bool(set(family.split("/")) & set(DIT_LABELS))
    if entry.component in index.dit or (entry.component in DIT_COMPONENTS and index.unet_layout is None
                                        and dit_family):
        return block_id(entry.ldm_path or entry.path, family, index.unet_layout)
    if entry.component != "unet":
        return "BASE"
    if entry.ldm_path:
        return ldm_block_of(entry.ldm_path)
    try:
        return ldm_block_of(entry.path, index.unet_layout)
    except LoKrKeyError:
        return "BASE"


def _dit_shapes(index: TargetIndex) -> dict[str, tuple[int, ...]]:
    """{weight key: shape} of the target's diffusion-model parts (keys end in ``.weight``)."""
    return {(e.key if e.key.endswith(".weight") else e.key + ".weight"): e.shape
            for e in index.entries if e.component in DIT_COMPONENTS and e.rows is None}


def target_family(index: TargetIndex) -> str | None:
    """Family of an indexed target: a DiT verdict from its diffusion model's names and widths
    (:func:`lokr_core.keymap.family.target_dit_family`; a ComfyUI SD3 / Flux checkpoint holds CLIP-G
    as well, so this comes first), else for SD UNets the cross-attention width, else text-encoder
    widths, else UNet depth."""
    from .family import FAMILY_BY_CROSS_DIM, SD12

    dit = target_dit_family(_dit_shapes(index)) if index.dit or index.unet_layout is None else None
    if dit:
        return dit
    for e in index.entries:
        if e.component == "unet" and e.path.endswith("attn2.to_k") and len(e.shape) >= 2:
            fam = FAMILY_BY_CROSS_DIM.get(e.shape[1])
            if fam:
                return fam
    if "te2" in index.components:
        return "sdxl"
    for e in index.entries:
        if e.component == "te1" and e.path.endswith("self_attn.q_proj"):
            return {1024: "sd2"}.get(e.shape[0])
    if index.unet_layout is not None:
        return {3: "sdxl", 4: SD12}.get(index.unet_layout.levels)
    return None
