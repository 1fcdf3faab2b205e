"""Your own interaction table as a dataset (docs/own_data.md).

`InteractionSpec` names the columns of your tables and the split; `from_interactions` checks them and builds
Splits by CoLLM's temporal protocol (docs/protocol.md §2.1) or TALLRec's user split (docs/protocol.md §2.3). A
dataset folder (interactions.csv, items.csv, dataset.json; `save_dataset_folder`) makes the data loadable by name
in every notebook, stage and process: collm_lib.data discovers it and `prepare_folder` builds it.
"""
from __future__ import annotations

import json
import unicodedata
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from .. import rules
from ..io import plain, write_frame, write_json
from ..dataset_registry import DATASETS
from .common import (FLAGS, SPLIT_NAMES, Splits, add_history, add_not_cold, by_flag, make_splits, remap_ids,
                     sample_valid_users, source_record, split_users)

SPLIT_KINDS = ("temporal", "user")
DUPLICATE_POLICIES = ("last", "first")  # which interaction of a repeated (user, item) is kept: latest or earliest
FOLDER_FILES = INTERACTIONS, ITEMS, SPEC = ("interactions.csv", "items.csv", "dataset.json")
# Recorded in meta; a change here makes cached folder datasets stale (load_dataset rebuilds).
BUILDER_VERSION = 2  # 2: one row per (user, item) (InteractionSpec.duplicates), titles normalised
DOCS = "see docs/own_data.md"


