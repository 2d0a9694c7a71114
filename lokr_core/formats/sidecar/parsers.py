"""One function per tool's sidecar format: a parsed JSON object (or header metadata) -> facts.

*Facts* are a dict with any of the keys ``trigger_words`` (list of str), ``base_model``, ``title``,
``notes``, ``source_url``, ``preview`` (str) and ``preferred_weight`` (float); a value of the
wrong type is left out and named in ``problems``. The formats, as the tools write them:

- sd-webui ``<name>.json`` (the extra-networks "Edit metadata" dialog): ``"activation text"``,
  ``"preferred weight"`` (0 = unset), ``"sd version"`` (``SD1`` / ``SD2`` / ``SDXL`` / ``SD3`` /
  ``Unknown``), ``"description"``, ``"notes"``.
- ComfyUI-Lora-Manager ``<name>.metadata.json``: ``model_name``, ``base_model``, ``preview_url``
  (a local path), ``notes``, ``usage_tips`` (JSON text: ``strength``, ``clip_strength``, ...),
  ``civitai`` (the Civitai model-version record: ``trainedWords``, ``id``, ``modelId``, ``model.name``).
- sd-webui Civitai Helper ``<name>.civitai.info``: the Civitai model-version record itself
  (``trainedWords``, ``baseModel``, ``id``, ``modelId``, ``name``, ``model.name``).
- rgthree-comfy ``<name>.safetensors.rgthree-info.json``: ``name``, ``baseModel``, ``trainedWords``
  ([{``word``, ``civitai``, ``user``, ``metadata``, ``count``}]), ``links``.
- the safetensors header: ``modelspec.*`` and kohya ``ss_*`` keys (:func:`header_facts`).
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

from .words import header_trigger_words, split_words

MAX_TEXT_CHARS = 20_000
"""Longest title / notes / base model text kept, in characters (longer text is cut, not dropped)."""

_DATA_URL = re.compile(r"data:image/(png|jpeg|jpg|webp|gif);base64,[A-Za-z0-9+/=\s]+")


def text_of(data: dict[str, Any], key: str, where: str, problems: list[str]) -> str | None:
    """``data[key]`` stripped and cut to :data:`MAX_TEXT_CHARS`, or None when missing / empty;
    a non-string value is named in ``problems``."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        problems.append(f"{where} {key!r}: holds a {type(value).__name__}; expected a string; ignored")
        return None
    value = value.strip()
    return value[:MAX_TEXT_CHARS] or None


