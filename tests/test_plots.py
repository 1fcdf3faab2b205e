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


def sweep_frame(uauc=(0.60, 0.62, 0.61), auc=(0.61, 0.64, 0.63), resolved=(False, True, False)) -> pd.DataFrame:
    """figure3.points' shape: each point with its interval, and whether it differs from the previous setting."""
    frame = pd.DataFrame({"lr": [1e-4, 3e-4, 1e-3], "test_auc": list(auc), "test_uauc": list(uauc),
                          "valid_auc": [0.55, 0.6, 0.58], "resolved from previous": list(resolved)})
    for metric in ("test_auc", "test_uauc"):
        frame[f"{metric}_lo"], frame[f"{metric}_hi"] = frame[metric] - 0.02, frame[metric] + 0.02
    return frame


def ours(ax):
    """The error-bar series of ours in a sweep panel (its label is the container's)."""
    return next(c for c in ax.containers if c.get_label().startswith("ours"))


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
        ref = next(line for line in ax.lines if line.get_label().startswith("paper"))
        assert ours(ax)[0].get_marker() != ref.get_marker() and "95 % CI" in ours(ax).get_label()
        assert len(ours(ax)[2][0].get_segments()) == 3, "an interval per point"


def test_sweep_curve_joins_only_settings_whose_difference_is_resolved():
    fig = plots.sweep_curve(sweep_frame(resolved=(False, True, False)), "lr", x_label="learning rate", title="t",
                            n_test_rows=7331, n_test_users=839)
    joined = [line for line in fig.axes[0].lines if len(line.get_xdata()) == 2 and line.get_label().startswith("_")]
    assert [tuple(line.get_xdata()) for line in joined] == [(1e-4, 3e-4)], "one segment: the resolved step"
    bare = plots.sweep_curve(sweep_frame(resolved=(False, False, False)), "lr", x_label="learning rate", title="t")
    assert not [line for line in bare.axes[0].lines if len(line.get_xdata()) == 2 and line.get_label().startswith("_")]
    assert "only where their paired AUC difference is resolved" in flat(fig)


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
    assert not uauc_ax.containers
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


# --- The second review: chance lines and honest AUC scales, the paper as reference markers, sample sizes and
# --- few-user caveats on the panels, Recall@K's one-item step.

def flat(fig: Figure) -> str:
    """texts(fig) with the caption's line wrapping undone."""
    return " ".join(texts(fig).split())


def zoomed_stage_history(aucs=(0.4971, 0.4773, 0.4836)) -> pd.DataFrame:
    """Stage 1 on ML-1M under cpu: three evaluations within 0.02 of each other, all just under chance."""
    return pd.DataFrame({"step": [50, 100, 150], "loss": [1.63, 0.76, 0.70], "valid_auc": list(aucs)})


def chance_line(ax) -> bool:
    """A thin grey dotted horizontal line at AUC 0.5, named "chance" in the panel's legend."""
    lines = [ln for ln in ax.lines if ln.get_label() == "chance" and np.allclose(ln.get_ydata(), 0.5)
             and ln.get_linestyle() == ":"]
    legend = ax.get_legend()
    return bool(lines) and legend is not None and "chance" in [t.get_text() for t in legend.get_texts()]


def auc_axes(name: str, aucs=(0.4971, 0.4773, 0.4836)):
    """The AUC panels each curve function draws."""
    if name == "stage":
        return plots.stage_curve(zoomed_stage_history(aucs), 50, stage=1, dataset="ml-1m", n_train_rows=1200,
                                 n_valid_rows=262, n_valid_users=22).axes[:1]
    if name == "mf":
        hist = mf_history().assign(valid_auc=lambda f: aucs[0] + 0.0005 * f["epoch"],
                                   valid_uauc=lambda f: aucs[1] + 0.0005 * f["epoch"])
        return plots.mf_curve(hist, 9, dataset="d", n_valid_rows=455, n_valid_users=15).axes[1:]
    if name == "sweep":
        frame = sweep_frame(uauc=aucs, auc=aucs)
        return plots.sweep_curve(frame, "lr", x_label="learning rate", title="t", n_test_rows=455,
                                 n_test_users=15).axes
    table = cold_table()
    table.loc[table["subset"] == "cold", "AUC"] = aucs[0]
    table.loc[(table["subset"] == "cold") & (table["neighbours"] == 10), "AUC"] = aucs[1]
    return plots.cold_auc_curve(table, n_cold_users=25).axes


@pytest.mark.parametrize("aucs", [(0.4971, 0.4773, 0.4836), (0.748, 0.752, 0.755)], ids=["near-chance", "near-0.75"])
@pytest.mark.parametrize("name", ["stage", "mf", "sweep", "cold"])
def test_auc_panels_hold_chance_on_a_readable_scale(name, aucs):
    for ax in auc_axes(name, aucs):
        lo, hi = ax.get_ylim()
        assert lo <= 0.5 <= hi and hi - lo >= 0.1, f"{name}: AUC axis {lo:.3f}..{hi:.3f} hides chance or zooms"
        assert lo >= 0.0 and hi <= 1.02
        assert lo < min(aucs) and hi > max(aucs), "every point inside the panel"
        assert chance_line(ax), f"{name}: no dotted 'chance' line at 0.5 in the legend"