@dataclass
class InteractionSpec:
    """Which columns of your tables hold what, and how to split. Give exactly one of `label` (a 0/1 column) and
    `rating` (label = rating >= threshold)."""

    user: str = "user"
    item: str = "item"  # the same column name in the interactions and the titles table
    label: str | None = None
    rating: str | None = None
    threshold: float = 4.0
    timestamp: str = "timestamp"  # whole numbers, e.g. Unix seconds
    title: str = "title"  # in the titles table
    split: str = "temporal"  # "temporal" (docs/protocol.md §2.1) or "user" (docs/protocol.md §2.3)
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train, valid, test
    valid_small_frac: float = 0.5
    seed: int = 2023
    duplicates: str = "last"  # a re-rated (user, item): keep the "last" (latest) or "first" (earliest) interaction

    def check(self) -> None:
        """Raise ValueError naming what is wrong with the spec itself and how to fix it."""
        if (self.label is None) == (self.rating is None):
            given = "both" if self.label is not None else "neither"
            raise ValueError(f"InteractionSpec: {given} of label / rating given; give exactly one: label='<0/1 "
                             "column>' or rating='<rating column>' with threshold (label = rating >= threshold)")
        if self.split not in SPLIT_KINDS:
            raise ValueError(f"InteractionSpec: unknown split {self.split!r}; choose one of {SPLIT_KINDS} "
                             "(temporal: CoLLM's time ranges; user: TALLRec's user split)")
        if self.duplicates not in DUPLICATE_POLICIES:
            raise ValueError(f"InteractionSpec: unknown duplicates policy {self.duplicates!r}; choose 'last' (keep the "
                             "latest interaction of a repeated (user, item)) or 'first' (keep its earliest)")
        rules.check_config(self)  # every field, by type and range (fractions, valid_small_frac, threshold, ...)

    @classmethod
    def from_dict(cls, values: dict) -> InteractionSpec:
        """The spec of a dataset.json; unknown keys are an error (a typo would otherwise be silently ignored)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"dataset.json: unknown key(s) {unknown}; the keys are {sorted(known)}")
        values = dict(values)
        if "fractions" in values:
            values["fractions"] = tuple(values["fractions"])
        return cls(**values)


def _used_columns(spec: InteractionSpec) -> list[str]:
    return [spec.user, spec.item, spec.label or spec.rating, spec.timestamp]


def _require(frame: pd.DataFrame, needed: list[str], table: str, field_hint: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{table}: expected a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in dict.fromkeys(needed) if c not in frame.columns]
    if missing:
        raise ValueError(f"{table}: missing column(s) {missing}; found {list(frame.columns)}. Rename them or set "
                         f"{field_hint} of the InteractionSpec to your column names")
    for column in dict.fromkeys(needed):
        nan = int(frame[column].isna().sum())
        if nan:
            raise ValueError(f"{table}: column {column!r} has {nan} missing value(s) (NaN); drop or fill those rows "
                             f"first, e.g. frame.dropna(subset={[column]!r})")


def _clean_interactions(interactions: pd.DataFrame, spec: InteractionSpec) -> pd.DataFrame:
    """user, item, label, timestamp (int seconds or any whole numbers) and the source row order, checked."""
    _require(interactions, _used_columns(spec), "interactions", "user / item / label or rating / timestamp")
    if len(interactions) == 0:
        raise ValueError("interactions: the table has no rows (a header only?); it needs one row per interaction")
    frame = pd.DataFrame({"user": interactions[spec.user].to_numpy(), "item": interactions[spec.item].to_numpy()})
    if spec.label is not None:
        label = interactions[spec.label]
        if not (pd.api.types.is_bool_dtype(label) or pd.api.types.is_numeric_dtype(label)) \
                or not label.isin((0, 1)).all():
            bad = label[~label.isin((0, 1))].unique()[:5].tolist()
            raise ValueError(f"interactions: label column {spec.label!r} must hold only 0 / 1, found e.g. {bad}; "
                             "map it to 0/1, or give rating= and threshold= instead of label=")
        frame["label"] = label.astype("int64").to_numpy()
    else:
        rating = interactions[spec.rating]
        if pd.api.types.is_bool_dtype(rating) or not pd.api.types.is_numeric_dtype(rating):
            raise ValueError(f"interactions: rating column {spec.rating!r} is not numeric ({rating.dtype}); "
                             "convert it, e.g. pd.to_numeric(frame[column])")
        frame["label"] = (rating >= spec.threshold).astype("int64").to_numpy()
    stamp = interactions[spec.timestamp]
    numeric = pd.api.types.is_numeric_dtype(stamp) and not pd.api.types.is_bool_dtype(stamp)
    if not numeric or not np.equal(np.mod(stamp.to_numpy(dtype=float), 1), 0).all():
        raise ValueError(f"interactions: timestamp column {spec.timestamp!r} must hold whole numbers ({stamp.dtype} "
                         "given); convert dates with pd.to_datetime(frame[column]).astype('int64') // 10**9, or "
                         "number the rows in time order if you only know the order")
    frame["timestamp"] = stamp.astype("int64").to_numpy()
    frame["order"] = np.arange(len(frame))
    repeated = frame.duplicated(["user", "item", "timestamp"])
    if repeated.any():
        example = [tuple(r) for r in frame.loc[repeated, ["user", "item", "timestamp"]].head(3).to_numpy().tolist()]
        keys = [spec.user, spec.item, spec.timestamp]
        raise ValueError(f"interactions: {int(repeated.sum())} rows repeat an earlier row's {tuple(keys)}, e.g. "
                         f"{example}; keep one of each: frame.drop_duplicates({keys!r})")
    return frame


def _one_per_pair(frame: pd.DataFrame, policy: str) -> tuple[pd.DataFrame, int]:
    """One interaction per (user, item), the latest ("last") or earliest ("first") by timestamp, and how many rows
    were dropped: a re-rated item would otherwise be in two splits, its test label known from train."""
    ordered = frame.sort_values(["timestamp", "order"], kind="stable")  # no ties: (user, item, timestamp) is unique
    kept = ordered[~ordered.duplicated(["user", "item"], keep=policy)].sort_values("order")
    return kept, len(frame) - len(kept)


def _title_text(value: object, item: object) -> str:
    """A title as text: bytes decoded as UTF-8 (str() would show "b'...'" in the prompts)."""
    if not isinstance(value, (bytes, bytearray)):
        return str(value)
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"titles: the title of item {item!r} is bytes that are not UTF-8 ({err}); decode the "
                         "column with its real encoding first, e.g. titles[column].map(lambda b: b.decode('latin-1'))"
                         ", or give the titles as str") from err


def normalise_title(text: str) -> str:
    """`text` on one line: control and format characters (Unicode categories Cc, Cf, Cs, Co) become spaces, runs of
    whitespace one space, no space at either end, so a title cannot break the prompt's lines (e.g. fake an
    "\\n#Answer:"). Unassigned code points (Cn) are kept: which they are depends on Python's Unicode version, and the
    processed data must not."""
    if text.isprintable():  # the common case, fast: no control or format character, no whitespace but " "
        return " ".join(text.split())
    spaced = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co") else c for c in text)
    return " ".join(spaced.split())


def _clean_titles(titles: pd.DataFrame, spec: InteractionSpec, items: pd.Series) -> pd.DataFrame:
    """item -> normalised title (normalise_title), one row per item, covering every item of `items`."""
    _require(titles, [spec.item, spec.title], "titles", "item / title")
    text = [normalise_title(_title_text(v, i)) for v, i in zip(titles[spec.title].tolist(), titles[spec.item].tolist())]
    table = pd.DataFrame({"item": titles[spec.item].to_numpy(), "title": pd.Series(text, dtype=object).to_numpy()})
    blank = table["item"][table["title"] == ""]
    if len(blank):
        raise ValueError(f"titles: {len(blank)} item(s) have an empty title (after turning control characters into "
                         f"spaces), e.g. {blank[:5].tolist()}; the prompts show titles, so give every item one")
    twice = table["item"][table["item"].duplicated()].unique()
    if len(twice):
        raise ValueError(f"titles: {len(twice)} item id(s) appear more than once, e.g. {twice[:5].tolist()}; keep "
                         f"one title per item: titles.drop_duplicates({spec.item!r})")
    missing = pd.unique(items[~items.isin(table["item"])])
    if len(missing):
        hint = ""
        if items.dtype != table["item"].dtype:
            hint = (f" The id types differ (interactions: {items.dtype}, titles: {table['item'].dtype}): "
                    "convert one, e.g. titles[column].astype(str).")
        raise ValueError(f"titles: {len(missing)} item(s) of the interactions have no title, e.g. "
                         f"{missing[:5].tolist()}; add their titles or drop their interactions.{hint}")
    return table


def _cut(stamps: np.ndarray, target: int, low: int, high: int) -> tuple[int, str | None]:
    """A cut index near `target` into time-sorted `stamps` that no timestamp straddles, within [low, high]; else
    the target itself, with a note saying which timestamp straddles it."""
    if not 0 < target < len(stamps) or stamps[target - 1] != stamps[target]:
        return target, None
    left = int(np.searchsorted(stamps, stamps[target], "left"))
    right = int(np.searchsorted(stamps, stamps[target], "right"))
    for cut in sorted((left, right), key=lambda c: abs(c - target)):
        if low <= cut <= high:
            return cut, None
    return target, f"timestamp {int(stamps[target])} straddles two splits (too many rows share it)"


def _temporal_flags(stream: pd.DataFrame, fractions: tuple[float, ...]) -> tuple[np.ndarray, list[str]]:
    """CoLLM's protocol: one global time order cut into consecutive ranges holding `fractions` of the rows."""
    order = np.lexsort((stream["order"].to_numpy(), stream["timestamp"].to_numpy()))
    stamps = stream["timestamp"].to_numpy()[order]
    n = len(stamps)
    first, note1 = _cut(stamps, round(n * fractions[0]), 1, n - 2)
    second, note2 = _cut(stamps, round(n * (fractions[0] + fractions[1])), first + 1, n - 1)
    flags = np.empty(n, dtype="int64")
    flags[order] = np.repeat(list(FLAGS.values()), [first, max(second - first, 0), max(n - max(second, first), 0)])
    return flags, [note for note in (note1, note2) if note]


