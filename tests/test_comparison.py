"""Notebook 07's comparison on synthetic per-row scores: tables per method and subset with every seed, paired
differences against the encoder alone, CTRL(DIN) and the no-training baselines, the strongest of each kind, and
their figure."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from collm_lib import comparison, plots  # noqa: E402
from collm_lib.profiles import ComparePlan  # noqa: E402


def _rows(n_users: int = 60, per_user: int = 8, seed: int = 0) -> pd.DataFrame:
    """CoLLM over MF sees the label through little noise (two seeds), CTRL(DIN) through more (two seeds), MF and the
    item positive rate through much (no seed for the rate)."""
    rng = np.random.default_rng(seed)
    uid = np.repeat(np.arange(1, n_users + 1), per_user)
    label = rng.integers(0, 2, uid.size)
    base = pd.DataFrame({"dataset": "toy", "uid": uid, "iid": np.tile(np.arange(per_user), n_users), "label": label,
                         "not_cold": (uid % 3 != 0).astype(int)})
    noise = {("MF", 1): 4.0, ("CoLLM-FaissRet over MF", 1): 0.5, ("CoLLM-FaissRet over MF", 2): 0.6,
             ("CTRL (DIN)", 1): 1.2, ("CTRL (DIN)", 2): 1.4, ("Item positive rate", None): 1.8}
    return pd.concat([base.assign(method=m, seed=s, score=label + rng.normal(0, n, uid.size))
                      for (m, s), n in noise.items()], ignore_index=True).astype({"seed": "Int64"})


def test_table_counts_and_differences_read_the_same_rows_with_every_seed():
    rows = _rows()
    table = comparison.table(rows, seed=1).set_index("method")
    assert list(table.index) == ["MF", "CoLLM-FaissRet over MF", "CTRL (DIN)", "Item positive rate"]
    assert (table["rows"] == 480).all() and (table["users"] == 60).all()
    assert (table["warm users"] == 40).all() and (table["cold users"] == 20).all()  # users 3, 6, ... are cold
    assert table.loc["CTRL (DIN)", "seeds"] == 2 and table.loc["MF", "seeds"] == 1
    assert table.loc["CoLLM-FaissRet over MF", "AUC"] > table.loc["CTRL (DIN)", "AUC"] > table.loc["MF", "AUC"]
    assert table["learned"].all()
    counts = comparison.counts(rows)
    assert counts == {"all": (480, 60), "warm": (320, 40), "cold": (160, 20)}

    diffs = comparison.differences(rows, ComparePlan("smoke", ("mf",), ("mf",)), seed=1)
    assert set(diffs["minus"]) == {"MF", "CTRL (DIN)", "Item positive rate"}
    assert set(diffs["subset"]) == {"all", "warm", "cold"}
    auc = diffs[(diffs["metric"] == "AUC") & (diffs["subset"] == "all")].set_index("minus")
    assert (auc["lo"] > 0).all() and auc["reading"].str.startswith("higher").all()
    assert auc.loc["CTRL (DIN)", "seeds"] == "2 vs 2" and auc.loc["Item positive rate", "seeds"] == "2 vs 1"
    assert (diffs["lo"] <= diffs["difference"]).all() and (diffs["difference"] <= diffs["hi"]).all()
    verdict = comparison.verdict(diffs, table.reset_index())
    assert verdict.set_index("strongest")["minus"].to_dict() == {"trained": "CTRL (DIN)",
                                                                "no-training": "Item positive rate"}
    assert len(verdict) == 4  # two kinds x AUC, UAUC
    unlearned = table.reset_index().assign(learned=lambda t: t["method"] != "CoLLM-FaissRet over MF")
    assert (comparison.verdict(diffs, unlearned)["reading"] == "did not learn at this size").all()

    fig = plots.paired_intervals(diffs, counts)
    assert len(fig.axes) == 2 and "320 rows, 40 users" in " ".join(t.get_text() for t in fig.legends[0].texts)
