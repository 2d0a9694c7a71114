"""lokr_core.formats.sidecar: sidecars in each tool's format, the header, priority, hostile files."""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lokr_core.formats.sidecar import SidecarInfo, read_sidecar
from lokr_core.formats.sidecar.files import MAX_SIDECAR_BYTES, PREVIEW_SUFFIXES

PNG_URL = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()


def lokr_file(folder: Path, name: str = "style", metadata: dict[str, str] | None = None) -> Path:
    """A small safetensors file with ``metadata`` in its header (the sidecar reader reads only that)."""
    path = folder / f"{name}.safetensors"
    save_file({"lora_unet_x.lokr_w1": torch.zeros(2, 2)}, str(path), metadata=metadata)
    return path


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


# ---------------------------------------------------------------------------------------- each tool
def test_nothing_beside_the_file(tmp_path):
    info = read_sidecar(lokr_file(tmp_path))
    assert info == SidecarInfo(path=str(tmp_path / "style.safetensors"))


def test_webui_json(tmp_path):
    p = lokr_file(tmp_path)
    write_json(tmp_path / "style.json", {"description": "desc", "sd version": "SDXL", "activation text": "zz style, red hat",
                                         "preferred weight": 0.7, "negative text": "bad", "notes": "my notes"})
    info = read_sidecar(p)
    assert info.trigger_words == ("zz style", "red hat")
    assert (info.base_model, info.notes, info.preferred_weight) == ("SDXL", "my notes", 0.7)
    assert info.origins("trigger_words") == ["style.json"] and info.problems == ()


def test_webui_json_unset_values(tmp_path):
    """sd-webui writes "Unknown" and weight 0 for fields the user left alone; notes fall back to description."""
    p = lokr_file(tmp_path)
    write_json(tmp_path / "style.json", {"sd version": "Unknown", "preferred weight": 0.0, "activation text": "",
                                         "description": "from description", "notes": ""})
    info = read_sidecar(p)
    assert (info.base_model, info.preferred_weight, info.trigger_words) == (None, None, ())
    assert info.notes == "from description"


def test_civitai_helper_info(tmp_path):
    p = lokr_file(tmp_path)
    write_json(tmp_path / "style.civitai.info", {
        "id": 222, "modelId": 111, "name": "v2", "baseModel": "SD 1.5", "trainedWords": ["zzstyle, painting", "red"],
        "model": {"name": "Zz Style", "type": "LORA"}, "images": [{"url": "https://image.civitai.com/x.jpeg"}]})
    info = read_sidecar(p)
    assert info.trigger_words == ("zzstyle", "painting", "red")
    assert info.source_url == "https://civitai.com/models/111?modelVersionId=222"
    assert (info.base_model, info.title) == ("SD 1.5", "Zz Style")
    assert info.preview is None  # web images are never fetched


def test_lora_manager_metadata(tmp_path):
    p = lokr_file(tmp_path)
    (tmp_path / "style.webp").write_bytes(b"img")
    write_json(tmp_path / "style.metadata.json", {
        "file_name": "style", "model_name": "Zz Style LM", "file_path": str(p).replace(os.sep, "/"),
        "base_model": "Illustrious", "preview_url": str(tmp_path / "style.webp").replace(os.sep, "/"),
        "notes": "lm notes", "usage_tips": json.dumps({"strength": 0.6, "clip_strength": 0.4}),
        "civitai": {"id": 5, "modelId": 4, "trainedWords": ["lmword"], "baseModel": "Pony", "model": {"name": "Civ"}}})
    info = read_sidecar(p)
    assert info.trigger_words == ("lmword",)
    assert (info.title, info.base_model, info.notes) == ("Zz Style LM", "Illustrious", "lm notes")
    assert info.preferred_weight == 0.6
    assert info.source_url == "https://civitai.com/models/4?modelVersionId=5"
    assert info.preview == str(tmp_path / "style.webp")


def test_lora_manager_preview_url_used_when_no_named_preview(tmp_path):
    p = lokr_file(tmp_path)
    (tmp_path / "cover.jpg").write_bytes(b"img")
    write_json(tmp_path / "style.metadata.json", {"preview_url": str(tmp_path / "cover.jpg")})
    info = read_sidecar(p)
    assert info.preview == str(tmp_path / "cover.jpg") and info.origins("preview") == ["style.metadata.json"]


def test_rgthree_info(tmp_path):
    p = lokr_file(tmp_path)
    write_json(tmp_path / "style.safetensors.rgthree-info.json", {
        "file": "style.safetensors", "name": "Rg Name", "baseModel": "SDXL 1.0",
        "trainedWords": [{"word": "userword", "user": True}, {"word": "civword", "civitai": True},
                         {"word": "1girl", "count": 40, "metadata": True}],
        "links": ["https://civitai.com/models/9?modelVersionId=8", "https://civitai.com/api/v1/model-versions/by-hash/x"]})
    info = read_sidecar(p)
    assert info.trigger_words == ("userword", "civword")  # tag counts are not trigger words
    assert (info.title, info.base_model) == ("Rg Name", "SDXL 1.0")
    assert info.source_url == "https://civitai.com/models/9?modelVersionId=8"


