"""Hypothesis strategies of hostile inputs, and the fuzz suite's settings (docs/fuzzing.md).

- :func:`safetensors_blob`: the raw bytes of a ``.safetensors`` file, built valid and then broken
  by a few :data:`BLOB_MUTATIONS` (header length, JSON shape, dtypes, offsets, shapes, metadata).
- :func:`module_set`: a LoKr state dict {key: tensor} for some of the given targets, each module
  valid or broken by :data:`MODULE_MUTATIONS` (missing / extra / wrong factor keys, shapes that do
  not multiply, zero dims, NaN / inf alpha or factors, wrong dtypes), named under one of several
  schemes (kohya, ``lycoris_``, diffusers, PEFT), sometimes one module under two schemes.
- :func:`peft_config`: an adapter_config.json value with contradicting or ill-typed fields.

Sizes stay tiny (dims <= 8 per factor) so a few thousand cases run in about a minute of one core.
"""
from __future__ import annotations

import json
import math
import os
import random
import struct
from dataclasses import dataclass
from typing import Any, Sequence

import hypothesis.strategies as st
import torch
from hypothesis import HealthCheck, settings


# ------------------------------------------------------------------------------------- settings
def examples(default: int) -> int:
    """Examples per test: ``LOKR_FUZZ_EXAMPLES`` when set, else ``default`` (the CI size)."""
    value = os.environ.get("LOKR_FUZZ_EXAMPLES")
    return int(value) if value else default


def fuzz(default: int):
    """``@settings`` of one fuzz test: ``examples(default)`` cases, derandomized (the same cases on
    every run, so CI is reproducible) unless ``LOKR_FUZZ_RANDOM=1``; no deadline, no example
    database written into the checkout."""
    return settings(max_examples=examples(default), derandomize=os.environ.get("LOKR_FUZZ_RANDOM") != "1",
                    deadline=None, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])


# -------------------------------------------------------------------------- raw safetensors bytes
ST_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
            "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8, "C64": 8}
ST_NAMES = ["lora_unet_a.lokr_w1", "lora_unet_a.lokr_w2", "lora_unet_a.alpha", "lora_unet_a.lokr_w2_a",
            "lora_unet_a.lokr_w2_b", "lora_unet_a.lokr_t2", "lora_unet_a.dora_scale", "lora_unet_b.lora_up.weight",
            "lora_unet_b.lora_down.weight", "base_model.model.a.lokr_w1", "base_model.model.a.lokr_w2",
            "model.diffusion_model.input_blocks.0.0.weight", "x", ""]
BLOB_MUTATIONS = ("length_huge", "length_short", "length_long", "length_zero", "json_invalid", "json_not_object",
                  "non_utf8", "dtype_unknown", "dtype_not_str", "shape_negative", "shape_huge", "shape_not_int",
                  "shape_not_list", "offsets_past_end", "offsets_swapped", "offsets_overlap", "offsets_arity",
                  "offsets_negative", "entry_not_object", "metadata_not_str", "metadata_not_object", "deep_json",
                  "truncate", "append", "duplicate_key", "missing_field", "extra_field", "nan_data")


