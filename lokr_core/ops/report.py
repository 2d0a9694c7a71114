"""What a LoKr file holds, as a JSON-able dict and as text for humans.

``summarize(weights, target=None)`` is the one place this is computed; the ``lokr info`` command,
the ComfyUI LoKr Info node and the web routes all show its result (``format_report`` for text).
Only shapes, alphas and metadata are read: no factor tensor is loaded unless DoRA must be checked
(``dora_scale`` presence comes from the shapes as well).
"""
from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from typing import Any, Mapping

from ..formats.sidecar import words as sidecar_words

__all__ = ["summarize", "format_report", "family_report", "block_of", "dit_block_of", "training_info", "top_tags"]

BLOCK_ORDER = ("te", "te1", "te2", "base", "down", "mid", "up", "double", "single", "joint", "layers", "other")
"""Block names in ``summary["blocks"]``, in display order."""

_TRAINING_KEYS = (
    "ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_network_args", "ss_base_model_version",
    "ss_sd_model_name", "ss_output_name", "ss_learning_rate", "ss_unet_lr", "ss_text_encoder_lr",
    "ss_optimizer", "ss_lr_scheduler", "ss_num_epochs", "ss_epoch", "ss_max_train_steps", "ss_steps",
    "ss_resolution", "ss_num_train_images", "ss_batch_size_per_device", "ss_mixed_precision",
    "ss_training_started_at", "ss_training_finished_at", "ss_training_comment", "ss_clip_skip", "ss_seed",
    "ss_v2", "modelspec.title", "modelspec.architecture", "modelspec.author", "modelspec.description",
    "modelspec.date",
)
_MAX_TEXT = 300


# ------------------------------------------------------------------------------------- classifying
def block_of(name: str, family: str | None = None) -> str:
    """The block a file module name belongs to: ``te``, ``te1``, ``te2`` (text encoders), ``down``,
    ``mid``, ``up`` (UNet input / middle / output blocks, diffusers or LDM numbering), ``base``
    (other UNet weights: conv_in, time embedding, conv_out, ...), the transformer groups ``double``,
    ``single``, ``joint``, ``layers`` (see :func:`dit_block_of`; ``family`` as there) or ``other``."""
    group = _sd_block(name)
    if group == "other":
        dit = dit_block_of(name, family)
        if dit != "BASE":
            return dit.split(" ")[0]
    return group


def dit_block_of(name: str, family: str | None = None) -> str:
    """Transformer block ID of a file module name (``double 3``, ``single 12``, ``joint 5``,
    ``layers 7``) or ``BASE``; ``family``: the file's DiT verdict (decides what diffusers'
    ``transformer_blocks N`` is)."""
    from ..keymap.family_signatures import block_of as _dit

    return _dit(name, family)


def _sd_block(name: str) -> str:
    n = name.replace(".", "_")
    if n.startswith("lora_te1_") or "text_encoder_1_" in n:
        return "te1"
    if n.startswith("lora_te2_") or "text_encoder_2_" in n or n.startswith("te2_"):
        return "te2"
    if (n.startswith(("lora_te_", "te_", "text_encoder_", "lycoris_te_")) or "text_model_" in n
            or re.match(r"^(base_model_model_)?(encoder_layers|final_layer_norm|embeddings)_", n)):
        return "te"
    if "down_blocks_" in n or "input_blocks_" in n:
        return "down"
    if "mid_block_" in n or "middle_block_" in n:
        return "mid"
    if "up_blocks_" in n or "output_blocks_" in n:
        return "up"
    if re.search(r"(^|_)(conv_in|conv_out|time_embedding|time_embed|add_embedding|label_emb|conv_norm_out|out_[02])(_|$)", n):
        return "base"
    return "other"


def _family(weights: Any, names: list[str]) -> str | None:
    """Family guess from names and factor shapes (read at load, no tensor data): "sd1", "sd2",
    "sdxl", "sd1/sd2" (names alone cannot tell SD1 from SD2) or None."""
    from ..keymap.family import family_signals, pick_family

    shapes_of = getattr(weights, "shapes", None)
    factors = {n: shapes_of(n) for n in names} if callable(shapes_of) else dict(getattr(weights, "modules", {}))
    try:
        return pick_family(family_signals(names, factors))
    except Exception:  # a guess only; never fail a report on it
        return None


def _rank_label(f: Any) -> str:
    return "full" if f.rank is None else str(f.rank)


