"""A LoKr or checkpoint file rewritten between its header read and its tensor reads is a clear error,
never a mix of old and new tensors (lazy LoKr reads, streamed merges, extraction)."""
from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file

from lokr_core.base.atomic import interruptible
from lokr_core.base.errors import LoKrFormatError
from lokr_core.formats.io import load_lokr
from lokr_core.ops import merge as M
from lokr_core.ops.extract import extract_lokr
from tests.commands.test_extract_cli import KEY, _pair
from tests.support import lokr_fixtures as FX

CHANGED = "while it was being read"


def _rewrite_in_place(path, tensors):
    """Rewrite ``path`` in place (same inode, new bytes and modification time)."""
    tmp = str(path) + ".new"
    save_file(tensors, tmp)
    data = open(tmp, "rb").read()
    os.unlink(tmp)
    with open(path, "r+b") as fh:
        fh.write(data)
        fh.truncate()
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def test_lazy_lokr_reads_refuse_a_rewritten_file(tmp_path):
    lf = FX.make_lycoris_file(tmp_path, list(FX.LAYOUTS))
    w = load_lokr(lf.path)
    names = w.module_names
    first = w.modules[names[0]]  # read while unchanged
    assert first is not None
    from safetensors.torch import load_file

    sd = load_file(str(lf.path))
    _rewrite_in_place(lf.path, {k: v * 2 if v.is_floating_point() else v for k, v in sd.items()})
    with pytest.raises(LoKrFormatError, match=f"{lf.path.name}'.*changed .*{CHANGED}"):
        w.modules[names[1]]


def test_lazy_lokr_reads_refuse_a_replaced_file(tmp_path):
    lf = FX.make_lycoris_file(tmp_path, list(FX.LAYOUTS))
    w = load_lokr(lf.path)
    from safetensors.torch import load_file

    st = os.stat(lf.path)
    new = tmp_path / "new.safetensors"
    save_file({k: v.clone() for k, v in load_file(str(lf.path)).items()}, str(new))
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(new, lf.path)  # same size, same mtime, another file
    with pytest.raises(LoKrFormatError, match=f"replaced by another file.*{CHANGED}"):
        w.modules[w.module_names[0]]


def _ckpt(path):
    lin = torch.nn.Linear(8, 8)
    sd = {"a.lin.weight": lin.weight.detach().clone(), **{f"z.{i}": torch.full((64,), float(i)) for i in range(6)}}
    save_file(sd, str(path))
    return sd, lin


def test_streamed_merge_stops_when_the_checkpoint_changes_mid_write(tmp_path):
    from lokr_core.tensor.factors import LoKrFactors

    src, out = tmp_path / "m.safetensors", tmp_path / "o.safetensors"
    sd, lin = _ckpt(src)
    f = LoKrFactors(w1=torch.randn(2, 2), w2=torch.randn(4, 4))
    calls = []

    def rewrite_at_third_tensor():
        calls.append(1)
        if len(calls) == 3:
            _rewrite_in_place(src, {k: v + 1 for k, v in sd.items()})
    with pytest.raises(LoKrFormatError, match=f"m.safetensors'.*{CHANGED}.*nothing was written"), \
            interruptible(rewrite_at_third_tensor):
        M.merge_plan_into_file(src, out, {"a.lin.weight": [M.KronUpdate(f, 1.0)]})
    assert len(calls) == 3 and sorted(os.listdir(tmp_path)) == ["m.safetensors"]


def test_merge_checkpoint_refuses_a_checkpoint_changed_after_its_header_was_read(tmp_path, monkeypatch):
    from tests.ops.test_merge import _ldm_unet_sd
    from tests.support import models

    lf = FX.make_lycoris_file(tmp_path, list(FX.LAYOUTS))
    src, out = tmp_path / "m.safetensors", tmp_path / "o.safetensors"
    sd = _ldm_unet_sd(models.tiny_unet(0))
    save_file(sd, str(src))
    real_plan = M.plan_merge

    def plan_then_rewrite(*a, **k):  # between the header read (index) and the tensor reads (write)
        result = real_plan(*a, **k)
        _rewrite_in_place(src, {**sd, "extra": torch.zeros(128)})
        return result
    monkeypatch.setattr(M, "plan_merge", plan_then_rewrite)
    with pytest.raises(LoKrFormatError, match=f"m.safetensors'.*size .* -> .* bytes.*{CHANGED}"):
        M.merge_checkpoint(src, [(lf.path, 1.0)], out, device="cpu")
    assert sorted(os.listdir(tmp_path)) == ["lokr.safetensors", "m.safetensors"]


def test_extract_refuses_a_tuned_checkpoint_rewritten_while_read(tmp_path):
    pb, pt, _ = _pair(tmp_path)
    from safetensors.torch import load_file

    tuned = load_file(str(pt))

    def rewrite(done, total):
        _rewrite_in_place(pt, {k: v * 3 for k, v in tuned.items()})
    out = tmp_path / "out.safetensors"
    with pytest.raises(LoKrFormatError, match=f"tuned.safetensors'.*{CHANGED}"):
        extract_lokr(pb, pt, 2, out=out, progress=rewrite, compare_lora=False, hash_sources=False)
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["base.safetensors", "tuned.safetensors"]
    assert KEY in tuned
