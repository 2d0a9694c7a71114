"""Loader nodes and LoKr patches whose ΔW leaves the weight's range (found by the fuzz suite,
docs/fuzzing.md): a huge alpha or strength used to give patches that ComfyUI computed into inf
weights, or that raised a RuntimeError at load time. The node now refuses them with a LoKrError and
the input MODEL / CLIP stay unchanged; sane files still load."""
from __future__ import annotations

import torch
from safetensors.torch import save_file

from tests.support.comfy_pack import pack_module
from tests.support.node_env import SPECS, assert_untouched

errors = pack_module("lokr_core.base.errors")
loaders = pack_module("nodes.loaders")

NAME = SPECS[0][0]  # a 32 x 32 Linear of the stand-in UNet


def _file(env, filename: str, alpha: float) -> str:
    sd = {f"{NAME}.lokr_w1": torch.full((4, 4), 0.5), f"{NAME}.lokr_w2_a": torch.full((8, 1), 10.0),
          f"{NAME}.lokr_w2_b": torch.ones(1, 8), f"{NAME}.alpha": torch.tensor(alpha)}
    save_file(sd, str(env["loras"] / filename))
    return filename


def test_huge_alpha_or_strength_is_refused(env):
    node = loaders.LoKrLoaderModelOnly()
    huge = _file(env, "huge.safetensors", 1e38)
    assert_untouched(env, lambda: node.load_model_only(env["model"], huge, 1.0), errors.LoKrFormatError,
                     "huge.safetensors", NAME, "float32")
    sane = _file(env, "sane.safetensors", 1.0)
    assert_untouched(env, lambda: node.load_model_only(env["model"], sane, 1e38), errors.LoKrFormatError, NAME)
    out = node.load_model_only(env["model"], sane, 1.0)["result"][0]  # the same file at strength 1 loads
    assert all(torch.isfinite(v).all() for v in out.patched_state_dict().values())
