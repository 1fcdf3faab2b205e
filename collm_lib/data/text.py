"""Repairing mojibake in raw text fields once, at data preparation (docs/protocol.md §11).

BookCrossing's BX dump holds titles and authors that were UTF-8 read as Latin-1, once ("FÃ¼r") or twice, where
the dump then replaced the C1 byte 0x83 with "?" ("ErzÃ?Â¤hlungen" for "Erzählungen"). ftfy (a well-kept library
for exactly this) undoes the encoding layers after the lost byte is put back; a character whose own bytes were lost
too cannot be recovered and becomes a plain "?", as the dump already shows it. Only encoding fixes are enabled:
quotes, ligatures, widths and Unicode normalisation are left as the dump has them."""
from __future__ import annotations

from importlib.metadata import version

import ftfy
import pandas as pd

# Double-encoded U+00C0..U+00FF is "Ã" 0x83 "Â" x; the dump wrote that 0x83 as "?". When x was lost too ("Ã?Â?")
# the character is gone; a single-encoded U+00C0..U+00DF whose C1 second byte was lost reads "Ã?".
_LOST_BYTE = ("Ã?Â", "Ã\x83Â")
_LOST_CHARACTER = ("Ã?Â?", "Ã?")
_ENCODING_ONLY = ftfy.TextFixerConfig(unescape_html=False, remove_terminal_escapes=False, uncurl_quotes=False,
                                      fix_latin_ligatures=False, fix_character_width=False, fix_line_breaks=False,
                                      remove_control_chars=False, normalization=None, explain=False)


def repair(text: str) -> str:
    """`text` with its mojibake undone; text without mojibake comes back unchanged."""
    if text.isascii():
        return text
    text = text.replace(_LOST_CHARACTER[0], "?").replace(*_LOST_BYTE)
    text = ftfy.fix_text(text, _ENCODING_ONLY)
    return text.replace(_LOST_CHARACTER[1], "?").replace("\ufffd", "?")


def repair_columns(frame: pd.DataFrame, columns: list[str]) -> tuple[pd.DataFrame, dict]:
    """`frame` with `columns` repaired, and the record for the data's meta: the library, its version and how many
    values of each column changed (the processed content, hence the data's identity, changes with them)."""
    frame = frame.copy()
    changed = {}
    for column in columns:
        fixed = frame[column].map(repair)
        changed[column] = int((fixed != frame[column]).sum())
        frame[column] = fixed
    return frame, {"library": f"ftfy {version('ftfy')}", "fixes": "encoding only (docs/protocol.md §11)",
                   "changed": changed}