def test_sweep_curve_panels_share_the_auc_scale_and_paper_is_markers_only():
    frame, paper = sweep_frame(uauc=(0.44, 0.47, 0.50)), paper_frame()
    fig = plots.sweep_curve(frame, "lr", x_label="learning rate", title="t", paper=paper, n_test_rows=455,
                            n_test_users=15, n_uauc_users=12)
    auc_ax, uauc_ax = fig.axes
    assert auc_ax.get_ylim() == uauc_ax.get_ylim()
    lo, hi = auc_ax.get_ylim()
    assert lo < 0.44 and hi > 0.75  # ours and the paper's, both panels, on the one scale
    for ax in fig.axes:
        ref = next(line for line in ax.lines if line.get_label().startswith("paper"))
        assert ref.get_linestyle() == "None" and ref.get_marker() not in (None, "", "None")
        assert ref.get_markerfacecolor() == "none"  # hollow
        assert matplotlib.colors.to_rgb(ref.get_markeredgecolor()) == (0.0, 0.0, 0.0)
    words = flat(fig)
    assert "455 test rows" in words and "15 users" in words and "hollow black" in words
    assert "indicative only" not in words  # 455 rows, 15 users, 12 UAUC users: no caveat


def test_sweep_curve_thin_sample_is_flagged_on_the_panels():
    frame = sweep_frame().assign(test_rows=32, uauc_users=1)
    fig = plots.sweep_curve(frame, "lr", x_label="learning rate", title="t", paper=paper_frame(), n_test_users=1)
    assert "ours: 32 rows, 1 user — indicative only" in fig.axes[0].get_title()
    assert "that user's AUC" in fig.axes[1].get_title()
    assert "32 test rows, 1 user" in fig._supxlabel.get_text()
    few_uauc = plots.sweep_curve(sweep_frame(), "lr", x_label="learning rate", title="t", n_test_rows=455,
                                 n_test_users=15, n_uauc_users=7)
    assert few_uauc.axes[0].get_title() == ""  # AUC rests on 455 rows, 15 users
    assert "UAUC over 7 users — indicative only" in few_uauc.axes[1].get_title()


def test_stage_curve_rings_the_kept_point_and_flags_a_thin_validation_sample():
    fig = plots.stage_curve(zoomed_stage_history(), 50, stage=1, dataset="ml-1m", n_train_rows=1200,
                            n_valid_rows=262, n_valid_users=22)
    ax_auc = fig.axes[0]
    labels = ax_auc.get_legend_handles_labels()[1]
    assert "kept step (50, validation AUC 0.497)" in labels
    assert any(line.get_marker() == "o" and line.get_markerfacecolor() == "none"
               and np.allclose(line.get_xydata(), [[50, 0.4971]]) for line in ax_auc.lines)
    assert any("262 rows, 22 users" in label for label in labels)
    assert "262 rows, 22 users" in flat(fig) and "indicative only" not in flat(fig)
    thin = plots.stage_curve(zoomed_stage_history(), 50, stage=1, dataset="ml-1m", n_train_rows=160,
                             n_valid_rows=66, n_valid_users=4)
    assert "validation: 66 rows, 4 users — indicative only" in thin.axes[0].get_title()


def test_recall_vs_k_states_relevant_items_and_the_one_item_step():
    table = rerank_table()
    fig = plots.recall_vs_k(table, n_users=20, n_relevant=197, min_relevant=1)
    words = flat(fig)
    assert "20 users, 197 relevant test items" in words and "fewest per user: 1" in words
    assert "1/(20 × that user's count)" in words and "0.050" in words
    recall_ax = fig.axes[0]
    bar = [t for t in recall_ax.texts if "one item of one user" in t.get_text()]
    assert bar and "0.050" in bar[0].get_text()
    assert recall_ax.get_ylim()[1] >= 0.05 * 1.2  # the bar fits inside the panel
    assert not any("one item" in t.get_text() for t in fig.axes[1].texts)  # NDCG's step is not 1/n
    only_total = flat(plots.recall_vs_k(table, n_users=20, n_relevant=197))
    assert "197 relevant test items" in only_total and "at most 1/20 = 0.050" in only_total
    plain = flat(plots.recall_vs_k(table, n_users=20))  # old calls: unchanged, no claim about items
    assert "relevant test items" not in plain and "one item" not in plain


def test_recall_vs_k_step_taller_than_the_data_raises_the_axis():
    fig = plots.recall_vs_k(rerank_table(), n_users=2, n_relevant=5, min_relevant=1)
    assert fig.axes[0].get_ylim()[1] >= 0.5  # one item of one of 2 users: 0.5, taller than every point
    assert "2 users — indicative only" in fig.axes[0].get_title()


