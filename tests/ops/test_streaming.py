"""merge_checkpoint and extract_lokr stream: they hold a bounded number of checkpoint tensors at once
(issue 14 item 6; the sizes are measured in benchmarks/bench_memory.py). Every tensor read from a
checkpoint file is tracked until Python frees it; the count alive at once must stay small, whatever
the number of tensors in the file."""
from __future__ import annotations

import weakref

import pytest
import torch
from safetensors.torch import load_file, save_file

from lokr_core.formats import tensor_reader
from lokr_core.ops.extract import extract_lokr
from lokr_core.ops.merge import merge_checkpoint, merge_into_state_dict
from tests.support import lokr_fixtures as FX
from tests.support import models


class Tracker:
    """Wraps TensorReader.get: counts reads and the largest number of read tensors alive at once."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.alive = self.peak = self.reads = 0
        original = tensor_reader.TensorReader.get

        def get(reader, key):
            t = original(reader, key)
            self.reads += 1
            self.alive += 1
            self.peak = max(self.peak, self.alive)
            weakref.finalize(t, self._freed)
            return t

        monkeypatch.setattr(tensor_reader.TensorReader, "get", get)

    def _freed(self) -> None:
        self.alive -= 1


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny UNet as a diffusers-keyed safetensors file (fp16) and a LoKr file for it."""
    d = tmp_path_factory.mktemp("stream")
    sd = {k: v.detach().half().contiguous() for k, v in models.tiny_unet(0).state_dict().items()}
    save_file(sd, str(d / "base.safetensors"))
    lokr = FX.make_lycoris_file(d, filename="lokr.safetensors")
    return d, sd, lokr


def test_merge_checkpoint_holds_one_tensor_at_a_time(ckpt, tmp_path, monkeypatch):
    d, sd, lokr = ckpt
    track = Tracker(monkeypatch)
    res = merge_checkpoint(d / "base.safetensors", [(lokr.path, 1.0)], tmp_path / "out.safetensors", device="cpu")
    assert res.merged_tensors >= 10 and track.reads == len(sd) > 100
    assert track.peak == 1, track.peak  # read, merged, written, freed before the next
    want = merge_into_state_dict(sd, [(lokr.path, 1.0)], device="cpu").state_dict
    got = load_file(str(tmp_path / "out.safetensors"))
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)


def test_extract_holds_two_tensors_at_a_time(ckpt, tmp_path, monkeypatch):
    d, sd, lokr = ckpt
    merge_checkpoint(d / "base.safetensors", [(lokr.path, 1.0)], tmp_path / "tuned.safetensors", device="cpu")
    track = Tracker(monkeypatch)
    weights, report = extract_lokr(d / "base.safetensors", tmp_path / "tuned.safetensors", 4, device="cpu",
                                   compare_lora=False, hash_sources=False)
    assert len(weights.module_names) >= 10 and track.reads > 100
    assert track.peak <= 2, track.peak  # the base and the tuned weight of one module
