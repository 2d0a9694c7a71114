"""A1111-style adapter tags in a prompt (``<lora:name:w>``, ``<lokr:...>``, ``<lyco:...>``) and
resolving their names against a list of available files. Pure functions on strings; no ComfyUI.

Grammar (docs/sidecar.md, "Prompt tags")::

    tag      := "<" kind ":" name [":" arg]* ">"        kind: lora | lokr | lyco (any case)
    arg      := number | key "=" number                 key: unet | model | te | clip
    number   := [+-] digits [. digits] [e [+-] digits]  (finite; "1", "-0.5", ".8", "1e-1")

Positional numbers are model strength, then clip strength (ComfyUI-Lora-Manager's order; sd-webui
reads a second number as the UNet weight, see the docs); named ``unet=`` / ``model=`` set the model
strength and ``te=`` / ``clip=`` the clip strength. Missing model strength is 1.0; missing clip
strength is the model strength. Spaces around every part are allowed.
"""
from __future__ import annotations

import difflib
import math
import re
from typing import Iterable, NamedTuple

from ..base.errors import LoKrConfigError, LoKrKeyError

TAG_KINDS = ("lora", "lokr", "lyco")
"""Tag kinds taken out of the prompt (``<hypernet:...>`` and other ``<...>`` text stays)."""

_TAG = re.compile(r"<\s*(?:lora|lokr|lyco)\s*:([^<>]*)>", re.IGNORECASE)
_OPEN = re.compile(r"<\s*(?:lora|lokr|lyco)\s*:[^>]*$|<\s*(?:lora|lokr|lyco)\s*:[^>]*(?=<)", re.IGNORECASE)
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_MODEL_KEYS = ("unet", "model")
_CLIP_KEYS = ("te", "clip")


class PromptTag(NamedTuple):
    """One tag of a prompt: ``name`` as written (stripped), strengths, and the tag's text."""

    name: str
    model_strength: float
    clip_strength: float
    text: str


def _number(value: str, what: str, tag: str) -> float:
    v = value.strip()
    if not _NUMBER.fullmatch(v):
        raise ValueError(f"{tag}: {what} {v!r} is not a number (expected e.g. 0.8)")
    x = float(v)
    if not math.isfinite(x):
        raise ValueError(f"{tag}: {what} {v!r} is not finite")
    return x


def parse_tag(text: str) -> PromptTag:
    """The :class:`PromptTag` of one tag's text (``"<lora:name:0.8:0.5>"``); ValueError naming the
    tag when the name is empty, a strength is not a finite number, a key is unknown or repeated,
    or there are more than two numbers."""
    m = _TAG.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not a <lora:name:weight> tag")
    name, *args = [a.strip() for a in m.group(1).split(":")]
    if not name:
        raise ValueError(f"{text}: no file name (expected <lora:name:weight>)")
    positional: list[float] = []
    named: dict[str, float] = {}
    for arg in args:
        if "=" in arg:
            key, _, value = (s.strip() for s in arg.partition("="))
            k = key.lower()
            if k not in _MODEL_KEYS + _CLIP_KEYS:
                raise ValueError(f"{text}: unknown key {key!r} (expected one of {', '.join(_MODEL_KEYS + _CLIP_KEYS)})")
            slot = "model" if k in _MODEL_KEYS else "clip"
            if slot in named:
                raise ValueError(f"{text}: the {slot} strength is given twice")
            named[slot] = _number(value, f"{key}=", text)
        else:
            positional.append(_number(arg, "strength" if not positional else "clip strength", text))
    if len(positional) > 2:
        raise ValueError(f"{text}: {len(positional)} numbers; expected at most 2 (model strength, clip strength)")
    model = named.get("model", positional[0] if positional else 1.0)
    clip = named.get("clip", positional[1] if len(positional) > 1 else model)
    return PromptTag(name, model, clip, text)


def _tidy(line: str) -> str:
    """A prompt line with tags removed, tidied: runs of spaces made one, comma runs made one
    ``", "``, leading / trailing spaces and commas dropped."""
    line = re.sub(r"[ \t]+", " ", line)
    line = re.sub(r"\s*,(?:\s*,)*\s*", ", ", line)
    return line.strip(" ,\t")