@st.composite
def safetensors_blob(draw: st.DrawFn) -> bytes:
    """Bytes of a safetensors file: 0-5 tensors, valid, then 0-3 mutations applied."""
    rng = random.Random(draw(st.integers(0, 2 ** 32)))
    header: dict[str, Any] = {}
    offset = 0
    for _ in range(draw(st.integers(0, 5))):
        key = draw(st.sampled_from(ST_NAMES + [""] * 2).flatmap(lambda k: st.just(k) if k else st.text(max_size=12)))
        dtype = draw(st.sampled_from(sorted(ST_SIZES)))
        shape = draw(st.lists(st.integers(0, 6), max_size=4))
        nbytes = math.prod(shape) * ST_SIZES[dtype]
        header[key] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if draw(st.booleans()):
        header["__metadata__"] = draw(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3))
    data = bytearray(rng.randbytes(offset))
    muts = draw(st.lists(st.sampled_from(BLOB_MUTATIONS), max_size=3))
    entries = [k for k in header if k != "__metadata__"]
    raw_override: bytes | None = None
    length_fix: int | None = None
    for m in muts:
        key = rng.choice(entries) if entries else None
        e = header.get(key) if key is not None and isinstance(header.get(key), dict) else None
        if e is not None and not isinstance(e.get("data_offsets"), list):
            e = None if m.startswith("offsets") else e
        if m == "dtype_unknown" and e:
            e["dtype"] = rng.choice(["F4", "XYZ", "", "f32", "Q8"])
        elif m == "dtype_not_str" and e:
            e["dtype"] = rng.choice([4, None, ["F32"]])
        elif m == "shape_negative" and e:
            e["shape"] = [-rng.randint(1, 4), 2]
        elif m == "shape_huge" and e:
            e["shape"] = [2 ** rng.choice([31, 32, 62, 63, 64, 70]), 2 ** 40]
        elif m == "shape_not_int" and e:
            e["shape"] = [rng.choice([1.5, "3", None, True, [2]])]
        elif m == "shape_not_list" and e:
            e["shape"] = rng.choice([3, "3", None, {"a": 1}])
        elif m == "offsets_past_end" and e:
            e["data_offsets"] = [0, len(data) + rng.choice([1, 8, 2 ** 40, 2 ** 64])]
        elif m == "offsets_swapped" and e:
            e["data_offsets"] = e["data_offsets"][::-1]
        elif m == "offsets_overlap" and len(entries) > 1 and all(
                isinstance(header[k], dict) and "data_offsets" in header[k] for k in entries[:2]):
            header[entries[1]]["data_offsets"] = list(header[entries[0]]["data_offsets"])
        elif m == "offsets_arity" and e:
            e["data_offsets"] = rng.choice([[0], [0, 1, 2], [], None, "0,4", [0.5, 4]])
        elif m == "offsets_negative" and e:
            e["data_offsets"] = [-8, len(data)]
        elif m == "entry_not_object" and key is not None:
            header[key] = rng.choice([5, "x", None, [1, 2]])
        elif m == "metadata_not_str":
            header["__metadata__"] = {"a": rng.choice([1, None, [1], {"b": "c"}, 1.5])}
        elif m == "metadata_not_object":
            header["__metadata__"] = rng.choice([[], "meta", 3, None])
        elif m == "deep_json":
            depth = rng.choice([64, 200, 2000, 100_000])
            raw_override = ('{"__metadata__": {"deep": ' + "[" * depth + '"x"' + "]" * depth + "}}").encode()
        elif m == "missing_field" and e:
            e.pop(rng.choice(["dtype", "shape", "data_offsets"]), None)
        elif m == "extra_field" and e:
            e[rng.choice(["extra", "dtype2", ""])] = rng.choice([1, "x", None])
        elif m == "json_not_object":
            raw_override = json.dumps(rng.choice([[], [1, 2], 3, "x", None, True])).encode()
        elif m == "json_invalid":
            raw_override = rng.choice([b"{", b"{\"a\":", b"{'a': 1}", b"{\"a\": NaN}", b"\x00" * 8, b"{}}"])
        elif m == "non_utf8":
            raw_override = b"{\"\xff\xfe\": 1}"
        elif m == "duplicate_key" and e:
            body = json.dumps(header)[1:]
            raw_override = ("{" + json.dumps(key) + ": " + json.dumps(e) + ", " + body).encode()
        elif (m == "nan_data" and e and e.get("dtype") in ("F32", "F16", "BF16", "F64")
              and isinstance(e.get("data_offsets"), list) and len(e["data_offsets"]) == 2
              and all(isinstance(x, int) and 0 <= x <= len(data) for x in e["data_offsets"])):
            a, b = e["data_offsets"]
            data[a:b] = bytes([0xFF]) * (b - a)  # all-ones bits: NaN in every float format
    raw = raw_override if raw_override is not None else json.dumps(header).encode("utf-8", "surrogatepass")
    raw += b" " * ((8 - len(raw) % 8) % 8)
    length = len(raw) if length_fix is None else length_fix
    if "length_huge" in muts:
        length = rng.choice([2 ** 63, 2 ** 64 - 1, 100_000_001, 2 ** 32])
    if "length_short" in muts and length > 1:
        length = rng.randrange(1, length)
    if "length_long" in muts:
        length = length + rng.choice([1, 8, 4096])
    if "length_zero" in muts:
        length = 0
    blob = struct.pack("<Q", min(length, 2 ** 64 - 1)) + raw + bytes(data)
    if "truncate" in muts and blob:
        blob = blob[: rng.randrange(0, len(blob))]
    if "append" in muts:
        blob += rng.randbytes(rng.choice([1, 7, 64]))
    return blob


