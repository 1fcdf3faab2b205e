"""collm_lib.plots on small synthetic frames: the reviewer's complaints, each as a check that would fail."""
from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from collm_lib import plots  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def mf_history(n: int = 12) -> pd.DataFrame:
    epoch = np.arange(1, n + 1)
    return pd.DataFrame({"epoch": epoch, "loss": 0.7 / epoch ** 0.3, "valid_auc": 0.5 + 0.01 * epoch,
                         "valid_uauc": 0.5 + 0.008 * epoch})


def stage_history() -> pd.DataFrame:
    return pd.DataFrame({"step": [20, 40, 60], "loss": [0.9, 0.7, 0.6], "valid_auc": [0.6, 0.7, 0.68],
                         "lr": [6e-4, 3e-4, 8e-5], "seconds": [100.0, 200.0, 300.0]})


def sweep_frame(uauc=(0.60, 0.62, 0.61)) -> pd.DataFrame:
    return pd.DataFrame({"lr": [1e-4, 3e-4, 1e-3], "test_auc": [0.61, 0.64, 0.63], "test_uauc": list(uauc),
                         "valid_auc": [0.55, 0.6, 0.58]})


def paper_frame() -> pd.DataFrame:
    return pd.DataFrame({"lr": [1e-4, 3e-4, 1e-3], "auc": [0.72, 0.75, 0.73], "uauc": [0.68, 0.70, 0.69]})


def rerank_table() -> pd.DataFrame:
    rows = []
    for method in ("MF exact top-K", "Faiss top-K (MF order)", "Faiss top-K + LLM re-rank"):
        for k, recall, ndcg in ((10, 0.03, 0.04), (20, 0.04, 0.043), (50, 0.07, 0.05)):
            bump = 0.01 if method.endswith("re-rank") else 0.0  # the first two methods are identical
            rows.append({"method": method, "K": k, "Recall@K": recall + bump, "NDCG@K": ndcg, "users": 20})
    return pd.DataFrame(rows)


def faiss_sweep() -> pd.DataFrame:
    rows = [{"kind": "flat", "knob": "", "value": np.nan, "recall": 1.0, "queries_per_s": 46000.0}]
    rows += [{"kind": "ivf", "knob": "nprobe", "value": v, "recall": r, "queries_per_s": q}
             for v, r, q in ((1, 0.11, 118000), (8, 0.59, 74000), (16, 0.79, 57500), (32, 0.94, 43200))]
    rows += [{"kind": "hnsw", "knob": "ef_search", "value": v, "recall": r, "queries_per_s": q}
             for v, r, q in ((16, 0.84, 60500), (64, 0.945, 39800), (128, 0.97, 27600))]
    return pd.DataFrame(rows)


def cold_table(cold_rows: int = 311) -> pd.DataFrame:
    rows = []
    settings = (("without matching", np.nan), ("matching, 1 neighbours", 1.0), ("matching, 10 neighbours", 10.0))
    for setting, n in settings:
        for subset, count, auc in (("all", 455, 0.69), ("warm", 455 - cold_rows, 0.80), ("cold", cold_rows, 0.64)):
            auc = auc + (0.01 * n if subset == "cold" and not np.isnan(n) else 0.0)
            rows.append({"setting": setting, "neighbours": n, "subset": subset, "rows": count,
                         "AUC": auc if count else np.nan, "UAUC": np.nan, "UAUC users": 0})
    return pd.DataFrame(rows)


def texts(fig: Figure) -> str:
    """Everything a reader sees as words: figure title, caption line, panel titles, annotations."""
    parts = [fig._suptitle.get_text() if fig._suptitle else "", fig._supxlabel.get_text() if fig._supxlabel else ""]
    for ax in fig.axes:
        parts += [ax.get_title()] + [t.get_text() for t in ax.texts]
    return "\n".join(parts)


