"""LoKrWeights: one parsed LoKr file (or state dict): its modules, metadata and scale rule.

Made by :func:`lokr_core.formats.io.load_lokr` (or :meth:`LoKrWeights.from_factors` for factors already in
memory). Tensors stay lazy: shapes and alphas are known at load (validated then), factor tensors
are read on first access of a module and cached.

Attributes
----------
modules : Mapping[str, LoKrFactors]
    file module name (the key without ``.lokr_*`` / ``.alpha`` / ``.dora_scale``) -> factors with
    real tensors (loaded and finite-checked on first access).
module_names : list[str]
    the LoKr module names, in file order.
metadata : dict[str, str]
    the safetensors metadata (for PEFT dirs: the safetensors metadata of adapter_model.safetensors).
source : str | None
    the path the weights came from (None for a state dict).
format : "lycoris" | "peft"
peft_config : LoKrConfig | None
    the adapter_config.json contents of a PEFT file, as a ``LoKrConfig`` (None without one).
other_modules : dict[str, str]
    non-LoKr module name -> kind (``"lora"``, ``"loha"``, ``"ia3"``, ``"diff"``, ``"norm"``, ...).
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping

import torch

from ..base.errors import LoKrKeyError, LoKrShapeError, where
from ..tensor.factors import LoKrFactors
from ..tensor import kron
from ..tensor.scale import ScaleRule, is_ambiguous, metadata_dim, module_scale

ModuleLoader = Callable[[str], LoKrFactors]
RawLoader = Callable[[str], dict]


class _LazyModules(Mapping[str, LoKrFactors]):
    """Read-only mapping name -> LoKrFactors that loads (and validates) a module on first access."""

    def __init__(self, names: list[str], load: ModuleLoader):
        self._names = names
        self._index = set(names)
        self._load = load
        self._cache: dict[str, LoKrFactors] = {}

    def __getitem__(self, name: str) -> LoKrFactors:
        if name not in self._index:
            raise KeyError(name)
        f = self._cache.get(name)
        if f is None:
            f = self._load(name)
            self._cache[name] = f
        return f

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def loaded(self) -> list[str]:
        """Names whose tensors have been read so far."""
        return list(self._cache)


class LoKrWeights:
    """One LoKr file's modules, metadata and scale conventions (see the module docstring).

    Parameters are normally filled in by the format readers:
    ``shapes``: name -> LoKrFactors whose tensors may be on the ``meta`` device (shapes only) and
    whose ``alpha`` is the stored value; ``load_module``: name -> LoKrFactors with real tensors;
    ``raw_keys``: name -> the module's own {file key: tensor} (LoKr and other modules);
    ``peft_r_alpha``: name -> (r, alpha) for PEFT files; ``warnings``: load-time notes shown by
    :meth:`scale_warnings`.
    """

    def __init__(self, shapes: Mapping[str, LoKrFactors], *, load_module: ModuleLoader | None = None,
                 raw_keys: RawLoader | None = None, metadata: Mapping[str, str] | None = None,
                 source: str | None = None, format: str = "lycoris", peft_config: Any = None,
                 other_modules: Mapping[str, str] | None = None,
                 peft_r_alpha: Callable[[str], tuple[int, float]] | None = None,
                 warnings: list[str] | None = None, other_names: list[str] | None = None):
        self._shapes = dict(shapes)
        names = list(self._shapes)
        self.modules: Mapping[str, LoKrFactors] = _LazyModules(
            names, load_module if load_module is not None else self._shapes.__getitem__)
        self.module_names: list[str] = names
        self.metadata: dict[str, str] = dict(metadata or {})
        self.source = source
        self.format = format
        self.peft_config = peft_config
        self.other_modules: dict[str, str] = dict(other_modules or {})
        self._raw_keys = raw_keys
        self._peft_r_alpha = peft_r_alpha
        self._warnings = list(warnings or [])

    @classmethod
    def from_factors(cls, modules: Mapping[str, LoKrFactors], **kwargs: Any) -> "LoKrWeights":
        """Weights for factors already in memory (validated here, each naming ``source``)."""
        for name, f in modules.items():
            f.validate(kwargs.get("source"), name)
        return cls(dict(modules), **kwargs)

    # --------------------------------------------------------------------------- basic facts
    def __len__(self) -> int:
        return len(self.module_names)

    def __contains__(self, name: object) -> bool:
        return name in self._shapes

    def __repr__(self) -> str:
        return (f"LoKrWeights({len(self)} LoKr modules, {len(self.other_modules)} other, format={self.format!r}, "
                f"source={self.source!r})")

    def _check(self, name: str) -> None:
        if name not in self._shapes:
            near = [n for n in self.module_names if name.split(".")[-1] in n][:3]
            raise LoKrKeyError(f"{where(self.source, name)}no such LoKr module in this file; expected one of its "
                               f"{len(self)} module names" + (f" (similar: {near})" if near else ""))

    def shapes(self, name: str) -> LoKrFactors:
        """The module's factors as known at load without reading tensor data (may be on ``meta``)."""
        self._check(name)
        return self._shapes[name]

    def alpha(self, name: str) -> float | None:
        """The stored alpha of ``name`` (None when the file has none)."""
        return self.shapes(name).alpha

    def peft_r_alpha(self, name: str) -> tuple[int, float] | None:
        """(r, alpha) PEFT uses for ``name`` (rank_pattern / alpha_pattern applied); None for LyCORIS files."""
        self._check(name)
        return self._peft_r_alpha(name) if self._peft_r_alpha is not None else None

    def raw_keys(self, name: str) -> dict[str, torch.Tensor]:
        """The file's own tensors of one module (LoKr, or one of ``other_modules``), keyed as in the
        file (for handing to ComfyUI)."""
        if self._raw_keys is not None and name in self.other_modules:
            return self._raw_keys(name)
        self._check(name)
        if self._raw_keys is not None:
            return self._raw_keys(name)
        f = self.modules[name]
        out = {f"{name}.lokr_{k}" if k != "dora_scale" else f"{name}.dora_scale": t for k, t in f.tensors()}
        if f.alpha is not None:
            out[f"{name}.alpha"] = torch.tensor(f.alpha)
        return out

    def validate_all(self) -> None:
        """Read every module now (shapes and finite values checked); raises the first error found."""
        for name in self.module_names:
            self.modules[name]

    # --------------------------------------------------------------------------- scale and ΔW
    def scale(self, name: str, scale_rule: ScaleRule = "file") -> float:
        """The scalar multiplying kron(W1, W2) for ``name`` under ``scale_rule`` (see lokr_core.tensor.scale)."""
        f = self.shapes(name)
        ra = self.peft_r_alpha(name)
        r, a = ra if ra is not None else (None, None)
        return module_scale(f, scale_rule, peft_r=r, peft_alpha=a, metadata_dim=metadata_dim(self.metadata),
                            file=self.source, module=name)

    def scale_warnings(self) -> list[str]:
        """Plain-language warnings for the ComfyUI #15114 ambiguity, one per distinct (alpha, dim).

        Empty when no full/full module stores an alpha that differs from ``ss_network_dim``.
        """
        out = list(self._warnings)
        if self.format == "peft":
            return out
        dim = metadata_dim(self.metadata)
        groups: dict[float, list[str]] = {}
        for name in self.module_names:
            f = self._shapes[name]
            if is_ambiguous(f, dim):
                groups.setdefault(float(f.alpha), []).append(name)
        for alpha, names in groups.items():
            shown = ", ".join(names[:3]) + (f", ... ({len(names)} modules)" if len(names) > 3 else "")
            out.append(
                f"{len(names)} full/full LoKr module(s) store alpha {alpha:g} but the file says it was trained "
                f"with network dim {dim} (ss_network_dim): the LyCORIS/ComfyUI rule applies them at scale 1, "
                f"while training likely used alpha/dim = {alpha / dim:g} ({dim / alpha:g}x weaker). If images "
                f"look burnt or collapsed, use scale rule 'metadata-dim'. Modules: {shown}")
        return out

    def natural_shape(self, name: str) -> tuple[int, ...]:
        """The base weight shape the factors imply: (out, in) or (out, in, *kernel).

        A split (non-Tucker) module with a flat ``w2_b`` (r, in_n*k) does not say its kernel: the
        square kernels 1, 2, 3, 5, 7 are tried, keeping those for which ``factorization`` of the
        in-dim gives the stored (in_m, in_n) (true of files made with factor -1); one candidate ->
        its shape (kernel 1 -> (out, in), Linear, unless a 4-D ``dora_scale`` says conv), none ->
        (out, in_m * w2_b.shape[1]) (conv: error), several -> LoKrShapeError asking for ``shape``.
        """
        from ..tensor.factorization import factorization

        f = self.shapes(name)
        out_l, in_m = f.w1_shape
        if f.t2 is not None:
            return (out_l * int(f.w2_a.shape[1]), in_m * int(f.w2_b.shape[1]), *map(int, f.t2.shape[2:]))
        if f.w2 is not None:
            return (out_l * int(f.w2.shape[0]), in_m * int(f.w2.shape[1]), *map(int, f.w2.shape[2:]))
        out = out_l * int(f.w2_a.shape[0])
        if f.w2_b.ndim > 2:
            return (out, in_m * int(f.w2_b.shape[1]), *map(int, f.w2_b.shape[2:]))
        flat = int(f.w2_b.shape[1])
        conv = f.dora_scale is not None and f.dora_scale.ndim > 2
        found = []
        for k in (1, 2, 3, 5, 7):
            if flat % (k * k) == 0 and factorization(in_m * flat // (k * k)) == (in_m, flat // (k * k)):
                found.append((out, in_m * flat // (k * k), k, k) if (k > 1 or conv) else (out, in_m * flat))
        if len(found) == 1:
            return found[0]
        if not found and not conv:
            return (out, in_m * flat)
        raise LoKrShapeError(f"{where(self.source, name)}split module: lokr_w2_b {tuple(f.w2_b.shape)} fits kernels "
                             f"{[s[2:] or (1, 1) for s in found]}; expected shape=(out, in[, kh, kw]) to be given")

    def delta(self, name: str, shape: tuple[int, ...] | torch.Size | None = None,
              device: torch.device | str | None = None, dtype: torch.dtype | None = None,
              scale_rule: ScaleRule = "file", *, peft_conv1d: bool = False) -> torch.Tensor:
        """ΔW of ``name`` = scale * kron(W1, W2) shaped like the base weight.

        ``shape``: the base weight shape (out, in[, k...]); default: :meth:`natural_shape`. Checked
        against the factors (LoKrShapeError naming file and module). Computed on ``device`` in
        ``dtype`` (default fp32, whatever the file stores). ``peft_conv1d``: reproduce PEFT's
        (non-Kronecker) product for Conv1d modules with a full 3-D ``lokr_w2`` (docs/formats.md), for
        adapters trained through PEFT; default is the true Kronecker product.
        """
        self._check(name)
        f = self.modules[name]
        shape = tuple(int(s) for s in shape) if shape is not None else self.natural_shape(name)
        f.check_target(shape, self.source, name)
        return kron.kron_delta(f, shape, self.scale(name, scale_rule), device=device,
                               dtype=dtype if dtype is not None else torch.float32, peft_conv1d=peft_conv1d)

    def merged_weight(self, name: str, weight: torch.Tensor, strength: float = 1.0,
                      scale_rule: ScaleRule = "file", dora_mode: str = "interpolate") -> torch.Tensor:
        """A new tensor: ``weight`` with this module applied at ``strength`` (``weight`` is not changed).

        Plain LoKr: W + strength * scale * kron(W1, W2). DoRA modules (``dora_scale`` stored):
        ``kron.dora_apply(W, ΔW, dora_scale, strength, dora_mode)`` with ΔW at full strength
        (``"interpolate"``: 0 -> W, 1 -> W_dora; ``"lycoris"``: lycoris-lora's formula). Computed in
        fp32 on ``weight``'s device, returned in ``weight``'s dtype.
        """
        self._check(name)
        f = self.modules[name]
        shape = tuple(weight.shape)
        f.check_target(shape, self.source, name)
        scale = self.scale(name, scale_rule)
        work = weight.detach().to(torch.float32)
        if f.dora_scale is not None:
            delta = kron.kron_delta(f, shape, scale, device=weight.device, dtype=torch.float32)
            merged = kron.dora_apply(work, delta, f.dora_scale.to(weight.device, torch.float32), strength, dora_mode)
            return merged.to(weight.dtype)
        if work is weight or work.data_ptr() == weight.data_ptr():
            work = work.clone()
        work = work.contiguous()
        ff = f.map(lambda t: t.to(device=weight.device, dtype=torch.float32))
        kron.add_kron_(work, kron.rebuild_w1(ff), kron.rebuild_w2(ff, shape[2:]), scale * strength)
        return work.to(weight.dtype)

    def resolve(self, target: Any):
        """Map this file's module names onto ``target``'s weights (:func:`lokr_core.keymap.resolve.resolve`);
        LoKrFormatError when two of its modules adapt the same weight (one module under two names)."""
        from types import SimpleNamespace

        from ..keymap.resolve import refuse_duplicates, resolve
        # shapes only: resolving must not read every module's tensors
        report = resolve(SimpleNamespace(modules=self._shapes, source=self.source), target)
        refuse_duplicates(report)
        return report
