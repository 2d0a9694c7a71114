"""The docs are self-contained: nothing cites a file outside this repository, every link resolves.

Scanned: the repository's tracked text files (``git ls-files``; a walk of the tree when git is not
available), this file excepted, since it names the patterns it looks for.

- No file cites the design documents the project started from, which are not in the repository
  (``LOKR_SPEC``, ``DESIGN.md``, ``DESIGN_NOTES``, ``../shared``, ``shared/tools`` ...) or an
  absolute path of the machine it was built on (``/work/``). Facts live in ``docs/``.
- Every relative Markdown link ``[text](path#anchor)`` points at a file that exists (and, for a
  Markdown target, at a heading that exists); every ``docs/<file>.md`` mention names an existing
  file; every citation ``(docs/<file>.md, Section)`` names a heading of that file.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SELF = Path(__file__).resolve()
TEXT_SUFFIXES = (".py", ".md", ".js", ".mjs", ".css", ".toml", ".json", ".yml", ".yaml")
SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".pytest_cache", "build", "dist"}

OUTSIDE = re.compile(r"LOKR_SPEC|DESIGN\.md|DESIGN_NOTES|\.\./shared\b|/work/"
                     r"|\bshared/(?:LOKR_SPEC|DESIGN|STYLE|tools|comfyui)\b")
"""Citations of files that are not in the repository."""
MD_LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
DOCS_MENTION = re.compile(r"\bdocs/([\w-]+(?:\.[\w-]+)*\.md)\b")
CITATION = re.compile(r"\bdocs/([\w-]+(?:\.[\w-]+)*\.md),\s*(?:(?:#|//|\*)\s*)?\"?([^()\"\n]+?)\"?\)")
"""``(docs/x.md, Section)``, also wrapped onto a comment's next line (``#``, ``//``, ``*``) or with
the section in double quotes."""
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def text_files() -> list[Path]:
    """The repository's tracked text files that exist in the work tree, this file excepted."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        paths = [ROOT / p for p in out.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        paths = []
        for dirpath, dirnames, filenames in os.walk(ROOT):
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
            paths += [Path(dirpath) / f for f in filenames]
    return sorted(p for p in paths if p.suffix in TEXT_SUFFIXES and p.is_file() and p.resolve() != SELF)


def rel(path: Path) -> str:
    """``path`` relative to the repository (its name when outside it)."""
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return path.name


