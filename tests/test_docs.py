"""docs/protocol.md is the protocol the code cites: every `docs/protocol.md §N` / `§N.M` citation names one of its
numbered headings, and nothing cites the old external PROTOCOL document (which a clone of this repository does
not have) any more."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = "docs/protocol.md"
SCANNED = ("collm_lib", "tests", "notebooks", "scripts", "benchmarks", "docs", "README.md")
SUFFIXES = {".py", ".md", ".ipynb", ".sh"}
THIS_FILE = "tests/test_docs.py"

HEADING = re.compile(r"^#{1,6}[ \t]+(\d+(?:\.\d+)*)\.?[ \t]+\S", re.MULTILINE)
SECTION = re.compile(r"§[ \t]*(\d+(?:\.\d+)*)")
OLD_CITATION = re.compile(r"\bPROTOCOL\b")
OLD_NUMBER = re.compile(r"\bPROTOCOL\b(?:'s)?[ \t]*(?:section[ \t]*)?(\d+(?:\.\d+)?)?")

# Where each section of the old external document went; the suggestion a failure prints.
OLD_TO_NEW = {
    "1": ("§1",),
    "2": ("§2", "§2.5"),
    "2.1": ("§2.1",),
    "2.2": ("§2.2", "§2.4"),
    "2.3": ("§2.3",),
    "3": ("§3",),
    "4": ("§4", "§5"),
    "5": ("§7", "§7.2", "§7.3"),
    "6": ("§10", "§6.2"),
    "7": ("§8", "§8.2", "§8.3"),
}


def scanned_files() -> list[Path]:
    """The text files under SCANNED that git tracks or would track (untracked but not ignored); without git,
    every such file on disk outside hidden and cache folders."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", *SCANNED],
                             cwd=ROOT, capture_output=True, check=True).stdout.decode()
        paths = [ROOT / p for p in out.split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        paths = []
        for name in SCANNED:
            top = ROOT / name
            paths += [top] if top.is_file() else [p for p in top.rglob("*") if not any(
                part.startswith(".") or part == "__pycache__" for part in p.relative_to(ROOT).parts)]
    return sorted({p for p in paths if p.suffix in SUFFIXES and p.is_file()})


def text_lines(path: Path) -> list[str]:
    """The file's lines; a notebook's JSON may escape § as \\u00a7, which is read back as §."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".ipynb":
        text = text.replace("\\u00a7", "§")
    return text.splitlines()


def doc_sections() -> set[str]:
    return set(HEADING.findall((ROOT / DOC).read_text(encoding="utf-8")))


def citations(rel: str, lines: list[str]):
    """(line number, line, section) of every § citation of docs/protocol.md: in the document itself every §; elsewhere
    each § on a line that names protocol.md, or on the line right after one that ends with it (a wrapped citation)."""
    for number, line in enumerate(lines, start=1):
        wrapped = number > 1 and lines[number - 2].rstrip().endswith("protocol.md")
        if rel == DOC or "protocol.md" in line or wrapped:
            for section in SECTION.findall(line):
                yield number, line, section


def test_protocol_doc_has_numbered_sections():
    text = (ROOT / DOC).read_text(encoding="utf-8")
    numbers = HEADING.findall(text)
    assert numbers, f"{DOC} has no numbered headings (`## 2. Datasets`, `### 2.3 BookCrossing ...`) to cite"
    duplicated = sorted({n for n in numbers if numbers.count(n) > 1})
    assert not duplicated, f"{DOC}: headings numbered more than once: {duplicated}; give each section its own number"
    for new in {n for targets in OLD_TO_NEW.values() for n in targets}:
        assert new[1:] in numbers, (f"{DOC} lost section {new}, which tests/test_docs.py OLD_TO_NEW suggests for old "
                                    "PROTOCOL citations: restore it or update OLD_TO_NEW")


def test_every_protocol_citation_names_a_section():
    sections = doc_sections()
    bad = []
    for path in scanned_files():
        rel = path.relative_to(ROOT).as_posix()
        for number, line, section in citations(rel, text_lines(path)):
            if section not in sections:
                bad.append(f"{rel}:{number}: §{section} in {line.strip()[:100]!r}")
    headings = ", ".join("§" + s for s in sorted_sections(sections))
    assert not bad, (f"{len(bad)} citation(s) of {DOC} name no heading there:\n  " + "\n  ".join(bad)
                     + f"\nFix: cite an existing section ({headings}), or add the numbered heading to {DOC}.")


def sorted_sections(sections: set[str]) -> list[str]:
    return sorted(sections, key=lambda s: tuple(int(p) for p in s.split(".")))


def test_nothing_cites_the_old_external_protocol():
    bad = []
    for path in scanned_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel == THIS_FILE:
            continue
        for number, line in enumerate(text_lines(path), start=1):
            for match in OLD_NUMBER.finditer(line):
                old = match.group(1)
                new = " or ".join(f"`{DOC} {s}`" for s in OLD_TO_NEW.get(old or "", ())) or f"`{DOC} §N`"
                excerpt = line[max(0, match.start() - 40):match.end() + 40].strip()
                bad.append(f"{rel}:{number}: ...{excerpt}... -> cite {new}")
    assert not bad, (f"{len(bad)} place(s) cite the external PROTOCOL document, which is not in this repository:\n  "
                     + "\n  ".join(bad) + f"\nFix: replace each with the section of {DOC} that says the same thing "
                     "(suggestions after the arrow; generated notebook outputs change when the notebook is rerun).")
