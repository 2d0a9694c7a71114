"""``lokr info``: sidecar facts in the text and a ``sidecar`` object in ``--json`` (existing keys kept)."""
from __future__ import annotations

import json

import pytest

from lokr_core.commands import cli
from tests.support import lokr_fixtures as FX


@pytest.fixture()
def lf(tmp_path):
    f = FX.make_lycoris_file(tmp_path, list(FX.LAYOUTS)[:1], filename="style.safetensors",
                             metadata={"modelspec.trigger_phrase": "hdrword", "ss_tag_frequency": json.dumps({"1_x": {"cat": 4}})})
    (tmp_path / "style.civitai.info").write_text(json.dumps({
        "id": 22, "modelId": 11, "trainedWords": ["civword"], "baseModel": "SD 1.5", "model": {"name": "Civ Title"}}))
    (tmp_path / "style.preview.jpg").write_bytes(b"jpg")
    (tmp_path / "style.json").write_bytes(b"\xff\xfe not utf8")
    return f


def test_info_text_shows_sidecar(lf, capsys):
    assert cli.main(["info", str(lf.path)]) == 0
    out = capsys.readouterr().out
    assert "Trigger words (all sources): civword, hdrword  (from style.civitai.info, header)" in out
    assert "Base model: SD 1.5  (from style.civitai.info)" in out
    assert f"Preview:   {lf.path.parent / 'style.preview.jpg'}  (from style.preview.jpg)" in out
    assert "Source:    https://civitai.com/models/11?modelVersionId=22" in out
    assert "NOTE: sidecar: style.json: not UTF-8 text" in out
    assert "Top tags:  cat (4)" in out  # the report's own lines stay


def test_info_json_has_sidecar_and_keeps_keys(lf, capsys):
    assert cli.main(["info", str(lf.path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    for key in ("file", "module_count", "scales", "metadata", "warnings"):
        assert key in data
    assert data["metadata"]["trigger_words"] == ["hdrword"]
    side = data["sidecar"]
    assert side["trigger_words"] == ["civword", "hdrword"]
    assert (side["base_model"], side["title"]) == ("SD 1.5", "Civ Title")
    assert side["source_url"] == "https://civitai.com/models/11?modelVersionId=22"
    assert side["preview"] == str(lf.path.parent / "style.preview.jpg")
    assert side["top_tags"] == [["cat", 4]] and side["has_thumbnail"] is False and "thumbnail" not in side
    assert side["sources"]["trigger_words"] == ["style.civitai.info", "header"]
    assert len(side["problems"]) == 1 and side["problems"][0].startswith("style.json: not UTF-8")


def test_info_without_sidecars_prints_no_sidecar_lines(tmp_path, capsys):
    f = FX.make_lycoris_file(tmp_path, list(FX.LAYOUTS)[:1])
    assert cli.main(["info", str(f.path)]) == 0
    out = capsys.readouterr().out
    assert "Trigger words (all sources)" not in out and "Preview:" not in out and "NOTE: sidecar" not in out
    assert cli.main(["info", str(f.path), "--json"]) == 0
    side = json.loads(capsys.readouterr().out)["sidecar"]
    assert side["trigger_words"] == [] and side["preview"] is None and side["problems"] == []