def _num(x: float | None) -> float | str | None:
    """A float for JSON: inf / nan become strings (browsers reject them)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else str(x)


# ------------------------------------------------------------------------------------------ metadata
def training_info(metadata: Mapping[str, str]) -> dict[str, Any]:
    """The training facts of kohya / modelspec metadata: selected ``ss_*`` / ``modelspec.*`` keys,
    ``ss_network_args`` parsed from JSON; long texts cut to 300 characters."""
    out: dict[str, Any] = {}
    for key in _TRAINING_KEYS:
        if key not in metadata:
            continue
        value: Any = metadata[key]
        if key == "ss_network_args":
            try:
                value = json.loads(value)
            except (TypeError, ValueError):
                pass
        if isinstance(value, str) and len(value) > _MAX_TEXT:
            value = value[:_MAX_TEXT] + "..."
        out[key] = value
    return out


def top_tags(metadata: Mapping[str, str], n: int = 20) -> list[tuple[str, int]]:
    """The ``n`` most frequent training tags from ``ss_tag_frequency`` ({dataset: {tag: count}}),
    summed over datasets, most frequent first (ties by name); unreadable values give []."""
    return sidecar_words.top_tags(metadata.get("ss_tag_frequency"), n, [])


def _trigger_words(metadata: Mapping[str, str]) -> list[str]:
    """The header's trigger words (formats.sidecar.words), first occurrence of each kept."""
    return list(dict.fromkeys(sidecar_words.header_trigger_words(dict(metadata), [])))


# ------------------------------------------------------------------------------------------ summary
def summarize(weights: Any, target: Any = None, *, scale_rule: str | float = "file", top_n: int = 20) -> dict[str, Any]:
    """A JSON-able description of a LoKrWeights (see :mod:`lokr_core.formats.weights`).

    Keys: ``file`` (base name), ``path``, ``format``, ``family`` (guess from names and shapes: sd1 / sd2 / sdxl / "sd1/sd2",
    a DiT family id such as flux / sd3 / zimage / wan, or several joined by "/" when the names cannot
    tell them apart, or None), ``family_label`` (its display name: "Flux.1 or Chroma"),
    ``module_count``, ``blocks`` ({block: count}, see ``block_of``), ``block_ids`` ({DiT block ID such
    as "double 3": count}, empty for SD files), ``layouts`` ({layout: count}),
    ``ranks`` ({rank or "full": count}), ``params`` (factor elements), ``dora`` (count), ``scale_rule``,
    ``scales`` ({module: scale}), ``scale_values`` ({scale: count}), ``alphas`` ({alpha: count}),
    ``warnings`` (list of str: full/full alpha ambiguity, ...), ``other_modules`` ({kind: count}),
    ``other_module_names`` (first 50), ``metadata``: {``training``, ``trigger_words``, ``top_tags``
    [[tag, count]], ``keys`` (all metadata keys)}; with ``target`` (a model / state dict / {key:
    shape}, see :mod:`lokr_core.keymap.resolve`) also ``resolve``: {``matched`` count (modules placed,
    fused modules split over several weights included), ``total``, ``unmatched`` names,
    ``shape_mismatch``, ``family``, ``target_family`` and ``target_family_label`` (the model's family,
    SD or DiT), ``family_mismatch``, ``skipped`` count}.
    """
    names = list(getattr(weights, "module_names", None) or list(weights.modules))
    family = _family(weights, names)
    counts, scales, scale_warnings = _module_counts(weights, names, scale_rule, family)
    scale_values, alphas = counts.pop("scale_values"), counts.pop("alphas")
    other = dict(getattr(weights, "other_modules", {}) or {})
    source = getattr(weights, "source", None)
    summary: dict[str, Any] = {
        "file": os.path.basename(str(source)) if source else None,
        "path": str(source) if source else None,
        "format": getattr(weights, "format", None),
        "family": family,
        "family_label": _family_label(family),
        "module_count": len(names),
        **counts,
        "scale_rule": scale_rule if isinstance(scale_rule, str) else float(scale_rule),
        "scales": scales,
        "scale_values": scale_values,
        "alphas": alphas,
        "warnings": _warnings(weights, other, scale_warnings),
        "other_modules": dict(Counter(other.values())),
        "other_module_names": sorted(other)[:50],
        "metadata": _metadata_summary(dict(getattr(weights, "metadata", {}) or {}), top_n),
    }
    if target is not None:
        summary["resolve"] = _resolve_summary(weights, target, names)
    return summary


def _family_label(family: str | None) -> str | None:
    """Display name of a family verdict ("Flux.1 or Chroma"), None when unknown."""
    from ..keymap.family import FAMILY_LABELS

    return FAMILY_LABELS.get(family, family) if family else None