def weight_of(value: Any, where: str, problems: list[str]) -> float | None:
    """A finite, non-zero float from a number or numeric string; 0 and missing mean unset (None)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        problems.append(f"{where}: holds a {type(value).__name__}; expected a number; ignored")
        return None
    try:
        w = float(value)
    except ValueError:
        problems.append(f"{where}: {value!r:.60} is not a number; ignored")
        return None
    if not math.isfinite(w):
        problems.append(f"{where}: {value!r} is not finite; ignored")
        return None
    return w or None


def civitai_url(model_id: Any, version_id: Any = None) -> str | None:
    """``https://civitai.com/models/<modelId>[?modelVersionId=<id>]`` when the ids are positive
    integers (or digit strings), else None (nothing else is put into a URL)."""
    def as_id(v: Any) -> int | None:
        if isinstance(v, bool):
            return None
        if isinstance(v, int) and v > 0:
            return v
        if isinstance(v, str) and v.isdigit() and v.isascii():
            return int(v)
        return None

    mid, vid = as_id(model_id), as_id(version_id)
    if mid is None:
        return None
    return f"https://civitai.com/models/{mid}" + (f"?modelVersionId={vid}" if vid is not None else "")


def _obj(data: dict[str, Any], key: str, where: str, problems: list[str]) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{where} {key!r}: holds a {type(value).__name__}; expected an object; ignored")
        return {}
    return value


def _put(facts: dict[str, Any], key: str, value: Any) -> None:
    if value is not None and value != []:
        facts.setdefault(key, value)


def webui_facts(data: dict[str, Any], where: str, problems: list[str]) -> dict[str, Any]:
    """Facts of an sd-webui user-metadata ``<name>.json``."""
    facts: dict[str, Any] = {}
    _put(facts, "trigger_words", split_words(data.get("activation text"), f"{where} 'activation text'", problems))
    sd = text_of(data, "sd version", where, problems)
    _put(facts, "base_model", None if sd is None or sd.lower() == "unknown" else sd)
    _put(facts, "notes", text_of(data, "notes", where, problems) or text_of(data, "description", where, problems))
    _put(facts, "preferred_weight", weight_of(data.get("preferred weight"), f"{where} 'preferred weight'", problems))
    return facts


def civitai_facts(data: dict[str, Any], where: str, problems: list[str]) -> dict[str, Any]:
    """Facts of a Civitai model-version record (Civitai Helper's ``.civitai.info``, or the
    ``civitai`` object inside a Lora-Manager ``.metadata.json``)."""
    facts: dict[str, Any] = {}
    _put(facts, "trigger_words", split_words(data.get("trainedWords"), f"{where} 'trainedWords'", problems))
    _put(facts, "base_model", text_of(data, "baseModel", where, problems))
    model = _obj(data, "model", where, problems)
    _put(facts, "title", text_of(model, "name", f"{where} model", problems))
    _put(facts, "source_url", civitai_url(data.get("modelId"), data.get("id")))
    return facts


def lora_manager_facts(data: dict[str, Any], where: str, problems: list[str]) -> dict[str, Any]:
    """Facts of a ComfyUI-Lora-Manager ``<name>.metadata.json``; its ``civitai`` object fills
    what the top level lacks (Lora-Manager's own trigger words are ``civitai.trainedWords``)."""
    facts: dict[str, Any] = {}
    _put(facts, "title", text_of(data, "model_name", where, problems))
    _put(facts, "base_model", text_of(data, "base_model", where, problems))
    _put(facts, "notes", text_of(data, "notes", where, problems))
    _put(facts, "preview", text_of(data, "preview_url", where, problems))
    tips = data.get("usage_tips")
    if isinstance(tips, str) and tips.strip():
        try:
            tips = json.loads(tips)
        except (ValueError, RecursionError):
            problems.append(f"{where} 'usage_tips': not valid JSON; ignored")
            tips = None
    if isinstance(tips, dict):
        _put(facts, "preferred_weight", weight_of(tips.get("strength"), f"{where} usage_tips 'strength'", problems))
    elif tips not in (None, ""):
        problems.append(f"{where} 'usage_tips': holds a {type(tips).__name__}; expected an object; ignored")
    for key, value in civitai_facts(_obj(data, "civitai", where, problems), f"{where} civitai", problems).items():
        _put(facts, key, value)
    return facts


def rgthree_facts(data: dict[str, Any], where: str, problems: list[str]) -> dict[str, Any]:
    """Facts of an rgthree-comfy ``<name>.safetensors.rgthree-info.json``: trigger words are the
    ``trainedWords`` entries marked ``user`` or ``civitai`` (entries only from the header's tag
    counts are training tags, not trigger words)."""
    facts: dict[str, Any] = {}
    _put(facts, "title", text_of(data, "name", where, problems))
    _put(facts, "base_model", text_of(data, "baseModel", where, problems))
    entries = data.get("trainedWords")
    words: list[str] = []
    if isinstance(entries, list):
        for e in entries:
            if isinstance(e, dict) and (e.get("user") or e.get("civitai")):
                words += split_words(e.get("word"), f"{where} trainedWords 'word'", problems)
    elif entries is not None:
        problems.append(f"{where} 'trainedWords': holds a {type(entries).__name__}; expected a list; ignored")
    _put(facts, "trigger_words", words)
    links = data.get("links")
    if isinstance(links, list):
        web = [u for u in links if isinstance(u, str) and u.startswith(("https://", "http://"))]
        _put(facts, "source_url", next((u for u in web if "civitai.com/models/" in u), web[0] if web else None))
    return facts


def header_facts(metadata: dict[str, str], problems: list[str]) -> dict[str, Any]:
    """Facts of a safetensors header's metadata: trigger words (``modelspec.trigger_phrase``, ...),
    title (``modelspec.title``, else ``ss_output_name``), base model (``modelspec.architecture``,
    else ``ss_base_model_version``), ``thumbnail`` (``modelspec.thumbnail`` when it is an image
    data URL)."""
    facts: dict[str, Any] = {}
    meta = {k: v for k, v in metadata.items() if isinstance(v, str)}
    _put(facts, "trigger_words", header_trigger_words(meta, problems))
    _put(facts, "title", text_of(meta, "modelspec.title", "header", problems)
         or text_of(meta, "ss_output_name", "header", problems))
    _put(facts, "base_model", text_of(meta, "modelspec.architecture", "header", problems)
         or text_of(meta, "ss_base_model_version", "header", problems))
    thumb = meta.get("modelspec.thumbnail")
    if thumb:
        if _DATA_URL.fullmatch(thumb.strip()):
            facts["thumbnail"] = thumb.strip()
        else:
            problems.append("header 'modelspec.thumbnail': not a base64 image data URL; ignored")
    return facts