def _user_flags(stream: pd.DataFrame, fractions: tuple[float, ...], seed: int) -> np.ndarray:
    """TALLRec's user split at the fractions (common.split_users)."""
    groups = split_users(stream["user"].unique(), seed, (fractions[0], fractions[0] + fractions[1]))
    flag_of = {user: FLAGS[name] for name, group in groups.items() for user in group}
    return stream["user"].map(flag_of).to_numpy(dtype="int64")


def _valid_small(valid: pd.DataFrame, spec: InteractionSpec) -> pd.DataFrame:
    """temporal: a row sample of valid (CoLLM's); user: all rows of a sample of valid users (as bookcrossing)."""
    if spec.split == "temporal":
        return valid.sample(frac=spec.valid_small_frac, random_state=spec.seed)
    return sample_valid_users(valid, spec.valid_small_frac, spec.seed)


def from_interactions(interactions: pd.DataFrame, titles: pd.DataFrame, spec: InteractionSpec | None = None,
                      name: str = "custom", source: dict | None = None) -> Splits:
    """Your interactions and item titles as checked, validated Splits (docs/own_data.md).

    `source` is recorded in meta (prepare_folder passes the files' sha256)."""
    spec = spec or InteractionSpec()
    spec.check()
    check_name(name)
    frame = _clean_interactions(interactions, spec)
    rows = len(frame)
    frame, dropped = _one_per_pair(frame, spec.duplicates)  # before the split: a pair can be in one split only
    stream = frame.merge(_clean_titles(titles, spec, frame["item"]), on="item", how="left", validate="many_to_one")
    notes: list[str] = []
    if spec.split == "temporal":
        stream["flag"], notes = _temporal_flags(stream, spec.fractions)
    else:
        stream["flag"] = _user_flags(stream, spec.fractions, spec.seed)
    # History: every earlier positive of the same user, oldest first, in any split; ties keep the table's order.
    stream = stream.sort_values(["user", "timestamp", "order"], kind="stable").reset_index(drop=True)
    stream, _, _ = remap_ids(stream, "user", "item")
    stream = add_not_cold(add_history(stream))
    frames = by_flag(stream)
    frames["valid_small"] = _valid_small(frames["valid"], spec)
    for split_name, part in frames.items():
        if len(part) == 0:
            fix = ("raise valid_small_frac" if split_name == "valid_small" else
                   f"give it a larger share, e.g. fractions=(0.7, 0.15, 0.15) (now {tuple(spec.fractions)})")
            count = f"{stream['uid'].nunique()} users" if spec.split == "user" else f"{len(stream)} interactions"
            raise ValueError(f"{name}: the {split_name} split is empty: {count} cut by the {spec.split} split "
                             f"leave it no rows; {fix}, or add more data")
    labelled = (f"label column {spec.label!r}" if spec.label else
                f"label = {spec.rating!r} >= threshold {spec.threshold}")
    for split_name, part in frames.items():  # AUC, early stopping and the metrics need both classes
        if part["label"].nunique() < 2:
            fix = "check the label column" if spec.label else "choose a threshold that splits your ratings"
            raise ValueError(f"{name}: every label of the {split_name} split is {int(part['label'].iloc[0])} "
                             f"({labelled}); training and AUC need likes and dislikes in every split: {fix}")
    columns = ["uid", "iid", "label", "timestamp", "his", "his_title", "title", "flag", "not_cold", "user", "item"]
    meta = {
        "protocol": ("docs/protocol.md §2.1 (CoLLM's temporal protocol)" if spec.split == "temporal" else
                     "docs/protocol.md §2.3 (TALLRec's user split)") + " on your own interactions (docs/own_data.md)",
        "spec": plain(spec),  # as read back from meta.json
        "builder_version": BUILDER_VERSION, "source": source or {"rows": rows},
        "duplicates": spec.duplicates, "duplicates_dropped": dropped,  # shown by split_stats
        "seeds": {"valid_small": spec.seed} | ({"user_split": spec.seed} if spec.split == "user" else {}),
        "notes": [
            f"label = {spec.label!r} column" if spec.label else f"label = {spec.rating!r} >= {spec.threshold}",
            "his = every earlier positive of the user in any split, oldest first; ties on (user, timestamp) keep "
            "the table's row order.",
            "uid follows the ascending original user id, iid first appearance in (user, timestamp) order; columns "
            "user / item keep the original ids.",
            (f"train / valid / test: consecutive time ranges with fractions {tuple(spec.fractions)} of the rows; "
             f"valid_small = valid.sample(frac={spec.valid_small_frac}, random_state={spec.seed})."
             if spec.split == "temporal" else
             f"users shuffled by random.Random({spec.seed}) and cut at fractions {tuple(spec.fractions)}: valid and "
             f"test users are unseen in train (cold users); valid_small = all rows of a {spec.valid_small_frac} "
             f"sample of the valid users (seed {spec.seed})."),
            "not_cold = user and item both occur in train.",
            f"one row per (user, item): {dropped} repeated interaction(s) dropped, keeping the "
            f"{'latest' if spec.duplicates == 'last' else 'earliest'} (duplicates={spec.duplicates!r}).",
        ] + notes,
    }
    return make_splits(name, {s: frames[s][columns] for s in SPLIT_NAMES}, meta)