# --------------------------------------------------------------------------------- LoKr modules
@dataclass(frozen=True)
class FuzzTarget:
    """One weight a fuzzed module may aim at: its names under each scheme and its shape."""

    names: dict[str, str]        # scheme -> module name in a file
    shape: tuple[int, ...]       # the base weight's shape (out, in[, kh, kw])


def kohya(prefix: str, path: str) -> str:
    """``lora_unet_`` + ``a.b.0.c`` -> ``lora_unet_a_b_0_c``."""
    return prefix + path.replace(".", "_")


def targets_for(paths: Sequence[tuple[str | None, str | None, tuple[int, ...]]]) -> list[FuzzTarget]:
    """FuzzTargets for (LDM path, diffusers path, shape) triples (either path may be None)."""
    out = []
    for ldm, diff, shape in paths:
        names = {}
        if ldm:
            names.update({"kohya_ldm": kohya("lora_unet_", ldm), "lycoris_ldm": kohya("lycoris_", ldm),
                          "dotted_ldm": "diffusion_model." + ldm})
        if diff:
            names.update({"kohya_diffusers": kohya("lora_unet_", diff), "lycoris_diffusers": kohya("lycoris_", diff),
                          "diffusers": "unet." + diff, "peft": "base_model.model." + diff})
        out.append(FuzzTarget(names, tuple(shape)))
    return out


MODULE_MUTATIONS = ("drop_key", "extra_key", "unknown_param", "bad_dims", "zero_dim", "alpha_nan", "alpha_inf",
                    "alpha_negative", "alpha_zero", "alpha_vector", "alpha_int", "factor_nan", "factor_inf",
                    "dtype_int", "dtype_bool", "dtype_half", "dtype_double", "w1_and_w1_a", "scalar_factor",
                    "dora_bad", "t2_on_linear", "empty_module", "alpha_huge", "factor_huge")
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0] or [1]


