"""The package version (``lokr_core.__version__``), recorded in the metadata of the files we write."""
from __future__ import annotations

__version__ = "0.1.0"
