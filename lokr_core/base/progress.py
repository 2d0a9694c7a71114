"""The one progress adapter: ``progress(done, total)`` callbacks, counted steps, and lazy bars.

Long operations (merge, extract, resize) take ``progress(done, total)`` (:data:`Progress`) and
call it after each unit of work. :class:`StepCounter` turns "one more done" into such calls
across several files; :class:`BarProgress` drives any progress bar (tqdm on the command line,
ComfyUI's ``ProgressBar`` in the nodes) from such calls, opening it on the first one.
"""
from __future__ import annotations

from typing import Any, Callable

Progress = Callable[[int, int], Any]
"""``progress(done, total)``: called after each unit of work (tensor, weight or module)."""


class StepCounter:
    """Calls ``progress(done, total)`` once per :meth:`step`, counting across several files."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def step(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


class BarProgress:
    """A :data:`Progress` callable that opens a bar with ``open_bar(total)`` on its first call and
    moves it with ``bar.update(steps)``; :meth:`close` closes it (when it has ``close``)."""

    def __init__(self, open_bar: Callable[[int], Any], enabled: bool = True) -> None:
        self.open_bar, self.enabled, self.bar, self.shown = open_bar, enabled, None, 0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = self.open_bar(total)
        self.bar.update(done - self.shown)
        self.shown = done

    def close(self) -> None:
        if self.bar is not None and hasattr(self.bar, "close"):
            self.bar.close()
