"""PEFT's fixed names: the prefix of every module key and the files of an adapter folder."""
from __future__ import annotations

PEFT_PREFIX = "base_model.model."
"""What PEFT puts before a module's path in the keys of its state dicts and files."""

WEIGHTS_NAME = "adapter_model.safetensors"
"""The weights file of a PEFT adapter folder."""

CONFIG_NAME = "adapter_config.json"
"""The config file of a PEFT adapter folder."""

PEFT_COMPONENTS = ("unet", "text_encoder", "text_encoder_2", "transformer")
"""The parts of a diffusers pipeline an adapter may belong to: the prefix of a module's name in a
pipeline-wide state dict (``unet.``, ``text_encoder.``, ...) and the subfolder of that part's
adapter folder when a pipeline's adapters are saved (``<out>/unet/adapter_model.safetensors``)."""


def strip_peft_prefix(name: str) -> str:
    """``name`` without PEFT's ``base_model.model.`` prefix (unchanged when it has none)."""
    return name[len(PEFT_PREFIX):] if name.startswith(PEFT_PREFIX) else name