def check_name(name: str) -> None:
    """A dataset name becomes a folder name (processed cache, runs): plain characters only, no built-in name."""
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "_.+=,-" for c in name) \
            or name.startswith("."):
        raise ValueError(f"dataset name {name!r}: use letters, digits and _ . + = , - only (it names folders)")
    if name in DATASETS:
        raise ValueError(f"dataset name {name!r} is a built-in dataset's; choose another name (or rename the folder)")


def save_dataset_folder(folder: str | Path, interactions: pd.DataFrame, titles: pd.DataFrame,
                        spec: InteractionSpec | None = None) -> Path:
    """Write a dataset folder (interactions.csv, items.csv, dataset.json), after checking that it builds: a
    broken table fails here, not in a later notebook. The dataset's name is the folder's name."""
    folder = Path(folder).expanduser().resolve()
    spec = spec or InteractionSpec()
    from_interactions(interactions, titles, spec, folder.name)
    # bytes titles as their text (checked above to be UTF-8): to_csv would write "b'...'"
    titles = titles.assign(**{spec.title: [_title_text(v, i) for v, i in zip(titles[spec.title].tolist(),
                                                                             titles[spec.item].tolist())]})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SPEC).unlink(missing_ok=True)  # written last: a half-written folder is not discovered
    write_frame(folder / INTERACTIONS, interactions)
    write_frame(folder / ITEMS, titles)
    write_json(folder / SPEC, asdict(spec))
    return folder


