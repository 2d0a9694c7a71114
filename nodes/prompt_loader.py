"""LoKr from Prompt: the A1111 adapter tags of a prompt applied to MODEL / CLIP.

``<lora:name:w>``, ``<lora:name:w:clip_w>``, ``<lokr:name:w>`` (grammar: docs/sidecar.md, "Prompt
tags"; ``lokr_core.ops.prompt_tags``) name files of the ``loras`` folders with or without extension
or subfolder. Every tag is parsed and every name resolved before anything is applied (one error
lists every bad tag, or every unknown name with its nearest files); then the files are applied in
prompt order by :func:`.stack.apply_stack` (LoKr files through our patch, other files through
ComfyUI's own LoRA loader). Outputs: the patched clones, the prompt without its tags, the files'
trigger words and the ``loaded`` list (:mod:`.words`).
"""
from __future__ import annotations

from typing import Any

from ..lokr_core.base.errors import LoKrError
from ..lokr_core.ops.prompt_tags import parse_prompt_tags, resolve_names
from .common import CATEGORY, PATCH, file_token, lokr_files, model_clip_inputs, run_options, scale_rule_input
from .planning import WeightsCache
from .stack import apply_stack
from .words import loaded_text, trigger_words_text

TIP_PROMPT = ("Prompt text with adapter tags: <lora:name:weight>, <lora:name:weight:clip_weight>, <lokr:name:weight> "
              "(name with or without extension or subfolder; named forms unet= / te= too). The tags are applied in "
              "order and removed from the 'prompt' output.")


def prompt_stack(prompt: str) -> tuple[str, list[tuple[str, float, float]]]:
    """(prompt without its tags, ``[(loras file name, strength_model, strength_clip), ...]`` in tag order).

    Raises LoKrConfigError listing every malformed tag, or LoKrKeyError listing every name that
    does not resolve among the ``loras`` files (with up to 3 nearest files each). Reads no file.
    """
    clean, tags = parse_prompt_tags(prompt)
    if not tags:
        return clean, []
    files = resolve_names([t.name for t in tags], lokr_files())
    return clean, [(files[t.name], t.model_strength, t.clip_strength) for t in tags]


class LoKrFromPrompt:
    """LoKr from Prompt: MODEL + CLIP + a prompt with <lora:...> / <lokr:...> tags -> patched clones + texts."""

    CATEGORY = CATEGORY
    DESCRIPTION = ("Reads <lora:name:weight>, <lora:name:weight:clip_weight> and <lokr:name:weight> tags from a prompt, "
                   "applies those files in order (LoKr files with the exact LoKr patch, other files through ComfyUI's "
                   "own LoRA loader) and returns the prompt without the tags plus the files' trigger words.")
    SEARCH_ALIASES = ["lora tags", "prompt lora", "a1111 lora syntax", "lora from text"]
    RETURN_TYPES = ("MODEL", "CLIP", "STRING", "STRING", "STRING")
    RETURN_NAMES = ("MODEL", "CLIP", "prompt", "trigger_words", "loaded")
    OUTPUT_TOOLTIPS = ("The diffusion model with every tagged file applied.",
                       "The text encoder with every tagged file applied.",
                       "The prompt with the tags removed (feed it to CLIP Text Encode).",
                       "Trigger words of the tagged files (from sidecar files and file metadata), comma-separated.",
                       "What was applied: one 'file:strength' line per tag.")
    FUNCTION = "load"

    def __init__(self) -> None:
        self._caches: dict[str, WeightsCache] = {}

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            **model_clip_inputs(),
            "prompt": ("STRING", {"default": "", "multiline": True, "tooltip": TIP_PROMPT}),
        }, "optional": {
            "scale_rule": scale_rule_input(),
            **run_options(),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, prompt: Any = None) -> bool | str:
        """Every tag well-formed and every name a ``loras`` file (a linked prompt is checked when the node runs)."""
        if not isinstance(prompt, str):
            return True
        try:
            prompt_stack(prompt)
        except LoKrError as e:
            return str(e)
        return True

    @classmethod
    def IS_CHANGED(cls, prompt: Any = None, **_: Any) -> str:
        """The prompt text plus the file token of every tagged file (a rewritten file -> the node runs again).

        A prompt that comes from another node is not known here: that node's own changes rerun this one.
        """
        if not isinstance(prompt, str):
            return "linked prompt"
        try:
            _, stack = prompt_stack(prompt)
        except LoKrError:
            return prompt
        return "\n".join([prompt] + [file_token("loras", name) for name, _, _ in stack])

    def load(self, model: Any, clip: Any, prompt: str, scale_rule: str = "file", apply: str = PATCH,
             strict: bool = False) -> dict:
        clean, stack = prompt_stack(prompt)
        new_model, new_clip, reports = apply_stack(model, clip, stack, scale_rule=scale_rule, caches=self._caches,
                                                   apply=apply, strict=bool(strict))
        words = trigger_words_text(name for name, _, _ in stack)
        return {"ui": {"lokr_report": reports},
                "result": (new_model, new_clip, clean, words, loaded_text(stack))}


NODES = {
    "LoKrFromPrompt": (LoKrFromPrompt, "LoKr from Prompt"),
}
