"""Merge LoKr files into a state dict or a checkpoint, streamed tensor by tensor.

Three layers, each usable on its own:

- ``merged_weight(weight, updates, device)``: one weight plus a list of ``KronUpdate`` (factors,
  scale, strength) -> the merged weight, computed in fp32 with ``kron.add_kron_`` (no ΔW is built
  except for DoRA modules, which need it) and returned in the requested dtype.
- ``merge_plan_into_file(src, out, plan)``: stream one safetensors file into a new one (atomic),
  reading, merging and writing one tensor at a time, so peak extra memory is about one module.
- ``merge_checkpoint(ckpt, pairs, out)`` / ``merge_into_state_dict(state_dict, pairs)``: load the
  LoKr files, resolve each against the checkpoint's keys and shapes *before* anything is written,
  then run the plan. Single-file LDM checkpoints, DiT checkpoints (ComfyUI `model.diffusion_model.`,
  `diffusion_model.` or bare keys) and diffusers folders are supported.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from ..base.atomic import atomic_write, check_interrupt, check_output, sync_folder, writing
from ..base.fingerprint import StatToken, check_unchanged
from ..base.device import parse_device
from ..base.memory import release_freed_memory
from ..base.dtypes import parse_dtype
from ..base.errors import LoKrConfigError, LoKrError, LoKrFormatError, LoKrKeyError, LoKrShapeError, where
from ..base.progress import Progress, StepCounter
from ..base.version import __version__
from ..base.st_writer import header_bytes, tensor_bytes
from ..formats.tensor_reader import TensorReader
from ..formats.checkpoint import (RESOLVED_COMPONENTS, checkpoint_files, file_sha256, out_entries, part_prefix,
                                  read_header, streamed_size)
from ..keymap.family import target_dit_family
from ..keymap.resolve import resolve_for
from ..tensor import kron
from ..tensor.factors import LoKrFactors

__all__ = ["KronUpdate", "MergePlan", "MergeResult", "merged_weight", "merge_plan_into_file", "merge_checkpoint",
           "merge_into_state_dict", "plan_merge", "check_strength", "check_merge_fits", "delta_bound"]


# ----------------------------------------------------------------------------------- small helpers
def check_strength(strength: Any, label: str | None = None, *, caller: str | None = None) -> float:
    """``strength`` as a finite float, else LoKrConfigError naming the file ``label`` or the ``caller``."""
    at = f"{caller}: " if caller else where(label, None)
    try:
        value = float(strength)
    except (TypeError, ValueError):
        raise LoKrConfigError(f"{at}strength {strength!r} is not a number; expected a finite number") from None
    if not math.isfinite(value):
        raise LoKrConfigError(f"{at}strength is {value}; expected a finite number")
    return value


# ------------------------------------------------------------------------------- the per-weight math
@dataclass(frozen=True)
class KronUpdate:
    """One LoKr module to add to one weight: ΔW = strength * scale * kron(W1, W2).

    ``factors`` hold the module's tensors (any device / dtype; moved to the weight's device and fp32
    when applied). ``scale`` is the module's own scale (alpha / r, ...), ``strength`` the user's
    multiplier. A module with ``factors.dora_scale`` is applied as DoRA (``dora_mode`` as in
    ``kron.dora_apply``). ``source`` / ``module`` name the file and file module, for messages.
    ``rows``: (start, stop) when the module adapts a row block of the weight (OpenCLIP's fused
    q/k/v ``in_proj_weight``: q, k or v; a DiT's fused original ``qkv``), else None (the whole weight).
    ``take``: (start, stop, total) when only rows start..stop of the module's ΔW (total rows) go
    onto this weight (a fused original DiT module split over separate q / k / v weights), else None.
    ``order``: ``"swap_halves"`` when ΔW goes on with the two halves of its rows swapped (a DiT
    modulation whose (shift, scale) halves are in the other order in the target's layout), else None.
    """

    factors: LoKrFactors
    scale: float
    strength: float = 1.0
    source: str | None = None
    module: str | None = None
    dora_mode: str = "interpolate"
    rows: tuple[int, int] | None = None
    take: tuple[int, int, int] | None = None
    order: str | None = None

    def target_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The shape this update adds to: ``shape``, or its row block when ``rows`` is set."""
        shape = tuple(int(s) for s in shape)
        if self.rows is None:
            return shape
        return (self.rows[1] - self.rows[0],) + shape[1:]

    def module_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The shape of the module's whole ΔW when it adds to a weight of ``shape`` (what its factors
        must give): the target shape, with ``take``'s total rows."""
        target = self.target_shape(shape)
        return target if self.take is None else (self.take[2],) + target[1:]

    def unsupported(self) -> str | None:
        """Why this update cannot be applied as asked (None when it can): a DoRA magnitude per input
        column normalises over all rows of the file's weight, which a split onto separate weights loses."""
        f = self.factors
        if self.take is not None and f.dora_scale is not None and _per_column(f.dora_scale, self.take[2]):
            return ("DoRA with a magnitude per input column is normalised over the whole fused weight; it cannot be "
                    "split by rows over separate weights")
        return None


ROW_ORDERS = ("swap_halves",)
"""Row permutations of ΔW a KronUpdate knows (``order``)."""


def raise_unknown_order(order: str | None, source: str | None = None, module: str | None = None) -> None:
    """LoKrConfigError unless ``order`` is None or one of ROW_ORDERS."""
    if order is not None and order not in ROW_ORDERS:
        raise LoKrConfigError(f"{where(source, module)}row order {order!r} is not known; expected one of {ROW_ORDERS}")


def row_index(total: int | None, take: tuple[int, int, int] | None, order: str | None,
              rows: int | None = None) -> torch.Tensor:
    """Rows of a ΔW of ``total`` rows (or ``rows`` when ``take`` is None) in target order: the
    halves swapped for ``order="swap_halves"``, then rows take[0]..take[1] when ``take`` is set."""
    n = int(total if total is not None else rows)
    idx = torch.arange(n)
    if order == "swap_halves":
        idx = torch.cat([idx[n // 2:], idx[: n // 2]])
    if take is not None:
        idx = idx[take[0]:take[1]]
    return idx


def _per_column(dora_scale: torch.Tensor, out: int) -> bool:
    """True when a DoRA magnitude is one per input column ((1, in, ...), ``kron.dora_norm``)."""
    return dora_scale.ndim >= 2 and dora_scale.shape[0] == 1 and out != 1


def _w1_rows(idx: torch.Tensor, out_k: int) -> torch.Tensor | None:
    """W1 rows giving kron(W1, W2)[idx] as kron(W1[rows], W2) when ``idx`` runs over whole blocks
    of ``out_k`` rows, else None."""
    if idx.numel() % out_k:
        return None
    blocks = idx.reshape(-1, out_k)
    first = blocks[:, :1]
    if bool((first % out_k != 0).any()) or not torch.equal(blocks - first, torch.arange(out_k).expand_as(blocks)):
        return None
    return (first[:, 0] // out_k).clone()


def delta_bound(u: KronUpdate, kernel: Sequence[int] = ()) -> float:
    """The largest |entry| ``u`` can add to a weight: |scale * strength| * max|W1| * max|W2| (every
    entry of kron(W1, W2) is one W1 entry times one W2 entry), in float64; 0 for strength or scale 0.
    DoRA modules: the same bound on their ΔW (their result also depends on the weight's norm)."""
    factor = abs(float(u.scale) * float(u.strength))
    if factor == 0.0:
        return 0.0
    if not factor <= torch.finfo(torch.float32).max:  # not even the fp32 multiplier can be formed
        return math.inf
    f = u.factors.map(lambda t: t.detach().to(device="cpu", dtype=torch.float32))
    w1, w2 = kron.rebuild_w1(f), kron.rebuild_w2(f, kernel)
    top = float(w1.abs().amax().double()) * float(w2.abs().amax().double()) if w1.numel() and w2.numel() else 0.0
    return factor * top if top else 0.0


HEADROOM = 1 / 16
""":func:`check_merge_fits` reads the weight only when the updates alone reach this share of the range."""


def _max_abs(t: torch.Tensor) -> float:
    """max |t| as a float; 1-byte floats (fp8, where CPU kernels lack amax) and tensor subclasses
    (ComfyUI's QuantizedTensor) are read through an fp32 copy."""
    t = t.detach()
    if t.numel() == 0:
        return 0.0
    try:
        if t.element_size() > 1 and type(t) is torch.Tensor:
            return float(t.abs().amax().double())
    except (NotImplementedError, RuntimeError):
        pass
    return float(t.float().abs().amax().double())


def check_merge_fits(weight: torch.Tensor, updates: Sequence[KronUpdate], dtype: torch.dtype | None = None,
                     key: str | None = None) -> None:
    """LoKrFormatError when ``weight`` (out, in[, k...]) plus ``updates`` could leave the range of
    ``dtype`` (default: the weight's; the math runs in fp32, so fp32's range bounds it too): the
    merge would write inf / NaN. Checked from shapes and maxima only, before any weight changes.
    The weight itself is read only when the updates' bound reaches :data:`HEADROOM` of the range
    (smaller updates overflow only a weight already within 1/16 of its dtype's largest value);
    a weight that is already not finite is not ours to judge (no check)."""
    dtype = dtype or weight.dtype
    if not dtype.is_floating_point or not updates or weight.device.type == "meta" or any(
            t.device.type == "meta" for u in updates for _, t in u.factors.tensors()):
        return  # meta tensors (shape-only runs) hold no values to check
    limit = min(torch.finfo(dtype).max, torch.finfo(torch.float32).max)
    kernel = tuple(weight.shape[2:])
    bounds = [delta_bound(u, kernel) for u in updates]
    if sum(bounds) < limit * HEADROOM:
        return
    base = _max_abs(weight)
    if not math.isfinite(base):
        return
    total = base
    for u, bound in zip(updates, bounds):
        total += bound
        if not total <= limit:
            at = where(u.source, u.module)
            raise LoKrFormatError(f"{at}merged into {key or 'its weight'} {tuple(weight.shape)} its ΔW reaches "
                                  f"{total:.3g}, beyond what {str(dtype).replace('torch.', '')} holds ({limit:.3g}): "
                                  "the weight would become inf / NaN; expected factors, alpha and strength of a "
                                  "usable size. Nothing was changed")


def merged_weight(weight: torch.Tensor, updates: Sequence[KronUpdate], device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None, *, inplace: bool = False) -> torch.Tensor:
    """``weight`` (out, in[, k...]) with every update added, on ``device`` in ``dtype``.

    The math runs in fp32 (``kron.add_kron_``, a broadcast in-place add: no ΔW is materialised,
    except for DoRA modules); the result is cast to ``dtype`` (default: the weight's dtype) once.
    Updates are applied in order (DoRA ones see the weight merged so far); LoKrFormatError first
    when the result could leave ``dtype``'s range (:func:`check_merge_fits`). ``weight`` is not
    modified unless ``inplace``: then an fp32, contiguous weight already on ``device`` is updated
    and returned as is (no copy); other weights are still computed on an fp32 copy.
    """
    device = torch.device(device) if device is not None else weight.device
    out_dtype = dtype or weight.dtype
    if not updates:
        return weight.to(device=device, dtype=out_dtype)
    check_merge_fits(weight, updates, out_dtype)
    if (inplace and weight.dtype == torch.float32 and weight.device == device and weight.is_contiguous()
            and not weight.requires_grad):
        full = weight
    else:
        full = weight.detach().to(device=device, dtype=torch.float32, copy=True).contiguous()
    kernel = tuple(full.shape[2:])
    for u in updates:
        work = full if u.rows is None else full[u.rows[0]:u.rows[1]]  # a row block is a contiguous view
        f = u.factors.map(lambda t: t.to(device=device, dtype=torch.float32))
        factor = float(u.scale) * float(u.strength)
        idx = placement_index(u, work.shape[0])
        if f.dora_scale is not None:
            delta = kron.kron_delta(f, u.module_shape(full.shape), float(u.scale))
            mag = f.dora_scale
            if idx is not None:
                delta = delta[idx.to(delta.device)]
                if not _per_column(mag, delta.shape[0]):
                    mag = mag[idx.to(mag.device)]
            new = kron.dora_apply(work, delta, mag, float(u.strength), mode=u.dora_mode)
            if not bool(torch.isfinite(new).all()) and bool(torch.isfinite(work).all()):
                raise LoKrFormatError(f"{where(u.source, u.module)}the DoRA merge at strength {u.strength} gives inf / "
                                      "NaN values (ΔW or its norm leaves fp32's range); expected factors, alpha and "
                                      "strength of a usable size")
            work.copy_(new)
            del delta, new
        elif factor != 0.0:
            w1, w2 = kron.rebuild_w1(f), kron.rebuild_w2(f, kernel)
            sel = None if idx is None else _w1_rows(idx, int(w2.shape[0]))
            if idx is None:
                kron.add_kron_(work, w1, w2, factor)
            elif sel is not None:  # whole W2 blocks: still no ΔW built
                kron.add_kron_(work, w1[sel.to(w1.device)], w2, factor)
            else:
                delta = kron.kron_product(w1, w2).reshape(u.module_shape(full.shape))
                work.add_(delta[idx.to(delta.device)], alpha=factor)
                del delta
    out = full.to(dtype=out_dtype)
    if any(u.factors.dora_scale is not None for u in updates) and not bool(torch.isfinite(out).all()):
        u = updates[0]  # a DoRA magnitude may be beyond the output dtype; other updates were bounded first
        raise LoKrFormatError(f"{where(u.source, u.module)}the DoRA merged weight does not fit "
                              f"{str(out_dtype).replace('torch.', '')} (inf / NaN); expected a usable magnitude")
    return out


def placement_index(u: KronUpdate, rows: int) -> torch.Tensor | None:
    """Rows of ``u``'s ΔW in the order they add to the ``rows`` target rows (int64; ``row_index``),
    or None when ΔW adds as it is."""
    if u.take is None and u.order is None:
        return None
    raise_unknown_order(u.order, u.source, u.module)
    return row_index(u.take[2] if u.take is not None else None, u.take, u.order, rows)


# ------------------------------------------------------------------------ streamed safetensors writer
def _stream_file(src: Path, dst: str, plan: Mapping[str, Sequence[KronUpdate]], *, dtype: torch.dtype | None,
                 device: torch.device, metadata: Mapping[str, str] | None, progress: Callable[[], None] | None,
                 expect: StatToken) -> int:
    """Write ``src`` with ``plan`` merged to ``dst`` (a plain path), one tensor at a time; returns #merged.

    ``expect``: ``src``'s stat token from when its header was read (``read_header``); checked before
    the file is opened and after every tensor read, so a file rewritten meanwhile stops the write
    with a clear error. ``check_interrupt`` runs before each tensor (a cancelled prompt stops here).
    """
    from safetensors import safe_open

    merged = 0
    check_unchanged(src, expect)
    with safe_open(str(src), framework="pt", device="cpu") as fin:
        entries = out_entries(fin, src, dtype)
    # positioned reads, not safe_open's memory map: the map's pages would stay resident until the
    # file is closed (measured: the whole checkpoint of RSS); a read tensor is freed once written
    with TensorReader(src) as reader:
        with open(dst, "wb") as fh:
            fh.write(header_bytes([e[:4] for e in entries], metadata))
            for key, _, _, nbytes, out_dtype in entries:
                check_interrupt()
                t = reader.get(key)
                check_unchanged(src, expect)
                updates = plan.get(key, ())
                if updates:
                    t = merged_weight(t, updates, device=device, dtype=out_dtype)
                    merged += 1
                elif t.dtype != out_dtype:
                    t = t.to(out_dtype)
                data = tensor_bytes(t)
                if data.nbytes != nbytes:  # pragma: no cover - guards the header we wrote
                    raise LoKrError(f"{where(str(src), None)}tensor {key!r}: wrote {data.nbytes} bytes, header says {nbytes}")
                fh.write(data)
                del t, data
                release_freed_memory()  # keep the resident set near what is alive (base.memory)
                if progress is not None:
                    progress()
    return merged


def merge_plan_into_file(src: str | os.PathLike, out: str | os.PathLike, plan: Mapping[str, Sequence[KronUpdate]],
                         *, dtype: str | torch.dtype | None = None, device: str | torch.device | None = None,
                         metadata: Mapping[str, str] | None = None,
                         progress: Progress | None = None) -> int:
    """Stream the safetensors file ``src`` to ``out`` with ``plan`` ({tensor key: updates}) merged.

    Every plan key must be a tensor of ``src`` whose shape the updates fit (checked before writing).
    ``out`` is written atomically (temp file + rename); it may not be ``src``. ``metadata`` replaces
    the file's metadata (default: keep it). Returns the number of tensors merged.
    """
    src, out = Path(src), Path(out)
    shapes, file_meta, token = read_header(src)
    _check_plan(plan, shapes, str(src))
    dev = parse_device(device)
    dt = parse_dtype(dtype)
    total = len(shapes)
    counter = StepCounter(progress, total)
    result: list[int] = []
    meta = metadata if metadata is not None else file_meta
    atomic_write(out, lambda tmp: result.append(_stream_file(src, tmp, plan, dtype=dt, device=dev, metadata=meta,
                                                              progress=counter.step, expect=token)), [src],
                 size=streamed_size(src, dt, dict(meta)))
    return result[0]


def _check_plan(plan: Mapping[str, Sequence[KronUpdate]], shapes: Mapping[str, tuple[int, ...]], file: str) -> None:
    for key, updates in plan.items():
        if key not in shapes:
            raise LoKrKeyError(f"{where(file, None)}tensor {key!r} is not in the checkpoint; expected one of its keys")
        for u in updates:
            u.factors.check_target(u.module_shape(shapes[key]), u.source, u.module)


# ------------------------------------------------------------------------------- LoKr file handling
@dataclass
class _Lokr:
    weights: Any  # LoKrWeights
    strength: float
    label: str
    sha256: str | None


def _load_pairs(pairs: Sequence[tuple[Any, float]] | Any) -> list[_Lokr]:
    from ..formats.io import load_lokr

    if not isinstance(pairs, (list, tuple)):
        raise LoKrConfigError(f"merge: pairs must be a list of (lokr, strength), got {type(pairs).__name__}")
    loaded = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise LoKrConfigError(f"merge: pairs[{i}] is {pair!r}; expected a (lokr file or LoKrWeights, strength) pair")
        lokr, strength = pair
        if isinstance(lokr, (str, os.PathLike)):
            label = str(lokr)
            strength = check_strength(strength, label)
            if not Path(lokr).exists():
                raise LoKrFormatError(f"{where(label, None)}file does not exist; expected a LoKr file")
            weights = load_lokr(lokr)
            digest = file_sha256(lokr)
        else:
            weights = lokr
            label = str(getattr(weights, "source", None) or f"<LoKrWeights #{i}>")
            strength = check_strength(strength, label)
            src = getattr(weights, "source", None)
            digest = file_sha256(src) if src and Path(src).exists() else None
        loaded.append(_Lokr(weights, strength, label, digest))
    if not loaded:
        raise LoKrConfigError("merge: no LoKr files given; expected at least one (lokr, strength) pair")
    return loaded


@dataclass
class MergePlan:
    """What ``plan_merge`` found. ``plan``: {checkpoint key: [KronUpdate]}; ``matched``: {lokr label:
    {file module: key, or a tuple of keys for a fused module split over several weights}};
    ``unmatched``: {lokr label: [file modules that resolve nowhere, are ambiguous, or belong to a
    component the checkpoint lacks]}; ``skipped``: {lokr label: {file module: why it is not merged}}
    (matched, but not applicable as asked); ``families``: {lokr label: family the file's names
    point to (keymap family id) or None}; ``target_family``: the checkpoint's family or None."""

    plan: dict[str, list[KronUpdate]]
    matched: dict[str, dict[str, Any]]
    unmatched: dict[str, list[str]]
    skipped: dict[str, dict[str, str]] = field(default_factory=dict)
    families: dict[str, str | None] = field(default_factory=dict)
    target_family: str | None = None


def plan_merge(lokrs: Sequence[_Lokr], shapes: Mapping[str, tuple[int, ...]], *,
               scale_rule: str | float = "file", dora_mode: str = "interpolate", strict: bool = False) -> MergePlan:
    """Resolve every LoKr against a checkpoint's {key: shape} and build the merge plan.

    Keys may be LDM, ComfyUI or diffusers state-dict keys (diffusers folders: ``unet.``,
    ``text_encoder.``, ``text_encoder_2.`` prefixes), DiT checkpoints included (``model.diffusion_model.``,
    ``diffusion_model.`` or bare keys; see ``lokr_core.keymap.resolve``): a module may land on a
    row block of a fused weight (``report.rows``), with its (shift, scale) halves swapped
    (``report.row_order``), or split by rows over several weights (``report.split``).
    Raises before anything is written: LoKrShapeError when a module matched by name but not by
    shape (the wrong model family), LoKrKeyError when no module of a file resolves, and with
    ``strict`` LoKrKeyError when any module is unmatched or skipped.
    """
    out = MergePlan({}, {}, {})
    for lk in lokrs:
        names = list(getattr(lk.weights, "module_names", None) or list(lk.weights.modules))
        report = resolve_for(lk.weights, shapes)
        mismatch = dict(getattr(report, "shape_mismatch", {}) or {})
        if mismatch:
            m, v = next(iter(mismatch.items()))
            fam = getattr(report, "family_mismatch", None)
            raise LoKrShapeError(f"{where(lk.label, m)}shape does not fit the checkpoint ({_fmt_mismatch(v)}); "
                                 f"{len(mismatch)} module(s) mismatch, first ones: {sorted(mismatch)[:5]}. "
                                 + (f"{fam[0].upper() + fam[1:]}. " if fam else "Is this LoKr for another model family? ")
                                 + "Nothing was written")
        rows = dict(getattr(report, "rows", {}) or {})
        order = dict(getattr(report, "row_order", {}) or {})
        places: dict[str, list[tuple[str, dict[str, Any]]]] = {
            m: [(k, {"rows": tuple(rows[m]) if m in rows else None, "order": order.get(m)})]
            for m, k in report.matched.items() if k in shapes}
        for m, parts in (getattr(report, "split", {}) or {}).items():
            if all(k in shapes for k, _ in parts):
                total = parts[-1][1][1]
                places[m] = [(k, {"take": (a, b, total)}) for k, (a, b) in parts]
        if not places:
            fam = getattr(report, "family_mismatch", None)
            raise LoKrKeyError(f"{where(lk.label, None)}none of its {len(names)} modules matches a weight of the "
                               f"checkpoint (first: {names[:3]}); expected a LoKr for this model"
                               + (f" ({fam})" if fam else "") + ". Nothing was written")
        found: dict[str, Any] = {}
        skipped: dict[str, str] = {}
        updates: list[tuple[str, KronUpdate]] = []
        for mod, targets in places.items():
            f = lk.weights.modules[mod]
            scale = float(lk.weights.scale(mod, scale_rule))
            if not math.isfinite(scale):
                raise LoKrConfigError(f"{where(lk.label, mod)}scale is {scale} under rule {scale_rule!r}; expected a finite number")
            mine = [(key, KronUpdate(f, scale, lk.strength, lk.label, mod, dora_mode, **how)) for key, how in targets]
            why = next((u.unsupported() for _, u in mine if u.unsupported()), None)
            if why:
                skipped[mod] = why
                continue
            for key, u in mine:
                f.check_target(u.module_shape(shapes[key]), lk.label, mod)
            updates += mine
            found[mod] = mine[0][0] if len(mine) == 1 else tuple(k for k, _ in mine)
        unmatched = sorted(n for n in names if n not in found and n not in skipped)
        if strict and (unmatched or skipped):
            first = (unmatched or sorted(skipped))[:3]
            raise LoKrKeyError(f"{where(lk.label, None)}{len(unmatched)} module(s) unmatched and {len(skipped)} "
                               f"skipped (first: {first}"
                               + (f"; {skipped[first[0]]}" if first[0] in skipped else "")
                               + "); strict merge expects every module to apply. Nothing was written")
        for key, u in updates:
            out.plan.setdefault(key, []).append(u)
        out.matched[lk.label] = found
        out.unmatched[lk.label] = unmatched
        out.skipped[lk.label] = skipped
        out.families[lk.label] = getattr(report, "family", None)
        out.target_family = out.target_family or getattr(report, "target_family", None)
    out.target_family = out.target_family or target_dit_family(shapes)
    return out


def _fmt_mismatch(v: Any) -> str:
    if isinstance(v, (tuple, list)) and len(v) == 2:
        return f"expected {tuple(v[0]) if v[0] is not None else None}, found {tuple(v[1]) if v[1] is not None else None}"
    return str(v)


# ------------------------------------------------------------------------------------ checkpoints
@dataclass
class MergeResult:
    """What a merge did. ``matched``: {lokr label: {file module: target key (a tuple of keys for a
    fused module split over several weights)}}; ``unmatched``: {lokr label: [file modules that
    resolve nowhere]} (skipped); ``skipped``: {lokr label: {file module: why it was not merged}};
    ``families``: {lokr label: family of the file (keymap id, e.g. "flux", "sd3", "sdxl") or None};
    ``checkpoint_family``: family of the checkpoint or None; ``merged_tensors``: how many weights
    changed; ``tensors``: how many were written; ``seconds``: wall time; ``out``: the written path
    (None for in-memory merges); ``state_dict``: the merged dict (in-memory only); ``metadata``:
    what was recorded in the output file."""

    out: Path | None
    matched: dict[str, dict[str, str]]
    unmatched: dict[str, list[str]]
    merged_tensors: int
    tensors: int
    seconds: float
    device: str
    dtype: str | None
    metadata: dict[str, str] = field(default_factory=dict)
    state_dict: dict[str, torch.Tensor] | None = None
    skipped: dict[str, dict[str, str]] = field(default_factory=dict)
    families: dict[str, str | None] = field(default_factory=dict)
    checkpoint_family: str | None = None


def _merge_metadata(base: Mapping[str, str], lokrs: Sequence[_Lokr], scale_rule: Any, dtype: torch.dtype | None) -> dict[str, str]:
    meta = dict(base)
    prev = meta.get("lokr_merge")
    record = {
        "tool": f"comfyui-lokr {__version__}",
        "scale_rule": scale_rule if isinstance(scale_rule, str) else float(scale_rule),
        "dtype": str(dtype).replace("torch.", "") if dtype is not None else "unchanged",
        "lokrs": [{"file": os.path.basename(lk.label), "strength": lk.strength, "sha256": lk.sha256}
                  for lk in lokrs],
    }
    history = []
    if prev:
        try:
            old = json.loads(prev)
            history = old if isinstance(old, list) else [old]
        except ValueError:
            history = []
    meta["lokr_merge"] = json.dumps(history + [record])
    return meta


def merge_checkpoint(ckpt: str | os.PathLike, pairs: Sequence[tuple[Any, float]], out: str | os.PathLike, *,
                     dtype: str | torch.dtype | None = None, device: str | torch.device | None = None,
                     progress: Progress | None = None, scale_rule: str | float = "file",
                     dora_mode: str = "interpolate", strict: bool = False) -> MergeResult:
    """Merge LoKr files into a safetensors checkpoint, streamed, and write the result to ``out``.

    ``ckpt``: an LDM single-file checkpoint (SD1.x / SD2.x / SDXL ``.safetensors``), a DiT checkpoint
    as ComfyUI saves it (``model.diffusion_model.<original path>``, with or without ``text_encoders.*``
    / ``vae.*``), a diffusion-model-only file (``diffusion_model.*`` or bare keys: Flux, SD3, Z-Image /
    Lumina 2, Qwen-Image, Wan, ...), or a diffusers folder (``unet/diffusion_pytorch_model.safetensors``,
    ``text_encoder/model.safetensors``, ...; ``out`` is then a new folder, other files copied).
    ``pairs``: ``[(path or LoKrWeights, strength)]``. Modules that match nothing, or that cannot be
    applied as asked, are listed in ``result.unmatched`` / ``result.skipped`` and the rest merged;
    ``strict=True`` refuses the merge instead (nothing written).
    ``dtype``: output dtype of floating tensors (``"fp16" | "bf16" | "fp32"``; None keeps each
    tensor's). ``device``: where the math runs (None: cuda when available, else cpu).
    ``progress(done, total)`` is called per tensor.

    Before anything is written: every LoKr is loaded and resolved against the checkpoint's keys and
    shapes (a LoKr that matches nothing, or matches with a wrong shape, raises naming the file and
    module), ``out`` must differ from ``ckpt`` (also via symlink / hard link), strengths must be
    finite. Then tensors are processed one by one: ΔW of each LoKr is added in fp32 with
    ``kron.add_kron_`` (no full ΔW beyond one DoRA module), cast, and written; peak extra memory is
    about one weight. The output carries metadata ``lokr_merge`` (JSON list: tool version, scale
    rule, dtype, per LoKr its file name, strength and sha256). Written atomically (temp + rename).
    """
    t0 = time.perf_counter()
    ckpt, out = Path(ckpt), Path(out)
    comps = checkpoint_files(ckpt)
    check_output(out, [ckpt], new_folder=ckpt.is_dir())
    dt = parse_dtype(dtype)
    dev = parse_device(device)
    lokrs = _load_pairs(pairs)
    shapes, where_is, total, headers = _index_checkpoint(ckpt, comps)
    mp = plan_merge(lokrs, shapes, scale_rule=scale_rule, dora_mode=dora_mode, strict=strict)
    by_file: dict[Path, dict[str, list[KronUpdate]]] = {}
    for key, updates in mp.plan.items():
        f, k = where_is[key]
        by_file.setdefault(f, {})[k] = updates
    counter = StepCounter(progress, total)
    write = _write_file if ckpt.is_file() else _write_folder
    merged, record_meta = write(ckpt, out, by_file, lambda meta: _merge_metadata(meta, lokrs, scale_rule, dt),
                                headers, dtype=dt, device=dev, progress=counter.step)
    return MergeResult(out=out, matched=mp.matched, unmatched=mp.unmatched, merged_tensors=merged, tensors=total,
                       seconds=time.perf_counter() - t0, device=str(dev),
                       dtype=str(dt).replace("torch.", "") if dt else None, metadata=record_meta,
                       skipped=mp.skipped, families=mp.families, checkpoint_family=mp.target_family)


_Headers = dict[Path, tuple[dict[str, str], StatToken]]
"""{safetensors file: (its metadata, its stat token when the header was read)}."""


def _index_checkpoint(ckpt: Path, comps: Mapping[str, list[Path]],
                      ) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[Path, str]], int, _Headers]:
    """({plan key: shape}, {plan key: (file, key in the file)}, tensor count, headers) of a checkpoint.

    Plan keys are the file's keys for a single file, ``<part>.<key>`` for the resolved parts of a
    diffusers folder (other parts, vae / safety checker / ..., are only counted: copied unchanged).
    """
    single = ckpt.is_file()
    shapes: dict[str, tuple[int, ...]] = {}
    where_is: dict[str, tuple[Path, str]] = {}
    total = 0
    headers: _Headers = {}
    for comp, files in comps.items():
        prefix = "" if single else part_prefix(comp)
        for f in files:
            s, meta, token = read_header(f)
            headers[f] = (meta, token)
            total += len(s)
            if not single and comp not in RESOLVED_COMPONENTS:
                continue
            for k, shape in s.items():
                shapes[prefix + k] = shape
                where_is[prefix + k] = (f, k)
    return shapes, where_is, total, headers


def _write_file(ckpt: Path, out: Path, by_file: Mapping[Path, Mapping[str, Sequence[KronUpdate]]],
                metadata_for: Callable[[Mapping[str, str]], dict[str, str]], headers: _Headers, *,
                dtype: torch.dtype | None, device: torch.device,
                progress: Callable[[], None]) -> tuple[int, dict[str, str]]:
    """Merge a single-file checkpoint into ``out`` (atomic); returns (tensors merged, metadata written)."""
    meta, token = headers[ckpt]
    record_meta = metadata_for(meta)
    merged: list[int] = []
    atomic_write(out, lambda tmp: merged.append(_stream_file(ckpt, tmp, by_file.get(ckpt, {}), dtype=dtype,
                                                             device=device, metadata=record_meta,
                                                             progress=progress, expect=token)), [ckpt],
                 size=streamed_size(ckpt, dtype, record_meta))
    return merged[0], record_meta


def _write_folder(ckpt: Path, out: Path, by_file: Mapping[Path, Mapping[str, Sequence[KronUpdate]]],
                  metadata_for: Callable[[Mapping[str, str]], dict[str, str]], headers: _Headers, *,
                  dtype: torch.dtype | None, device: torch.device,
                  progress: Callable[[], None]) -> tuple[int, dict[str, str]]:
    """Merge a diffusers folder into the new folder ``out``: every safetensors file streamed, other
    files copied, all in a temp folder (``base.atomic.writing``) renamed at the end; returns
    (tensors merged, first metadata)."""
    merged = 0
    record_meta: dict[str, str] = {}
    files = sorted(ckpt.rglob("*"))
    size = sum(streamed_size(f, dtype, metadata_for(headers[f][0])) if f in headers else f.stat().st_size
               for f in files if f.is_file())
    with writing(out.resolve(), size, folder=True) as tmpdir:
        for src in files:
            dst = tmpdir / src.relative_to(ckpt)
            if src.is_dir():
                dst.mkdir(parents=True, exist_ok=True)
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src in headers:
                meta = metadata_for(headers[src][0])
                record_meta = record_meta or meta
                merged += _stream_file(src, str(dst), by_file.get(src, {}), dtype=dtype, device=device, metadata=meta,
                                       progress=progress, expect=headers[src][1])
            else:
                check_interrupt()
                shutil.copy2(src, dst)
        if out.exists():
            out.rmdir()  # empty (checked before)
        os.replace(tmpdir, out)
    sync_folder(out.resolve().parent)
    return merged, record_meta


def merge_into_state_dict(state_dict: Mapping[str, torch.Tensor], pairs: Sequence[tuple[Any, float]], *,
                          dtype: str | torch.dtype | None = None, device: str | torch.device | None = None,
                          progress: Progress | None = None, scale_rule: str | float = "file",
                          dora_mode: str = "interpolate", strict: bool = False) -> MergeResult:
    """Merge LoKr files into an in-memory state dict ({key: tensor}, LDM or diffusers names).

    Returns a MergeResult whose ``state_dict`` is a new dict: merged weights are new tensors (on
    ``device``; None: the weight's own device), untouched ones are the caller's tensors (cast to
    ``dtype`` when given). The input dict and its tensors are never modified. Resolution and all
    checks happen before any math, as in ``merge_checkpoint``.
    """
    t0 = time.perf_counter()
    if not isinstance(state_dict, Mapping):
        raise LoKrConfigError(f"merge_into_state_dict: state_dict must be a mapping, got {type(state_dict).__name__}")
    dt = parse_dtype(dtype)
    lokrs = _load_pairs(pairs)
    shapes = {k: tuple(v.shape) for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    mp = plan_merge(lokrs, shapes, scale_rule=scale_rule, dora_mode=dora_mode, strict=strict)
    plan = mp.plan
    dev = parse_device(device) if device is not None else None
    counter = StepCounter(progress, len(state_dict))
    new: dict[str, torch.Tensor] = {}
    for key, t in state_dict.items():
        updates = plan.get(key)
        if isinstance(t, torch.Tensor):
            out_dtype = dt if (dt is not None and t.is_floating_point()) else t.dtype
            if updates:
                t = merged_weight(t, updates, device=dev or t.device, dtype=out_dtype)
            elif t.dtype != out_dtype:
                t = t.to(out_dtype)
        new[key] = t
        counter.step()
    return MergeResult(out=None, matched=mp.matched, unmatched=mp.unmatched, merged_tensors=len(plan),
                       tensors=len(state_dict), seconds=time.perf_counter() - t0,
                       device=str(dev) if dev else "input", dtype=str(dt).replace("torch.", "") if dt else None,
                       state_dict=new, skipped=mp.skipped, families=mp.families, checkpoint_family=mp.target_family)
