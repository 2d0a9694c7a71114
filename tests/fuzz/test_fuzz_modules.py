"""Fuzz: hostile LoKr module sets (missing / extra / unknown factor keys, shapes that do not multiply,
zero dims, NaN / inf / negative / vector alpha, NaN / inf factors, int / bool / half factors, one
module under two naming schemes, kohya / lycoris_ / diffusers / PEFT names) fed to ``load_lokr``
(state dict and file), ``resolve``, ``apply_lokr`` (merge and bypass) and ``merge_checkpoint``.

Only LoKrError subclasses may escape; a failure leaves the model exactly as it was (weights and
hooks) and the output folder empty; a success leaves every weight finite.
"""
from __future__ import annotations

import math
import os

import torch
from hypothesis import event, given
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from lokr_core.base.errors import LoKrError
from lokr_core.formats.io import load_lokr
from lokr_core.keymap.resolve import resolve
from lokr_core.ops.apply import apply_lokr
from lokr_core.ops.merge import merge_checkpoint
from tests.fuzz.strategies import fuzz, module_set
from tests.fuzz.test_fuzz_files import use_weights

STRENGTHS = st.sampled_from([1.0] * 4 + [0.5, -1.0, 0.0, math.nan, math.inf, 1e30, "x", None])


def module_sets():
    """module_set over the module fixture's targets (drawn inside the test: fixtures are not strategies)."""
    return st.data()


def hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def save(sd: dict, path) -> bool:
    """Write ``sd`` as safetensors (False when safetensors itself refuses it, e.g. shared storage)."""
    try:
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    except Exception:
        return False
    return True


@fuzz(400)
@given(data=module_sets())
def test_module_sets_load_and_resolve(data, targets, unet, scratch):
    sd, notes = data.draw(module_set(targets), label="state dict")
    for src in [sd] + ([scratch / "m.safetensors"] if save(sd, scratch / "m.safetensors") else []):
        try:
            weights = load_lokr(src)
            use_weights(weights)
            report = resolve(weights, unet)
            report.format()
            report.to_dict()
            event(f"resolved: {len(report.matched)} matched")
        except LoKrError as exc:
            event(f"load/resolve: {type(exc).__name__}")


@fuzz(200)
@given(data=module_sets(), strength=STRENGTHS, mode=st.sampled_from(["merge", "bypass"]))
def test_module_sets_apply(data, strength, mode, targets, unet, pristine):
    sd, notes = data.draw(module_set(targets), label="state dict")
    before = pristine
    n_hooks = hooks(unet)
    try:
        result = apply_lokr(unet, load_lokr(sd), strength=strength, mode=mode)
        event(f"apply {mode}: applied")
    except LoKrError as exc:
        event(f"apply {mode}: {type(exc).__name__}")
        now = unet.state_dict()
        assert all(torch.equal(now[k], before[k]) for k in before), notes
        assert hooks(unet) == n_hooks, notes
        return
    try:
        if mode == "merge":
            bad = [k for k, v in unet.state_dict().items() if not torch.isfinite(v).all()]
            assert not bad, (notes, bad[:3])
        else:
            result.remove()
            assert hooks(unet) == n_hooks
    finally:
        unet.load_state_dict(before)


@fuzz(120)
@given(data=module_sets(), strength=STRENGTHS, strict=st.booleans())
def test_module_sets_merge_checkpoint(data, strength, strict, targets, ldm_ckpt, scratch, outdir):
    sd, notes = data.draw(module_set(targets), label="state dict")
    lokr = scratch / "lokr.safetensors"
    if not save(sd, lokr):
        return
    out = outdir / "merged.safetensors"
    try:
        merge_checkpoint(ldm_ckpt, [(lokr, strength)], out, device="cpu", strict=strict)
        event("merge: written")
    except LoKrError as exc:
        event(f"merge: {type(exc).__name__}")
        assert os.listdir(outdir) == [], notes
        return
    try:
        merged = load_file(str(out))
        bad = [k for k, v in merged.items() if not torch.isfinite(v).all()]
        assert not bad, (notes, bad[:3])
    finally:
        out.unlink()
