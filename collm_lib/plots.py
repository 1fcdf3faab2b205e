"""Every figure of the project, drawn from result frames; each function returns a Figure and saves nothing.

Styling is seaborn's "whitegrid"/"paper" theme, applied per call through context managers so that importing
this module never changes the caller's rcParams. Each figure names its axes in words, states in its title the
rows and users it rests on, and gives every series its own marker and line style so that equal series stay
visible. Save with `report.save_figure`.
"""
from __future__ import annotations

import functools
import textwrap
from collections.abc import Callable, Iterable
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

# One (marker, line style) per series, in drawing order; markers differ in shape, not only colour.
STYLES = [("o", "-"), ("s", "--"), ("^", "-."), ("D", ":"), ("v", (0, (5, 1))), ("P", (0, (3, 1, 1, 1)))]
KNOB_NAMES = {"ef_search": "efSearch", "nprobe": "nprobe"}  # Faiss's own spelling of each index setting
STAGE_NAMES = {1: "stage 1 (LoRA)", 2: "stage 2 (FECE)"}


def _styled(func: Callable[..., Figure]) -> Callable[..., Figure]:
    """Draw inside seaborn's theme; the contexts restore the caller's rcParams on exit."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.15):
            return func(*args, **kwargs)
    return wrapper


def _require(frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}; the frame has {list(frame.columns)}")


def _users(n: int) -> str:
    return f"{n:,} user{'s' * (n != 1)}"


def _title(fig: Figure, title: str, detail: str) -> None:
    """Bold first line, then the sample sizes (and the caller's subtitle) in a smaller second line."""
    fig.suptitle(title, fontweight="bold")
    if detail:  # supxlabel, so that constrained layout keeps the caption clear of the axis labels
        fig.supxlabel(textwrap.fill(detail, int(fig.get_figwidth() * 15)), fontsize="small", color="0.25")


def _line(ax: Axes, x: Any, y: Any, i: int, label: str, **kw: Any) -> None:
    """One series through seaborn, with the i-th marker and line style."""
    marker, dash = STYLES[i % len(STYLES)]
    sns.lineplot(x=np.asarray(x, float), y=np.asarray(y, float), ax=ax, label=label, marker=marker,
                 linestyle=dash, markersize=7, estimator=None, errorbar=None, sort=True, **kw)


def _note(ax: Axes, text: str) -> None:
    """A caveat as the panel's title (never on top of data); in the middle too when the panel has no line."""
    if ax.lines or ax.collections:
        ax.set_title(text, fontsize="small", color="C3", style="italic")
    else:
        ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize="medium",
                bbox=dict(boxstyle="round", fc="white", ec="0.6"))


def _kept(ax: Axes, x: float, what: str) -> None:
    ax.axvline(x, color="0.35", linestyle="--", linewidth=1.2, label=f"kept {what} ({x:g})")


@_styled
def mf_curve(history: pd.DataFrame, best_epoch: int, *, dataset: str, n_valid_rows: int, n_valid_users: int,
             subtitle: str = "", n_train_rows: int | None = None, n_uauc_users: int | None = None) -> Figure:
    """MF training: training BCE loss per epoch, and validation AUC and UAUC per epoch; kept epoch dashed."""
    _require(history, ["epoch", "loss", "valid_auc", "valid_uauc"], "mf_curve history")
    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    _line(ax_loss, history["epoch"], history["loss"], 0, "training BCE loss", markevery=_every(history))
    _line(ax_auc, history["epoch"], history["valid_auc"], 0, "validation AUC", markevery=_every(history))
    _line(ax_auc, history["epoch"], history["valid_uauc"], 1, "validation UAUC", markevery=_every(history))
    for ax in (ax_loss, ax_auc):
        _kept(ax, best_epoch, "epoch")
        ax.set_xlabel("training epoch")
        ax.legend(loc="best")
    ax_loss.set_ylabel("training BCE loss (mean over the epoch)")
    ax_auc.set_ylabel("validation AUC / UAUC")
    uauc = f"; UAUC over {_users(n_uauc_users)} with both labels" if n_uauc_users is not None else ""
    train = f"training on {n_train_rows:,} rows; " if n_train_rows is not None else ""
    _title(fig, f"Matrix factorisation on {dataset}: {len(history)} epochs, kept epoch {best_epoch}",
           f"{train}validation: {n_valid_rows:,} rows, {_users(n_valid_users)}{uauc}"
           + (f". {subtitle}" if subtitle else ""))
    return fig