def check_axes_and_legends(fig: Figure, *frames: pd.DataFrame) -> None:
    columns = {c for f in frames for c in f.columns}
    for ax in fig.axes:
        for label in (ax.get_xlabel(), ax.get_ylabel()):
            assert label.strip(), "an axis has no label"
            assert label not in columns and not re.fullmatch(r"[a-z]+(_[a-z]+)+", label), f"raw column name {label!r}"
        series = ax.get_legend_handles_labels()[1]
        if len(ax.lines) > 1 or len(series) > 1:
            assert ax.get_legend() is not None, f"panel {ax.get_ylabel()!r} has several lines and no legend"


def test_mf_curve_labels_counts_and_kept_epoch():
    hist = mf_history()
    fig = plots.mf_curve(hist, 9, dataset="ML-1M", n_valid_rows=455, n_valid_users=15, n_uauc_users=7)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    check_axes_and_legends(fig, hist)
    words = texts(fig)
    assert "455 rows" in words and "15 users" in words and "7 users" in words
    for ax in fig.axes:  # the kept epoch is marked and named on both panels
        assert any("kept epoch" in label for label in ax.get_legend_handles_labels()[1])


def test_stage_curve_names_the_mean_interval_loss():
    hist = stage_history()
    fig = plots.stage_curve(hist, 40, stage=2, dataset="ML-1M", n_train_rows=320, n_valid_rows=103, n_valid_users=6)
    check_axes_and_legends(fig, hist)
    assert any("mean training loss" in ax.get_ylabel() and "per evaluation interval" in ax.get_ylabel()
               for ax in fig.axes)
    assert "training step" in {ax.get_xlabel() for ax in fig.axes}
    words = texts(fig)
    assert "320 rows" in words and "103 rows" in words and "6 users" in words


def test_sweep_curve_counts_paper_markers_and_log_axis():
    frame, paper = sweep_frame(), paper_frame()
    fig = plots.sweep_curve(frame, "lr", x_label="learning rate", title="(a) LoRA lr", paper=paper,
                            n_test_rows=455, n_test_users=15, n_uauc_users=7)
    check_axes_and_legends(fig, frame, paper)
    words = texts(fig)
    assert "455 test rows" in words and "15 users" in words and "7 users with both labels" in words
    for ax in fig.axes:
        assert ax.get_xscale() == "log" and "learning rate" in ax.get_xlabel()
        lines = {line.get_label(): line for line in ax.lines}
        ours = next(v for k, v in lines.items() if k.startswith("ours"))
        ref = next(v for k, v in lines.items() if k.startswith("paper"))
        assert ours.get_marker() != ref.get_marker() and ours.get_linestyle() != ref.get_linestyle()


def test_sweep_curve_one_user_uauc_is_flagged():
    frame = sweep_frame().assign(test_rows=45, uauc_users=1)
    fig = plots.sweep_curve(frame, "lr", x_label="learning rate", title="t")
    words = texts(fig)
    assert "45 test rows" in words and "1 user " in words  # counts taken from the frame's columns
    assert "that user's AUC" in words


@pytest.mark.parametrize("paper", [None, paper_frame()])
def test_sweep_curve_all_nan_uauc_says_so(paper):
    frame = sweep_frame(uauc=(np.nan, np.nan, np.nan))
    fig = plots.sweep_curve(frame, "lr", x_label="learning rate", title="t", paper=paper, n_test_rows=32,
                            n_uauc_users=0)
    uauc_ax = fig.axes[1]
    assert "undefined" in uauc_ax.get_title() + " ".join(t.get_text() for t in uauc_ax.texts)
    assert not any(line.get_label().startswith("ours") for line in uauc_ax.lines)
    check_axes_and_legends(fig, frame)


