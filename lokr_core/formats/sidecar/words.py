"""Trigger words and training tags out of loosely typed values (JSON sidecars, header strings)."""
from __future__ import annotations

import json
from collections import Counter
from typing import Any

MAX_WORD_CHARS = 300
"""Longest trigger word / phrase kept, in characters; a longer one is ignored and named in problems."""

HEADER_TRIGGER_KEYS = ("modelspec.trigger_phrase", "ss_trigger_words", "trigger_words", "trigger_phrase",
                       "activation_text")
"""Header metadata keys that hold trigger words (a comma list or a JSON list of strings), in order."""


def split_words(value: Any, where: str, problems: list[str]) -> list[str]:
    """Words of ``value``: a string split on commas, or a list of such strings; each stripped,
    empty ones dropped. Other types, non-string list items and words over :data:`MAX_WORD_CHARS`
    are ignored and named in ``problems`` (``where`` says which file and key)."""
    if value is None:
        return []
    if isinstance(value, str):
        items: list[Any] = [value]
    elif isinstance(value, list):
        items = value
    else:
        problems.append(f"{where}: holds a {type(value).__name__}; expected a string or a list of strings; ignored")
        return []
    words: list[str] = []
    for item in items:
        if not isinstance(item, str):
            problems.append(f"{where}: item {item!r:.60} is a {type(item).__name__}; expected a string; ignored")
            continue
        for w in item.split(","):
            w = w.strip()
            if len(w) > MAX_WORD_CHARS:
                problems.append(f"{where}: a word of {len(w)} characters (over {MAX_WORD_CHARS}); ignored")
            elif w:
                words.append(w)
    return words


def header_trigger_words(metadata: dict[str, str], problems: list[str]) -> list[str]:
    """Trigger words of a safetensors header's metadata (:data:`HEADER_TRIGGER_KEYS`, in order);
    a value that parses as a JSON list is that list, anything else is comma text."""
    words: list[str] = []
    for key in HEADER_TRIGGER_KEYS:
        raw = metadata.get(key)
        if not raw:
            continue
        value: Any = raw
        if isinstance(raw, str) and raw.lstrip().startswith("["):
            try:
                value = json.loads(raw)
            except (ValueError, RecursionError):
                value = raw
        words += split_words(value, f"header {key}", problems)
    return words


def top_tags(raw: Any, n: int, problems: list[str]) -> list[tuple[str, int]]:
    """The ``n`` most frequent tags of an ``ss_tag_frequency`` value (JSON text of {dataset: {tag:
    count}}), counts summed over datasets, most frequent first, ties by name. Unparsable text,
    other shapes and non-integer counts are skipped (the first one named in ``problems``)."""
    if not raw:
        return []
    try:
        data = json.loads(raw) if isinstance(raw, str) else raw
    except (ValueError, RecursionError):
        problems.append("header ss_tag_frequency: not valid JSON; ignored")
        return []
    if not isinstance(data, dict):
        problems.append(f"header ss_tag_frequency: holds a {type(data).__name__}; expected an object; ignored")
        return []
    counts: Counter[str] = Counter()
    bad = 0
    for tags in data.values():
        if not isinstance(tags, dict):
            bad += 1
            continue
        for tag, count in tags.items():
            if isinstance(count, bool) or not isinstance(count, int):
                bad += 1
                continue
            tag = str(tag).strip()
            if tag:
                counts[tag] += count
    if bad:
        problems.append(f"header ss_tag_frequency: {bad} dataset(s) / count(s) of the wrong type; ignored")
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
