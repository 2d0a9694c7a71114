"""Hostile LoKr files the fuzz suite found (docs/fuzzing.md), as plain regression tests."""
import pytest
import torch
from safetensors.torch import save_file

from lokr_core.base.errors import LoKrFormatError
from lokr_core.formats.io import load_lokr


def test_complex_alpha_is_a_format_error(tmp_path):
    """float() of a complex alpha raised TypeError."""
    sd = {"lora_unet_a.lokr_w1": torch.randn(2, 2), "lora_unet_a.lokr_w2": torch.randn(4, 4),
          "lora_unet_a.alpha": torch.tensor(1 + 2j, dtype=torch.complex64)}
    save_file(sd, str(tmp_path / "c.safetensors"))
    for src in (tmp_path / "c.safetensors", sd):
        with pytest.raises(LoKrFormatError, match=r"lora_unet_a.*alpha has dtype torch.complex64"):
            w = load_lokr(src)
            w.modules["lora_unet_a"]
