"""Key lists of LyCORIS full-preset LoKr files for full-size SD models built on the ``meta`` device.

lycoris-lora's own ``create_lycoris(model, algo="lokr", preset="full")`` decides which modules a
full-preset LoKr adapts and names them (``lycoris_<path>``); its LokrModules keep the wrapped layer
(``org_module``) and the weight shape, so the module path and shape of every name come from
lycoris-lora, not from our code. From that list the other naming styles are written out the way
each tool writes them (kohya ``lora_unet_`` / ``lora_te*_``, PEFT ``base_model.model.``, diffusers
pipeline prefixes, LDM keys via the UNet map that tests/test_keymap.py checks against diffusers'
own single-file converter).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

os.environ.setdefault("LYCORIS_KERNEL_BACKEND", "torch")


@dataclass(frozen=True)
class LycorisModule:
    """One module a lycoris-lora full-preset LoKr adapts: its lycoris name, module path and weight shape."""

    name: str
    path: str
    shape: tuple[int, ...]


def lycoris_full_preset(model: torch.nn.Module) -> list[LycorisModule]:
    """The modules lycoris-lora's ``full`` preset LoKr wraps in ``model`` (built on meta, no memory)."""
    from lycoris import create_lycoris

    logging.getLogger("LyCORIS").setLevel(logging.ERROR)
    with torch.device("meta"):
        net = create_lycoris(model, 1.0, linear_dim=100000, linear_alpha=1.0, algo="lokr", preset="full")
    paths = {id(m): n for n, m in model.named_modules()}
    return [LycorisModule(lo.lora_name, paths[id(lo.org_module[0])], tuple(int(s) for s in lo.shape))
            for lo in net.loras]


def underscore(path: str) -> str:
    return path.replace(".", "_")


def text_canonical(path: str) -> str:
    return path[len("text_model."):] if path.startswith("text_model.") else path


def unet_styles(mods: list[LycorisModule], to_ldm) -> dict[str, dict[str, str]]:
    """{style: {file module name: diffusers module path}} for a UNet; ``to_ldm(path)`` gives LDM paths."""
    return {
        "lycoris": {m.name: m.path for m in mods},
        "kohya_diffusers": {"lora_unet_" + underscore(m.path): m.path for m in mods},
        "kohya_ldm": {"lora_unet_" + underscore(to_ldm(m.path)): m.path for m in mods},
        "peft": {"base_model.model." + m.path: m.path for m in mods},
        "peft_pipeline": {"base_model.model.unet." + m.path: m.path for m in mods},
        "diffusers_pipeline": {"unet." + m.path: m.path for m in mods},
        "ldm_dotted": {"model.diffusion_model." + to_ldm(m.path): m.path for m in mods},
    }


def text_styles(mods: list[LycorisModule], te: str) -> dict[str, dict[str, str]]:
    """{style: {file module name: module path}} for a text encoder; ``te`` is "te", "te1" or "te2"."""
    pipe = {"te": "text_encoder.", "te1": "text_encoder.", "te2": "text_encoder_2."}[te]
    return {
        "kohya": {f"lora_{te}_text_model_" + underscore(text_canonical(m.path)): m.path for m in mods},
        "kohya_transformers5": {f"lora_{te}_" + underscore(text_canonical(m.path)): m.path for m in mods},
        "peft_pipeline": {"base_model.model." + pipe + m.path: m.path for m in mods},
        "diffusers_pipeline": {pipe + m.path: m.path for m in mods},
    }
