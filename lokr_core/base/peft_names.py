"""PEFT's fixed names: the prefix of every module key and the files of an adapter folder."""
from __future__ import annotations

PEFT_PREFIX = "base_model.model."
"""What PEFT puts before a module's path in the keys of its state dicts and files."""

WEIGHTS_NAME = "adapter_model.safetensors"
"""The weights file of a PEFT adapter folder."""

CONFIG_NAME = "adapter_config.json"
"""The config file of a PEFT adapter folder."""


def strip_peft_prefix(name: str) -> str:
    """``name`` without PEFT's ``base_model.model.`` prefix (unchanged when it has none)."""
    return name[len(PEFT_PREFIX):] if name.startswith(PEFT_PREFIX) else name
