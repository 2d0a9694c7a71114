"""lokr_core.ops.overview: kind and family from a safetensors header alone.

Weight shapes come from the layers lycoris-lora and peft wrapped (every LoKr layout, Tucker and
DoRA included); the family is compared with what the full loader + ``summarize`` report.
"""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from lokr_core.formats.checkpoint import read_keys_shapes
from lokr_core.formats.io import load_lokr
from lokr_core.formats.keys import group_keys
from lokr_core.ops import overview as O
from lokr_core.ops.report import summarize
from tests.support.lokr_fixtures import make_lycoris_file, make_mixed_file, make_peft_dir


def _dims_by_module(path) -> dict[str, tuple[int, ...] | None]:
    shapes = read_keys_shapes(path)[0]
    return {m: O.module_dims({p: shapes[k] for p, k in params.items()}) for m, params in group_keys(list(shapes)).items()}


def test_module_dims_are_the_wrapped_layers_shapes_lycoris(tmp_path):
    lf = make_lycoris_file(tmp_path)  # every LAYOUTS and DORA_LAYOUTS entry
    dims = _dims_by_module(lf.path)
    assert set(lf.weights) <= set(dims)
    for name, weight in lf.weights.items():
        out, inp, *kernel = weight.shape
        if kernel and lf.layouts[name] in ("split-w2", "split-both"):  # W2 split on a conv: (out, in x kernel)
            inp = inp * kernel[0] * kernel[1]
        assert dims[name] == (out, inp), (name, lf.layouts[name])


def test_module_dims_peft(tmp_path):
    pd = make_peft_dir(tmp_path, decompose_both=True)
    dims = _dims_by_module(pd.path / "adapter_model.safetensors")
    assert pd.reference
    for name, delta in pd.reference.items():
        assert dims[name][0] == delta.shape[0] and dims[name][1] in (delta.shape[1], delta[0].numel()), name


def test_kinds(tmp_path):
    lf = make_lycoris_file(tmp_path, ["split_w2_linear"])
    assert O.file_overview(lf.path)["kind"] == "lokr"
    mixed, others = make_mixed_file(tmp_path, filename="mixed.safetensors")
    assert O.file_overview(mixed.path)["kind"] == "lokr"
    lora = {k: v for k, v in mixed.state_dict.items() if k.split(".")[0] in others}
    save_file(lora, str(tmp_path / "lora.safetensors"))
    assert O.file_overview(tmp_path / "lora.safetensors")["kind"] == "lora"
    save_file({"model.diffusion_model.out.weight": torch.zeros(2, 2)}, str(tmp_path / "ckpt.safetensors"))
    assert O.file_overview(tmp_path / "ckpt.safetensors") == {"kind": "unknown", "family": None, "family_label": None}


def test_lora_dims_from_up_down():
    assert O.module_dims({"lora_up.weight": (320, 4), "lora_down.weight": (4, 768)}) == (320, 768)
    assert O.module_dims({"lora_B.weight": (320, 4), "lora_A.weight": (4, 1024, 1, 1)}) == (320, 1024)
    assert O.module_dims({"alpha": ()}) is None


def test_family_equals_the_loaders_summary(tmp_path):
    """SD2 (read from the attn2.to_k factor widths) and a Flux.1 file: header-only = loader + summarize."""
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    save_file({f"{name}.lokr_w1": torch.randn(8, 8), f"{name}.lokr_w2_a": torch.randn(40, 2),
               f"{name}.lokr_w2_b": torch.randn(2, 128), f"{name}.alpha": torch.tensor(2.0)},
              str(tmp_path / "sd2.safetensors"))
    sd = {}
    for name, (out, inp) in {"lora_unet_double_blocks_0_img_attn_qkv": (9216, 3072),
                             "lora_unet_double_blocks_0_img_mod_lin": (18432, 3072),
                             "lora_unet_single_blocks_0_linear1": (21504, 3072),
                             "lora_unet_single_blocks_0_modulation_lin": (9216, 3072)}.items():
        sd.update({f"{name}.lokr_w1": torch.randn(4, 4), f"{name}.lokr_w2_a": torch.randn(out // 4, 2),
                   f"{name}.lokr_w2_b": torch.randn(2, inp // 4), f"{name}.alpha": torch.tensor(2.0)})
    save_file(sd, str(tmp_path / "flux.safetensors"))
    for file, expect in (("sd2.safetensors", "sd2"), ("flux.safetensors", "flux")):
        got = O.file_overview(tmp_path / file)
        assert got["family"] == summarize(load_lokr(tmp_path / file))["family"]
        assert got["family"].split("/")[0] == expect and got["family_label"]


def test_not_safetensors_names_the_file(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"not a header")
    with pytest.raises(Exception, match="bad.safetensors"):
        O.file_overview(tmp_path / "bad.safetensors")
