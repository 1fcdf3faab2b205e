"""Prompt templates and their one-off tokenisation.

A template is a sequence of text pieces and ID slots. Each text piece is filled from the row and
tokenised on its own; each slot becomes one placeholder token whose position is recorded. Because
slots are never spelled in text, no title or author can ever create, hide or shift a slot: the
positions come from the template's structure, not from searching the token stream. Every encoded
prompt is checked to hold exactly the slots its template declares. A prompt longer than the token budget (the
model's positions) has its titles cut until it fits; the slots and the template's own text are never cut.

Templates are versioned (`name@version`) and kept here, in one place; `TEMPLATES` selects by name.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import settings

USER_SLOT = "<UserID>"
ITEM_SLOT = "<TargetItemID>"
EMPTY_HISTORY = "none"  # the fixed placeholder word for a user without history
ANSWER_PREFIX = "\n#Answer:"
ANSWER = "Yes"
# transformers sets model_max_length to ~1e30 for a tokenizer that does not know its model's length: no budget then
SANE_MAX_LENGTH = 1_000_000


def _quoted(titles: Sequence[str]) -> str:
    return ", ".join(f'"{t}"' for t in titles) if len(titles) else EMPTY_HISTORY


def _books(titles: Sequence[str], authors: Sequence[str]) -> str:
    """A book list; an empty one stays empty, as in TALLRec's book prompts ("User Preference: " with nothing after it
    for a user who liked none of their history; docs/protocol.md §5.1)."""
    return ", ".join(f'"{t}" by {a}' for t, a in zip(titles, authors))


def movie_fields(row: pd.Series, max_history: int) -> dict[str, str]:
    """The 10 most recent history titles, oldest first, and the target title (movies and Amazon books)."""
    return {"history": _quoted(list(row["his_title"])[-max_history:]), "title": f'"{row["title"]}"'}


def book_fields(row: pd.Series, max_history: int) -> dict[str, str]:
    """Liked and disliked history books (title and author) shown separately, as TALLRec does."""
    titles = list(row["his_title"])[-max_history:]
    authors = list(row["his_author"])[-max_history:]
    labels = list(row["his_label"])[-max_history:]
    liked = [(t, a) for t, a, y in zip(titles, authors, labels) if y == 1]
    disliked = [(t, a) for t, a, y in zip(titles, authors, labels) if y != 1]
    return {
        "liked": _books([t for t, _ in liked], [a for _, a in liked]),
        "disliked": _books([t for t, _ in disliked], [a for _, a in disliked]),
        "title": f'"{row["title"]}" by {row["author"]}',
    }


@dataclass(frozen=True)
class Template:
    """Text pieces (str.format fields) interleaved with slot markers USER_SLOT / ITEM_SLOT."""

    name: str
    version: int
    parts: tuple[str, ...]
    fields: Callable[[pd.Series, int], dict[str, str]] = field(compare=False, repr=False)

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def slots(self) -> tuple[str, ...]:
        return tuple(p for p in self.parts if p in (USER_SLOT, ITEM_SLOT))

    def render(self, row: pd.Series, max_history: int = 10) -> str:
        """Human-readable prompt (slots shown by name); the model never sees this string."""
        values = self.fields(row, max_history)
        return "".join(p if p in (USER_SLOT, ITEM_SLOT) else p.format(**values) for p in self.parts)


_MOVIE_Q = "#Question: A user has given high ratings to the following movies: {history}."
_MOVIE_ASK = " Would the user enjoy the movie titled {title}"
_BOOK_Q = "#Question: A user likes the following books: {liked}. The user dislikes: {disliked}."
# Amazon: titles only, as CoLLM's Amazon-Book prompt. The substitute has no ratings: its history is what the
# user reviewed, so its template does not claim high ratings.
_AMAZON_Q = "#Question: A user has given high ratings to the following books: {history}."
_MSL_Q = "#Question: A user has recently reviewed the following books: {history}."
_TITLE_ASK = " Would the user enjoy the book titled {title}"
# Your own data (docs/own_data.md): "items", since they can be anything, and "likes", since the label may be a
# click or a purchase rather than a rating (the history holds the positives).
_ITEM_Q = "#Question: A user likes the following items: {history}."
_ITEM_ASK = " Would the user enjoy the item titled {title}"
_BOOK_ASK = " Would the user enjoy the book {title}"
_FEATURE_USER = " Additionally, we have the user's preferences encoded in the feature "
_TAIL = '? Answer with "Yes" or "No".' + ANSWER_PREFIX

TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template("movie_text", 1, (_MOVIE_Q + _MOVIE_ASK + _TAIL,), movie_fields),
        Template("movie_id", 1, (_MOVIE_Q + _FEATURE_USER, USER_SLOT, "." + _MOVIE_ASK + " with the feature ",
                                 ITEM_SLOT, _TAIL), movie_fields),
        Template("item_text", 1, (_ITEM_Q + _ITEM_ASK + _TAIL,), movie_fields),
        Template("item_id", 1, (_ITEM_Q + _FEATURE_USER, USER_SLOT, "." + _ITEM_ASK + " with the feature ",
                                ITEM_SLOT, _TAIL), movie_fields),
        # version 2: an empty liked or disliked list is empty, as TALLRec's, no longer "none"
        Template("book_text", 2, (_BOOK_Q + _BOOK_ASK + _TAIL,), book_fields),
        Template("book_id", 2, (_BOOK_Q + _FEATURE_USER, USER_SLOT, "." + _BOOK_ASK + " with the feature ",
                                ITEM_SLOT, _TAIL), book_fields),
        *(t for name, question in (("amazon", _AMAZON_Q), ("amazon_msl", _MSL_Q)) for t in (
            Template(f"{name}_text", 1, (question + _TITLE_ASK + _TAIL,), movie_fields),
            Template(f"{name}_id", 1, (question + _FEATURE_USER, USER_SLOT, "." + _TITLE_ASK + " with the feature ",
                                       ITEM_SLOT, _TAIL), movie_fields))),
    )
}


def get_template(name: str) -> Template:
    if name not in TEMPLATES:
        raise KeyError(f"unknown prompt template {name!r}; available: {sorted(TEMPLATES)}")
    return TEMPLATES[name]


# The built-in datasets' template kinds (collm_lib.data.DATASETS); any other dataset is your own: item_*.
DATASET_KINDS = {"ml-1m": "movie", "ml-1m-raw": "movie", "bookcrossing": "book", "bookcrossing-multi": "book",
                 "amazon-book": "amazon", "amazon-book-msl": "amazon_msl"}


def identity_key(name: str) -> str | None:
    """What a run's identity records of its prompt template: its key (name@version) once the template has changed
    since its first version, None before (runs made then keep the identities they had)."""
    template = get_template(name)
    return template.key if template.version > 1 else None


def default_template(dataset: str, with_ids: bool) -> str:
    """movie_* for MovieLens, book_* (title and author, liked and disliked) for BookCrossing, amazon_* (titles)
    for Amazon-Book, amazon_msl_* for its substitute and item_* (titles) for any other dataset."""
    return f"{DATASET_KINDS.get(dataset, 'item')}_{'id' if with_ids else 'text'}"


def history_matrix(histories: pd.Series | list, max_len: int, dtype: type = np.int64) -> np.ndarray:
    """[rows, max_len] `dtype`: each row's last `max_len` history item ids, oldest first, left-padded with 0."""
    out = np.zeros((len(histories), max_len), dtype=dtype)
    for r, his in enumerate(histories):
        tail = list(his)[-max_len:] if max_len else []
        if tail:
            out[r, max_len - len(tail):] = tail
    return out


