"""What the node classes share: category, widget specs and tooltips, file look-up, input checks.

Every LoKr node is in :data:`CATEGORY`; the file, strength, scale-rule, DoRA-mode, apply and strict
widgets are built here so every node offers them with the same options and tooltips. Files come
from ComfyUI's model folders (``folder_paths``, imported on use: there is no ComfyUI at import
time in tests). Strength checks are lokr_core's ``ops.merge.check_strength``.
"""
from __future__ import annotations

import os
from typing import Any

from ..lokr_core.base.errors import LoKrConfigError, LoKrError, LoKrFormatError, where
from ..lokr_core.base.fingerprint import file_fingerprint
from ..lokr_core.ops.merge import check_strength

CATEGORY = "loaders/LoKr"
SCALE_RULES = ["file", "peft", "metadata-dim", "none"]
DORA_MODES = ["interpolate", "lycoris"]
PATCH, BYPASS = "patch weights", "bypass"
APPLY_MODES = [PATCH, BYPASS]

STRENGTH = {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}
TIP_FILE = "A LoKr file from the 'loras' folders (LyCORIS / kohya .safetensors, or a PEFT adapter_model.safetensors)."
TIP_SCALE = ("How alpha turns into the update's scale: 'file' = the file's own convention (LyCORIS: alpha/rank, "
             "1 when both factors are full; PEFT: alpha/r); 'peft' = alpha/r always; 'metadata-dim' = alpha/ss_network_dim "
             "for full/full modules (fixes over-strong files, ComfyUI issue #15114); 'none' = 1.")
TIP_APPLY = ("'patch weights' = ComfyUI adds ΔW to the weights when it loads them (fastest sampling); 'bypass' = the "
             "weights are never modified, the LoKr is added in each layer's forward pass (for fp8 / quantized models, "
             "low VRAM, or many LoKr files switched often). Same results to float tolerance. DoRA modules need "
             "'patch weights'.")
TIP_STRICT = ("Off (default): a module that does not fit the model (shape, unreadable factors) is skipped and listed "
              "in the report, the others apply. On: the first such module stops the run and nothing is applied.")
TIP_DORA = ("DoRA modules only: 'interpolate' = W + strength*(W_dora - W) (0 = unchanged); "
            "'lycoris' = lycoris-lora's formula, where the update stays applied at strength 0.")


# ----------------------------------------------------------------------------- widget specs
def strength_input(tooltip: str) -> tuple[str, dict]:
    """A FLOAT strength widget (-100..100, default 1) with ``tooltip``."""
    return ("FLOAT", dict(STRENGTH, tooltip=tooltip))


def lokr_name_input() -> tuple[list[str], dict]:
    """The LoKr file widget: the files of the ``loras`` folders."""
    return (lokr_files(), {"tooltip": TIP_FILE})


def model_clip_inputs() -> dict[str, tuple[str, dict]]:
    """The ``model`` / ``clip`` inputs of the nodes that patch both (cloned, never changed)."""
    return {"model": ("MODEL", {"tooltip": "The diffusion model (cloned, never changed)."}),
            "clip": ("CLIP", {"tooltip": "The text encoder (cloned, never changed)."})}


def run_options() -> dict[str, tuple]:
    """The optional ``apply`` / ``strict`` inputs of the multi-file nodes."""
    return {"apply": apply_input(), "strict": strict_input()}


def scale_rule_input() -> tuple[list[str], dict]:
    return (SCALE_RULES, {"default": "file", "tooltip": TIP_SCALE})


def dora_mode_input() -> tuple[list[str], dict]:
    return (DORA_MODES, {"default": "interpolate", "tooltip": TIP_DORA})


def apply_input() -> tuple[list[str], dict]:
    return (APPLY_MODES, {"default": PATCH, "tooltip": TIP_APPLY})


def strict_input() -> tuple[str, dict]:
    """The optional ``strict`` BOOLEAN (default False: odd modules are skipped and reported)."""
    return ("BOOLEAN", {"default": False, "tooltip": TIP_STRICT})


# ----------------------------------------------------------------------------- files
def lokr_files() -> list[str]:
    """File names ComfyUI lists under its ``loras`` model folders."""
    import folder_paths  # type: ignore[import-not-found]
    return folder_paths.get_filename_list("loras")


def model_file(folder: str, name: str, expected: str) -> str:
    """Full path of ``name`` in ComfyUI's ``folder`` model folders; LoKrFormatError naming it when missing.

    ``expected`` says what belongs there, e.g. ``"a .safetensors file"``.
    """
    import folder_paths  # type: ignore[import-not-found]
    path = folder_paths.get_full_path(folder, name) if name else None
    if path is None or not os.path.isfile(path):
        roots = ", ".join(folder_paths.get_folder_paths(folder)) or "none configured"
        raise LoKrFormatError(f"{where(name, None)}no such file in the '{folder}' folders ({roots}); "
                              f"expected {expected} there")
    return path


def file_token(folder: str, name: Any) -> str:
    """``IS_CHANGED`` value of a model file: its fingerprint (size, mtime, inode, head/tail hash).

    A file rewritten under the same name gives a new token, so ComfyUI runs the node again; an
    unchanged file the same token, so the cached result is kept. A missing or unreadable file gives
    ``"missing:<name>"`` (the node's own check then names it).
    """
    import folder_paths  # type: ignore[import-not-found]
    path = folder_paths.get_full_path(folder, name) if isinstance(name, str) and name else None
    try:
        return f"{folder}/{name}:{file_fingerprint(path)}" if path else f"missing:{name}"
    except OSError:
        return f"missing:{name}"


def lokr_path(name: str) -> str:
    """Full path of ``name`` in the ``loras`` folders (see :func:`model_file`)."""
    return model_file("loras", name, "a .safetensors file")


# ----------------------------------------------------------------------------- input checks
def strength_error(label: str, value: Any) -> str | None:
    """The message naming ``label`` when ``value`` is not a finite number, else None."""
    try:
        check_strength(value, caller=label)
    except LoKrConfigError as e:
        return str(e)
    return None


def check_strengths(**strengths: Any) -> None:
    """LoKrFormatError with :func:`strength_error`'s message for the first strength that is not finite."""
    for label, value in strengths.items():
        msg = strength_error(label, value)
        if msg:
            raise LoKrFormatError(msg)


def validate_inputs(lokr_name: Any = None, **strengths: Any) -> bool | str:
    """VALIDATE_INPUTS body of the loader nodes: True, or the message ComfyUI shows.

    Strengths given as None (a linked input) and a None file name are not checked.
    """
    for label, value in strengths.items():
        msg = strength_error(label, value) if value is not None else None
        if msg:
            return msg
    if lokr_name is not None:
        try:
            lokr_path(lokr_name)
        except LoKrError as e:
            return str(e)
    return True
