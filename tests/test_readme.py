"""README's result tables are generated from figures/ (scripts/readme_tables.py) and must not drift."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "scripts" / "readme_tables.py")
readme_tables = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(readme_tables)

TABLE = "| a | b |\n|--:|--:|\n| 1 | 2 |\n"


def test_committed_readme_matches_figures():
    drifted = readme_tables.check(ROOT / "README.md", ROOT)
    assert not drifted, (f"README.md tables differ from their figures/ files: {', '.join(drifted)}; "
                         f"run `python scripts/readme_tables.py`")


def test_committed_readme_has_the_result_blocks():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("stage2_results_ml-1m_gpu", "stage2_results_ml-1m_cpu", "table1_cpu", "rerank_ml-1m_cpu"):
        assert f"<!-- table: figures/{name}.md -->" in text, f"README lost the generated block of figures/{name}.md"


def make_readme(root: Path, body: str) -> Path:
    (root / "figures").mkdir(exist_ok=True)
    (root / "figures" / "t.md").write_text(TABLE, encoding="utf-8")
    readme = root / "README.md"
    readme.write_text(body, encoding="utf-8")
    return readme


def test_drifted_block_is_reported_and_rewriting_fixes_it(tmp_path, capsys):
    readme = make_readme(tmp_path, "# x\n\nintro\n<!-- table: figures/t.md -->\n| old |\n<!-- /table -->\nafter\n")
    assert readme_tables.check(readme, tmp_path) == ["figures/t.md (line 4)"]
    assert readme_tables.main(["--check", "--readme", str(readme)]) == 1
    assert "figures/t.md" in capsys.readouterr().out
    assert "| old |" in readme.read_text(encoding="utf-8"), "--check must not write"

    assert readme_tables.update(readme, tmp_path) == ["figures/t.md (line 4)"]
    text = readme.read_text(encoding="utf-8")
    assert text == f"# x\n\nintro\n<!-- table: figures/t.md -->\n\n{TABLE}\n<!-- /table -->\nafter\n"
    assert readme_tables.check(readme, tmp_path) == []
    assert readme_tables.main(["--check", "--readme", str(readme)]) == 0
    assert readme_tables.update(readme, tmp_path) == [], "an up-to-date README is left alone"


def test_check_names_the_fix_command(tmp_path, capsys):
    readme = make_readme(tmp_path, "<!-- table: figures/t.md -->\n<!-- /table -->\n")
    assert readme_tables.main(["--check", "--readme", str(readme)]) == 1
    assert "python scripts/readme_tables.py" in capsys.readouterr().out


@pytest.mark.parametrize("body, line, words", [
    ("a\nb\n<!-- table: figures/missing.md -->\n<!-- /table -->\n", 3, "figures/missing.md"),
    ("a\n<!-- table: figures/t.md -->\n| x |\n", 2, "never closed"),
    ("<!-- table: figures/t.md -->\n\n<!-- table: figures/t.md -->\n<!-- /table -->\n", 3, "nested"),
    ("a\n<!-- /table -->\n", 2, "without an opening"),
])
def test_malformed_blocks_raise_naming_the_line(tmp_path, body, line, words):
    readme = make_readme(tmp_path, body)
    with pytest.raises(readme_tables.TableError, match=rf"README\.md:{line}: .*{words}"):
        readme_tables.render(readme, tmp_path)
    assert readme_tables.main(["--readme", str(readme)]) == 2
    assert readme.read_text(encoding="utf-8") == body, "nothing is written on an error"


def test_the_architecture_lists_every_module_and_no_gone_one():
    """The README's module map is what a newcomer reads first: a module added, moved or deleted must show there."""
    import re

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text[text.index("## Architecture"):].split("collm_lib/\n", 1)[1].split("```", 1)[0]
    listed = set(re.findall(r"^  ([a-z0-9_]+\.py|data/)", block, re.MULTILINE))
    modules = {p.name for p in (ROOT / "collm_lib").glob("*.py") if p.name != "__init__.py"} | {"data/"}
    assert listed == modules, f"README lists {sorted(listed - modules)} that do not exist, lacks {sorted(modules - listed)}"