# History item ids an EncodedSplit keeps per row, for collaborative models that read them (SASRec's max_len at
# most this); int32, so a BookCrossing train split's stay ~40 MB
HISTORY_IDS = 50


@dataclass
class EncodedSplit:
    """A split tokenised once: ragged token ids, slot positions and the row keys."""

    template: str
    input_ids: list[np.ndarray]
    user_pos: np.ndarray  # position of the user slot per row, -1 when the template has none
    item_pos: np.ndarray
    uid: np.ndarray
    iid: np.ndarray
    label: np.ndarray
    not_cold: np.ndarray
    truncated_rows: np.ndarray | None = None  # per row: titles cut to fit the token budget; None: no row cut
    history: np.ndarray | None = None  # [rows, HISTORY_IDS] the last history item ids (history_matrix); None: no "his"

    @property
    def truncated(self) -> int:
        """How many prompts had their titles cut to fit the token budget."""
        return 0 if self.truncated_rows is None else int(self.truncated_rows.sum())

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self.input_ids))

    def __len__(self) -> int:
        return len(self.input_ids)

    def subset(self, idx: np.ndarray) -> "EncodedSplit":
        return EncodedSplit(self.template, [self.input_ids[i] for i in idx], self.user_pos[idx],
                            self.item_pos[idx], self.uid[idx], self.iid[idx], self.label[idx], self.not_cold[idx],
                            None if self.truncated_rows is None else self.truncated_rows[idx],
                            None if self.history is None else self.history[idx])


