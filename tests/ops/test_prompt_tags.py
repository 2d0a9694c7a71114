"""lokr_core.ops.prompt_tags: tag grammar, prompt tidying, name resolution and its errors."""
from __future__ import annotations

import pytest

from lokr_core.base.errors import LoKrConfigError, LoKrKeyError
from lokr_core.ops.prompt_tags import PromptTag, parse_prompt_tags, parse_tag, resolve_names


@pytest.mark.parametrize("text, expected", [
    ("<lora:style:0.8>", ("style", 0.8, 0.8)),
    ("<lora:style>", ("style", 1.0, 1.0)),
    ("<lora:style:0.8:0.5>", ("style", 0.8, 0.5)),
    ("<LoKr:sub/style.safetensors:-1.5>", ("sub/style.safetensors", -1.5, -1.5)),
    ("<lyco:style:.5>", ("style", 0.5, 0.5)),
    ("< lokr : sub\\style :  0.25 : 1e-1 >", ("sub\\style", 0.25, 0.1)),
    ("<lora:style:unet=0.8:te=0.5>", ("style", 0.8, 0.5)),
    ("<lora:style:0.7:clip=0.2>", ("style", 0.7, 0.2)),
    ("<lora:style:model=0.3>", ("style", 0.3, 0.3)),
    ("<lora:style:te=0.3>", ("style", 1.0, 0.3)),
])
def test_parse_tag(text, expected):
    tag = parse_tag(text)
    assert (tag.name, tag.model_strength, tag.clip_strength) == expected and tag.text == text


@pytest.mark.parametrize("text, message", [
    ("<lora:style:abc>", "<lora:style:abc>: strength 'abc' is not a number"),
    ("<lora:style:>", "<lora:style:>: strength '' is not a number"),
    ("<lora:style:1:x>", "clip strength 'x' is not a number"),
    ("<lora:style:nan>", "strength 'nan' is not a number"),
    ("<lora:style:1e999>", "strength '1e999' is not finite"),
    ("<lora:style:1_0>", "strength '1_0' is not a number"),
    ("<lora: :1>", "no file name"),
    ("<lora:style:1:2:3>", "3 numbers; expected at most 2"),
    ("<lora:style:dyn=4>", "unknown key 'dyn'"),
    ("<lora:style:unet=1:model=2>", "the model strength is given twice"),
    ("<lora:style:0.5@0,1@10>", "is not a number"),
])
def test_bad_tags_name_the_tag(text, message):
    with pytest.raises(LoKrConfigError) as e:
        parse_prompt_tags(f"a cat, {text}, dog")
    assert message in str(e.value) and text in str(e.value)


def test_every_bad_tag_in_one_error():
    with pytest.raises(LoKrConfigError) as e:
        parse_prompt_tags("<lora:a:x> <lora:b:1> <lokr:c:y>")
    assert "<lora:a:x>" in str(e.value) and "<lokr:c:y>" in str(e.value) and "<lora:b:1>" not in str(e.value)


def test_unclosed_tag():
    with pytest.raises(LoKrConfigError, match=r"'<lora:style:1': tag not closed"):
        parse_prompt_tags("a cat <lora:style:1")
    with pytest.raises(LoKrConfigError, match="not closed"):
        parse_prompt_tags("<lora:a:1 <lora:b:1>")


def test_prompt_tidied_and_tags_in_order():
    prompt = "masterpiece,  <lora:a:0.8> , a cat ,, <lokr:sub/b:0.5:0.2>, on a mat <hypernet:h:1>"
    text, tags = parse_prompt_tags(prompt)
    assert text == "masterpiece, a cat, on a mat <hypernet:h:1>"
    assert tags == [PromptTag("a", 0.8, 0.8, "<lora:a:0.8>"), PromptTag("sub/b", 0.5, 0.2, "<lokr:sub/b:0.5:0.2>")]


def test_only_lines_with_tags_change():
    prompt = "first,,  line\n<lora:a:1>\n\nlast <lyco:b> line,\n"
    text, tags = parse_prompt_tags(prompt)
    assert text == "first,,  line\n\nlast line\n"
    assert [t.name for t in tags] == ["a", "b"]
    assert parse_prompt_tags("a\r\n<lora:x>") == ("a", [PromptTag("x", 1.0, 1.0, "<lora:x>")])


def test_no_tags_returns_prompt_unchanged():
    prompt = "a, b ,  (c:1.2), <embedding:x>\n"
    assert parse_prompt_tags(prompt) == (prompt, [])


AVAILABLE = ["style.safetensors", "sdxl/detail.safetensors", "sdxl/sub/face.safetensors", "sd15/face.safetensors",
             "old/legacy.pt", "Mixed/CaseName.safetensors", "win\\path\\thing.safetensors"]


@pytest.mark.parametrize("name, expected", [
    ("style.safetensors", "style.safetensors"),                 # exact
    ("style", "style.safetensors"),                             # + .safetensors
    ("sdxl/detail", "sdxl/detail.safetensors"),
    ("sdxl\\detail.safetensors", "sdxl/detail.safetensors"),    # either separator
    ("detail", "sdxl/detail.safetensors"),                      # base name
    ("sub/face", "sdxl/sub/face.safetensors"),                  # path suffix at a folder boundary
    ("legacy", "old/legacy.pt"),                                # other extension by stem
    ("casename", "Mixed/CaseName.safetensors"),                 # case only when nothing else matches
    ("path/thing", "win\\path\\thing.safetensors"),
])
def test_resolve_names(name, expected):
    assert resolve_names([name], AVAILABLE) == {name: expected}


def test_exact_wins_over_suffix():
    files = ["face.safetensors", "sdxl/face.safetensors"]
    assert resolve_names(["face"], files) == {"face": "face.safetensors"}
    assert resolve_names(["sdxl/face"], files) == {"sdxl/face": "sdxl/face.safetensors"}


def test_folder_boundary():
    with pytest.raises(LoKrKeyError, match="'ace' is unknown"):
        resolve_names(["ace"], ["sd15/face.safetensors"])


def test_unknown_and_ambiguous_in_one_error():
    with pytest.raises(LoKrKeyError) as e:
        resolve_names(["style", "face", "detial", "zzzzzzzz"], AVAILABLE)
    msg = str(e.value)
    assert "'face' is ambiguous: matches sd15/face.safetensors, sdxl/sub/face.safetensors; write its subfolder" in msg
    assert "'detial' is unknown (nearest: sdxl/detail.safetensors" in msg
    assert "'zzzzzzzz' is unknown" in msg and "'zzzzzzzz' is unknown (nearest" not in msg
    assert "'style'" not in msg and f"among {len(AVAILABLE)} available" in msg


def test_nearest_at_most_three():
    files = [f"style_v{i}.safetensors" for i in range(6)]
    with pytest.raises(LoKrKeyError) as e:
        resolve_names(["style_v"], files)
    near = str(e.value).split("nearest: ")[1].rstrip(")").split(", ")
    assert len(near) == 3 and all(n in files for n in near)


def test_duplicates_resolved_once_and_empty_list():
    assert resolve_names(["style", "style"], AVAILABLE) == {"style": "style.safetensors"}
    assert resolve_names([], []) == {}
    with pytest.raises(LoKrKeyError, match="among 0 available"):
        resolve_names(["x"], [])
