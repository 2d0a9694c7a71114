"""A file whose header is fine but one factor holds NaN (found only when its tensors are read, since
loading is lazy): applying or merging it must fail naming the module and leave nothing changed."""
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tests.support import lokr_fixtures as FX
from tests.support import models
from lokr_core.ops.apply import apply_lokr
from lokr_core.base.errors import LoKrFormatError
from lokr_core.formats.io import load_lokr
from lokr_core.ops.merge import merge_checkpoint


@pytest.fixture(scope="module")
def nan_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nan")
    good = FX.make_lycoris_file(folder, filename="good.safetensors")
    with safe_open(str(good.path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        metadata = f.metadata()
    # poison the last module in name order, so a naive apply would have changed the others first
    victim = sorted(k for k in tensors if k.endswith((".lokr_w1", ".lokr_w1_a")))[-1]
    tensors[victim] = tensors[victim].clone()
    tensors[victim].view(-1)[0] = float("nan")
    path = folder / "nan.safetensors"
    save_file(tensors, str(path), metadata)
    return path, victim.rsplit(".", 1)[0]


def test_load_is_lazy_but_first_use_names_the_module(nan_file):
    path, module = nan_file
    weights = load_lokr(path)  # header only: fine
    with pytest.raises(LoKrFormatError, match=rf"nan\.safetensors.*{module}.*NaN or inf"):
        weights.modules[module]


def test_apply_merge_and_bypass_leave_the_model_unchanged(nan_file):
    path, module = nan_file
    unet = models.tiny_unet(0)
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    hooks_before = sum(len(m._forward_hooks) for m in unet.modules())
    for mode in ("merge", "bypass"):
        with pytest.raises(LoKrFormatError, match=module):
            apply_lokr(unet, path, mode=mode)
        assert all(torch.equal(v, before[k]) for k, v in unet.state_dict().items())
        assert sum(len(m._forward_hooks) for m in unet.modules()) == hooks_before


def test_checkpoint_merge_writes_nothing(nan_file, tmp_path):
    path, module = nan_file
    base = tmp_path / "base"
    models.tiny_unet(0).save_pretrained(base / "unet")
    files_before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(LoKrFormatError, match=module):
        merge_checkpoint(base, [(path, 1.0)], tmp_path / "merged", device="cpu")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == files_before