def _dit_order(block: str) -> tuple[int, int]:
    kind, _, i = block.partition(" ")
    return (BLOCK_ORDER.index(kind) if kind in BLOCK_ORDER else len(BLOCK_ORDER), int(i) if i.isdigit() else -1)


def _module_counts(weights: Any, names: list[str], scale_rule: str | float, family: str | None = None,
                   ) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """({blocks, block_ids, layouts, ranks, params, dora, scale_values, alphas}, {module: scale}, scale
    warnings), from factor shapes only. ``block_ids``: {DiT block ID: modules} (empty for SD files)."""
    shapes = weights.shapes if hasattr(weights, "shapes") else (lambda n: weights.modules[n])
    blocks: Counter[str] = Counter()
    block_ids: Counter[str] = Counter()
    layouts: Counter[str] = Counter()
    ranks: Counter[str] = Counter()
    alphas: Counter[str] = Counter()
    scale_values: Counter[str] = Counter()
    scales: dict[str, Any] = {}
    warnings: list[str] = []
    params = dora = 0
    for name in names:
        f = shapes(name)
        group = block_of(name, family)
        blocks[group] += 1
        if group in ("double", "single", "joint", "layers"):
            block_ids[dit_block_of(name, family)] += 1
        layouts[f.layout] += 1
        ranks[_rank_label(f)] += 1
        alphas["none" if f.alpha is None else f"{f.alpha:g}"] += 1
        params += f.num_params()
        dora += f.dora_scale is not None
        try:
            s = float(weights.scale(name, scale_rule))
            scales[name] = _num(s)
            scale_values[f"{s:g}"] += 1
        except Exception as exc:  # report, do not fail: the CLI shows it
            scales[name] = None
            warnings.append(f"module {name!r}: scale rule {scale_rule!r} cannot be applied ({exc})")
    counts = {
        "blocks": {b: blocks[b] for b in BLOCK_ORDER if blocks[b]},
        "block_ids": {b: block_ids[b] for b in sorted(block_ids, key=_dit_order)},
        "layouts": dict(sorted(layouts.items())),
        "ranks": dict(sorted(ranks.items(), key=lambda kv: (kv[0] == "full", int(kv[0]) if kv[0] != "full" else 0))),
        "params": params,
        "dora": dora,
        "scale_values": dict(scale_values),
        "alphas": dict(alphas),
    }
    return counts, scales, warnings


def _warnings(weights: Any, other: Mapping[str, str], scale_warnings: list[str]) -> list[str]:
    """The file's own scale warnings, then per-module scale failures, then non-LoKr modules."""
    warnings = (list(weights.scale_warnings()) if hasattr(weights, "scale_warnings") else []) + scale_warnings
    if other:
        kinds = Counter(other.values())
        warnings.append(f"{len(other)} non-LoKr module(s) ({', '.join(f'{k}: {v}' for k, v in sorted(kinds.items()))}) "
                        "are not applied by lokr_core")
    return warnings


def _metadata_summary(meta: Mapping[str, str], top_n: int) -> dict[str, Any]:
    """``summary["metadata"]``: training settings, trigger words, top tags, all keys."""
    return {
        "training": training_info(meta),
        "trigger_words": _trigger_words(meta),
        "top_tags": [[t, c] for t, c in top_tags(meta, top_n)],
        "keys": sorted(meta),
    }


def _resolve_summary(weights: Any, target: Any, names: list[str]) -> dict[str, Any]:
    from ..keymap.resolve import resolve_for

    report = resolve_for(weights, target)
    unmatched = getattr(report, "unmatched", {}) or {}
    mismatch = getattr(report, "shape_mismatch", {}) or {}
    return {
        "matched": len(report.matched) + len(getattr(report, "split", {}) or {}),
        "total": len(names),
        "unmatched": {str(k): list(v) if isinstance(v, (list, tuple)) else v for k, v in unmatched.items()}
        if isinstance(unmatched, Mapping) else list(unmatched),
        "shape_mismatch": {str(k): [list(x) if isinstance(x, (tuple, list)) else x for x in v]
                           if isinstance(v, (tuple, list)) else str(v) for k, v in mismatch.items()},
        "family": getattr(report, "family", None),
        "target_family": getattr(report, "target_family", None),
        "target_family_label": _family_label(getattr(report, "target_family", None)),
        "family_mismatch": getattr(report, "family_mismatch", None),
        "skipped": len(getattr(report, "skipped", {}) or {}),
    }