def test_cold_auc_curve_counts_per_subset_and_few_cold_users():
    assert "cold: 3 users — not a finding" in plots.cold_auc_curve(cold_table(), n_cold_users=3).axes[0].get_title()
    assert "not a finding" not in flat(plots.cold_auc_curve(cold_table(), n_cold_users=25))
    counts = {"all": (455, 20), "warm": (144, 17), "cold": (311, 3)}
    fig = plots.cold_auc_curve(cold_table(), counts=counts)
    assert "cold: 3 users — not a finding" in fig.axes[0].get_title()
    words = flat(fig)
    assert "311 cold rows from 3 users" in words and "warm: 144 rows, 17 users" in words \
        and "all: 455 rows, 20 users" in words
    many = plots.cold_auc_curve(cold_table(), counts={**counts, "cold": (311, 25)})
    assert "not a finding" not in flat(many) and "from 25 users" in flat(many)


def intervals_frame() -> pd.DataFrame:
    rows = []
    for subset in ("all", "warm", "cold"):
        for minus in ("MF", "CTRL (DIN)"):
            for metric in ("AUC", "UAUC"):
                rows.append({"method": "CoLLM-FaissRet over MF", "minus": minus, "subset": subset, "metric": metric,
                             "difference": 0.02, "lo": -0.01, "hi": 0.05})
    return pd.DataFrame(rows)


def test_paired_intervals_shows_counts_and_flags_few_users():
    counts = {"all": (7331, 320), "warm": (4153, 264), "cold": (40, 3)}
    fig = plots.paired_intervals(intervals_frame(), counts)
    for ax in fig.axes:
        assert "cold: 3 users — not a finding" in ax.get_title()
    words = flat(fig)
    assert "all: 7,331 rows, 320 users" in words and "cold: 40 rows, 3 users" in words
    fine = plots.paired_intervals(intervals_frame(), {**counts, "cold": (3178, 97)})
    assert "not a finding" not in texts(fine)
    assert [ax.get_title() for ax in fine.axes] == ["AUC", "UAUC"]


def test_stage_curve_draws_each_evaluations_interval():
    hist = stage_history()
    intervals = pd.DataFrame({"step": hist["step"], "valid_auc": hist["valid_auc"], "lo": hist["valid_auc"] - 0.03,
                              "hi": hist["valid_auc"] + 0.03})
    fig = plots.stage_curve(hist, 40, stage=2, dataset="ML-1M", n_train_rows=320, n_valid_rows=2063,
                            n_valid_users=128, intervals=intervals)
    bars = [c for c in fig.axes[0].containers if "95 % interval" in c.get_label()]
    assert bars and len(bars[0][2][0].get_segments()) == len(hist)
    assert fig.axes[0].get_ylim()[1] >= intervals["hi"].max()


def _curve_run(tmp_path, steps: dict[int, float], kept: int, with_curve: bool = True):
    """A finished stage run folder with results.json and, if asked, the per-row valid scores of each evaluation
    (stages.CURVE_FILE), each step's scores seeing the label with the given strength."""
    from collm_lib import stages
    from collm_lib.io import write_json
    rng = np.random.default_rng(0)
    uid = np.repeat(np.arange(1, 81), 6)
    label = rng.integers(0, 2, uid.size)
    frames = [pd.DataFrame({"uid": uid, "iid": np.arange(uid.size), "label": label, "not_cold": 1, "step": step,
                            "score": strength * label + rng.normal(size=uid.size)}) for step, strength in steps.items()]
    write_json(tmp_path / "results.json", {"fit": {"best_step": kept}})
    if with_curve:
        pd.concat(frames).to_csv(tmp_path / stages.CURVE_FILE, index=False)
    return tmp_path


def test_curve_intervals_hold_each_step_and_its_difference_to_the_kept_one(tmp_path):
    from collm_lib import stages
    curve = stages.curve_intervals(_curve_run(tmp_path, {50: 1.5, 100: 0.0}, kept=50), seed=1).set_index("step")
    assert (curve["lo"] <= curve["valid_auc"]).all() and (curve["valid_auc"] <= curve["hi"]).all()
    assert curve.loc[50, "lo"] > 0.5 >= curve.loc[100, "lo"] and pd.isna(curve.loc[50, "minus kept"])
    assert curve.loc[100, "minus kept hi"] < 0 and curve.loc[50, "users"] == 80


def test_curve_intervals_of_older_runs_are_empty_or_without_the_difference(tmp_path):
    from collm_lib import stages
    older = stages.curve_intervals(_curve_run(tmp_path / "a", {50: 1.0}, kept=50, with_curve=False), seed=1)
    assert older.empty and {"step", "lo", "hi"} <= set(older.columns)
    plots.stage_curve(stage_history(), 40, stage=2, dataset="d", n_train_rows=1, n_valid_rows=1, n_valid_users=1,
                      intervals=older)  # draws, without intervals
    resumed = stages.curve_intervals(_curve_run(tmp_path / "b", {100: 1.0}, kept=50), seed=1)
    assert len(resumed) == 1 and pd.isna(resumed["minus kept"]).all() and resumed["lo"].iloc[0] > 0.5
