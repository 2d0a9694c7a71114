"""The nodes' progress adapter: ComfyUI's progress bar and Cancel button for lokr_core's callbacks."""
from __future__ import annotations

from typing import Callable

from ..lokr_core.base.progress import BarProgress, Progress


def comfy_progress() -> Progress | None:
    """A ``progress(done, total)`` that stops on ComfyUI's Cancel and moves its ProgressBar; None outside ComfyUI.

    Cancel raises ComfyUI's interruption exception from the callback, so the long operation stops
    before it writes its output.
    """
    try:
        import comfy.model_management  # type: ignore[import-not-found]
        import comfy.utils  # type: ignore[import-not-found]
    except ImportError:
        return None
    bar = BarProgress(comfy.utils.ProgressBar)

    def progress(done: int, total: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        bar(done, total)

    return progress


def comfy_interrupt() -> Callable[[], None] | None:
    """ComfyUI's "prompt cancelled?" check (raises its interruption exception); None outside ComfyUI.

    Passed to ``lokr_core.base.atomic.interruptible`` around a node's write, so Cancel stops the
    write between tensors and the temporary file is removed.
    """
    try:
        import comfy.model_management  # type: ignore[import-not-found]
    except ImportError:
        return None
    return comfy.model_management.throw_exception_if_processing_interrupted
