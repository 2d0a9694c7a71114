"""LoKr Extract node: make a LoKr from two checkpoints and save it to the ``loras`` folder.

Thin: checks inputs, calls ``lokr_core.ops.extract.extract_lokr`` (ComfyUI's progress bar and
Cancel through ``progress.comfy_progress``; Cancel also stops the write between tensors,
``progress.comfy_interrupt``) and returns the report as text.
"""
from __future__ import annotations

import os
import re
from typing import Any

from ..lokr_core.base.atomic import interruptible
from ..lokr_core.base.errors import LoKrFormatError, where
from ..lokr_core.ops.extract import extract_lokr, format_extract_report
from .common import CATEGORY, file_token, model_file
from .progress import comfy_interrupt, comfy_progress

_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]*$")


def _checkpoints() -> list[str]:
    import folder_paths  # type: ignore[import-not-found]
    return folder_paths.get_filename_list("checkpoints")


def _checkpoint_path(name: str) -> str:
    return model_file("checkpoints", name, "a .safetensors checkpoint")


def output_path(filename: str, overwrite: bool) -> str:
    """Full path in the first ``loras`` folder for ``filename`` (``.safetensors`` added when missing).

    Raises LoKrFormatError for names with folders, ``..`` or odd characters, or an existing file
    when ``overwrite`` is False.
    """
    import folder_paths  # type: ignore[import-not-found]
    name = filename.strip()
    if not name.lower().endswith(".safetensors"):
        name += ".safetensors"
    if not _NAME_OK.match(name) or ".." in name:
        raise LoKrFormatError(f"{where(filename, None)}is not a plain file name; expected letters, "
                              "digits, space, '_', '-', '.' only (no folders)")
    folder = folder_paths.get_folder_paths("loras")[0]
    path = os.path.join(folder, name)
    if os.path.exists(path) and not overwrite:
        raise LoKrFormatError(f"{where(path, None)}already exists; expected a new file name "
                              "(or set overwrite to true)")
    return path


class LoKrExtract:
    """Extract a LoKr (nearest Kronecker product of tuned - base) and save it to the loras folder."""

    DESCRIPTION = ("Makes a LoKr from the difference between a fine-tuned checkpoint and its base (nearest "
                   "Kronecker product per weight) and saves it in the loras folder. The report lists, per "
                   "module, the relative error and that of a LoRA of the same size.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("report", "path")
    OUTPUT_TOOLTIPS = ("Per-module relative error table (LoKr vs LoRA of equal size).", "Path of the saved file.")
    FUNCTION = "extract"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        ckpts = _checkpoints()
        return {"required": {
            "base_checkpoint": (ckpts, {"tooltip": "The original checkpoint the fine-tune started from."}),
            "tuned_checkpoint": (ckpts, {"tooltip": "The fine-tuned checkpoint (same architecture as the base)."}),
            "rank": ("INT", {"default": 16, "min": 1, "max": 1024, "step": 1,
                             "tooltip": "LoKr rank: inner size of the split W2. Higher = closer fit, bigger file."}),
            "factor": ("INT", {"default": -1, "min": -1, "max": 1024, "step": 1,
                               "tooltip": "Factorization limit for W1's size; -1 = most balanced split."}),
            "decompose_both": ("BOOLEAN", {"default": False,
                                           "tooltip": "Also split W1 into two low-rank factors (smaller file)."}),
            "conv": (["tucker", "flat", "skip"], {"default": "tucker",
                                                  "tooltip": "3x3 convs: Tucker W2, flat low-rank W2, or not extracted."}),
            "filename": ("STRING", {"default": "extracted_lokr",
                                    "tooltip": "File name in the loras folder ('.safetensors' is added)."}),
            "save_dtype": (["fp16", "bf16", "fp32"], {"default": "fp16", "tooltip": "dtype of the saved factors."}),
            "device": (["auto", "cpu", "cuda"], {"default": "auto",
                                                 "tooltip": "Where the SVDs run; auto = cuda when available."}),
            "overwrite": ("BOOLEAN", {"default": False, "tooltip": "Replace an existing file of the same name."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, rank: int = 16, filename: str = "x", **_: Any) -> bool | str:
        if not isinstance(rank, int) or rank < 1:
            return f"rank is {rank!r}; expected an integer >= 1"
        if not isinstance(filename, str) or not filename.strip():
            return "filename is empty; expected a file name"
        return True

    @classmethod
    def IS_CHANGED(cls, base_checkpoint: Any = None, tuned_checkpoint: Any = None, **_: Any) -> str:
        """The two checkpoints' tokens: either rewritten under the same name runs the extraction again."""
        return file_token("checkpoints", base_checkpoint) + "\n" + file_token("checkpoints", tuned_checkpoint)

    def extract(self, base_checkpoint: str, tuned_checkpoint: str, rank: int, factor: int, decompose_both: bool,
                conv: str, filename: str, save_dtype: str, device: str, overwrite: bool) -> tuple[str, str]:
        import torch

        base = _checkpoint_path(base_checkpoint)
        tuned = _checkpoint_path(tuned_checkpoint)
        out = output_path(filename, overwrite)
        dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        progress = comfy_progress()
        with interruptible(comfy_interrupt()):
            _, report = extract_lokr(base, tuned, int(rank), factor=int(factor), decompose_both=bool(decompose_both),
                                     conv=conv, device=dev, progress=progress, out=out, save_dtype=save_dtype)
        text = format_extract_report(report, limit=200)
        return (f"saved {out}\n{text}", out)


NODES = {"LoKrExtract": (LoKrExtract, "LoKr Extract")}
