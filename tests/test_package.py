"""The package surface: every public name resolves lazily, and importing does no work."""
import subprocess
import sys

import lokr_core


def test_every_exported_name_resolves():
    for name in lokr_core.__all__:
        assert getattr(lokr_core, name) is not None, name


def test_import_is_lazy():
    code = ("import sys, lokr_core; heavy = [m for m in ('diffusers', 'transformers', 'peft', 'lokr_core.tuner.model', "
            "'lokr_core.formats.io') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unknown_name_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        lokr_core.nope  # noqa: B018
