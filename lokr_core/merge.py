"""Merge LoKr files into a state dict or a checkpoint, streamed tensor by tensor.

Three layers, each usable on its own:

- ``merged_weight(weight, updates, device)``: one weight plus a list of ``KronUpdate`` (factors,
  scale, strength) -> the merged weight, computed in fp32 with ``kron.add_kron_`` (no ΔW is built
  except for DoRA modules, which need it) and returned in the requested dtype.
- ``merge_plan_into_file(src, out, plan)``: stream one safetensors file into a new one (atomic),
  reading, merging and writing one tensor at a time, so peak extra memory is about one module.
- ``merge_checkpoint(ckpt, pairs, out)`` / ``merge_into_state_dict(state_dict, pairs)``: load the
  LoKr files, resolve each against the checkpoint's keys and shapes *before* anything is written,
  then run the plan. Single-file LDM checkpoints and diffusers folders are supported.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

from . import kron
from .atomic import atomic_write
from .errors import LoKrConfigError, LoKrError, LoKrFormatError, LoKrKeyError, LoKrShapeError, where
from .factors import LoKrFactors

__all__ = ["KronUpdate", "MergeResult", "merged_weight", "merge_plan_into_file", "merge_checkpoint",
           "merge_into_state_dict", "plan_merge", "parse_dtype", "default_device", "file_sha256"]

Progress = Callable[[int, int], Any]
"""``progress(done, total)``: called after each tensor (counts are tensors, not bytes)."""

_ST_DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}
for _name, _code in (("float8_e4m3fn", "F8_E4M3"), ("float8_e5m2", "F8_E5M2"), ("uint16", "U16"),
                     ("uint32", "U32"), ("uint64", "U64")):
    if hasattr(torch, _name):
        _ST_DTYPES[getattr(torch, _name)] = _code
_TORCH_DTYPES = {code: dt for dt, code in _ST_DTYPES.items()}

_DTYPE_NAMES = {"fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
                "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
                "fp32": torch.float32, "float32": torch.float32, "float": torch.float32}


# ----------------------------------------------------------------------------------- small helpers
def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"fp16" | "bf16" | "fp32"`` (or a floating torch.dtype, or None) -> torch.dtype or None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        if isinstance(dtype, torch.dtype) and not dtype.is_floating_point:
            raise LoKrConfigError(f"merge: dtype must be a floating dtype, got {dtype}")
        return dtype
    key = str(dtype).lower()
    if key not in _DTYPE_NAMES:
        raise LoKrConfigError(f"merge: dtype {dtype!r} is not known; expected one of fp16, bf16, fp32")
    return _DTYPE_NAMES[key]


def default_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a torch.device; None -> ``cuda`` when available, else ``cpu``."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise LoKrConfigError(f"merge: device {device!r} is not a torch device ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LoKrConfigError(f"merge: device {device!r} asked for, but CUDA is not available here; expected 'cpu' "
                              "or no device (cuda when available, else cpu)")
    return dev


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes; for a folder, of every file in it (sorted relative names + bytes)."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    for q in files:
        if p.is_dir():
            h.update(str(q.relative_to(p)).encode() + b"\0")
        with open(q, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


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
    q/k/v ``in_proj_weight``: q, k or v), else None (the whole weight).
    """

    factors: LoKrFactors
    scale: float
    strength: float = 1.0
    source: str | None = None
    module: str | None = None
    dora_mode: str = "interpolate"
    rows: tuple[int, int] | None = None

    def target_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The shape this update adds to: ``shape``, or its row block when ``rows`` is set."""
        shape = tuple(int(s) for s in shape)
        if self.rows is None:
            return shape
        return (self.rows[1] - self.rows[0],) + shape[1:]


def merged_weight(weight: torch.Tensor, updates: Sequence[KronUpdate], device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None, *, inplace: bool = False) -> torch.Tensor:
    """``weight`` (out, in[, k...]) with every update added, on ``device`` in ``dtype``.

    The math runs in fp32 (``kron.add_kron_``, a broadcast in-place add: no ΔW is materialised,
    except for DoRA modules); the result is cast to ``dtype`` (default: the weight's dtype) once.
    Updates are applied in order (DoRA ones see the weight merged so far). ``weight`` is not
    modified unless ``inplace``: then an fp32, contiguous weight already on ``device`` is updated
    and returned as is (no copy); other weights are still computed on an fp32 copy.
    """
    device = torch.device(device) if device is not None else weight.device
    out_dtype = dtype or weight.dtype
    if not updates:
        return weight.to(device=device, dtype=out_dtype)
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
        if f.dora_scale is not None:
            delta = kron.kron_delta(f, work.shape, float(u.scale))
            work.copy_(kron.dora_apply(work, delta, f.dora_scale, float(u.strength), mode=u.dora_mode))
            del delta
        elif factor != 0.0:
            kron.add_kron_(work, kron.rebuild_w1(f), kron.rebuild_w2(f, kernel), factor)
    return full.to(dtype=out_dtype)


# ------------------------------------------------------------------------ streamed safetensors writer
def _header_bytes(entries: Sequence[tuple[str, str, tuple[int, ...], int]], metadata: Mapping[str, str] | None) -> bytes:
    """safetensors header for (key, dtype code, shape, nbytes) entries in write order, 8-byte padded."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for key, code, shape, nbytes in entries:
        header[key] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * ((8 - len(raw) % 8) % 8)
    return struct.pack("<Q", len(raw)) + raw


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    t = t.detach().to("cpu").contiguous()
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


def _stream_file(src: Path, dst: str, plan: Mapping[str, Sequence[KronUpdate]], *, dtype: torch.dtype | None,
                 device: torch.device, metadata: Mapping[str, str] | None, progress: Callable[[], None] | None) -> int:
    """Write ``src`` with ``plan`` merged to ``dst`` (a plain path), one tensor at a time; returns #merged."""
    from safetensors import safe_open

    merged = 0
    with safe_open(str(src), framework="pt", device="cpu") as fin:
        keys = list(fin.keys())
        entries = []
        for key in keys:
            sl = fin.get_slice(key)
            shape = tuple(int(s) for s in sl.get_shape())
            code = sl.get_dtype()
            src_dtype = _TORCH_DTYPES.get(code)
            if src_dtype is None:
                raise LoKrFormatError(f"{where(str(src), None)}tensor {key!r} has dtype {code}, which this merge "
                                      "cannot handle; expected a float, int or bool tensor")
            out_dtype = dtype if (dtype is not None and src_dtype.is_floating_point) else src_dtype
            itemsize = torch.empty((), dtype=out_dtype).element_size()
            entries.append((key, _ST_DTYPES[out_dtype], shape, math.prod(shape) * itemsize, out_dtype))
        with open(dst, "wb") as fh:
            fh.write(_header_bytes([e[:4] for e in entries], metadata))
            for key, _, _, nbytes, out_dtype in entries:
                t = fin.get_tensor(key)
                updates = plan.get(key, ())
                if updates:  # not in place: t may be copy-on-write pages of the file's mmap, which
                    # would stay allocated until the file is closed (measured: +1 checkpoint of RAM)
                    t = merged_weight(t, updates, device=device, dtype=out_dtype)
                    merged += 1
                elif t.dtype != out_dtype:
                    t = t.to(out_dtype)
                data = _tensor_bytes(t)
                if data.nbytes != nbytes:  # pragma: no cover - guards the header we wrote
                    raise LoKrError(f"{where(str(src), None)}tensor {key!r}: wrote {data.nbytes} bytes, header says {nbytes}")
                fh.write(data)
                del t, data
                if progress is not None:
                    progress()
    return merged


def _file_keys_shapes(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """({key: shape}, metadata) of a safetensors file, read from its header only."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            shapes = {k: tuple(int(s) for s in f.get_slice(k).get_shape()) for k in f.keys()}
            return shapes, dict(f.metadata() or {})
    except LoKrError:
        raise
    except Exception as exc:  # safetensors raises its own SafetensorError / OSError
        raise LoKrFormatError(f"{where(str(path), None)}cannot read as safetensors ({exc}); expected a "
                              ".safetensors checkpoint") from None


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
    shapes, file_meta = _file_keys_shapes(src)
    _check_plan(plan, shapes, str(src))
    dev = default_device(device)
    dt = parse_dtype(dtype)
    total = len(shapes)
    counter = _Counter(progress, total)
    result: list[int] = []
    atomic_write(out, lambda tmp: result.append(_stream_file(src, tmp, plan, dtype=dt, device=dev,
                                                              metadata=metadata if metadata is not None else file_meta,
                                                              progress=counter.step)), [src])
    return result[0]


class _Counter:
    """Calls ``progress(done, total)`` after each tensor across several files."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def step(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


def _check_plan(plan: Mapping[str, Sequence[KronUpdate]], shapes: Mapping[str, tuple[int, ...]], file: str) -> None:
    for key, updates in plan.items():
        if key not in shapes:
            raise LoKrKeyError(f"{where(file, None)}tensor {key!r} is not in the checkpoint; expected one of its keys")
        for u in updates:
            u.factors.check_target(u.target_shape(shapes[key]), u.source, u.module)


# ------------------------------------------------------------------------------- LoKr file handling
@dataclass
class _Lokr:
    weights: Any  # LoKrWeights
    strength: float
    label: str
    sha256: str | None


def _load_pairs(pairs: Sequence[tuple[Any, float]] | Any) -> list[_Lokr]:
    from .io import load_lokr

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


def _resolve(weights: Any, target: Mapping[str, tuple[int, ...]]) -> Any:
    if hasattr(weights, "resolve"):
        return weights.resolve(target)
    from .resolve import resolve

    return resolve(weights, target)


def plan_merge(lokrs: Sequence[_Lokr], shapes: Mapping[str, tuple[int, ...]], *,
               scale_rule: str | float = "file", dora_mode: str = "interpolate",
               ) -> tuple[dict[str, list[KronUpdate]], dict[str, dict[str, str]], dict[str, list[str]]]:
    """Resolve every LoKr against a checkpoint's {key: shape} and build the merge plan.

    Keys may be LDM, ComfyUI or diffusers state-dict keys (diffusers folders: ``unet.``,
    ``text_encoder.``, ``text_encoder_2.`` prefixes; see ``lokr_core.resolve``). Returns (plan
    {key: [KronUpdate]}, matched {lokr label: {module: key}}, unmatched {lokr label: [module]}:
    names that resolve nowhere, are ambiguous, or belong to a component the checkpoint lacks).
    Raises before anything is written: LoKrShapeError when a module matched by name but not by
    shape (the wrong model family), LoKrKeyError when no module of a file resolves.
    """
    plan: dict[str, list[KronUpdate]] = {}
    matched_all: dict[str, dict[str, str]] = {}
    unmatched_all: dict[str, list[str]] = {}
    for lk in lokrs:
        names = list(getattr(lk.weights, "module_names", None) or list(lk.weights.modules))
        report = _resolve(lk.weights, shapes)
        mismatch = dict(getattr(report, "shape_mismatch", {}) or {})
        if mismatch:
            m, v = next(iter(mismatch.items()))
            fam = getattr(report, "family_mismatch", None)
            raise LoKrShapeError(f"{where(lk.label, m)}shape does not fit the checkpoint ({_fmt_mismatch(v)}); "
                                 f"{len(mismatch)} module(s) mismatch, first ones: {sorted(mismatch)[:5]}. "
                                 + (f"{fam[0].upper() + fam[1:]}. " if fam else "Is this LoKr for another model family? ")
                                 + "Nothing was written")
        found = {m: k for m, k in report.matched.items() if k in shapes}
        if not found:
            fam = getattr(report, "family_mismatch", None)
            raise LoKrKeyError(f"{where(lk.label, None)}none of its {len(names)} modules matches a weight of the "
                               f"checkpoint (first: {names[:3]}); expected a LoKr for this model"
                               + (f" ({fam})" if fam else "") + ". Nothing was written")
        rows = dict(getattr(report, "rows", {}) or {})
        for mod, key in found.items():
            f = lk.weights.modules[mod]
            scale = float(lk.weights.scale(mod, scale_rule))
            if not math.isfinite(scale):
                raise LoKrConfigError(f"{where(lk.label, mod)}scale is {scale} under rule {scale_rule!r}; expected a finite number")
            u = KronUpdate(f, scale, lk.strength, lk.label, mod, dora_mode, tuple(rows[mod]) if mod in rows else None)
            f.check_target(u.target_shape(shapes[key]), lk.label, mod)
            plan.setdefault(key, []).append(u)
        matched_all[lk.label] = found
        unmatched_all[lk.label] = sorted(n for n in names if n not in found)
    return plan, matched_all, unmatched_all


def _fmt_mismatch(v: Any) -> str:
    if isinstance(v, (tuple, list)) and len(v) == 2:
        return f"expected {tuple(v[0]) if v[0] is not None else None}, found {tuple(v[1]) if v[1] is not None else None}"
    return str(v)


# ------------------------------------------------------------------------------------ checkpoints
@dataclass
class MergeResult:
    """What a merge did. ``matched``: {lokr label: {file module: target key}}; ``unmatched``:
    {lokr label: [file modules that resolve nowhere]} (skipped); ``merged_tensors``: how many
    weights changed; ``tensors``: how many were written; ``seconds``: wall time; ``out``: the
    written path (None for in-memory merges); ``state_dict``: the merged dict (in-memory only);
    ``metadata``: what was recorded in the output file."""

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


RESOLVED_COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
"""Sub-folders of a diffusers model whose weights LoKr files adapt (keys prefixed ``<folder>.``)."""


def _components(ckpt: Path) -> dict[str, list[Path]]:
    """{component name: safetensors files}: ``{"": [ckpt]}`` for a file; per sub-folder for diffusers."""
    if ckpt.is_file():
        if ckpt.suffix.lower() != ".safetensors":
            raise LoKrFormatError(f"{where(str(ckpt), None)}is not a .safetensors file; expected a safetensors "
                                  "checkpoint (pickled .ckpt files are not read, for safety)")
        return {"": [ckpt]}
    if ckpt.is_dir():
        comps: dict[str, list[Path]] = {}
        for f in sorted(ckpt.rglob("*.safetensors")):
            rel = f.relative_to(ckpt)
            comps.setdefault(str(rel.parent) if str(rel.parent) != "." else "", []).append(f)
        if not comps:
            raise LoKrFormatError(f"{where(str(ckpt), None)}folder holds no .safetensors files; expected a diffusers "
                                  "folder (unet/diffusion_pytorch_model.safetensors, text_encoder/model.safetensors, ...)")
        return comps
    raise LoKrFormatError(f"{where(str(ckpt), None)}does not exist; expected a checkpoint file or diffusers folder")


def _check_out(ckpt: Path, out: Path) -> None:
    from .atomic import check_not_input

    check_not_input(out, [ckpt])
    if ckpt.is_dir():
        o, c = out.resolve(), ckpt.resolve()
        if o == c or c in o.parents or o in c.parents:
            raise LoKrFormatError(f"{where(str(out), None)}output folder overlaps the input folder {str(ckpt)!r}; "
                                  "expected a separate new folder")
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise LoKrFormatError(f"{where(str(out), None)}already exists and is not an empty folder; expected a "
                                  "new folder for the merged diffusers model")
    elif out.is_dir():
        raise LoKrFormatError(f"{where(str(out), None)}is a folder; expected a .safetensors file path")
    if not out.resolve().parent.is_dir():
        raise LoKrFormatError(f"{where(str(out), None)}folder {str(out.parent)!r} does not exist; expected an existing folder")


def _merge_metadata(base: Mapping[str, str], lokrs: Sequence[_Lokr], scale_rule: Any, dtype: torch.dtype | None) -> dict[str, str]:
    from . import __version__

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
                     dora_mode: str = "interpolate") -> MergeResult:
    """Merge LoKr files into a safetensors checkpoint, streamed, and write the result to ``out``.

    ``ckpt``: an LDM single-file checkpoint (SD1.x / SD2.x / SDXL ``.safetensors``) or a diffusers
    folder (``unet/diffusion_pytorch_model.safetensors``, ``text_encoder/model.safetensors``, ...;
    ``out`` is then a new folder, other files copied). ``pairs``: ``[(path or LoKrWeights, strength)]``.
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
    comps = _components(ckpt)
    _check_out(ckpt, out)
    dt = parse_dtype(dtype)
    dev = default_device(device)
    lokrs = _load_pairs(pairs)
    single = ckpt.is_file()
    shapes: dict[str, tuple[int, ...]] = {}
    where_is: dict[str, tuple[Path, str]] = {}  # plan key -> (file, key inside the file)
    total = 0
    for comp, files in comps.items():
        prefix = "" if single else (comp.replace(os.sep, ".") + "." if comp else "")
        for f in files:
            s, _ = _file_keys_shapes(f)
            total += len(s)
            if not single and comp not in RESOLVED_COMPONENTS:
                continue  # vae, safety checker, ...: copied unchanged
            for k, shape in s.items():
                shapes[prefix + k] = shape
                where_is[prefix + k] = (f, k)
    plan, matched, unmatched = plan_merge(lokrs, shapes, scale_rule=scale_rule, dora_mode=dora_mode)
    by_file: dict[Path, dict[str, list[KronUpdate]]] = {}
    for key, updates in plan.items():
        f, k = where_is[key]
        by_file.setdefault(f, {})[k] = updates
    counter = _Counter(progress, total)
    merged = 0
    record_meta: dict[str, str] = {}

    if single:
        _, meta = _file_keys_shapes(ckpt)
        record_meta = _merge_metadata(meta, lokrs, scale_rule, dt)

        def write(tmp: str) -> None:
            nonlocal merged
            merged = _stream_file(ckpt, tmp, by_file.get(ckpt, {}), dtype=dt, device=dev, metadata=record_meta,
                                  progress=counter.step)
        atomic_write(out, write, [ckpt])
    else:
        parent = out.resolve().parent
        tmpdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
        try:
            for src in sorted(ckpt.rglob("*")):
                dst = tmpdir / src.relative_to(ckpt)
                if src.is_dir():
                    dst.mkdir(parents=True, exist_ok=True)
                    continue
                dst.parent.mkdir(parents=True, exist_ok=True)
                if src.suffix.lower() == ".safetensors":
                    _, meta = _file_keys_shapes(src)
                    meta = _merge_metadata(meta, lokrs, scale_rule, dt)
                    record_meta = record_meta or meta
                    merged += _stream_file(src, str(dst), by_file.get(src, {}), dtype=dt, device=dev, metadata=meta,
                                           progress=counter.step)
                else:
                    shutil.copy2(src, dst)
            if out.exists():
                out.rmdir()  # empty (checked above)
            os.replace(tmpdir, out)
        except BaseException:
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise
    return MergeResult(out=out, matched=matched, unmatched=unmatched, merged_tensors=merged, tensors=total,
                       seconds=time.perf_counter() - t0, device=str(dev),
                       dtype=str(dt).replace("torch.", "") if dt else None, metadata=record_meta)


def merge_into_state_dict(state_dict: Mapping[str, torch.Tensor], pairs: Sequence[tuple[Any, float]], *,
                          dtype: str | torch.dtype | None = None, device: str | torch.device | None = None,
                          progress: Progress | None = None, scale_rule: str | float = "file",
                          dora_mode: str = "interpolate") -> MergeResult:
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
    plan, matched, unmatched = plan_merge(lokrs, shapes, scale_rule=scale_rule, dora_mode=dora_mode)
    dev = default_device(device) if device is not None else None
    counter = _Counter(progress, len(state_dict))
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
    return MergeResult(out=None, matched=matched, unmatched=unmatched, merged_tensors=len(plan),
                       tensors=len(state_dict), seconds=time.perf_counter() - t0,
                       device=str(dev) if dev else "input", dtype=str(dt).replace("torch.", "") if dt else None,
                       state_dict=new)