def test_header_metadata(tmp_path):
    p = lokr_file(tmp_path, metadata={
        "modelspec.title": "Header Title", "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
        "modelspec.trigger_phrase": "hdrword, second", "modelspec.thumbnail": PNG_URL, "ss_output_name": "out",
        "ss_base_model_version": "sdxl_base_v1-0",
        "ss_tag_frequency": json.dumps({"1_a": {"cat": 3, "dog": 5}, "2_b": {" cat ": 4, "zebra": 1}})})
    info = read_sidecar(p)
    assert info.trigger_words == ("hdrword", "second")
    assert (info.title, info.base_model) == ("Header Title", "stable-diffusion-xl-v1-base/lora")
    assert info.thumbnail == PNG_URL and info.as_dict()["has_thumbnail"] is True
    assert info.top_tags == (("cat", 7), ("dog", 5), ("zebra", 1))
    assert info.origins("title") == ["header"] and info.origins("top_tags") == ["header"]


def test_header_fallback_keys(tmp_path):
    p = lokr_file(tmp_path, metadata={"ss_output_name": "out_name", "ss_base_model_version": "sd_v1",
                                      "ss_trigger_words": json.dumps(["a", "b"])})
    info = read_sidecar(p)
    assert (info.title, info.base_model, info.trigger_words) == ("out_name", "sd_v1", ("a", "b"))


def test_metadata_given_skips_the_header_read(tmp_path):
    """The caller's metadata is used as is (the path need not even be a readable file)."""
    info = read_sidecar(tmp_path / "absent.safetensors", {"modelspec.title": "given"})
    assert info.title == "given" and info.problems == ()


# ------------------------------------------------------------------------------------------ priority
def test_priority_and_duplicates(tmp_path):
    p = lokr_file(tmp_path, metadata={"modelspec.trigger_phrase": "hdr, Shared", "modelspec.title": "hdr title"})
    write_json(tmp_path / "style.json", {"activation text": "webui, shared", "sd version": "SD1"})
    write_json(tmp_path / "style.metadata.json", {"base_model": "SD 1.5", "civitai": {"trainedWords": ["lm", "WEBUI"]}})
    write_json(tmp_path / "style.civitai.info", {"trainedWords": ["civ"], "baseModel": "SD 1.5 LCM", "model": {"name": "civ title"}})
    info = read_sidecar(p)
    assert info.trigger_words == ("webui", "shared", "lm", "civ", "hdr")  # case-insensitive duplicates dropped
    assert info.origins("trigger_words") == ["style.json", "style.metadata.json", "style.civitai.info", "header"]
    assert info.base_model == "SD1" and info.origins("base_model") == ["style.json"]
    assert info.title == "civ title"
    d = info.as_dict()
    assert d["sources"]["trigger_words"][0] == "style.json" and json.loads(json.dumps(d)) == d


@pytest.mark.parametrize("present, expected", [
    ([".png", ".preview.png"], ".preview.png"),
    ([".jpg", ".webp"], ".jpg"),
    ([".preview.mp4", ".jpeg"], ".jpeg"),
    ([".preview.mp4", ".gif"], ".preview.mp4"),
    ([".webm"], ".webm"),
])
def test_preview_order(tmp_path, present, expected):
    p = lokr_file(tmp_path)
    for suffix in present:
        (tmp_path / f"style{suffix}").write_bytes(b"x")
    assert read_sidecar(p).preview == str(tmp_path / f"style{expected}")


def test_preview_suffixes_documented():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "sidecar.md").read_text(encoding="utf-8")
    for suffix in PREVIEW_SUFFIXES:
        assert f"`<name>{suffix}`" in doc


