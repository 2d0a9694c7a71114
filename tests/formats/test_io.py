"""load_lokr / save_lokr: every bad input promised in issue 4 item 2, laziness, atomic saves."""
import os
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.support import lokr_fixtures as F
from lokr_core.base.errors import LoKrFormatError, LoKrShapeError
from lokr_core.formats.sources import SafetensorsSource
from lokr_core.formats.io import load_lokr, save_lokr


def rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _snapshot(folder):
    return {p: (folder / p).read_bytes() for p in sorted(os.listdir(folder)) if (folder / p).is_file()}


def _write(tmp_path, sd, name="f.safetensors", metadata=None):
    path = tmp_path / name
    save_file(sd, str(path), metadata=metadata)
    return path


def _split(alpha=1.0, **over):
    sd = {"lora_unet_a.lokr_w1": torch.randn(2, 2), "lora_unet_a.lokr_w2_a": torch.randn(4, 1),
          "lora_unet_a.lokr_w2_b": torch.randn(1, 4), "lora_unet_a.alpha": torch.tensor(alpha)}
    sd.update(over)
    return sd


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin", ".pth"])
def test_pickle_files_are_refused(tmp_path, suffix):
    path = tmp_path / f"x{suffix}"
    torch.save({"a": torch.ones(1)}, path)
    before = path.read_bytes()
    with pytest.raises(LoKrFormatError, match=rf"x\{suffix}'.*pickle.*weights_only=True"):
        load_lokr(path)
    assert path.read_bytes() == before
    # the documented way works: torch.load(weights_only=True) then pass the dict
    sd = _split()
    torch.save(sd, path)
    w = load_lokr(torch.load(path, weights_only=True))
    assert w.module_names == ["lora_unet_a"]


def test_peft_dir_with_only_bin_is_refused(tmp_path):
    (tmp_path / "ad").mkdir()
    torch.save({}, tmp_path / "ad" / "adapter_model.bin")
    with pytest.raises(LoKrFormatError, match=r"adapter_model.bin'.*pickle"):
        load_lokr(tmp_path / "ad")


def test_truncated_and_corrupt_safetensors(tmp_path):
    good = _write(tmp_path, _split())
    data = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) - 7])
    with pytest.raises(LoKrFormatError, match=r"cut.safetensors'.*not a readable safetensors.*truncated"):
        load_lokr(cut)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00\x01garbage" * 3)
    with pytest.raises(LoKrFormatError, match=r"junk.safetensors'.*not a readable safetensors"):
        load_lokr(junk)
    assert cut.read_bytes() == data[: len(data) - 7]


def test_no_lokr_modules(tmp_path):
    path = _write(tmp_path, {"x.lora_up.weight": torch.ones(2, 1), "x.lora_down.weight": torch.ones(1, 2)})
    with pytest.raises(LoKrFormatError, match=r"f.safetensors'.*no LoKr modules.*\['lora'\]"):
        load_lokr(path)


def test_nan_alpha_and_inf_alpha_rules(tmp_path):
    with pytest.raises(LoKrFormatError, match=r"f.safetensors', module 'lora_unet_a': alpha is NaN"):
        load_lokr(_write(tmp_path, _split(alpha=float("nan"))))
    with pytest.raises(LoKrFormatError, match=r"module 'lora_unet_a': alpha is inf on a split.*finite"):
        load_lokr(_write(tmp_path, _split(alpha=float("inf")), "g.safetensors"))
    for a in (float("inf"), 1e10):  # legal on full/full, ignored (scale 1)
        full = {"m.lokr_w1": torch.randn(2, 2), "m.lokr_w2": torch.randn(3, 3), "m.alpha": torch.tensor(a)}
        w = load_lokr(_write(tmp_path, full, "h.safetensors"))
        assert w.scale("m") == 1.0
        assert rel(w.delta("m"), torch.kron(full["m.lokr_w1"], full["m.lokr_w2"])) < 1e-6
    with pytest.raises(LoKrFormatError, match=r"module 'lora_unet_a': alpha has shape \(2,\); expected a scalar"):
        load_lokr(_write(tmp_path, _split(**{"lora_unet_a.alpha": torch.ones(2)}), "i.safetensors"))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_factor_names_module_on_access(tmp_path, bad):
    w2b = torch.randn(1, 4)
    w2b[0, 1] = bad
    path = _write(tmp_path, _split(**{"lora_unet_a.lokr_w2_b": w2b}))
    w = load_lokr(path)  # lazy: shapes are fine
    with pytest.raises(LoKrFormatError, match=r"f.safetensors', module 'lora_unet_a': lokr_w2_b holds NaN or inf"):
        w.delta("lora_unet_a")
    with pytest.raises(LoKrFormatError, match=r"module 'lora_unet_a'"):
        w.validate_all()
    W = torch.zeros(8, 8)
    with pytest.raises(LoKrFormatError):
        w.merged_weight("lora_unet_a", W)
    assert torch.equal(W, torch.zeros(8, 8))


def test_shape_and_dtype_errors_at_load(tmp_path):
    with pytest.raises(LoKrShapeError, match=r"module 'lora_unet_a': lokr_w2_a \(4, 1\) @ lokr_w2_b \(3, 4\)"):
        load_lokr(_write(tmp_path, _split(**{"lora_unet_a.lokr_w2_b": torch.randn(3, 4)})))
    with pytest.raises(LoKrFormatError, match=r"module 'lora_unet_a': lokr_w1 has dtype torch.int64; expected a floating"):
        load_lokr(_write(tmp_path, _split(**{"lora_unet_a.lokr_w1": torch.ones(2, 2, dtype=torch.int64)}), "g.safetensors"))
    with pytest.raises(LoKrFormatError, match=r"module 'lora_unet_b': W2 is missing"):
        load_lokr({"lora_unet_b.lokr_w1": torch.ones(2, 2)})
    with pytest.raises(LoKrFormatError, match=r"not str -> tensor"):
        load_lokr({"lora_unet_b.lokr_w1": [1, 2]})


