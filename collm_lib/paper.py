"""The paper's reported numbers, the one place they live: Table 1 and Figure 3 (Vicuna-7B).

Every comparison in the notebooks, tables and figures reads them from here; docs/protocol.md says where each
comes from and why our runs differ.
"""
from __future__ import annotations

import pandas as pd

TABLE1 = {  # (method, dataset) -> (AUC, UAUC), Table 1
    ("MF", "ml-1m"): (0.6482, 0.6361), ("MF", "amazon-book"): (0.7134, 0.5565),
    ("MF", "bookcrossing"): (0.6173, 0.5478),
    ("CTRL (DIN)", "ml-1m"): (0.7159, 0.6492), ("CTRL (DIN)", "amazon-book"): (0.8202, 0.5996),
    ("CTRL (DIN)", "bookcrossing"): (0.7129, 0.5923),
    ("TALLRec", "ml-1m"): (0.7097, 0.6818), ("TALLRec", "amazon-book"): (0.7375, 0.5983),
    ("TALLRec", "bookcrossing"): (0.6347, 0.6017),
    ("CoLLM-FaissRet", "ml-1m"): (0.7295, 0.6875), ("CoLLM-FaissRet", "amazon-book"): (0.8109, 0.6225),
    ("CoLLM-FaissRet", "bookcrossing"): (0.6947, 0.6362),
}

FIGURE3_LRS = (1e-4, 3e-4, 5e-4, 7e-4, 1e-3)  # Figure 3's learning-rate grid

_FIGURE3 = {  # (panel, dataset, what is swept) -> (AUCs, UAUCs) over FIGURE3_LRS, read off the paper's plots
    ("a", "ml-1m", "LoRA lr"): ((0.7192, 0.7479, 0.7313, 0.7297, 0.7295), (0.6775, 0.6999, 0.6760, 0.6782, 0.6874)),
    ("b", "amazon-book", "FECE lr"): ((0.7994, 0.8002, 0.8316, 0.8380, 0.8112),
                                      (0.6215, 0.6210, 0.6390, 0.6451, 0.6226)),
}


def table1(method: str, dataset: str | None) -> tuple[float | None, float | None]:
    """The paper's (AUC, UAUC) of `method` on `dataset`; (None, None) where the paper reports none."""
    return TABLE1.get((method, dataset), (None, None))


def figure3() -> pd.DataFrame:
    """Figure 3's learning-rate sweeps: one row per (panel, lr) with columns panel, dataset, swept, lr, auc, uauc."""
    rows = [{"panel": panel, "dataset": dataset, "swept": swept, "lr": lr, "auc": auc, "uauc": uauc}
            for (panel, dataset, swept), (aucs, uaucs) in _FIGURE3.items()
            for lr, auc, uauc in zip(FIGURE3_LRS, aucs, uaucs)]
    return pd.DataFrame(rows)
