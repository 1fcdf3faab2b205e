"""BookCrossing's mojibake repair (collm_lib/data/text.py): what is undone, what is left alone."""
import pandas as pd
import pytest

from collm_lib.data.text import repair, repair_columns


@pytest.mark.parametrize("raw, fixed", [
    ("Contes de fÃ?Â©es", "Contes de fées"),  # UTF-8 read as Latin-1 twice, the dump's "?" for byte 0x83
    ("Schwarzer Tee mit drei StÃ¼ck Zucker", "Schwarzer Tee mit drei Stück Zucker"),  # once
    ("Ulysses (Ã?Â?bersetzg. WollschlÃ?Â¤ger)", "Ulysses (?bersetzg. Wollschläger)"),  # a character lost: "?"
    ("Emine Sevgi Ã?zdamar", "Emine Sevgi ?zdamar"),  # a single-encoded capital whose second byte was lost
])
def test_repair_undoes_the_dumps_mojibake(raw, fixed):
    assert repair(raw) == fixed


@pytest.mark.parametrize("text", ["Les Misérables", "Plain title", "“Quoted” ﬁne ＡＢ", "Ça va", ""])
def test_repair_leaves_clean_text_as_it_is(text):
    assert repair(text) == text  # quotes, ligatures and widths are not "fixed": only encodings


def test_repair_columns_counts_what_changed():
    frame = pd.DataFrame({"Book-Title": ["KÃ?Â¶nig", "Clean"], "Book-Author": ["A", "B"], "ISBN": ["1", "2"]})
    fixed, record = repair_columns(frame, ["Book-Title", "Book-Author"])
    assert list(fixed["Book-Title"]) == ["König", "Clean"] and list(frame["Book-Title"])[0] == "KÃ?Â¶nig"
    assert record["changed"] == {"Book-Title": 1, "Book-Author": 0} and record["library"].startswith("ftfy ")