def parse_prompt_tags(prompt: str) -> tuple[str, list[PromptTag]]:
    """(prompt without its tags, [PromptTag, ...] in prompt order).

    Only lines that held a tag are tidied (see :func:`_tidy`); a line left empty by removing its
    tags is dropped; other lines are kept byte for byte. Raises one LoKrConfigError listing every
    bad tag (bad strength, unknown key, empty name, ``<lora:`` never closed).
    """
    tags: list[PromptTag] = []
    errors: list[str] = []
    out: list[str] = []
    for line in prompt.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        eol = line[len(body):]
        found = list(_TAG.finditer(body))
        for m in found:
            try:
                tags.append(parse_tag(m.group(0)))
            except ValueError as exc:
                errors.append(str(exc))
        rest = _TAG.sub(" ", body) if found else body
        for m in _OPEN.finditer(rest):
            errors.append(f"{m.group(0).strip()!r}: tag not closed with '>'")
        if not found:
            out.append(line)
        elif _tidy(rest):
            out.append(_tidy(rest) + eol)
    if errors:
        raise LoKrConfigError("prompt tags: " + "; ".join(errors))
    text = "".join(out)
    if not prompt.endswith(("\n", "\r")):  # a dropped last line leaves the newline before it
        text = text.rstrip("\r\n")
    return text, tags


def _norm(path: str) -> str:
    return path.replace("\\", "/").strip().strip("/")


def _stem(path: str) -> str:
    head, _, base = path.rpartition("/")
    dot = base.rfind(".")
    base = base[:dot] if dot > 0 else base
    return f"{head}/{base}" if head else base


def _suffix_hits(name: str, files: dict[str, str], fold: bool) -> list[str]:
    """Files whose path, or path without its extension, ends with ``name`` at a folder boundary."""
    f = str.casefold if fold else (lambda s: s)
    n = f(name)
    hits = []
    for original, path in files.items():
        for p in (f(path), f(_stem(path))):
            if p == n or p.endswith("/" + n):
                hits.append(original)
                break
    return hits


def _nearest(name: str, files: dict[str, str], n: int = 3) -> list[str]:
    """Up to ``n`` available files whose names are closest to ``name`` (difflib ratio of the
    base names without extension, then of the whole paths)."""
    base = _stem(name).rpartition("/")[2].casefold()
    scored = []
    for original, path in files.items():
        r1 = difflib.SequenceMatcher(None, base, _stem(path).rpartition("/")[2].casefold()).ratio()
        r2 = difflib.SequenceMatcher(None, name.casefold(), path.casefold()).ratio()
        scored.append((max(r1, r2), original))
    scored.sort(key=lambda t: (-t[0], t[1]))
    return [o for r, o in scored[:n] if r >= 0.4]


def resolve_names(names: Iterable[str], available: Iterable[str]) -> dict[str, str]:
    """{tag name: available file name} for every name.

    ``available``: relative file names as ComfyUI lists them (``folder_paths.get_filename_list
    ("loras")``: ``sub/name.safetensors``, any separator). A name resolves by, in order: the exact
    relative path; the path with ``.safetensors`` added; the one file whose path, or path without
    its extension, ends with the name at a folder boundary (``name`` matches ``sub/name.pt``,
    ``sub/name`` matches ``a/sub/name.safetensors``), first with case, then without. Raises one
    LoKrKeyError listing every unknown name with up to 3 nearest files, and every ambiguous name
    with the files it matches.
    """
    files = {f: _norm(f) for f in available}
    resolved: dict[str, str] = {}
    problems: list[str] = []
    for name in dict.fromkeys(names):
        n = _norm(name)
        hits = [f for f, p in files.items() if p == n] or [f for f, p in files.items() if p == n + ".safetensors"]
        hits = hits or _suffix_hits(n, files, fold=False) or _suffix_hits(n, files, fold=True)
        if len(hits) == 1:
            resolved[name] = hits[0]
        elif hits:
            problems.append(f"{name!r} is ambiguous: matches {', '.join(sorted(hits))}; write its subfolder")
        else:
            near = _nearest(n, files)
            problems.append(f"{name!r} is unknown" + (f" (nearest: {', '.join(near)})" if near else ""))
    if problems:
        raise LoKrKeyError(f"prompt tags name files that do not resolve among {len(files)} available file(s): "
                           + "; ".join(problems))
    return resolved
