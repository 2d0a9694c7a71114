"""The one device parser for every operation that computes somewhere (merge, extract).

One default for all of them: no device means ``cuda`` when CUDA is available, else ``cpu`` (the
fast place when there is one; the ComfyUI nodes' ``auto`` means the same). One error class: a
device that torch does not know, or CUDA asked for where there is none, is a bad argument, so
:class:`~lokr_core.base.errors.LoKrConfigError`.
"""
from __future__ import annotations

import torch

from .errors import LoKrConfigError


def parse_device(device: str | torch.device | None = None, caller: str = "merge") -> torch.device:
    """``device`` as a torch.device; None -> ``cuda`` when available, else ``cpu``.

    LoKrConfigError (naming ``caller``) when torch does not know the device or CUDA is asked for
    but not available.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise LoKrConfigError(f"{caller}: device {device!r} is not a torch device ({exc}); expected cpu, cuda "
                              "or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LoKrConfigError(f"{caller}: device {device!r} asked for, but CUDA is not available here; expected "
                              "'cpu' or no device (cuda when available, else cpu)")
    return dev
