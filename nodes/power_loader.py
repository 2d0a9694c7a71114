"""LoKr Power Loader: any number of file rows in one node, each with on/off, strengths and block weights.

The ``rows`` widget holds JSON text of the row list (``nodes.rows`` parses and checks it; the web
extension draws it as rows). The rows that are on are applied in order after an optional incoming
``LORA_STACK`` by ``nodes.stack.apply_stack`` (LoKr files: our exact patch; LoRA / LoHa / other
files: ComfyUI's own loader; a row's ``blocks`` text scales each block). Outputs: MODEL, CLIP, the
rows' trigger words, the ``loaded`` list and the LORA_STACK (incoming + on rows); the ``ui`` dict
carries the per-file reports (``lokr_report``) and the per-row status (``lokr_power``).
"""
from __future__ import annotations

from typing import Any

from ..lokr_core.base.errors import LoKrError
from .common import CATEGORY, PATCH, file_token, model_clip_inputs, run_options, scale_rule_input
from .planning import WeightsCache, family_label, model_family_of
from .rows import Row, check_files, on_rows, parse_rows, rows_error
from .stack import apply_stack, check_stack
from .words import file_trigger_words, loaded_text, trigger_words_text

TIP_ROWS = ("The rows, as JSON text: a list of {\"on\": true, \"file\": \"sub/name.safetensors\", \"strength_model\": 1.0, "
            "\"strength_clip\": 1.0, \"linked\": true, \"blocks\": \"\"}. 'on' false = skipped; 'strength_clip' "
            "defaults to 'strength_model'; 'blocks' = \"\" or a block-weight preset name or vector. The web "
            "extension shows them as rows.")


def _words(name: str) -> list[str]:
    try:
        return file_trigger_words(name)
    except (LoKrError, OSError):
        return []


def power_status(model: Any, rows: list[Row], reports: list[dict]) -> dict:
    """The ``lokr_power`` ui entry: the model's family and one status per row (``reports``: one per on row)."""
    fam = model_family_of(model)
    out = []
    applied = iter(reports)
    for r in rows:
        rep = next(applied) if r.on else {}
        lokr = "matched" in rep
        kind = "off" if not r.on else "lokr" if lokr else "lora"
        out.append({"index": r.index, "file": r.file, "on": r.on, "kind": kind,
                    "family": rep.get("family"), "family_label": rep.get("family_label"),
                    "matched": rep.get("matched"), "total": rep.get("total"), "trigger_words": _words(r.file)})
    return {"model_family": fam, "model_family_label": family_label(fam), "rows": out}


class LoKrPowerLoader:
    """LoKr Power Loader node: MODEL, CLIP + rows (+ LORA_STACK) -> patched clones, words, loaded list, stack."""

    CATEGORY = CATEGORY
    DESCRIPTION = ("Loads any number of files in one node: one row per file with an on/off toggle, model and clip "
                   "strengths and an optional block-weight preset. Rows that are on are applied in order, after an "
                   "optional incoming LORA_STACK: LoKr files with the exact LoKr patch, LoRA / LoHa / other files "
                   "through ComfyUI's own loader. Returns the trigger words of the rows' files and the list loaded.")
    SEARCH_ALIASES = ["power lora loader", "lora loader", "multiple lora", "lokr rows", "lora stack"]
    RETURN_TYPES = ("MODEL", "CLIP", "STRING", "STRING", "LORA_STACK")
    RETURN_NAMES = ("MODEL", "CLIP", "trigger_words", "loaded", "lora_stack")
    OUTPUT_TOOLTIPS = ("The diffusion model with every row that is on applied.",
                       "The text encoder with every row that is on applied.",
                       "The trigger words of the rows that are on (sidecar files and file headers), comma-separated.",
                       "What was applied, one file:strength line per file (file:model:clip when they differ).",
                       "The incoming stack + the rows that are on, as (file, strength_model, strength_clip).")
    FUNCTION = "load"

    def __init__(self) -> None:
        self._caches: dict[str, WeightsCache] = {}

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            **model_clip_inputs(),
            "rows": ("STRING", {"default": "[]", "multiline": True, "tooltip": TIP_ROWS}),
        }, "optional": {
            "lora_stack": ("LORA_STACK", {"tooltip": "A stack applied before the rows (from a stacker node)."}),
            "scale_rule": scale_rule_input(),
            **run_options(),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, rows: Any = None) -> bool | str:
        if rows is None:  # a linked input: checked when the node runs
            return True
        return rows_error(rows) or True

    @classmethod
    def IS_CHANGED(cls, rows: Any = None, **_: Any) -> str:
        """Tokens of every on-row file (``common.file_token``): a rewritten file reruns the node."""
        try:
            files = [r.file for r in on_rows(parse_rows(rows))]
        except LoKrError:
            return f"bad rows:{rows!r}"
        return "\n".join(file_token("loras", f) for f in files)

    def load(self, model: Any, clip: Any, rows: Any, lora_stack: Any = None, scale_rule: str = "file",
             apply: str = PATCH, strict: bool = False) -> dict:
        parsed = parse_rows(rows)
        check_files(parsed)
        check_stack(lora_stack or [])
        incoming = [tuple(e) for e in (lora_stack or [])]
        on = on_rows(parsed)
        entries = incoming + [r.entry() for r in on]
        new_model, new_clip, reports = apply_stack(model, clip, entries, scale_rule=scale_rule, caches=self._caches,
                                                   apply=apply, strict=bool(strict))
        stack_out = [tuple(e[:3]) for e in entries]
        status = power_status(model, parsed, reports[len(incoming):])
        words = trigger_words_text(r.file for r in on)
        return {"ui": {"lokr_report": reports, "lokr_power": [status]},
                "result": (new_model, new_clip, words, loaded_text(stack_out), stack_out)}


NODES = {"LoKrPowerLoader": (LoKrPowerLoader, "LoKr Power Loader")}