def _every(frame: pd.DataFrame) -> int:
    return max(1, len(frame) // 25)  # long MF runs: a marker every few epochs keeps the line readable


@_styled
def stage_curve(history: pd.DataFrame, best_step: int, *, stage: int, dataset: str, n_train_rows: int,
                n_valid_rows: int, n_valid_users: int, subtitle: str = "") -> Figure:
    """Stage 1/2 training: validation AUC per evaluation step (kept step dashed), mean training loss per interval."""
    _require(history, ["step", "loss", "valid_auc"], "stage_curve history")  # lr, seconds: used when present
    hist = pd.DataFrame(history).sort_values("step")
    fig, (ax_auc, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    _line(ax_auc, hist["step"], hist["valid_auc"], 0, "validation AUC")
    # The history's loss is the mean over the steps since the previous evaluation, not the last batch's loss.
    _line(ax_loss, hist["step"], hist["loss"], 1, "mean training loss per interval", color="C3")
    for ax in (ax_auc, ax_loss):
        _kept(ax, best_step, "step")
        ax.set_xlabel("training step")
        ax.legend(loc="best")
        # Steps are counts: start at 0 and leave room right of the last evaluation (often the kept one).
        ax.set_xlim(0, float(hist["step"].max()) * (2 if len(hist) == 1 else 1.06))
        if len(hist) <= 12:
            ax.set_xticks(hist["step"].tolist())
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_auc.set_ylabel("validation AUC")
    ax_loss.set_ylabel("mean training loss\nper evaluation interval")
    name = STAGE_NAMES.get(stage, f"stage {stage}")
    _title(fig, f"{name[0].upper()}{name[1:]} on {dataset}: {len(hist)} evaluation{'s' * (len(hist) != 1)}, "
           f"kept step {best_step}",
           f"training: {n_train_rows:,} rows; validation: {n_valid_rows:,} rows, {_users(n_valid_users)}"
           + (f"; learning rate at the evaluations: {' / '.join(f'{v:.2g}' for v in hist['lr'])}"
              if "lr" in hist and len(hist) <= 6 else "")
           + (f"; {hist['seconds'].max():.0f} s of training" if "seconds" in hist else "")
           + (f". {subtitle}" if subtitle else ""))
    return fig


def _unique(frame: pd.DataFrame, column: str) -> int | None:
    """The one value of a per-row count column (e.g. test_rows), or None when absent or varying."""
    if column not in frame:
        return None
    values = frame[column].dropna().unique()
    return int(values[0]) if len(values) == 1 else None


@_styled
def sweep_curve(frame: pd.DataFrame, x: str, *, x_label: str, title: str, paper: pd.DataFrame | None = None,
                n_test_rows: int | None = None, n_test_users: int | None = None,
                n_uauc_users: int | None = None, log_x: bool = True, show_valid: bool = False) -> Figure:
    """Test AUC and UAUC against a swept setting, ours against the paper's reference (dashed) when given.

    Counts default to the frame's `test_rows` / `uauc_users` columns when those hold a single value.
    """
    _require(frame, [x, "test_auc", "test_uauc"] + (["valid_auc"] if show_valid else []), "sweep_curve frame")
    if paper is not None:
        _require(paper, [x, "auc", "uauc"], "sweep_curve paper")
    n_test_rows = n_test_rows if n_test_rows is not None else _unique(frame, "test_rows")
    n_uauc_users = n_uauc_users if n_uauc_users is not None else _unique(frame, "uauc_users")
    ours = frame.sort_values(x)
    # Shared x: a panel without any line keeps the other panel's scale instead of a meaningless 0..1.
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained", sharex=True)
    for ax, metric, ref_col, name in zip(axes, ("test_auc", "test_uauc"), ("auc", "uauc"), ("AUC", "UAUC")):
        rows = ours.dropna(subset=[metric])
        if len(rows):
            _line(ax, rows[x], rows[metric], 0, f"ours, test {name}")
        if show_valid and metric == "test_auc":
            valid = ours.dropna(subset=["valid_auc"])
            _line(ax, valid[x], valid["valid_auc"], 2, "ours, validation AUC", color="C2")
        if paper is not None:
            ref = paper.sort_values(x)
            _line(ax, ref[x], ref[ref_col], 1, f"paper, test {name}", color="0.45")
        if not len(rows):  # an empty panel would read as a plotting bug; say why instead
            if not ax.lines:
                ax.set_yticks([])
            _note(ax, f"ours: {name} undefined at every setting\n(no test user has both labels)")
        elif name == "UAUC" and n_uauc_users == 1:
            _note(ax, "UAUC over 1 user is that user's AUC:\nsame values as the AUC panel")
        if log_x:
            ax.set_xscale("log")
        values = sorted(set(ours[x].dropna()) | (set(paper[x].dropna()) if paper is not None else set()))
        ax.set_xticks(values, [f"{v:g}" for v in values], rotation=30 if len(values) > 4 else 0)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel(x_label + (" (log scale)" if log_x and "log" not in x_label else ""))
        ax.set_ylabel("test / validation AUC" if show_valid and name == "AUC" else f"test {name}")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best")
    detail = (f"{n_test_rows:,} test rows" if n_test_rows is not None else "test rows: count not given") \
        + (f", {_users(n_test_users)}" if n_test_users is not None else "") \
        + (f"; UAUC over {_users(n_uauc_users)} with both labels" if n_uauc_users is not None else "")
    _title(fig, title, detail + ("; grey dashed: the paper's reported values" if paper is not None else ""))
    return fig


@_styled
def recall_vs_k(table: pd.DataFrame, *, n_users: int, subtitle: str = "", dodge: float = 0.015) -> Figure:
    """Recall@K and NDCG@K per method; methods dodged by `dodge` x the K range so equal curves stay visible."""
    _require(table, ["method", "K", "Recall@K", "NDCG@K"], "recall_vs_k table")
    methods = list(dict.fromkeys(table["method"]))
    ks = sorted(table["K"].unique())
    span = (max(ks) - min(ks)) or 1.0
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2), layout="constrained")
    for ax, metric, word in zip(axes, ("Recall@K", "NDCG@K"), ("Recall", "NDCG")):
        for i, method in enumerate(methods):
            rows = table[table["method"] == method].sort_values("K")
            shift = (i - (len(methods) - 1) / 2) * dodge * span  # horizontal dodge only: values stay exact
            _line(ax, rows["K"] + shift, rows[metric], i, method, alpha=0.9)
        ax.set_xticks(ks, [f"{k:g}" for k in ks])
        ax.set_xlabel("cut-off K (items recommended per user)")
        ax.set_ylabel(f"{word}@K (mean over users)")
        ax.set_ylim(bottom=0)
        # Below the panel: method names are long and any corner of the panel may hold data.
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=1, fontsize="small")
    _title(fig, f"Top-K recommendation on {n_users} test users",
           f"{n_users} users, {len(methods)} methods; points dodged horizontally so equal values stay visible"
           + (f". {subtitle}" if subtitle else ""))
    return fig


