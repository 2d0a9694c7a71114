"""The one record of what sidecars and the header say about a LoKr file (:class:`SidecarInfo`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SidecarInfo:
    """What the files beside a LoKr file and its header say about it (docs/sidecar.md).

    - ``path``: the LoKr file as given.
    - ``trigger_words``: words / phrases to put in a prompt, merged from every source in the
      priority order (docs/sidecar.md, "Priority"), split on commas, without duplicates (compared
      case-insensitively; the first spelling is kept).
    - ``top_tags``: ((tag, count), ...) the most frequent training caption tags (``ss_tag_frequency``
      summed over datasets, most frequent first, ties by name); these are not trigger words.
    - ``base_model``, ``title``, ``notes``: text from the first source that has it, else None.
    - ``preferred_weight``: a model strength a tool recommends (finite, non-zero), else None.
    - ``source_url``: an ``http(s)`` page the file came from (a Civitai model page), else None.
    - ``preview``: path of a preview image or video beside the file, else None.
    - ``thumbnail``: the header's ``modelspec.thumbnail`` data URL (``data:image/...;base64,...``), else None.
    - ``sources``: ((field, origin), ...) which file gave each value: a sidecar's file name or
      ``"header"``; a field appears once per source that contributed to it.
    - ``problems``: one line per sidecar that was skipped or value that was ignored (bad JSON,
      not UTF-8, over the size cap, a link outside the folder, a value of the wrong type).
    """

    path: str
    trigger_words: tuple[str, ...] = ()
    top_tags: tuple[tuple[str, int], ...] = ()
    base_model: str | None = None
    title: str | None = None
    notes: str | None = None
    preferred_weight: float | None = None
    source_url: str | None = None
    preview: str | None = None
    thumbnail: str | None = field(default=None, repr=False)
    sources: tuple[tuple[str, str], ...] = ()
    problems: tuple[str, ...] = ()

    def origins(self, name: str) -> list[str]:
        """The origins (file names or ``"header"``) that gave field ``name``, in priority order."""
        return [origin for f, origin in self.sources if f == name]

    def as_dict(self, *, thumbnail: bool = False) -> dict[str, Any]:
        """A JSON-able dict: every field, ``sources`` as {field: [origins]}; the thumbnail data URL
        (often hundreds of kB) only when ``thumbnail`` is true, else ``has_thumbnail``."""
        sources: dict[str, list[str]] = {}
        for f, origin in self.sources:
            sources.setdefault(f, []).append(origin)
        out: dict[str, Any] = {
            "trigger_words": list(self.trigger_words),
            "top_tags": [[t, c] for t, c in self.top_tags],
            "base_model": self.base_model,
            "title": self.title,
            "notes": self.notes,
            "preferred_weight": self.preferred_weight,
            "source_url": self.source_url,
            "preview": self.preview,
            "has_thumbnail": self.thumbnail is not None,
            "sources": sources,
            "problems": list(self.problems),
        }
        if thumbnail:
            out["thumbnail"] = self.thumbnail
        return out