def line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def headings(md_text: str) -> list[str]:
    """Heading texts of a Markdown document (outside code fences), without ``#`` and backticks."""
    body = FENCE.sub("", md_text)
    return [m.group(1).strip().replace("`", "") for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", body, re.M)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces -> ``-``."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def has_section(md_text: str, section: str) -> bool:
    """True when a heading is ``section`` or starts with it followed by a space or punctuation."""
    section = section.strip().replace("`", "")
    return any(h == section or (h.startswith(section) and not h[len(section)].isalnum())
               for h in headings(md_text))


def outside_citations(text: str) -> list[tuple[int, str]]:
    return [(line_of(text, m.start()), m.group(0)) for m in OUTSIDE.finditer(text)]


def bad_links(md_path: Path, text: str) -> list[str]:
    """Relative links of one Markdown file whose target file (or heading anchor) does not exist."""
    problems = []
    for m in MD_LINK.finditer(FENCE.sub(lambda f: "\n" * f.group(0).count("\n"), text)):
        target = m.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:, ...
            continue
        path_part, _, anchor = target.partition("#")
        dest = (md_path.parent / path_part).resolve() if path_part else md_path
        where = f"{rel(md_path)}:{line_of(text, m.start())}: ({target})"
        if not dest.exists():
            problems.append(f"{where}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in {slug(h) for h in headings(dest.read_text("utf-8"))}:
            problems.append(f"{where}: no heading with anchor #{anchor} in {dest.name}")
    return problems


def bad_doc_references(path: Path, text: str) -> list[str]:
    """``docs/x.md`` mentions of a missing file and ``(docs/x.md, Section)`` citations of a missing heading."""
    problems = []
    for m in DOCS_MENTION.finditer(text):
        if not (ROOT / "docs" / m.group(1)).is_file():
            problems.append(f"{rel(path)}:{line_of(text, m.start())}: docs/{m.group(1)} does not exist")
    for m in CITATION.finditer(text):
        doc, section = ROOT / "docs" / m.group(1), m.group(2).strip()
        if ".md" in section or "`" in section or not doc.is_file():
            continue  # a list of files, not a citation; a missing file is reported above
        if not has_section(doc.read_text("utf-8"), section):
            problems.append(f"{rel(path)}:{line_of(text, m.start())}: docs/{m.group(1)} has no heading {section!r}")
    return problems


# ----------------------------------------------------------------------------------- the checks
def test_nothing_cites_files_outside_the_repository():
    hits = [f"{rel(p)}:{n}: {s}" for p in text_files() for n, s in outside_citations(p.read_text("utf-8"))]
    assert not hits, ("files outside the repository are cited; write the fact into docs/ and cite it as "
                      "(docs/<file>.md, Section):\n" + "\n".join(hits))


def test_relative_markdown_links_resolve():
    problems = [x for p in text_files() if p.suffix == ".md" for x in bad_links(p, p.read_text("utf-8"))]
    assert not problems, "broken Markdown links:\n" + "\n".join(problems)


def test_docs_mentions_and_citations_resolve():
    problems = [x for p in text_files() for x in bad_doc_references(p, p.read_text("utf-8"))]
    assert not problems, "docs references that do not resolve:\n" + "\n".join(problems)


def test_the_agreed_doc_sections_exist():
    """The pages and sections the code cites by name (docs/math.md, Scale, ...)."""
    math = (ROOT / "docs" / "math.md").read_text("utf-8")
    for section in ("Factorization", "Shapes", "Scale", "DoRA"):
        assert section in headings(math), section
    for page in ("formats.md", "known-failures.md", "block-weights.md", "architecture.md"):
        assert (ROOT / "docs" / page).is_file(), page


# ------------------------------------------------------------------- the scanners catch what they should
def test_scanners_flag_bad_references(tmp_path):
    assert [s for _, s in outside_citations("see LOKR_SPEC 3 and ../shared/x and /work/main")] == [
        "LOKR_SPEC", "../shared", "/work/"]
    assert outside_citations("(docs/math.md, Scale)") == []
    fake = ROOT / "tests" / "fake.py"
    text = ("x = 1  # (docs/math.md, Scale) ok\n# (docs/math.md,\n# Shapes) wrapped ok\n"
            "# (docs/math.md, No Such Section)\n# docs/no-such-page.md\n# (see docs/cli.md, docs/extract.md)\n"
            "# docs/known-failures.md, \"lycoris-lora 4.1.3\").\n")
    problems = sorted(bad_doc_references(fake, text))
    assert problems == ["tests/fake.py:4: docs/math.md has no heading 'No Such Section'",
                        "tests/fake.py:5: docs/no-such-page.md does not exist"], problems
    md = tmp_path / "page.md"
    md.write_text("# Title\n## Sub part\n[a](page.md#sub-part) [b](#title) [c](missing.md) [d](#nope)\n"
                  "[e](https://example.com/x) ![img](page.md)\n```\n[f](in-code.md)\n```\n", "utf-8")
    found = [x.split(": ", 1)[1] for x in bad_links(md, md.read_text("utf-8"))]
    assert found == ["(missing.md): no such file", "(#nope): no heading with anchor #nope in page.md"], found


def test_heading_matching():
    text = "# A\n## Scale (`weights.scale(name, rule)`)\n## DoRA\n```\n# Not a heading\n```\n"
    assert headings(text) == ["A", "Scale (weights.scale(name, rule))", "DoRA"]
    assert has_section(text, "Scale") and has_section(text, "DoRA")
    assert not has_section(text, "Sca") and not has_section(text, "Not a heading")
    assert slug("ComfyUI's adapter contract and where ComfyUI touches patches") == \
        "comfyuis-adapter-contract-and-where-comfyui-touches-patches"
