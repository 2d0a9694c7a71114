"""Fuzz: raw safetensors bytes (header length, JSON shape, dtypes, offsets, shapes, metadata) fed to
every reader: ``load_lokr`` (and each module's factors), the checkpoint header reader and
``merge_checkpoint`` as LoKr file and as checkpoint. Only LoKrError subclasses may escape, and a
failed merge leaves the output folder empty."""
from __future__ import annotations

import os

from hypothesis import event, given

from lokr_core.base.errors import LoKrError
from lokr_core.formats.checkpoint import read_keys_shapes
from lokr_core.formats.io import load_lokr
from lokr_core.ops.merge import merge_checkpoint
from lokr_core.ops.report import summarize
from tests.fuzz.strategies import fuzz, safetensors_blob


def use_weights(weights) -> None:
    """Touch everything a loader, a node or a route reads: every module's factors and scale, the summary."""
    for name in weights.module_names:
        weights.modules[name]
        weights.scale(name)
    summarize(weights)


@fuzz(1000)
@given(blob=safetensors_blob())
def test_raw_bytes_load_lokr(blob, scratch):
    path = scratch / "f.safetensors"
    path.write_bytes(blob)
    try:
        use_weights(load_lokr(path))
        event("load_lokr: loaded")
    except LoKrError as exc:
        event(f"load_lokr: {type(exc).__name__}")
    try:
        read_keys_shapes(path)
    except LoKrError:
        pass


@fuzz(150)
@given(blob=safetensors_blob())
def test_raw_bytes_merge(blob, scratch, outdir, ldm_ckpt):
    path = scratch / "m.safetensors"
    path.write_bytes(blob)
    for ckpt, lokr in ((path, ldm_ckpt), (ldm_ckpt, path)):  # hostile checkpoint, then hostile LoKr
        try:
            merge_checkpoint(ckpt, [(lokr, 1.0)], outdir / "out.safetensors", device="cpu")
        except LoKrError:
            assert os.listdir(outdir) == []
        else:  # a success needs a LoKr that matches the checkpoint: not a random blob
            raise AssertionError("a random file merged")