def _placeholder_id(tokenizer) -> int:
    """Any real token id works: its embedding is always overwritten by the slot vector."""
    for tid in (tokenizer.unk_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    raise ValueError("tokenizer has no unk, pad or eos token to use as the ID-slot placeholder")


def token_budget(tokenizer, max_tokens: int | None = None) -> int | None:
    """The most tokens a prompt may have: `max_tokens`, else the tokenizer's model_max_length when it is a real
    length, else None (no budget)."""
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer)) or max_tokens < 1:
            raise ValueError(f"max_tokens {max_tokens!r}: give a positive whole number of tokens, or None")
        return int(max_tokens)
    known = getattr(tokenizer, "model_max_length", None)
    return int(known) if isinstance(known, int) and 0 < known < SANE_MAX_LENGTH else None


def _tokenise(tokenizer, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def _assemble(parts: Sequence[str], pieces: Sequence[list[int] | None], bos: list[int],
              placeholder: int) -> tuple[list[int], dict[str, int]]:
    """One prompt's token ids from its pieces' ids (None at a slot) and the slots' positions."""
    seq, slots = list(bos), {}
    for part, ids in zip(parts, pieces):
        if ids is None:
            slots[part] = len(seq)
            seq.append(placeholder)
        else:
            seq.extend(ids)
    return seq, slots


def _fit_titles(row: pd.Series, tpl: Template, tokenizer, max_history: int, budget: int, bos: list[int],
                placeholder: int) -> tuple[list[int], dict[str, int]]:
    """`row`'s prompt with every title (history and target) cut to the longest common number of characters that
    fits `budget`: short titles stay whole and the longest are cut first. The template's text and slots are never
    cut; a prompt over budget even with empty titles is a ValueError."""
    def encode(length: int) -> tuple[list[int], dict[str, int]]:
        cut = row.copy()
        cut["his_title"] = [str(t)[:length] for t in row["his_title"]]
        cut["title"] = str(row["title"])[:length]
        values = tpl.fields(cut, max_history)
        ids = iter(_tokenise(tokenizer, [p.format(**values) for p in tpl.parts if p not in (USER_SLOT, ITEM_SLOT)]))
        pieces = [None if p in (USER_SLOT, ITEM_SLOT) else next(ids) for p in tpl.parts]
        return _assemble(tpl.parts, pieces, bos, placeholder)

    best = encode(0)
    if len(best[0]) > budget:
        raise ValueError(f"encode_frame: the prompt of uid {row.get('uid')}, iid {row.get('iid')} (template "
                         f"{tpl.key}) has {len(best[0])} tokens even with every title cut to nothing, over the budget "
                         f"of {budget}: raise max_tokens if the model has the positions, use a model with more, or "
                         f"show fewer history items (max_history, now {max_history})")
    low, high = 0, max(len(str(t)) for t in [*row["his_title"], row["title"]])  # low fits, high (uncut) does not
    while high - low > 1:
        mid = (low + high) // 2
        attempt = encode(mid)
        if len(attempt[0]) <= budget:
            low, best = mid, attempt
        else:
            high = mid
    return best


def encode_frame(frame: pd.DataFrame, template: str | Template, tokenizer, max_history: int = 10,
                 batch_size: int = 1024, progress: bool = True, max_tokens: int | None = None) -> EncodedSplit:
    """Tokenise every row of `frame` once; each text piece is tokenised in batches across rows.

    A prompt over the token budget (token_budget: `max_tokens`, else the tokenizer's model_max_length when known)
    has its titles cut to fit (_fit_titles); EncodedSplit.truncated counts those prompts, and a warning says so."""
    tpl = get_template(template) if isinstance(template, str) else template
    if len(frame) == 0:
        raise ValueError(f"encode_frame: empty frame for template {tpl.key}")
    budget = token_budget(tokenizer, max_tokens)
    placeholder = _placeholder_id(tokenizer)
    add_bos = tokenizer.bos_token_id is not None and bool(getattr(tokenizer, "add_bos_token", False))
    bos = [tokenizer.bos_token_id] if add_bos else []
    values = [tpl.fields(row, max_history) for _, row in frame.iterrows()]
    pieces: list[list[list[int]] | None] = []
    for part in tpl.parts:
        if part in (USER_SLOT, ITEM_SLOT):
            pieces.append(None)
            continue
        texts = [part.format(**v) for v in values]
        ids: list[list[int]] = []
        for start in tqdm(range(0, len(texts), batch_size), desc=f"tokenise {tpl.key}", disable=settings.quiet(progress),
                          leave=False):
            ids.extend(_tokenise(tokenizer, texts[start:start + batch_size]))
        pieces.append(ids)
    rows, user_pos, item_pos = [], np.full(len(frame), -1), np.full(len(frame), -1)
    truncated = np.zeros(len(frame), dtype=bool)
    for r in range(len(frame)):
        seq, slots = _assemble(tpl.parts, [None if ids is None else ids[r] for ids in pieces], bos, placeholder)
        if budget is not None and len(seq) > budget:
            seq, slots = _fit_titles(frame.iloc[r], tpl, tokenizer, max_history, budget, bos, placeholder)
            truncated[r] = True
        user_pos[r], item_pos[r] = slots.get(USER_SLOT, -1), slots.get(ITEM_SLOT, -1)
        rows.append(np.asarray(seq, dtype=np.int64))
    if truncated.any():
        logging.getLogger(__name__).warning(
            "encode_frame: %d of %d prompts of template %s were over the budget of %d tokens; their titles were "
            "cut to fit", int(truncated.sum()), len(frame), tpl.key, budget)
    enc = EncodedSplit(tpl.key, rows, user_pos, item_pos, frame["uid"].to_numpy(np.int64),
                       frame["iid"].to_numpy(np.int64), frame["label"].to_numpy(np.float32),
                       frame["not_cold"].to_numpy(np.int64), truncated if truncated.any() else None,
                       history_matrix(frame["his"], HISTORY_IDS, np.int32) if "his" in frame else None)
    check_slots(enc, tpl)
    return enc


def check_slots(enc: EncodedSplit, template: Template) -> None:
    """Every prompt must carry exactly the slots its template declares."""
    for slot, pos in ((USER_SLOT, enc.user_pos), (ITEM_SLOT, enc.item_pos)):
        declared = template.slots.count(slot)
        if declared > 1:
            raise ValueError(f"template {template.key} declares {slot} {declared} times; one is supported")
        present = pos >= 0
        if declared and not present.all():
            raise ValueError(f"{(~present).sum()} prompts of template {template.key} lack the {slot} slot")
        if not declared and present.any():
            raise ValueError(f"{present.sum()} prompts of template {template.key} carry an undeclared {slot}")
        lengths = enc.lengths
        if present.any() and (pos[present] >= lengths[present]).any():
            raise ValueError(f"{slot} position beyond the prompt end in template {template.key}")


def resolve_answer_token(tokenizer, answer: str = ANSWER, prefix: str = ANSWER_PREFIX) -> int:
    """The id of the first token the tokenizer emits for `answer` right after the prompt's end."""
    base = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    full = tokenizer(prefix + " " + answer, add_special_tokens=False)["input_ids"]
    if full[: len(base)] != base or len(full) == len(base):
        raise ValueError(f"cannot resolve the answer token {answer!r}: tokenisation of the prefix changes")
    return int(full[len(base)])