# Label offsets in points, tried in turn; odd series start from the opposite side (see _place_labels).
_OFFSETS = [(7, 7), (7, -7), (-7, 7), (-7, -7), (0, 11), (0, -11), (11, 0), (-11, 0), (16, 16), (-16, -16)]


def _place_labels(ax: Axes, points: list[tuple[float, float, str, str, int]]) -> None:
    """Annotate (x, y, text, colour, series) points; each label takes the first offset whose box overlaps no
    marker, no earlier label and not the legend, and stays inside the axes (greedy; no extra package)."""
    fig = ax.figure
    fig.draw_without_rendering()  # runs the layout first, so the display boxes below are the final ones
    inside, pad = ax.get_window_extent(), 6.0
    taken = [Bbox.from_extents(px - pad, py - pad, px + pad, py + pad)
             for px, py in ax.transData.transform([(x, y) for x, y, *_ in points])]
    if ax.get_legend() is not None:
        taken.append(ax.get_legend().get_window_extent())
    for x, y, text, color, series in points:
        offsets = _OFFSETS if series % 2 == 0 else [(-dx, -dy) for dx, dy in _OFFSETS]
        for n, (dx, dy) in enumerate(offsets):
            ann = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize="x-small",
                              color=color, ha="left" if dx > 0 else "right" if dx < 0 else "center",
                              va="bottom" if dy > 0 else "top" if dy < 0 else "center")
            box = ann.get_window_extent()
            free = not any(box.overlaps(b) for b in taken) and inside.contains(box.x0, box.y0) \
                and inside.contains(box.x1, box.y1)
            if free or n == len(offsets) - 1:
                break
            ann.remove()
        taken.append(box)


