"""Fixtures of the fuzz suite: one tiny diffusers UNet, its LDM single-file checkpoint and scratch
folders, built once per module (hypothesis runs many cases per test; function fixtures would not
be reset between them)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from tests.fuzz.strategies import FuzzTarget, targets_for
from tests.support import models


@pytest.fixture(scope="module")
def unet() -> nn.Module:
    return models.tiny_unet(0)


@pytest.fixture(scope="module")
def pristine(unet) -> dict[str, torch.Tensor]:
    """A copy of the UNet's weights as built: each case compares against it (and restores it after a
    successful merge)."""
    return {k: v.detach().clone() for k, v in unet.state_dict().items()}


def ldm_state_dict(unet: nn.Module) -> dict[str, torch.Tensor]:
    """The UNet's weights under LDM keys (``model.diffusion_model.*``), via lokr_core.keymap."""
    from lokr_core.keymap import ldm_unet

    rules = ldm_unet.unet_rules(ldm_unet.layout_from_config(unet.config))
    return {"model.diffusion_model." + ldm_unet.diffusers_to_ldm(k, rules): v.detach().clone()
            for k, v in unet.state_dict().items()}


def unet_targets(unet: nn.Module, every: int = 5) -> list[FuzzTarget]:
    """Every ``every``-th Linear / Conv2d of the UNet as a FuzzTarget (LDM and diffusers names)."""
    from lokr_core.keymap import ldm_unet

    rules = ldm_unet.unet_rules(ldm_unet.layout_from_config(unet.config))
    layers = [(n, m) for n, m in unet.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    picked = layers[::every]
    return targets_for([(ldm_unet.diffusers_to_ldm(n + ".weight", rules)[: -len(".weight")], n,
                         tuple(m.weight.shape)) for n, m in picked])


@pytest.fixture(scope="module")
def targets(unet) -> list[FuzzTarget]:
    return unet_targets(unet)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """A folder for input files (rewritten by each case)."""
    return tmp_path_factory.mktemp("fuzz_in")


@pytest.fixture(scope="module")
def outdir(tmp_path_factory) -> Path:
    """The output folder: it must stay empty after every failed write."""
    return tmp_path_factory.mktemp("fuzz_out")


@pytest.fixture(scope="module")
def ldm_ckpt(unet, tmp_path_factory) -> Path:
    """The UNet as an fp16 LDM single-file checkpoint (plus one VAE tensor)."""
    sd = {k: v.half() for k, v in ldm_state_dict(unet).items()}
    sd["first_stage_model.encoder.conv_in.weight"] = torch.randn(8, 3, 3, 3).half()
    path = tmp_path_factory.mktemp("fuzz_ckpt") / "sd.safetensors"
    save_file(sd, str(path), metadata={"format": "pt"})
    return path