def test_recall_vs_k_identical_methods_stay_visible():
    table = rerank_table()
    fig = plots.recall_vs_k(table, n_users=20)
    check_axes_and_legends(fig, table)
    assert "20" in fig._suptitle.get_text() and "users" in fig._suptitle.get_text()
    for ax in fig.axes:
        assert ax.get_legend() is not None  # legends on both panels, not only one
        lines = [line for line in ax.lines if not line.get_label().startswith("_")]
        assert len(lines) == 3
        assert len({line.get_marker() for line in lines}) == 3
        assert len({str(line.get_linestyle()) for line in lines}) == 3
        a, b = lines[0], lines[1]  # identical values: drawn at slightly different x so neither hides the other
        np.testing.assert_allclose(a.get_ydata(), b.get_ydata())
        assert not np.allclose(a.get_xdata(), b.get_xdata())


def test_faiss_tradeoff_names_knobs_without_overlap():
    sweep = faiss_sweep()
    fig = plots.faiss_tradeoff(sweep, k=50, n_queries=740, n_items=3255)
    check_axes_and_legends(fig, sweep)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    labels = [t for t in ax.texts if "=" in t.get_text() or t.get_text() == "exact"]
    names = {t.get_text() for t in labels}
    assert {"nprobe=1", "nprobe=32", "efSearch=16", "efSearch=128"} <= names
    assert all(re.fullmatch(r"(nprobe|efSearch)=\d+|exact", n) for n in names)
    fig.draw_without_rendering()
    boxes = [t.get_window_extent() for t in labels]
    overlaps = [(labels[i].get_text(), labels[j].get_text()) for i in range(len(boxes))
                for j in range(i + 1, len(boxes)) if boxes[i].overlaps(boxes[j])]
    assert not overlaps, f"point labels overlap: {overlaps}"
    words = texts(fig)
    assert "740" in words and "3,255" in words


def test_cold_auc_curve_reference_and_counts():
    table = cold_table()
    fig = plots.cold_auc_curve(table, n_cold_users=3)
    check_axes_and_legends(fig, table)
    assert "311 cold test rows" in fig._suptitle.get_text()
    assert "3 users" in texts(fig)
    assert any("without matching" in label for label in fig.axes[0].get_legend_handles_labels()[1])


def test_cold_auc_curve_without_cold_rows():
    fig = plots.cold_auc_curve(cold_table(cold_rows=0))
    assert "no cold rows in this sample" in texts(fig)
    assert "0 cold test rows" in fig._suptitle.get_text()


CALLS = {
    "mf": (lambda f: plots.mf_curve(f, 3, dataset="d", n_valid_rows=1, n_valid_users=1), mf_history, "valid_uauc"),
    "stage": (lambda f: plots.stage_curve(f, 20, stage=1, dataset="d", n_train_rows=1, n_valid_rows=1,
                                          n_valid_users=1), stage_history, "valid_auc"),
    "sweep": (lambda f: plots.sweep_curve(f, "lr", x_label="lr", title="t"), sweep_frame, "test_uauc"),
    "rerank": (lambda f: plots.recall_vs_k(f, n_users=2), rerank_table, "NDCG@K"),
    "faiss": (lambda f: plots.faiss_tradeoff(f, k=5, n_queries=1, n_items=1), faiss_sweep, "queries_per_s"),
    "cold": (lambda f: plots.cold_auc_curve(f), cold_table, "neighbours"),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_missing_column_is_named(name):
    call, make, column = CALLS[name]
    with pytest.raises(ValueError, match=re.escape(repr(column))):
        call(make().drop(columns=[column]))


def test_paper_frame_missing_column_is_named():
    with pytest.raises(ValueError, match="'uauc'"):
        plots.sweep_curve(sweep_frame(), "lr", x_label="lr", title="t", paper=paper_frame().drop(columns=["uauc"]))


def test_styling_does_not_leak_into_callers_rcparams():
    before = {k: matplotlib.rcParams[k] for k in ("axes.facecolor", "font.size", "axes.grid", "lines.linewidth")}
    plots.mf_curve(mf_history(), 3, dataset="d", n_valid_rows=10, n_valid_users=2)
    assert {k: matplotlib.rcParams[k] for k in before} == before
