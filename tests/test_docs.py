"""The docs checked against the repository, so that they stay true as the code moves."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFLICT = re.compile(r"^(<{7} |={7}$|>{7} )", re.M)
LINK = re.compile(r"\]\(([^)\s]+)\)")
PACKAGES = {"core", "predlog", "training", "service", "monitoring", "servewatch"}
HEADING = re.compile(r"^#+\s+(.*)$", re.M)


def tracked(suffixes: tuple[str, ...]) -> list[Path]:
    """The files git tracks whose names end in one of `suffixes`."""
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / f for f in out.stdout.split() if f.endswith(suffixes)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def broken_links(doc: Path) -> list[str]:
    """The relative links in a Markdown file whose file or heading anchor does not exist."""
    broken = []
    for target in LINK.findall(doc.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path) if path else doc
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md":
            if anchor not in {slug(h) for h in HEADING.findall(dest.read_text())}:
                broken.append(target)
    return broken


def test_no_tracked_file_holds_a_merge_conflict_marker() -> None:
    text_files = tracked((".md", ".py", ".toml", ".yaml", ".yml", ".json", "Makefile", "run"))
    marked = [str(p.relative_to(ROOT)) for p in text_files if CONFLICT.search(p.read_text())]
    assert marked == []


@pytest.mark.parametrize("doc", tracked((".md",)), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_in_the_docs_resolves(doc: Path) -> None:
    assert broken_links(doc) == []


def test_the_link_check_sees_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Open Inference Protocol: `/v2` (`python -m bench.oip`)\n")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "[ok](other.md#open-inference-protocol-v2-python--m-benchoip) [gone](nowhere.md) "
        "[bad anchor](other.md#open-inference-protocol) [web](https://example.org/x.md)\n"
    )
    assert broken_links(doc) == ["nowhere.md", "other.md#open-inference-protocol"]


def test_every_setting_the_code_reads_is_documented() -> None:
    code = " ".join(
        p.read_text() for p in tracked((".py",)) if p.relative_to(ROOT).parts[0] in PACKAGES
    )
    docs = " ".join(p.read_text() for p in tracked((".md",)))
    settings = set(re.findall(r"SERVEWATCH_[A-Z0-9_]+", code))
    assert settings, "the pattern found no settings at all"
    assert sorted(s for s in settings if s not in docs) == []


def test_every_benchmark_the_docs_name_exists() -> None:
    docs = " ".join(p.read_text() for p in tracked((".md",)))
    named = set(re.findall(r"python -m (bench\.\w+)", docs))
    assert named, "the pattern found no benchmarks at all"
    assert sorted(m for m in named if not (ROOT / (m.replace(".", "/") + ".py")).exists()) == []