def family_report(weights: Any, family: str) -> dict[str, Any]:
    """The resolve part of ``summarize`` against a model family's key list (``sd1 | sd2 | sdxl``).

    Uses ``lokr_core.keymap.families.family_target(family)`` (a full-size model's {LDM key: shape},
    built on the ``meta`` device); for the web route ``/lokr/report``.
    """
    from ..keymap.families import family_target

    names = list(getattr(weights, "module_names", None) or list(weights.modules))
    return _resolve_summary(weights, family_target(family), names)


# --------------------------------------------------------------------------------------- text report
def _block_ranges(block_ids: Mapping[str, int]) -> str:
    """{"double 0": 5, "double 1": 5, "single 0": 2} -> "double 0-1 (10 modules), single 0 (2 modules)"."""
    groups: dict[str, list[tuple[int, int]]] = {}
    for bid, n in block_ids.items():
        kind, _, i = bid.partition(" ")
        groups.setdefault(kind, []).append((int(i), n))
    parts = []
    for kind, items in groups.items():
        idx = sorted(i for i, _ in items)
        runs, start = [], idx[0]
        for a, b in zip(idx, idx[1:] + [None]):
            if b != a + 1:
                runs.append(f"{start}" if start == a else f"{start}-{a}")
                start = b
        parts.append(f"{kind} {','.join(runs)} ({sum(n for _, n in items)} modules)")
    return ", ".join(parts)



def format_report(summary: Mapping[str, Any], *, max_unmatched: int = 20) -> str:
    """``summarize``'s dict as readable text (one fact per line, warnings marked ``WARNING:``)."""
    lines: list[str] = []
    add = lines.append
    add(f"File:      {summary.get('file') or '<in memory>'}  (format: {summary.get('format')}, "
        f"family guess: {summary.get('family_label') or summary.get('family') or 'unknown'})")
    add(f"Modules:   {summary.get('module_count', 0)} LoKr, {summary.get('params', 0):,} parameters"
        + (f", {summary['dora']} with DoRA" if summary.get("dora") else ""))
    if summary.get("blocks"):
        add("Blocks:    " + ", ".join(f"{k} {v}" for k, v in summary["blocks"].items()))
    if summary.get("block_ids"):
        add("           " + _block_ranges(summary["block_ids"]))
    if summary.get("layouts"):
        add("Layouts:   " + ", ".join(f"{k} {v}" for k, v in summary["layouts"].items()))
    if summary.get("ranks"):
        add("Ranks:     " + ", ".join(f"{k}: {v}" for k, v in summary["ranks"].items()))
    if summary.get("alphas"):
        add("Alphas:    " + ", ".join(f"{k}: {v}" for k, v in summary["alphas"].items()))
    if summary.get("scale_values"):
        add(f"Scales:    (rule {summary.get('scale_rule')!r}) "
            + ", ".join(f"{k} x{v}" for k, v in summary["scale_values"].items()))
    if summary.get("other_modules"):
        add("Other:     " + ", ".join(f"{k} {v}" for k, v in summary["other_modules"].items())
            + " (not LoKr; not applied)")
    meta = summary.get("metadata") or {}
    training = meta.get("training") or {}
    if training:
        add("Training:")
        for k, v in training.items():
            add(f"  {k}: {json.dumps(v) if not isinstance(v, str) else v}")
    if meta.get("trigger_words"):
        add("Trigger words: " + ", ".join(meta["trigger_words"]))
    if meta.get("top_tags"):
        add("Top tags:  " + ", ".join(f"{t} ({c})" for t, c in meta["top_tags"]))
    res = summary.get("resolve")
    if res:
        add(f"Against target: {res['matched']}/{res['total']} modules matched"
            + (f" (target family: {res.get('target_family_label') or res['target_family']})"
               if res.get("target_family") else ""))
        if res.get("family_mismatch"):
            add(f"  WRONG MODEL: {res['family_mismatch']}")
        if res.get("skipped"):
            add(f"  {res['skipped']} modules are for a component the target does not hold (e.g. a text encoder)")
        unmatched = res.get("unmatched") or {}
        items = list(unmatched.items()) if isinstance(unmatched, Mapping) else [(u, None) for u in unmatched]
        for name, near in items[:max_unmatched]:
            add(f"  unmatched: {name}" + (f"  (closest: {', '.join(map(str, near[:3]))})" if near else ""))
        if len(items) > max_unmatched:
            add(f"  ... and {len(items) - max_unmatched} more unmatched")
        for name, v in (res.get("shape_mismatch") or {}).items():
            add(f"  SHAPE MISMATCH: {name}: {v}")
    for w in summary.get("warnings") or []:
        add(f"WARNING: {w}")
    return "\n".join(lines)
