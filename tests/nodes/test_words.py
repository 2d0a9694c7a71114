"""nodes.words: trigger_words / loaded texts of the multi-file nodes, from sidecars on disk."""
from __future__ import annotations

import json

import pytest

from tests.support.comfy_pack import pack_module

errors = pack_module("lokr_core.base.errors")


def _words():
    return pack_module("nodes.words")


def test_trigger_words_from_sidecars_in_order_each_once(env):
    W = _words()
    (env["loras"] / "test.json").write_text(json.dumps({"activation text": "zxc style, Blue Hair"}))
    (env["loras"] / "second.safetensors").write_bytes((env["loras"] / "test.safetensors").read_bytes())
    (env["loras"] / "second.civitai.info").write_text(json.dumps({"trainedWords": ["blue hair", "qwe"]}))
    assert W.file_trigger_words("test.safetensors") == ["zxc style", "Blue Hair"]
    assert W.trigger_words_text(["test.safetensors", "second.safetensors"]) == "zxc style, Blue Hair, qwe"
    assert W.trigger_words_text([]) == ""


def test_trigger_words_missing_file_names_it(env):
    with pytest.raises(errors.LoKrFormatError, match="gone.safetensors"):
        _words().trigger_words_text(["gone.safetensors"])


def test_loaded_text_one_line_per_file():
    W = _words()
    assert W.loaded_text([("a.safetensors", 1.0, 1.0), ("sub/b.safetensors", 0.5, 0.25, None)]) == \
        "a.safetensors:1\nsub/b.safetensors:0.5:0.25"