def test_loading_reads_no_factor_data(tmp_path, monkeypatch):
    big = {"lora_unet_big.lokr_w1": torch.randn(64, 64), "lora_unet_big.lokr_w2": torch.randn(1024, 1024),
           "lora_unet_big.alpha": torch.tensor(1.0)}
    path = _write(tmp_path, big, metadata={"ss_network_dim": "4"})
    reads = []
    orig_get, orig_many = SafetensorsSource.get, SafetensorsSource.get_many
    monkeypatch.setattr(SafetensorsSource, "get", lambda self, k: (reads.append(k), orig_get(self, k))[1])
    monkeypatch.setattr(SafetensorsSource, "get_many", lambda self, ks: (reads.extend(ks), orig_many(self, ks))[1])
    t = time.perf_counter()
    w = load_lokr(path)
    info = (w.module_names, w.metadata, w.shapes("lora_unet_big").w2.shape, w.scale("lora_unet_big"),
            w.scale_warnings(), w.natural_shape("lora_unet_big"))
    took = time.perf_counter() - t
    assert reads == ["lora_unet_big.alpha"]
    assert info[2] == (1024, 1024) and info[5] == (64 * 1024, 64 * 1024)
    assert took < 2.0
    assert torch.equal(w.modules["lora_unet_big"].w2, big["lora_unet_big.lokr_w2"])
    w.modules["lora_unet_big"]
    assert reads.count("lora_unet_big.lokr_w2") == 1  # cached


def test_info_on_many_modules_is_fast(tmp_path):
    sd = {}
    for i in range(700):
        sd[f"lora_unet_m{i}.lokr_w1"] = torch.randn(4, 4)
        sd[f"lora_unet_m{i}.lokr_w2_a"] = torch.randn(80, 4)
        sd[f"lora_unet_m{i}.lokr_w2_b"] = torch.randn(4, 80)
        sd[f"lora_unet_m{i}.alpha"] = torch.tensor(2.0)
    path = _write(tmp_path, sd)
    t = time.perf_counter()
    w = load_lokr(path)
    took = time.perf_counter() - t
    assert len(w) == 700 and w.scale("lora_unet_m5") == 0.5
    assert took < 3.0, took


def test_save_refuses_input_path_and_leaves_nothing(tmp_path):
    lf = F.make_lycoris_file(tmp_path, ["split_w2_linear", "dora_in_linear"])
    w = load_lokr(lf.path)
    before = _snapshot(tmp_path)
    with pytest.raises(LoKrFormatError, match="also an input"):
        save_lokr(w, lf.path)
    with pytest.raises(LoKrFormatError, match="unknown format 'ckpt'"):
        save_lokr(w, tmp_path / "o.safetensors", format="ckpt")
    with pytest.raises(LoKrFormatError, match="DoRA"):  # PEFT has no DoRA
        save_lokr(w, tmp_path / "o_dir", format="peft", name_map=lf.paths)
    with pytest.raises(LoKrFormatError, match="writes a directory"):
        save_lokr(w, tmp_path / "o.safetensors", format="peft", name_map=lf.paths)
    assert _snapshot(tmp_path) == before
    assert sorted(os.listdir(tmp_path)) == ["lokr.safetensors"]


def test_save_peft_into_its_own_dir_is_refused(tmp_path):
    pd = F.make_peft_dir(tmp_path)
    w = load_lokr(pd.path)
    before = _snapshot(pd.path)
    with pytest.raises(LoKrFormatError, match="also an input"):
        save_lokr(w, pd.path, format="peft")
    assert _snapshot(pd.path) == before


def test_save_lycoris_roundtrip_keeps_delta_metadata_and_dtype(tmp_path):
    lf = F.make_lycoris_file(tmp_path, ["split_both_linear", "tucker_conv3x3", "dora_out_conv3x3"],
                             dtype=torch.bfloat16, metadata={"ss_network_dim": "2"})
    w = load_lokr(lf.path)
    out = save_lokr(w, tmp_path / "sub.safetensors", name_map={n: "x_" + n for n in w.module_names})
    w2 = load_lokr(out)
    assert w2.metadata["ss_network_dim"] == "2"
    for name, ref in lf.reference.items():
        assert w2.modules["x_" + name].w1_shape == w.modules[name].w1_shape
        assert next(iter(w2.raw_keys("x_" + name).values())).dtype in (torch.bfloat16, torch.float32)
        assert rel(w2.delta("x_" + name, ref.shape), ref) < 1e-5
    for name, merged in lf.merged.items():
        assert rel(w2.merged_weight("x_" + name, lf.weights[name]), merged) < 1e-5
    sd = load_file(out)
    assert all(t.dtype == torch.bfloat16 for k, t in sd.items() if ".lokr_" in k)


def test_save_peft_with_model_resolves_names(tmp_path):
    from peft import PeftModel

    lf = F.make_lycoris_file(tmp_path, ["split_w2_linear", "split_conv1x1", "full_conv3x3"])
    w = load_lokr(lf.path)
    out = save_lokr(w, tmp_path / "p", format="peft", model=lf.model)
    peft_model = PeftModel.from_pretrained(F.build_model("unet"), str(out))
    mods = dict(peft_model.named_modules())
    for name, ref in lf.reference.items():
        assert rel(mods["base_model.model." + lf.paths[name]].get_delta_weight("default").float(), ref) < 1e-5
    other = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(Exception, match="does not resolve"):
        save_lokr(w, tmp_path / "q", format="peft", model=other)
    assert not (tmp_path / "q").exists()
