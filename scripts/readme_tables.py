"""Keep README.md's result tables equal to the files in figures/ that notebooks write.

A block is a line ``<!-- table: figures/NAME.md -->`` (path relative to the repository root), the
file's content (one blank line around it) and a line ``<!-- /table -->``.

    python scripts/readme_tables.py          # rewrite the blocks that drifted, name them
    python scripts/readme_tables.py --check  # exit 1 naming each drifted block, write nothing
"""
import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OPEN = re.compile(r"^<!-- table: (\S+) -->$")
CLOSE = "<!-- /table -->"
FIX = "python scripts/readme_tables.py"


class TableError(ValueError):
    """A malformed block: missing file, unclosed or nested marker."""


def render(readme: Path, root: Path = ROOT) -> tuple[str, list[str]]:
    """Return README's text with every block filled from its file, and 'path (line N)' of those that changed."""
    lines = readme.read_text(encoding="utf-8").splitlines(keepends=True)
    out, changed, i = [], [], 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        if line.strip() == CLOSE:
            raise TableError(f"{readme}:{i}: '{CLOSE}' without an opening '<!-- table: ... -->'")
        match = OPEN.match(line.strip())
        if not match:
            if line.lstrip().startswith("<!-- table"):
                raise TableError(f"{readme}:{i}: malformed marker, expected '<!-- table: figures/NAME.md -->'")
            continue
        start, rel = i, match.group(1)
        source = (root / rel).resolve()
        if not source.is_relative_to(root.resolve()) or not source.is_file():
            raise TableError(f"{readme}:{start}: block names {rel}, which is not a file under {root}")
        end = start
        while end < len(lines) and lines[end].strip() != CLOSE:
            if OPEN.match(lines[end].strip()):
                raise TableError(f"{readme}:{end + 1}: marker nested in the block opened at line {start}")
            end += 1
        if end == len(lines):
            raise TableError(f"{readme}:{start}: block {rel} is never closed with '{CLOSE}'")
        body = "\n" + source.read_text(encoding="utf-8").strip("\n") + "\n\n"
        if "".join(lines[start:end]) != body:
            changed.append(f"{rel} (line {start})")
        out += [body, lines[end]]
        i = end + 1
    return "".join(out), changed


def check(readme: Path, root: Path = ROOT) -> list[str]:
    """Drifted blocks as 'path (line N)'; empty when README is in sync."""
    return render(readme, root)[1]


def update(readme: Path, root: Path = ROOT) -> list[str]:
    """Rewrite README atomically if any block drifted; return the blocks that changed."""
    text, changed = render(readme, root)
    if changed:
        fd, tmp = tempfile.mkstemp(dir=readme.parent, prefix=f".{readme.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                handle.write(text)
            os.chmod(tmp, readme.stat().st_mode & 0o777)
            os.replace(tmp, readme)
        except BaseException:
            os.unlink(tmp)
            raise
    return changed


def main(argv: list[str] | None = None) -> int:
    """Command line: rewrite (default) or --check; exit 1 on drift, 2 on a malformed README."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report drifted blocks, write nothing")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args(argv)
    root = args.readme.resolve().parent
    try:
        if args.check:
            drifted = check(args.readme, root)
            for block in drifted:
                print(f"{args.readme}: block {block} differs from its file; run `{FIX}`")
            return 1 if drifted else 0
        changed = update(args.readme, root)
    except TableError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(f"updated {args.readme}: {block}" for block in changed) or f"{args.readme}: all blocks up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