def test_peft_folder_uses_the_folder_name(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (tmp_path / "adapter.png").write_bytes(b"x")
    write_json(tmp_path / "adapter.civitai.info", {"trainedWords": ["peftword"]})
    info = read_sidecar(folder)
    assert info.preview == str(tmp_path / "adapter.png") and info.trigger_words == ("peftword",)


# ------------------------------------------------------------------------------------------- hostile
def test_bad_json_non_utf8_list_and_big_files_are_skipped(tmp_path):
    p = lokr_file(tmp_path, metadata={"modelspec.title": "still read"})
    (tmp_path / "style.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "style.metadata.json").write_bytes(b'{"notes": "caf\xe9"}')
    write_json(tmp_path / "style.civitai.info", [{"trainedWords": ["x"]}])
    (tmp_path / "style.safetensors.rgthree-info.json").write_bytes(b'{"name": "' + b"a" * (6 * 1024 * 1024) + b'"}')
    info = read_sidecar(p)
    assert info.title == "still read" and info.trigger_words == ()
    problems = "\n".join(info.problems)
    assert "style.json: not valid JSON" in problems
    assert "style.metadata.json: not UTF-8" in problems
    assert "style.civitai.info: holds a JSON list; expected an object" in problems
    assert f"style.safetensors.rgthree-info.json: larger than {MAX_SIDECAR_BYTES // 2**20} MB" in problems
    assert len(info.problems) == 4


def test_file_at_the_cap_is_read(tmp_path):
    p = lokr_file(tmp_path)
    head = b'{"activation text": "capword", "notes": "'
    body = head + b"n" * (MAX_SIDECAR_BYTES - len(head) - 2) + b'"}'
    assert len(body) == MAX_SIDECAR_BYTES
    (tmp_path / "style.json").write_bytes(body)
    assert read_sidecar(p).trigger_words == ("capword",)


def test_utf8_bom_and_deep_nesting(tmp_path):
    p = lokr_file(tmp_path)
    (tmp_path / "style.json").write_bytes(b"\xef\xbb\xbf" + json.dumps({"activation text": "bomword"}).encode())
    (tmp_path / "style.civitai.info").write_text("[" * 200_000 + "]" * 200_000, encoding="utf-8")
    info = read_sidecar(p)
    assert info.trigger_words == ("bomword",)
    assert any(x.startswith("style.civitai.info: not valid JSON") for x in info.problems)


def test_values_of_the_wrong_type_are_ignored_and_named(tmp_path):
    p = lokr_file(tmp_path)
    write_json(tmp_path / "style.json", {"activation text": {"a": 1}, "preferred weight": "heavy", "sd version": 15,
                                         "notes": ["n"]})
    write_json(tmp_path / "style.metadata.json", {"civitai": ["not", "a", "dict"], "usage_tips": "{bad",
                                                  "model_name": "ok name"})
    write_json(tmp_path / "style.civitai.info", {"trainedWords": ["good", 3, None, "x" * 400], "modelId": "1; rm -rf",
                                                 "baseModel": None, "model": "str"})
    info = read_sidecar(p)
    assert info.trigger_words == ("good",)
    assert (info.preferred_weight, info.base_model, info.notes, info.source_url) == (None, None, None, None)
    assert info.title == "ok name"
    text = "\n".join(info.problems)
    for expected in ("style.json 'activation text': holds a dict", "'preferred weight': 'heavy' is not a number",
                     "style.json 'sd version': holds a int", "style.json 'notes': holds a list",
                     "style.metadata.json 'civitai': holds a list", "style.metadata.json 'usage_tips': not valid JSON",
                     "item 3 is a int", "item None is a NoneType", "a word of 400 characters",
                     "style.civitai.info 'model': holds a str"):
        assert expected in text, expected


def test_non_finite_weight_and_bad_thumbnail(tmp_path):
    p = lokr_file(tmp_path, metadata={"modelspec.thumbnail": "javascript:alert(1)", "ss_tag_frequency": "{oops"})
    (tmp_path / "style.json").write_text('{"preferred weight": NaN}', encoding="utf-8")
    info = read_sidecar(p)
    assert info.preferred_weight is None and info.thumbnail is None and info.top_tags == ()
    text = "\n".join(info.problems)
    assert "'preferred weight': nan is not finite" in text
    assert "modelspec.thumbnail': not a base64 image data URL" in text
    assert "ss_tag_frequency: not valid JSON" in text


def test_unreadable_header_is_a_problem_not_an_error(tmp_path):
    p = tmp_path / "broken.safetensors"
    p.write_bytes(b"\xff" * 64)
    write_json(tmp_path / "broken.json", {"activation text": "still"})
    info = read_sidecar(p)
    assert info.trigger_words == ("still",)
    assert len(info.problems) == 1 and info.problems[0].startswith("header: ") and "broken.safetensors" in info.problems[0]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_links_out_of_the_folder_are_not_followed(tmp_path):
    outside = tmp_path / "outside"
    models = tmp_path / "models"
    outside.mkdir()
    models.mkdir()
    write_json(outside / "secret.json", {"activation text": "leaked"})
    (outside / "img.png").write_bytes(b"x")
    p = lokr_file(models)
    os.symlink(outside / "secret.json", models / "style.json")
    os.symlink(outside / "img.png", models / "style.preview.png")
    write_json(models / "style.metadata.json", {"preview_url": str(outside / "img.png")})
    info = read_sidecar(p)
    assert info.trigger_words == () and info.preview is None
    assert sum("links outside the LoKr file's folder" in x for x in info.problems) == 3


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_links_inside_the_folder_and_a_linked_folder_are_read(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    p = lokr_file(real)
    write_json(real / "shared.json", {"activation text": "inside"})
    os.symlink(real / "shared.json", real / "style.json")
    (tmp_path / "loras").symlink_to(real, target_is_directory=True)  # models/loras -> elsewhere: common
    assert read_sidecar(p).trigger_words == ("inside",)
    assert read_sidecar(tmp_path / "loras" / "style.safetensors").trigger_words == ("inside",)


def test_directory_named_like_a_sidecar(tmp_path):
    p = lokr_file(tmp_path)
    (tmp_path / "style.json").mkdir()
    (tmp_path / "style.png").mkdir()
    info = read_sidecar(p)
    assert info.preview is None and info.problems == ("style.json: not a regular file; not read",
                                                      "style.png: not a regular file; not read")