@_styled
def faiss_tradeoff(sweep: pd.DataFrame, *, k: int, n_queries: int, n_items: int) -> Figure:
    """Recall@k of each Faiss index (vs exact search) against queries per second; points labelled knob=value."""
    _require(sweep, ["kind", "knob", "value", "recall", "queries_per_s"], "faiss_tradeoff sweep")
    fig, ax = plt.subplots(figsize=(7.5, 4.8), layout="constrained")
    labels: list[tuple[float, float, str, str, int]] = []
    for i, (kind, rows) in enumerate(sweep.groupby("kind", sort=False)):
        rows = rows.sort_values("queries_per_s")
        marker, dash = STYLES[i % len(STYLES)]
        knobs = rows["knob"].fillna("").astype(str)
        name = str(kind) if str(kind) == "flat" else str(kind).upper()
        nlist = rows["nlist"].dropna().unique() if "nlist" in rows else []
        name += f", nlist={nlist[0]:g}" if len(nlist) == 1 else ""
        knob = next((kn for kn in knobs if kn), "")
        label = f"{name} ({KNOB_NAMES.get(knob, knob)} varied)" if knob else f"{name} (exact search)"
        if len(rows) > 1:
            sns.lineplot(data=rows, x="queries_per_s", y="recall", ax=ax, sort=False, linestyle=dash,
                         color=f"C{i}", estimator=None, errorbar=None)
        sns.scatterplot(data=rows, x="queries_per_s", y="recall", ax=ax, marker=marker, s=55, color=f"C{i}",
                        label=label, zorder=3)
        for knob, (_, r) in zip(knobs, rows.iterrows()):
            text = f"{KNOB_NAMES.get(knob, knob)}={r['value']:g}" if knob else "exact"
            labels.append((r["queries_per_s"], r["recall"], text, f"C{i}", i))
    ax.set_xscale("log")
    # Plain numbers at 1, 2, 3, 5 x 10^n read better than 3x10^4 on a narrow log range.
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.margins(x=0.12, y=0.1)  # room for the labels at both ends
    ax.set_xlabel("queries per second (log scale)")
    ax.set_ylabel(f"Recall@{k} against exact search")
    ax.legend(title="index", loc="lower left")  # slow and inaccurate: the corner no useful setting occupies
    _title(fig, f"Faiss speed against recall: top-{k} over {n_items:,} MF item vectors",
           f"{n_queries:,} query users, one batch; recall is the overlap with exact top-{k}")
    _place_labels(ax, labels)  # last: the titles change the layout, and the label boxes must see the final one
    return fig


