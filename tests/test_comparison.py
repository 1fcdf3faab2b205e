"""Notebook 07's comparison on synthetic per-row scores: tables per method and subset, paired differences against
the encoder alone and CTRL(DIN), and their figure."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from collm_lib import comparison, plots  # noqa: E402
from collm_lib.profiles import ComparePlan  # noqa: E402


def _rows(n_users: int = 60, per_user: int = 8, seed: int = 0) -> pd.DataFrame:
    """Three methods on the same rows: CoLLM over MF sees the label through noise, MF and CTRL(DIN) less so."""
    rng = np.random.default_rng(seed)
    uid = np.repeat(np.arange(1, n_users + 1), per_user)
    label = rng.integers(0, 2, uid.size)
    base = pd.DataFrame({"dataset": "toy", "uid": uid, "iid": np.tile(np.arange(per_user), n_users), "label": label,
                         "not_cold": (uid % 3 != 0).astype(int)})
    noise = {"MF": 3.0, "CoLLM-FaissRet over MF": 0.5, "CTRL (DIN)": 3.0}
    return pd.concat([base.assign(method=m, score=label + rng.normal(0, s, uid.size)) for m, s in noise.items()],
                     ignore_index=True)


def test_table_counts_and_differences_read_the_same_rows():
    rows = _rows()
    ctrl = pd.DataFrame({"seed": [1, 2], "AUC": [0.6, 0.62]})
    table = comparison.table(rows, ctrl).set_index("method")
    assert list(table.index) == ["MF", "CoLLM-FaissRet over MF", "CTRL (DIN)"]
    assert (table["rows"] == 480).all() and (table["users"] == 60).all()
    assert (table["warm users"] == 40).all() and (table["cold users"] == 20).all()  # users 3, 6, ... are cold
    assert table.loc["CTRL (DIN)", "seeds"] == 2 and np.isnan(table.loc["MF", "seeds"])
    assert table.loc["CoLLM-FaissRet over MF", "AUC"] > table.loc["MF", "AUC"]
    counts = comparison.counts(rows)
    assert counts == {"all": (480, 60), "warm": (320, 40), "cold": (160, 20)}

    diffs = comparison.differences(rows, ComparePlan("smoke", ("mf",), ("mf",)), seed=1)
    assert set(diffs["minus"]) == {"MF", "CTRL (DIN)"} and set(diffs["subset"]) == {"all", "warm", "cold"}
    auc = diffs[(diffs["metric"] == "AUC") & (diffs["subset"] == "all")].set_index("minus")
    assert (auc["lo"] > 0).all() and auc["reading"].str.startswith("higher").all()
    assert (diffs["lo"] <= diffs["difference"]).all() and (diffs["difference"] <= diffs["hi"]).all()
    verdict = comparison.verdict(diffs)
    assert set(verdict["subset"]) == {"all", "warm", "cold"} and len(verdict) == 6  # 3 subsets x AUC, UAUC

    fig = plots.paired_intervals(diffs, counts)
    assert len(fig.axes) == 2 and "320 rows, 40 users" in " ".join(t.get_text() for t in fig.legends[0].texts)