@st.composite
def lokr_module(draw: st.DrawFn, shape: tuple[int, ...], rng: random.Random) -> tuple[dict[str, torch.Tensor], list[str]]:
    """({param: tensor}, mutations) of one module for a weight of ``shape``: a valid LoKr layout
    (full / split W1, full / split / Tucker W2), then 0-2 mutations."""
    out, inn, kernel = max(shape[0], 1), max(shape[1], 1), tuple(shape[2:])
    a = draw(st.sampled_from(_divisors(out)))
    c = draw(st.sampled_from(_divisors(inn)))
    b, d = out // a, inn // c
    r = draw(st.integers(1, 4))
    g = torch.Generator().manual_seed(rng.randrange(2 ** 31))

    def rnd(*s: int) -> torch.Tensor:
        return torch.randn(tuple(s), generator=g) * 0.1

    p: dict[str, torch.Tensor] = {}
    if draw(st.booleans()):
        p["lokr_w1"] = rnd(a, c)
    else:
        p["lokr_w1_a"], p["lokr_w1_b"] = rnd(a, r), rnd(r, c)
    w2 = draw(st.sampled_from(["full", "split", "tucker"] if kernel else ["full", "split"]))
    if w2 == "full":
        p["lokr_w2"] = rnd(b, d, *kernel)
    elif w2 == "split":
        p["lokr_w2_a"], p["lokr_w2_b"] = rnd(b, r), rnd(r, d, *kernel)
    else:
        p["lokr_t2"], p["lokr_w2_a"], p["lokr_w2_b"] = rnd(r, r, *kernel), rnd(r, b), rnd(r, d)
    if draw(st.booleans()):
        p["alpha"] = torch.tensor(float(draw(st.sampled_from([1, 2, 4, 8, 0.5]))))
    if draw(st.integers(0, 9)) == 0:
        p["dora_scale"] = rnd(out, 1, *([1] * len(kernel))).abs() + 1
    muts = draw(st.lists(st.sampled_from(MODULE_MUTATIONS), min_size=1, max_size=2)) if draw(st.booleans()) else []
    for m in muts:
        factor_keys = [k for k in p if k.startswith("lokr_")]
        k = rng.choice(factor_keys) if factor_keys else None
        if m == "drop_key" and p:
            p.pop(rng.choice(sorted(p)))
        elif m == "extra_key":
            p[rng.choice(["lokr_w1", "lokr_w2", "lokr_w1_a", "lokr_w2_b", "lokr_t2", "dora_scale"])] = rnd(
                *rng.choice([(2, 2), (out, 1), (1, inn), (3,), (2, 2, 3, 3)]))
        elif m == "unknown_param":
            p[rng.choice(["lokr_w3", "lora_up.weight", "hada_w1_a", "scale", "weight"])] = rnd(2, 2)
        elif m == "bad_dims" and k:
            p[k] = rnd(*[rng.randint(1, 7) for _ in range(p[k].ndim or 1)])
        elif m == "zero_dim" and k:
            s = list(p[k].shape) or [1]
            s[rng.randrange(len(s))] = 0
            p[k] = torch.zeros(s)
        elif m.startswith("alpha_"):
            p["alpha"] = {"alpha_nan": torch.tensor(math.nan), "alpha_inf": torch.tensor(-math.inf),
                          "alpha_negative": torch.tensor(-2.0), "alpha_zero": torch.tensor(0.0),
                          "alpha_vector": torch.ones(3), "alpha_int": torch.tensor(4, dtype=torch.int64),
                          "alpha_huge": torch.tensor(3e38)}[m]
        elif m in ("factor_nan", "factor_inf") and k and p[k].numel() and p[k].is_floating_point():
            t = p[k].clone()
            t.view(-1)[rng.randrange(t.numel())] = math.nan if m == "factor_nan" else math.inf
            p[k] = t
        elif m == "factor_huge" and k:
            p[k] = p[k] * 3e38
        elif m == "dtype_int" and k:
            p[k] = (p[k].double() * 10).nan_to_num(0.0, 0.0, 0.0).clamp(-1e6, 1e6).to(torch.int32)
        elif m == "dtype_bool" and k:
            p[k] = p[k] > 0
        elif m == "dtype_half" and k:
            p[k] = p[k].to(rng.choice([torch.float16, torch.bfloat16]))
        elif m == "dtype_double" and k:
            p[k] = p[k].double()
        elif m == "w1_and_w1_a":
            p["lokr_w1"], p["lokr_w1_a"], p["lokr_w1_b"] = rnd(a, c), rnd(a, r), rnd(r, c)
        elif m == "scalar_factor" and k:
            p[k] = torch.tensor(1.0)
        elif m == "dora_bad":
            p["dora_scale"] = rnd(*rng.choice([(1,), (out + 1, 1), (2, 3, 4), ()]))
        elif m == "t2_on_linear":
            p["lokr_t2"] = rnd(r, r, 3, 3)
        elif m == "empty_module":
            p = {"alpha": torch.tensor(1.0)}
    return p, muts