@_styled
def cold_auc_curve(table: pd.DataFrame, *, subtitle: str = "", n_cold_users: int | None = None) -> Figure:
    """AUC on the cold test rows against the number of matched neighbours; 'without matching' as reference."""
    _require(table, ["setting", "subset", "neighbours", "AUC", "rows"], "cold_auc_curve table")
    tab = table.astype({"AUC": float, "neighbours": float})
    cold = tab[tab["subset"] == "cold"]
    curve = cold[cold["neighbours"].notna()].sort_values("neighbours")
    without = cold[cold["setting"] == "without matching"]
    n_cold = int(cold["rows"].max()) if len(cold) and cold["rows"].notna().any() else 0
    everything = tab.loc[tab["subset"] == "all", "rows"]
    total = f" (of {int(everything.iloc[0]):,})" if len(everything) else ""
    fig, ax = plt.subplots(figsize=(7, 4.4), layout="constrained")
    if n_cold == 0 or curve["AUC"].isna().all():
        ax.set_xticks([]), ax.set_yticks([])  # no scale to read: the panel holds only the explanation
        _note(ax, "no cold rows in this sample" if n_cold == 0 else "AUC undefined on the cold rows\n(one label only)")
    else:
        _line(ax, curve["neighbours"], curve["AUC"], 0, "with neighbour matching")
        if len(without) and np.isfinite(without["AUC"].iloc[0]):
            base = float(without["AUC"].iloc[0])
            ax.axhline(base, color="0.4", linestyle="--", label=f"without matching ({base:.3f})")
        ax.set_xticks(curve["neighbours"], [f"{v:g}" for v in curve["neighbours"]])
        ax.legend(loc="best")
    ax.set_xlabel("matched neighbours per cold id")
    ax.set_ylabel("AUC on cold test rows")
    users = f" from {n_cold_users} users" if n_cold_users is not None else ""
    _title(fig, f"Cold-start matching: AUC on {n_cold:,} cold test rows{total}",
           f"{n_cold:,} cold rows{users} (a row is cold when its user or item was unseen in training)"
           + (f". {subtitle}" if subtitle else ""))
    return fig


@_styled
def paired_intervals(diffs: pd.DataFrame, counts: dict[str, tuple[int, int]], *, subtitle: str = "") -> Figure:
    """Paired differences with their intervals (report.paired_differences with a "subset" column: all / warm / cold),
    one panel per metric on one x scale, one line per comparison, a marker per subset; 0 (no difference) drawn.
    `counts`: subset -> (rows, users)."""
    _require(diffs, ["method", "minus", "subset", "metric", "difference", "lo", "hi"], "paired_intervals frame")
    pairs = list(dict.fromkeys(zip(diffs["method"], diffs["minus"])))
    subsets = list(dict.fromkeys(diffs["subset"]))
    metrics_shown = list(dict.fromkeys(diffs["metric"]))
    fig, axes = plt.subplots(1, len(metrics_shown), figsize=(5 * len(metrics_shown) + 2, 1 + 0.55 * len(pairs) * len(subsets)),
                             sharey=True, sharex=True, layout="constrained", squeeze=False)
    for ax, metric in zip(axes[0], metrics_shown):
        for s, subset in enumerate(subsets):
            part = diffs[(diffs["metric"] == metric) & (diffs["subset"] == subset)].set_index(["method", "minus"])
            ys = [p * (len(subsets) + 1) + s for p in range(len(pairs))]
            got = [part.loc[pair] if pair in part.index else None for pair in pairs]
            x = np.array([np.nan if g is None else g["difference"] for g in got], float)
            lo = np.array([np.nan if g is None else g["lo"] for g in got], float)
            hi = np.array([np.nan if g is None else g["hi"] for g in got], float)
            n_rows, n_users = counts[subset]
            ax.errorbar(x, ys, xerr=[x - lo, hi - x], fmt=STYLES[s][0], capsize=3,
                        label=f"{subset} ({n_rows:,} rows, {_users(n_users)})")
        ax.axvline(0, color="0.3", linewidth=1)
        ax.set_xlabel(f"{metric} difference (95 % paired interval)")
        ax.set_title(metric)
    axes[0][0].set_yticks([p * (len(subsets) + 1) + (len(subsets) - 1) / 2 for p in range(len(pairs))],
                          [f"{m}\nminus {o}" for m, o in pairs])
    axes[0][0].invert_yaxis()
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside right center", fontsize="small")
    _title(fig, "CoLLM-FaissRet over each collaborative model, against it and CTRL(DIN), same rows",
           "right of 0: CoLLM-FaissRet ahead; an interval across 0: these rows cannot tell" + (f". {subtitle}" if subtitle else ""))
    return fig
