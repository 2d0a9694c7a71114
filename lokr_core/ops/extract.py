"""Make a LoKr from two checkpoints (nearest Kronecker product), or lower the rank of one.

``extract_lokr(base, tuned, rank, ...)`` reads both checkpoints tensor by tensor (safetensors
``safe_open``: one module's weights in memory at a time), takes ΔW = tuned - base for every adapted
weight and fits the LoKr module LyCORIS would build for that weight at ``rank``
(:mod:`lokr_core.tensor.decompose`). ``resize_lokr(weights, rank)`` lowers the rank of split factors.

Inputs: an LDM single-file ``.safetensors`` (SD1.x / SD2.x / SDXL), a DiT checkpoint as ComfyUI
saves it (``model.diffusion_model.<original path>``, with or without ``text_encoders.*`` / ``vae.*``,
which are not extracted), a diffusion-model-only file (``diffusion_model.*`` or bare keys), a
diffusers folder (``unet/``, ``text_encoder/``, ``text_encoder_2/``), or a state dict of such keys.

Adapted weights: every 2-D or 4-D ``.weight`` of the UNet and the text encoders, except norms and
embeddings (token / position / time / label / class embeddings); OpenCLIP's fused
``attn.in_proj_weight`` is split into q / k / v. Names follow kohya's LyCORIS files:
``lora_unet_<LDM path>`` for LDM files (the SDXL kohya style; ComfyUI and A1111 read it for every
SD model; for a DiT: ``lora_unet_<original path>``, ``lora_unet_double_blocks_0_img_attn_qkv``, the
kohya / musubi-tuner form ComfyUI maps for every DiT family, every 2-D / 4-D weight of the diffusion
model, norms by name not skipped) and ``lora_unet_<diffusers path>`` for diffusers folders; text encoders
``lora_te_text_model_...`` (SD1/SD2) or ``lora_te1_`` / ``lora_te2_`` (SDXL), with transformers
paths (OpenCLIP converted through :mod:`lokr_core.keymap.clip_text`).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

from ..base.atomic import check_output
from ..base.fingerprint import check_unchanged, stat_token
from ..base.device import parse_device
from ..base.memory import release_freed_memory
from ..base.dtypes import parse_dtype
from ..base.errors import LoKrError, LoKrFormatError, LoKrKeyError, LoKrShapeError, where
from ..base.progress import Progress
from ..base.version import __version__
from ..formats.checkpoint import file_sha256
from ..formats.tensor_reader import TensorReader
from ..formats.peft import kohya_name_of
from ..keymap.family import target_dit_family
from ..tensor.decompose import factors_from_delta, lora_error_at_params, nearest_kronecker, plan_layout, resize_factors
from ..tensor.factors import LoKrFactors
from ..tensor.scale import lycoris_scale

__all__ = ["extract_lokr", "resize_lokr", "nearest_kronecker", "save_extracted", "format_extract_report",
           "plan_targets", "Target"]

CONV_MODES = ("tucker", "flat", "skip")

_LDM_PREFIXES: tuple[tuple[str, str, str], ...] = (
    # (key prefix, component, text-encoder style: "" for UNet, "hf" transformers, "oc" OpenCLIP)
    ("model.diffusion_model.", "lora_unet_", ""),
    ("diffusion_model.", "lora_unet_", ""),  # ComfyUI diffusion-model-only files
    ("cond_stage_model.transformer.", "lora_te_", "hf"),
    ("cond_stage_model.model.", "lora_te_", "oc"),
    ("conditioner.embedders.0.transformer.", "lora_te1_", "hf"),
    ("conditioner.embedders.1.model.", "lora_te2_", "oc"),
)
_SKIP = re.compile(r"(^|[._])(norm|ln_|ln_final|layer_norm|token_embedding|position_embedding|positional_embedding|"
                   r"time_embed|time_embedding|label_emb|add_embedding|class_embedding|embeddings|"
                   r"text_projection|logit_scale)")


# --------------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class Target:
    """One weight to fit: ``key`` in the checkpoint, optional row block (OpenCLIP q/k/v), module name."""

    name: str
    key: str
    shape: tuple[int, ...]
    block: int | None = None
    blocks: int = 1


class _Source:
    """A checkpoint seen as {key: shape} plus ``get(key)`` (read on demand; nothing cached).

    Keys are LDM keys for single files and state dicts, ``<subfolder>/<key>`` for diffusers folders.
    """

    def __init__(self, label: str, shapes: dict[str, tuple[int, ...]], get: Callable[[str], torch.Tensor],
                 kind: str, path: Path | None):
        self.label, self.shapes, self.get, self.kind, self.path = label, shapes, get, kind, path


def _variant_filter(files: list[Path]) -> list[Path]:
    """Drop ``*.fp16.safetensors``-style variants when plain files exist (diffusers variants)."""
    plain = [f for f in files if len(f.name.split(".")) == 2]
    return plain or files


def _open_source(src: Any, stack: contextlib.ExitStack, label: str) -> _Source:
    if isinstance(src, Mapping):
        shapes = {k: tuple(v.shape) for k, v in src.items() if isinstance(v, torch.Tensor)}
        return _Source(label, shapes, lambda k: src[k], "ldm", None)  # a state dict of LDM keys
    from safetensors import safe_open

    path = Path(src)
    if path.is_file():
        if path.suffix.lower() != ".safetensors":
            raise LoKrFormatError(f"{where(str(path), None)}is not a .safetensors file; expected a safetensors "
                                  "checkpoint or a diffusers folder (pickled .ckpt files are not read)")
        files = {"": [path]}
        kind = "ldm"
    elif path.is_dir():
        files = {}
        for sub in ("unet", "text_encoder", "text_encoder_2"):
            found = _variant_filter(sorted((path / sub).glob("*.safetensors"))) if (path / sub).is_dir() else []
            if found:
                files[sub] = found
        if not files:
            raise LoKrFormatError(f"{where(str(path), None)}holds no unet/, text_encoder/ or text_encoder_2/ "
                                  "safetensors files; expected a diffusers folder or an LDM .safetensors file")
        kind = "diffusers"
    else:
        raise LoKrFormatError(f"{where(str(path), None)}does not exist; expected a checkpoint file or diffusers folder")
    shapes: dict[str, tuple[int, ...]] = {}
    where_key: dict[str, tuple[Any, str, Path, Any]] = {}
    for sub, paths in files.items():
        for p in paths:
            try:
                token = stat_token(p)
                with safe_open(str(p), framework="pt") as fh:  # the header, checked by safetensors
                    keys = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
            except Exception as exc:  # safetensors raises its own error types
                raise LoKrFormatError(f"{where(str(p), None)}cannot be read as safetensors ({exc})") from None
            # tensors by positioned reads (no memory map whose pages stay resident: formats.tensor_reader)
            reader = stack.enter_context(TensorReader(p))
            for k, shape in keys.items():
                full = f"{sub}/{k}" if sub else k
                shapes[full] = shape
                where_key[full] = (reader, k, p, token)
            check_unchanged(p, token)

    def get(key: str) -> torch.Tensor:  # the file must be the one whose header was read, before and after
        reader, k, p, token = where_key[key]
        check_unchanged(p, token)
        t = reader.get(k)
        check_unchanged(p, token)
        return t

    return _Source(str(path), shapes, get, kind, path)


# --------------------------------------------------------------------------------- naming
def _text_name(prefix: str, path: str) -> str:
    """transformers module path (with or without ``text_model.``) -> kohya text-encoder name."""
    from ..keymap.clip_text import canonical_text_path

    return prefix + "text_model_" + canonical_text_path(path).replace(".", "_")


def _targets_for_key(key: str, shape: tuple[int, ...], kind: str, has_te2: bool, bare: bool,
                     dit: bool = False) -> list[Target]:
    """The LoKr modules a checkpoint key feeds ([] when it is not an adapted weight).

    ``dit``: the diffusion model is a DiT (every 2-D / 4-D weight is a Linear or a patch conv, so no
    UNet name is skipped as a norm or embedding)."""
    if kind == "diffusers":
        sub, _, rest = key.partition("/")
        if not rest.endswith(".weight") or len(shape) not in (2, 4) or _SKIP.search(rest[:-7]):
            return []
        path = rest[: -len(".weight")]
        if sub == "unet":
            return [Target("lora_unet_" + path.replace(".", "_"), key, shape)]
        prefix = "lora_te2_" if sub == "text_encoder_2" else ("lora_te1_" if has_te2 else "lora_te_")
        return [Target(_text_name(prefix, path), key, shape)]
    for pre, comp, style in _LDM_PREFIXES:
        if key.startswith(pre):
            rest = key[len(pre):]
            break
    else:
        if not bare:
            return []
        pre, comp, style, rest = "", "lora_unet_", "", key
    if style == "oc":
        from ..keymap.clip_text import openclip_weight_to_hf

        mapped = openclip_weight_to_hf(rest)
        if len(shape) != 2 or not mapped or _SKIP.search(mapped[0][0]):
            return []
        if len(mapped) == 1:
            return [Target(_text_name(comp, mapped[0][0]), key, shape)]
        rows = shape[0] // len(mapped)
        return [Target(_text_name(comp, p), key, (rows, shape[1]), blk, len(mapped)) for p, blk in mapped]
    if not rest.endswith(".weight") or len(shape) not in (2, 4):
        return []
    path = rest[: -len(".weight")]
    if _SKIP.search(path) and not (dit and comp == "lora_unet_"):
        return []
    if style == "hf":
        return [Target(_text_name(comp, path), key, shape)]
    return [Target(comp + path.replace(".", "_"), key, shape)]


def _match(patterns: Sequence[str] | Callable[[str], bool] | None, t: Target) -> bool:
    if patterns is None:
        return True
    if callable(patterns):
        return bool(patterns(t.name) or patterns(t.key))
    return any(re.search(p, t.name) or re.search(p, t.key) for p in patterns)


def plan_targets(base: _Source, tuned: _Source, targets: Sequence[str] | Callable[[str], bool] | None = None
                 ) -> list[Target]:
    """The weights to fit, after checking that both checkpoints have the same adapted keys and shapes.

    Raises LoKrKeyError naming a key only one checkpoint has, LoKrShapeError naming a key whose shapes
    differ, LoKrKeyError when nothing is left to adapt.
    """
    kind = base.kind if base.kind == tuned.kind else "mixed"
    if kind == "mixed":
        raise LoKrFormatError(f"{where(tuned.label, None)}is a {tuned.kind} checkpoint but the base "
                              f"{base.label!r} is a {base.kind} one; expected two checkpoints of the same layout")
    has_te2 = any(k.startswith("text_encoder_2/") for k in base.shapes)
    known = tuple(p for p, _, _ in _LDM_PREFIXES)
    bare = kind != "diffusers" and not any(k.startswith(known) for k in base.shapes)
    dit = kind != "diffusers" and target_dit_family(base.shapes) is not None

    def plan(src: _Source) -> dict[str, Target]:
        out = {}
        for key, shape in src.shapes.items():
            for t in _targets_for_key(key, shape, kind, has_te2, bare, dit):
                out[t.name] = t
        return out

    a, b = plan(base), plan(tuned)
    only_a = [t.key for n, t in a.items() if n not in b]
    only_b = [t.key for n, t in b.items() if n not in a]
    if only_a or only_b:
        side, keys, other = (base.label, only_a, tuned.label) if only_a else (tuned.label, only_b, base.label)
        raise LoKrKeyError(f"{where(side, None)}has {len(keys)} weight(s) the other checkpoint {other!r} lacks, "
                           f"first {keys[:3]}; expected two checkpoints of the same architecture")
    for n, t in a.items():
        if b[n].shape != t.shape:
            raise LoKrShapeError(f"{where(tuned.label, t.key)}has shape {b[n].shape} but the base has {t.shape}; "
                                 "expected two checkpoints of the same architecture")
    chosen = [t for t in a.values() if _match(targets, t)]
    if not chosen:
        raise LoKrKeyError(f"{where(base.label, None)}no weight to extract (targets={targets!r}, "
                           f"{len(a)} adaptable weights); expected at least one 2-D or 4-D UNet / text-encoder weight")
    return chosen


# --------------------------------------------------------------------------------- extraction
def _read(src: _Source, t: Target, device: torch.device) -> torch.Tensor:
    """Weight ``t`` as a new fp32 tensor on ``device`` (a copy: callers may change it in place)."""
    w = src.get(t.key).to(device=device, dtype=torch.float32, copy=True)
    if t.block is not None:
        w = w.reshape(t.blocks, -1, *w.shape[1:])[t.block]
    return w


def _sha(src: Any) -> str | None:
    if isinstance(src, Mapping):
        return None
    return file_sha256(src)


def extract_lokr(base: Any, tuned: Any, rank: int, factor: int = -1, decompose_both: bool = False,
                 conv: str = "tucker", targets: Sequence[str] | Callable[[str], bool] | None = None,
                 device: str | torch.device | None = None, progress: Progress | None = None,
                 min_rel_change: float = 1e-6, compare_lora: bool = True, out: str | os.PathLike | None = None,
                 save_dtype: torch.dtype | str | None = torch.float16, hash_sources: bool = True,
                 ) -> tuple[Any, dict]:
    """Fit a LoKr to ΔW = tuned - base for every adapted weight; returns (LoKrWeights, report).

    base, tuned: LDM ``.safetensors`` paths, diffusers folders, or state dicts of LDM keys.
    rank: the LoKr rank (W2's inner dim; W1's too with ``decompose_both``); factor: the
    factorization limit (-1 = most balanced). conv: ``"tucker"`` (3x3 convs get a Tucker W2),
    ``"flat"`` (split W2 over in*kh*kw) or ``"skip"`` (3x3 convs not extracted; 1x1 convs are
    treated like Linear weights always). targets: regexes (``re.search`` on the module name or
    checkpoint key) or a predicate; None = every adapted weight. device: where the math runs
    (None: cuda when available, else cpu; :mod:`lokr_core.base.device`). A weight whose ||ΔW|| / ||W_base|| <= ``min_rel_change`` is skipped as unchanged.
    alpha = rank on every module, so the LyCORIS scale rule gives scale 1 (full/full: 1 anyway).

    out: when given, the file is written there (LyCORIS format, ``save_dtype``, atomically); the
    path is checked against the inputs before any work. Factors in the returned weights are fp32.

    report: {"modules": [per module: name, key, shape, layout, rank, params, rel_error, delta_norm,
    rel_change, lora_rank, lora_params, lora_rel_error], "skipped": {name: reason}, "settings": {...},
    "totals": {...}} (see :func:`format_extract_report`).

    Raises LoKrError subclasses for unreadable inputs, different architectures (naming the key),
    identical checkpoints (no file written), an output path equal to an input.
    """
    if conv not in CONV_MODES:
        raise LoKrFormatError(f"extract: conv={conv!r}; expected one of {CONV_MODES}")
    if not isinstance(rank, int) or rank < 1:
        raise LoKrFormatError(f"extract: rank={rank!r}; expected an integer >= 1")
    if out is not None:
        check_output(out, [base, tuned])
    dev = parse_device(device, caller="extract")
    modules: dict[str, LoKrFactors] = {}
    rows: list[dict] = []
    skipped: dict[str, str] = {}
    with contextlib.ExitStack() as stack, torch.no_grad():
        src_a = _open_source(base, stack, "base")
        src_b = _open_source(tuned, stack, "tuned")
        plan = plan_targets(src_a, src_b, targets)
        for i, t in enumerate(plan):
            kernel = t.shape[2:]
            if conv == "skip" and any(k != 1 for k in kernel):
                skipped[t.name] = "conv skipped (conv='skip')"
            else:
                _fit_one(src_a, src_b, t, rank, factor, decompose_both, conv, dev, min_rel_change, compare_lora,
                         modules, rows, skipped)
                release_freed_memory()  # keep the resident set near what is alive (base.memory)
            if progress is not None:
                progress(i + 1, len(plan))
    if not modules:
        raise LoKrError(f"{where(_label(tuned), None)}no weight differs from the base {_label(base)!r} by more than "
                        f"min_rel_change={min_rel_change:g} ({len(skipped)} weights checked): the checkpoints are "
                        "identical (ΔW = 0), so there is nothing to extract; no file was written")
    meta = _metadata(rank, factor, decompose_both, conv, base, tuned, hash_sources)
    from ..formats.weights import LoKrWeights

    weights = LoKrWeights.from_factors(modules, metadata=meta, source=str(out) if out is not None else None)
    report = _report(rows, skipped, dict(rank=rank, factor=factor, decompose_both=decompose_both, conv=conv,
                                          min_rel_change=min_rel_change))
    if out is not None:
        save_extracted(weights, out, dtype=save_dtype, inputs=[base, tuned])
    return weights, report


def _label(src: Any) -> str:
    return "<state dict>" if isinstance(src, Mapping) else str(src)


def _fit_one(src_a: _Source, src_b: _Source, t: Target, rank: int, factor: int, decompose_both: bool, conv: str,
             dev: torch.device, min_rel_change: float, compare_lora: bool, modules: dict, rows: list,
             skipped: dict) -> None:
    w0 = _read(src_a, t, dev)
    delta = _read(src_b, t, dev).sub_(w0)  # in place: one fp32 weight less at the peak
    dnorm, wnorm = float(delta.norm()), float(w0.norm())
    del w0
    if not math.isfinite(dnorm):
        raise LoKrFormatError(f"{where(src_b.label, t.key)}ΔW holds NaN or inf values; expected finite weights")
    change = dnorm / wnorm if wnorm > 0 else (math.inf if dnorm > 0 else 0.0)
    if change <= min_rel_change:
        skipped[t.name] = "unchanged"
        return
    layout = plan_layout(t.shape, rank, factor, decompose_both, tucker=(conv == "tucker"))
    f, err = factors_from_delta(delta, layout)
    params = f.num_params()
    row = dict(name=t.name, key=t.key + (f"[{t.block}]" if t.block is not None else ""), shape=list(t.shape),
               layout=f.layout, rank=rank, params=params, rel_error=err, delta_norm=dnorm, rel_change=change)
    if compare_lora:
        lr, lerr = lora_error_at_params(delta, params)
        row.update(lora_rank=lr, lora_params=lr * (t.shape[0] + math.prod(t.shape[1:])), lora_rel_error=lerr)
    modules[t.name] = f.map(lambda x: x.detach().to("cpu", torch.float32))
    rows.append(row)


def _metadata(rank: int, factor: int, decompose_both: bool, conv: str, base: Any, tuned: Any,
              hash_sources: bool) -> dict[str, str]:
    args = {"algo": "lokr", "factor": str(factor), "decompose_both": str(decompose_both),
            "use_tucker": str(conv == "tucker"), "conv_dim": str(rank), "conv_alpha": str(rank)}
    meta = {"ss_network_module": "lycoris.kohya", "ss_network_args": json.dumps(args),
            "ss_network_dim": str(rank), "ss_network_alpha": str(rank),
            "lokr_extract": json.dumps({"tool": f"comfyui-lokr {__version__}", "method": "nearest-kronecker",
                                        "rank": rank, "factor": factor, "decompose_both": decompose_both,
                                        "conv": conv, "base": os.path.basename(_label(base)),
                                        "tuned": os.path.basename(_label(tuned))})}
    if hash_sources:
        for side, src in (("base", base), ("tuned", tuned)):
            h = _sha(src)
            if h is not None:
                meta[f"lokr_extract_{side}_sha256"] = h
    return meta


def save_extracted(weights: Any, out: str | os.PathLike, dtype: torch.dtype | str | None = torch.float16,
                   inputs: Iterable[Any] = ()) -> Path:
    """Write LoKrWeights as a LyCORIS / kohya safetensors file at ``out`` through ``io.save_lokr``.

    Factors are cast to ``dtype`` (None keeps them); alpha is a float32 scalar per module. Refuses a
    path that is one of ``inputs`` or inside an input folder; the write is atomic.
    """
    from ..formats.io import save_lokr
    from ..formats.weights import LoKrWeights

    check_output(out, inputs)
    dt = parse_dtype(dtype, caller="extract") if dtype is not None else None
    cast = {name: weights.modules[name].map(lambda t: t.to(dt) if dt is not None and t.is_floating_point() else t)
            for name in weights.module_names}
    return save_lokr(LoKrWeights.from_factors(cast, metadata=weights.metadata), out, format="lycoris")


# --------------------------------------------------------------------------------- report
def _report(rows: list[dict], skipped: dict[str, str], settings: dict) -> dict:
    sq = sum(r["delta_norm"] ** 2 for r in rows)
    err = math.sqrt(sum((r["rel_error"] * r["delta_norm"]) ** 2 for r in rows) / sq) if sq > 0 else 0.0
    totals = {"modules": len(rows), "skipped": len(skipped), "params": sum(r["params"] for r in rows),
              "rel_error": err}
    if rows and "lora_rel_error" in rows[0]:
        totals["lora_rel_error"] = math.sqrt(
            sum((r["lora_rel_error"] * r["delta_norm"]) ** 2 for r in rows) / sq) if sq > 0 else 0.0
        totals["lokr_better"] = sum(1 for r in rows if r["rel_error"] < r["lora_rel_error"])
    return {"modules": rows, "skipped": skipped, "settings": settings, "totals": totals}


def format_extract_report(report: dict, limit: int | None = None) -> str:
    """A text table of an extract / resize report: one line per module, then totals."""
    rows = report["modules"][:limit] if limit else report["modules"]
    lora = bool(rows) and "lora_rel_error" in rows[0]
    head = f"{'module':<64} {'layout':<12} {'params':>9} {'LoKr err':>9}"
    if lora:
        head += f" {'LoRA r':>6} {'LoRA err':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        line = f"{r['name'][:64]:<64} {r.get('layout', ''):<12} {r.get('params', 0):>9} {r['rel_error']:>9.4f}"
        if lora:
            line += f" {r['lora_rank']:>6} {r['lora_rel_error']:>9.4f}"
        lines.append(line)
    if limit and len(report["modules"]) > limit:
        lines.append(f"... {len(report['modules']) - limit} more modules")
    t = report["totals"]
    lines.append(f"{t['modules']} modules, {t['skipped']} skipped, {t['params']} parameters, "
                 f"overall relative error {t['rel_error']:.4f}"
                 + (f" (LoRA of equal size: {t['lora_rel_error']:.4f}; LoKr better on {t['lokr_better']})"
                    if "lora_rel_error" in t else ""))
    return "\n".join(lines)


# --------------------------------------------------------------------------------- resize
def resize_lokr(weights: Any, rank: int, progress: Progress | None = None) -> tuple[Any, dict]:
    """Lower the rank of every split module of ``weights`` (LoKrWeights or a path / state dict) to ``rank``.

    W2 (and W1 when split) is re-fitted by truncated SVD (Tucker: HOSVD), the best rank-``rank``
    choice with the other factor fixed; full factors are untouched; alpha becomes
    scale * rank so the LyCORIS scale is unchanged (PEFT sources are re-expressed for LyCORIS' rule). Modules already at or below ``rank``
    and full/full modules are copied as they are. The result is always LyCORIS-format (PEFT module
    names become kohya ``lora_unet_`` / ``lora_te1_`` / ``lora_te2_`` names, as ``io.save_lokr``
    writes them). Non-LoKr modules of a mixed file are not carried over. Returns (new LoKrWeights,
    report) with per module
    name, old_rank, rank, params before / after and rel_error = ||ΔW - ΔW'|| / ||ΔW||.
    """
    if not isinstance(rank, int) or rank < 1:
        raise LoKrFormatError(f"resize: rank={rank!r}; expected an integer >= 1")
    from ..formats.weights import LoKrWeights

    if not isinstance(weights, LoKrWeights):
        from ..formats.io import load_lokr

        weights = load_lokr(weights)
    new: dict[str, LoKrFactors] = {}
    rows: list[dict] = []
    skipped: dict[str, str] = {}
    names = list(weights.module_names)
    for i, name in enumerate(names):
        f = weights.modules[name]
        out_name = kohya_name_of(name) if weights.format == "peft" else name
        scale = weights.scale(name, "file")
        shape = weights.natural_shape(name) if f.tucker or f.w2 is not None or f.w2_b.ndim > 2 else _split_shape(f)
        g, err = resize_factors(f, rank, shape, scale)
        if g is f:
            skipped[out_name] = "full/full" if f.rank is None else f"rank {f.rank} <= {rank}"
            g = _as_lycoris(f, scale)
        else:
            rows.append(dict(name=out_name, source_name=name, layout=g.layout, old_rank=f.rank, rank=rank,
                             params_before=f.num_params(), params=g.num_params(), rel_error=err))
        new[out_name] = g
        if progress is not None:
            progress(i + 1, len(names))
    meta = dict(weights.metadata)
    if rows:
        meta["ss_network_dim"] = str(rank)
        meta["lokr_resize"] = json.dumps({"rank": rank})
    out = LoKrWeights.from_factors(new, metadata=meta, source=None)
    report = {"modules": rows, "skipped": skipped, "settings": {"rank": rank},
              "totals": {"modules": len(rows), "skipped": len(skipped),
                         "params": sum(r["params"] for r in rows),
                         "rel_error": max((r["rel_error"] for r in rows), default=0.0)}}
    return out, report


def _as_lycoris(f: LoKrFactors, scale: float) -> LoKrFactors:
    """``f`` unchanged when the LyCORIS rule already gives ``scale``; else re-expressed for it
    (split: alpha = scale * rank; full/full: scale folded into W1) - for PEFT sources."""
    if abs(lycoris_scale(f) - scale) <= 1e-12 * max(1.0, abs(scale)):
        return f
    if f.full_full:
        return replace(f, w1=(f.w1.float() * scale).to(f.w1.dtype))
    return replace(f, alpha=scale * f.rank)


def _split_shape(f: LoKrFactors) -> tuple[int, ...]:
    """(out, in*K) for a split, flat module: the product W2 is (out_k, in_n*K), which is all resize needs."""
    out_l, in_m = f.w1_shape
    return (out_l * int(f.w2_a.shape[0]), in_m * int(f.w2_b.reshape(f.w2_b.shape[0], -1).shape[1]))