@st.composite
def module_set(draw: st.DrawFn, targets: Sequence[FuzzTarget], schemes: Sequence[str] | None = None,
               ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(state dict, notes): 1-4 modules for some of ``targets`` (names under one scheme per file,
    sometimes a second scheme for one module = a duplicate), plus the mutations used (for messages)."""
    rng = random.Random(draw(st.integers(0, 2 ** 32)))
    picked = draw(st.lists(st.sampled_from(range(len(targets))), min_size=1, max_size=4, unique=True))
    common = sorted(set.intersection(*(set(targets[i].names) for i in picked)))
    allowed = [s for s in common if schemes is None or s in schemes] or common
    scheme = draw(st.sampled_from(allowed))
    sd: dict[str, torch.Tensor] = {}
    notes = [scheme]
    for i in picked:
        t = targets[i]
        shape = t.shape if draw(st.integers(0, 5)) else tuple(max(1, s * 2) for s in t.shape)  # a wrong target size
        params, muts = draw(lokr_module(shape, rng))
        notes += muts
        names = [t.names[scheme]]
        if draw(st.integers(0, 5)) == 0:  # the same module again under another naming scheme
            other = rng.choice(sorted(t.names))
            names.append(t.names[other])
            notes.append(f"dup:{other}")
        for name in names:
            sd.update({f"{name}.{k}": v.clone() for k, v in params.items()})
    if draw(st.integers(0, 7)) == 0:  # a non-LoKr module beside them
        sd["lora_unet_x.lora_down.weight"], sd["lora_unet_x.lora_up.weight"] = torch.ones(2, 4), torch.ones(4, 2)
    return sd, notes


# -------------------------------------------------------------------------------------- PEFT
PEFT_FIELDS = ("r", "alpha", "rank_pattern", "alpha_pattern", "target_modules", "decompose_both",
               "decompose_factor", "use_effective_conv2d", "rank_dropout", "module_dropout", "init_weights",
               "peft_type", "exclude_modules", "layers_to_transform", "use_dora")
_BAD_VALUES = st.sampled_from([None, -1, 0, 1.5, "8", [], {}, True, 10 ** 30, -(10 ** 30)])


@st.composite
def peft_config(draw: st.DrawFn, module_paths: Sequence[str]) -> Any:
    """An adapter_config.json value for modules at ``module_paths``: a plausible LoKr config with
    patterns that contradict each other (several regexes matching one module with other values,
    invalid regexes, ill-typed values), or sometimes not a dict at all."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.sampled_from([[], "LOKR", 3, None, [{"r": 4}]]))
    last = sorted({p.rsplit(".", 1)[-1] for p in module_paths}) or ["to_q"]
    bad_keys = ["(", "[a-", "", "*", "a{99999999999}", ".*", "^.*$", r"\d+", "to_.*"]
    pattern_keys = st.sampled_from(last * 2 + list(module_paths) * 2 + bad_keys)
    good_int = st.sampled_from([1, 2, 4, 8, 1, 2, 4, 0, -2])
    cfg: dict[str, Any] = {"peft_type": "LOKR", "r": draw(good_int), "alpha": draw(st.sampled_from([8, 4.0, 1, 16, 0, -1]))}
    cfg["target_modules"] = draw(st.sampled_from([last] * 4 + [".*", "(", None, [], [".*"], list(module_paths)]))
    cfg["rank_pattern"] = draw(st.dictionaries(pattern_keys, st.one_of(good_int, good_int, _BAD_VALUES), max_size=3))
    cfg["alpha_pattern"] = draw(st.dictionaries(pattern_keys, st.sampled_from([1, 8.0, 16, 4, -3, 0, 1e300]) | _BAD_VALUES,
                                                max_size=3))
    for field in draw(st.lists(st.sampled_from(PEFT_FIELDS), max_size=2)):
        cfg[field] = draw(_BAD_VALUES | st.sampled_from(["LORA", "LOKR", [".*"], {"a": 1}]))
    return cfg