def folder_source(folder: Path) -> dict:
    """The folder and the size and sha256 of its three files: what a cached build must match."""
    missing = [n for n in FOLDER_FILES if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"dataset folder {folder} lacks {', '.join(missing)}; write it with "
                                f"collm_lib.data.custom.save_dataset_folder ({DOCS})")
    return {"folder": str(folder), **source_record([folder / n for n in FOLDER_FILES])}


def stale_reason(meta: dict, folder: Path) -> str | None:
    """Why a cached build of `folder` no longer matches it (a file changed, another builder), or None."""
    if meta.get("builder_version") != BUILDER_VERSION:
        return f"built by custom builder version {meta.get('builder_version')}, this code is {BUILDER_VERSION}"
    now, then = folder_source(folder), meta.get("source", {})
    changed = [n for n in FOLDER_FILES if (then.get(n) or {}).get("sha256") != now[n]["sha256"]]
    return f"{', '.join(changed)} in {folder} changed since it was built" if changed else None


def _read_csv(path: Path, **options) -> pd.DataFrame:
    """A dataset folder's CSV, read as UTF-8 (not the machine's locale); a file that is not UTF-8 or not a valid CSV
    is a ValueError naming the file, where it breaks and the fix."""
    try:
        return pd.read_csv(path, encoding="utf-8", **options)
    except UnicodeDecodeError as err:
        raise _not_utf8(path, err) from err
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ValueError(f"{path}: not a valid CSV file ({err}); every row must have the header's columns, and a "
                         f"field holding commas, quotes or line breaks must be quoted; {DOCS}") from err


def _not_utf8(path: Path, err: UnicodeDecodeError) -> ValueError:
    """The ValueError for a CSV that is not UTF-8, at the first bad byte's offset in the file."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exact:
        err = exact  # pandas' position is within its read buffer; this one is the file's byte offset
    line = data[:err.start].count(b"\n") + 1 if err.object == data else None
    where = f"byte {err.object[err.start]:#04x} at byte offset {err.start}" + (f" (line {line})" if line else "")
    return ValueError(f"{path}: not UTF-8 text: {where}: {err.reason}. Re-save it as UTF-8, e.g. for a latin-1 file: "
                      f"iconv -f latin1 -t utf-8 {path.name} > {path.stem}.utf8.csv, then replace {path.name} with "
                      f"it; {DOCS}")


def prepare_folder(folder: Path) -> Splits:
    """Build a dataset folder: reads its CSVs as UTF-8 (item ids as text in both, so they always match) and
    dataset.json."""
    folder = Path(folder)
    source = folder_source(folder)
    try:
        spec = InteractionSpec.from_dict(json.loads((folder / SPEC).read_text(encoding="utf-8")))
    except (ValueError, TypeError) as err:
        raise ValueError(f"{folder / SPEC}: not a valid spec ({err}); {DOCS}") from err
    interactions = _read_csv(folder / INTERACTIONS, dtype={spec.item: str})
    titles = _read_csv(folder / ITEMS, dtype={spec.item: str}, keep_default_na=False)
    return from_interactions(interactions, titles, spec, folder.name, source)
