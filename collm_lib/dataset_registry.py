"""The built-in datasets by name: each one's raw folder, builder (a function of a module of collm_lib/data/) and
description. Torch-free and apart from the data package, so that configuration (configs.PrepareConfig, profiles)
and data/custom.py read the names without loading the datasets' code."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    folder: str  # sub-folder of the data dir holding the raw files
    builder: str  # "module:function" of collm_lib/data/, taking the folder and returning Splits
    description: str


DATASETS: dict[str, DatasetInfo] = {
    "ml-1m": DatasetInfo("ml-1m-collm", "movielens:load_collm",
                         "MovieLens-1M, CoLLM's released processed splits (docs/protocol.md §2.1)"),
    "ml-1m-raw": DatasetInfo("ml-1m-raw", "movielens:prepare_raw",
                             "MovieLens-1M, CoLLM's temporal protocol (docs/protocol.md §2.1) from raw ratings.dat"),
    "bookcrossing": DatasetInfo("bookcrossing-raw", "bookcrossing:prepare_single",
                                "BookCrossing, TALLRec's protocol (docs/protocol.md §2.3), one target per user"),
    "bookcrossing-multi": DatasetInfo("bookcrossing-raw", "bookcrossing:prepare_multi",
                                      "BookCrossing, several targets per user: UAUC defined (docs/protocol.md §2.3)"),
    "amazon-book": DatasetInfo("amazon-book", "amazon:prepare_amazon_book",
                               "Amazon-Book, CoLLM's protocol (docs/protocol.md §2.2) from the 2018 raw files"),
    "amazon-book-msl": DatasetInfo("amazon-book-msl", "amazon:prepare_msl",
                                   "SUBSTITUTE: MSL's Amazon Books windows (docs/protocol.md §2.4)"),
}
