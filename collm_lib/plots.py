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


def _kept(ax: Axes, x: float, what: str, value: float | None = None, metric: str = "AUC") -> None:
    """The kept step / epoch: a dashed vertical line; with `value`, a ring round the kept point and its value named."""
    shown = value is not None and np.isfinite(value)
    ax.axvline(x, color="0.35", linestyle="--", linewidth=1.2,
               label=f"kept {what} ({x:g}" + (f", {metric} {value:.3f})" if shown else ")"))
    if shown:
        ax.plot([x], [value], linestyle="none", marker="o", markersize=14, markerfacecolor="none",
                markeredgecolor="0.15", markeredgewidth=1.4, zorder=4, label="_kept point")


CHANCE = 0.5  # AUC of a random ranking
FEW_ROWS, FEW_USERS = 100, 10  # below either, a point is one sample's accident more than a measurement


def _auc_limits(values: Iterable[float], margin: float = 0.03) -> tuple[float, float]:
    """An AUC scale that always holds chance (0.5) and at least 0.45..0.55, so that a 0.005 wiggle is never
    blown up to the panel's height: from min(0.45, lowest - margin) to max(highest + margin, 0.55), within 0..1."""
    v = np.asarray(list(values), float)
    v = v[np.isfinite(v)]
    lo = min(0.45, float(v.min()) - margin) if v.size else 0.45
    hi = max(0.55, float(v.max()) + margin) if v.size else 0.55
    return max(lo, -0.01), min(hi, 1.01)


def _chance(ax: Axes) -> None:
    ax.axhline(CHANCE, color="0.4", linestyle=":", linewidth=1.2, label="chance", zorder=1)


def _auc_axis(ax: Axes, values: Iterable[float], limits: tuple[float, float] | None = None) -> None:
    """Chance line (thin grey dotted, "chance" in the legend) and the AUC scale of `_auc_limits`."""
    _chance(ax)
    ax.set_ylim(*(limits if limits is not None else _auc_limits(values)))


def _few(n_rows: int | None, n_users: int | None) -> bool:
    return (n_rows is not None and n_rows < FEW_ROWS) or (n_users is not None and n_users < FEW_USERS)


def _sample(n_rows: int | None, n_users: int | None) -> str:
    """'32 rows, 1 user' from whichever counts are known."""
    return ", ".join(([f"{n_rows:,} row{'s' * (n_rows != 1)}"] if n_rows is not None else [])
                     + ([_users(n_users)] if n_users is not None else []))


@_styled
def mf_curve(history: pd.DataFrame, best_epoch: int, *, dataset: str, n_valid_rows: int, n_valid_users: int,
             subtitle: str = "", n_train_rows: int | None = None, n_uauc_users: int | None = None) -> Figure:
    """MF training: training BCE loss per epoch, and validation AUC and UAUC per epoch on an AUC scale that holds
    chance (0.5, dotted); kept epoch dashed, its AUC ringed."""
    _require(history, ["epoch", "loss", "valid_auc", "valid_uauc"], "mf_curve history")
    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    _line(ax_loss, history["epoch"], history["loss"], 0, "training BCE loss", markevery=_every(history))
    _line(ax_auc, history["epoch"], history["valid_auc"], 0, "validation AUC", markevery=_every(history))
    _line(ax_auc, history["epoch"], history["valid_uauc"], 1, "validation UAUC", markevery=_every(history))
    kept = history.loc[history["epoch"] == best_epoch, "valid_auc"]
    _kept(ax_loss, best_epoch, "epoch")
    _kept(ax_auc, best_epoch, "epoch", float(kept.iloc[0]) if len(kept) else None, "validation AUC")
    _auc_axis(ax_auc, pd.concat([history["valid_auc"], history["valid_uauc"]]))
    if _few(n_valid_rows, n_valid_users):
        _note(ax_auc, f"validation: {_sample(n_valid_rows, n_valid_users)} — indicative only")
    for ax in (ax_loss, ax_auc):
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
                n_valid_rows: int, n_valid_users: int, subtitle: str = "",
                intervals: pd.DataFrame | None = None) -> Figure:
    """Stage 1/2 training: validation AUC per evaluation step on an AUC scale that holds chance (0.5, dotted), with
    its 95 % interval where `intervals` (stages.curve_intervals: step, lo, hi) gives it, the kept step dashed and its
    AUC ringed; mean training loss per evaluation interval (train.fit's history: the per-step batch losses summed
    since the previous evaluation, divided by the steps, not the last batch's loss)."""
    _require(history, ["step", "loss", "valid_auc"], "stage_curve history")  # lr, seconds: used when present
    hist = pd.DataFrame(history).sort_values("step")
    fig, (ax_auc, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    _line(ax_auc, hist["step"], hist["valid_auc"], 0, f"validation AUC ({_sample(n_valid_rows, n_valid_users)})")
    if intervals is not None:
        auc = intervals["valid_auc"].to_numpy(float)
        ax_auc.errorbar(intervals["step"].to_numpy(float), auc, fmt="none", ecolor="C0", capsize=4,
                        yerr=[auc - intervals["lo"].to_numpy(float), intervals["hi"].to_numpy(float) - auc],
                        label="95 % interval (users resampled)")
    # The history's loss is the mean over the steps since the previous evaluation, not the last batch's loss.
    _line(ax_loss, hist["step"], hist["loss"], 1, "mean training loss per interval", color="C3")
    kept = hist.loc[hist["step"] == best_step, "valid_auc"]
    _kept(ax_auc, best_step, "step", float(kept.iloc[0]) if len(kept) else None, "validation AUC")
    _kept(ax_loss, best_step, "step")
    _auc_axis(ax_auc, pd.concat([hist["valid_auc"]] + ([intervals["lo"], intervals["hi"]] if intervals is not None
                                                      else [])))
    if _few(n_valid_rows, n_valid_users):
        _note(ax_auc, f"validation: {_sample(n_valid_rows, n_valid_users)} — indicative only")
    for ax in (ax_auc, ax_loss):
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


def _points_with_intervals(ax: Axes, frame: pd.DataFrame, x: str, metric: str, label: str) -> None:
    """Ours at each setting with its 95 % interval; a segment joins two neighbouring settings only where their paired
    difference is resolved (column "resolved from previous"), so no line suggests a trend the rows do not show."""
    rows = frame.dropna(subset=[metric]).sort_values(x)
    xs, ys = rows[x].to_numpy(float), rows[metric].to_numpy(float)
    below, above = ys - rows[f"{metric}_lo"].to_numpy(float), rows[f"{metric}_hi"].to_numpy(float) - ys
    ax.errorbar(xs, ys, yerr=[below, above], fmt="o", color="C0", markersize=7, capsize=4, label=f"{label} (95 % CI)",
                zorder=3)
    if metric == "test_auc" and "resolved from previous" in rows:
        joined = rows["resolved from previous"].to_numpy(bool)
        for i in np.flatnonzero(joined[1:]) + 1:
            ax.plot(xs[i - 1:i + 1], ys[i - 1:i + 1], color="C0", linewidth=1.5, zorder=2)


@_styled
def sweep_curve(frame: pd.DataFrame, x: str, *, x_label: str, title: str, paper: pd.DataFrame | None = None,
                n_test_rows: int | None = None, n_test_users: int | None = None,
                n_uauc_users: int | None = None, log_x: bool = True) -> Figure:
    """Test AUC and UAUC against a swept setting (figure3.points' frame): ours as points with their 95 % intervals,
    joined only where the paired difference between neighbours is resolved; the paper's reported values (when given)
    as hollow black markers, chance (0.5) dotted; both panels on one AUC scale. A panel whose points rest on under
    ~100 rows or ~10 users says so.

    Counts default to the frame's `test_rows` / `users` / `uauc_users` columns when those hold a single value.
    """
    _require(frame, [x, "test_auc", "test_auc_lo", "test_auc_hi", "test_uauc", "test_uauc_lo", "test_uauc_hi"],
             "sweep_curve frame")
    if paper is not None:
        _require(paper, [x, "auc", "uauc"], "sweep_curve paper")
    n_test_rows = n_test_rows if n_test_rows is not None else _unique(frame, "test_rows")
    n_test_users = n_test_users if n_test_users is not None else _unique(frame, "users")
    n_uauc_users = n_uauc_users if n_uauc_users is not None else _unique(frame, "uauc_users")
    ours = frame.sort_values(x)
    shown = [ours[c] for c in ("test_auc_lo", "test_auc_hi", "test_uauc_lo", "test_uauc_hi")] \
        + ([paper["auc"], paper["uauc"]] if paper is not None else [])
    limits = _auc_limits(pd.concat(shown).dropna())  # one scale for both panels
    few = _few(n_test_rows, n_test_users)
    caveat = f"ours: {_sample(n_test_rows, n_test_users)} — indicative only"
    # Shared x: a panel without any point keeps the other panel's scale instead of a meaningless 0..1.
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained", sharex=True)
    for ax, metric, ref_col, name in zip(axes, ("test_auc", "test_uauc"), ("auc", "uauc"), ("AUC", "UAUC")):
        rows = ours.dropna(subset=[metric])
        if len(rows):
            _points_with_intervals(ax, ours, x, metric, f"ours, test {name}")
        if paper is not None:  # reference points, not a competing curve: hollow markers, no line
            ref = paper.sort_values(x).dropna(subset=[ref_col])
            ax.plot(ref[x].to_numpy(float), ref[ref_col].to_numpy(float), linestyle="none", marker="D",
                    markersize=7, markerfacecolor="none", markeredgecolor="black", markeredgewidth=1.3,
                    label=f"paper, test {name}", zorder=3)
        if ax.lines or ax.containers:
            _chance(ax)
        ax.set_ylim(*limits)
        if not len(rows):  # an empty panel would read as a plotting bug; say why instead
            if not ax.lines:
                ax.set_yticks([])
            _note(ax, f"ours: {name} undefined at every setting\n(no test user has both labels)")
        elif name == "UAUC" and n_uauc_users == 1:
            _note(ax, "UAUC over 1 user is that user's AUC:\nsame values as the AUC panel")
        elif name == "UAUC" and n_uauc_users is not None and n_uauc_users < FEW_USERS:
            _note(ax, f"ours: UAUC over {_users(n_uauc_users)} — indicative only")
        elif few:
            _note(ax, caveat)
        if log_x:
            ax.set_xscale("log")
        values = sorted(set(ours[x].dropna()) | (set(paper[x].dropna()) if paper is not None else set()))
        ax.set_xticks(values, [f"{v:g}" for v in values], rotation=30 if len(values) > 4 else 0)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel(x_label + (" (log scale)" if log_x and "log" not in x_label else ""))
        ax.set_ylabel(f"test {name}")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best")
    detail = "ours: " + (f"{n_test_rows:,} test rows" if n_test_rows is not None else "test rows: count not given") \
        + (f", {_users(n_test_users)}" if n_test_users is not None else "") \
        + (f"; UAUC over {_users(n_uauc_users)} with both labels" if n_uauc_users is not None else "") \
        + (" — indicative only" if few else "") \
        + ("; a line joins two settings only where their paired AUC difference is resolved"
           if "resolved from previous" in ours else "")
    _title(fig, title, detail + ("; hollow black diamonds: the paper's reported values" if paper is not None else ""))
    return fig


@_styled
def recall_vs_k(table: pd.DataFrame, *, n_users: int, subtitle: str = "", dodge: float = 0.015,
                n_relevant: int | None = None, min_relevant: int | None = None) -> Figure:
    """Recall@K and NDCG@K per method; methods dodged by `dodge` x the K range so equal curves stay visible.

    `n_relevant`: the relevant (positive) test items of the `n_users` users, all together; `min_relevant`: the
    fewest any one user has. Recall@K is the mean over users of each user's share of their relevant items, so one
    item of one user moves it by 1 / (n_users x that user's count): at most 1 / (n_users x min_relevant), or at most
    1 / n_users when only n_relevant is known. Given either, the subtitle says so and the Recall panel draws that
    step as a scale bar: a gap no taller than the bar can be one item of one user. (No binomial interval: the
    mean of per-user shares is not one proportion of n_relevant items.)
    """
    _require(table, ["method", "K", "Recall@K", "NDCG@K"], "recall_vs_k table")
    n_relevant = n_relevant if n_relevant is not None else _unique(table, "relevant")
    methods = list(dict.fromkeys(table["method"]))
    ks = sorted(table["K"].unique())
    span = (max(ks) - min(ks)) or 1.0
    known = n_relevant is not None or min_relevant is not None
    step = 1.0 / (n_users * (min_relevant or 1)) if known and n_users else None
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
        if metric == "Recall@K" and step is not None:
            _step_bar(ax, step, n_users, min_relevant)
        if n_users < FEW_USERS:
            _note(ax, f"{_users(n_users)} — indicative only")
        # Below the panel: method names are long and any corner of the panel may hold data.
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=1, fontsize="small")
    behind = f"{_users(n_users)}" + (f", {n_relevant:,} relevant test items" if n_relevant is not None else "") \
        + (f" (fewest per user: {min_relevant})" if min_relevant is not None else "") \
        + f" behind each point; {len(methods)} methods, dodged horizontally so equal values stay visible"
    if step is not None:
        bound = (f"up to {step:.3f} here (a user with {min_relevant})" if min_relevant is not None
                 else f"at most 1/{n_users} = {step:.3f}")
        behind += (f". Recall@K averages each user's share of their relevant items: one item moves it by "
                   f"1/({n_users} × that user's count), {bound}, the bar; a gap that small can be one item "
                   "of one user")
    _title(fig, f"Top-K recommendation on {n_users:,} test user{'s' * (n_users != 1)}",
           behind + (f". {subtitle}" if subtitle else ""))
    return fig


def _step_bar(ax: Axes, step: float, n_users: int, min_relevant: int | None) -> None:
    """A vertical scale bar of height `step` in the panel's top left (recall grows with K: that corner is empty),
    the axis raised to hold it when the step is taller than the data."""
    top = max(ax.get_ylim()[1], step * 1.3)
    ax.set_ylim(0, top)
    y1 = top * 0.95
    y0 = y1 - step
    ax.annotate("", xy=(0.04, y0), xytext=(0.04, y1), xycoords=("axes fraction", "data"),
                arrowprops=dict(arrowstyle="|-|", color="0.2", linewidth=1.2, shrinkA=0, shrinkB=0))
    who = f"1/({n_users}×{min_relevant})" if min_relevant is not None else f"at most 1/{n_users}"
    ax.annotate(f"one item of one user:\n{who} = {step:.3f}", xy=(0.04, (y0 + y1) / 2),
                xycoords=("axes fraction", "data"), xytext=(8, 0), textcoords="offset points", ha="left",
                va="center", fontsize="x-small", color="0.2")


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
def cold_auc_curve(table: pd.DataFrame, *, subtitle: str = "", n_cold_users: int | None = None,
                   counts: dict[str, tuple[int, int]] | None = None) -> Figure:
    """AUC on the cold test rows against the number of matched neighbours; 'without matching' as reference, chance
    (0.5) dotted, on an AUC scale that holds it. `counts`: subset (all / warm / cold) -> (rows, users), shown in the
    subtitle; a cold subset of under 10 users is flagged on the panel. The table's `users` column, when present,
    and `n_cold_users` stand in for counts' users."""
    _require(table, ["setting", "subset", "neighbours", "AUC", "rows"], "cold_auc_curve table")
    tab = table.astype({"AUC": float, "neighbours": float})
    cold = tab[tab["subset"] == "cold"]
    curve = cold[cold["neighbours"].notna()].sort_values("neighbours")
    without = cold[cold["setting"] == "without matching"]
    n_cold = int(cold["rows"].max()) if len(cold) and cold["rows"].notna().any() else 0
    everything = tab.loc[tab["subset"] == "all", "rows"]
    total = f" (of {int(everything.iloc[0]):,})" if len(everything) else ""
    counts = dict(counts or {})
    for subset, part in tab.groupby("subset", sort=False):  # rows from the table, users where it has them
        if subset not in counts and "users" in part and part["users"].notna().any():
            counts[subset] = (int(part["rows"].max()), int(part["users"].max()))
    if n_cold_users is None and "cold" in counts:
        n_cold_users = counts["cold"][1]
    fig, ax = plt.subplots(figsize=(7, 4.4), layout="constrained")
    if n_cold == 0 or curve["AUC"].isna().all():
        ax.set_xticks([]), ax.set_yticks([])  # no scale to read: the panel holds only the explanation
        _note(ax, "no cold rows in this sample" if n_cold == 0 else "AUC undefined on the cold rows\n(one label only)")
    else:
        _line(ax, curve["neighbours"], curve["AUC"], 0, "with neighbour matching")
        shown = list(curve["AUC"])
        if len(without) and np.isfinite(without["AUC"].iloc[0]):
            base = float(without["AUC"].iloc[0])
            ax.axhline(base, color="0.4", linestyle="--", label=f"without matching ({base:.3f})")
            shown.append(base)
        _auc_axis(ax, shown)
        ax.set_xticks(curve["neighbours"], [f"{v:g}" for v in curve["neighbours"]])
        ax.legend(loc="best")
        if n_cold_users is not None and n_cold_users < FEW_USERS:
            _note(ax, f"cold: {_users(n_cold_users)} — not a finding")
        elif n_cold < FEW_ROWS:
            _note(ax, f"cold: {n_cold:,} rows — not a finding")
    ax.set_xlabel("matched neighbours per cold id")
    ax.set_ylabel("AUC on cold test rows")
    users = f" from {_users(n_cold_users)}" if n_cold_users is not None else ""
    others = "; ".join(f"{s}: {_sample(*counts[s])}" for s in ("warm", "all") if s in counts)
    _title(fig, f"Cold-start matching: AUC on {n_cold:,} cold test rows{total}",
           f"{n_cold:,} cold rows{users} (a row is cold when its user or item was unseen in training)"
           + (f"; {others}" if others else "") + (f". {subtitle}" if subtitle else ""))
    return fig


@_styled
def paired_intervals(diffs: pd.DataFrame, counts: dict[str, tuple[int, int]], *, subtitle: str = "") -> Figure:
    """Paired differences with their intervals (report.paired_differences with a "subset" column: all / warm / cold),
    one panel per metric on one x scale, one line per comparison, a marker per subset; 0 (no difference) drawn.
    `counts`: subset -> (rows, users), in the legend; a subset of under 10 users is flagged on every panel."""
    _require(diffs, ["method", "minus", "subset", "metric", "difference", "lo", "hi"], "paired_intervals frame")
    pairs = list(dict.fromkeys(zip(diffs["method"], diffs["minus"])))
    subsets = list(dict.fromkeys(diffs["subset"]))
    metrics_shown = list(dict.fromkeys(diffs["metric"]))
    thin = [f"{s}: {_users(counts[s][1])} — not a finding" for s in subsets if counts[s][1] < FEW_USERS]
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
                        label=f"{subset} ({n_rows:,} rows, {_users(n_users)}"
                              + (" — not a finding)" if n_users < FEW_USERS else ")"))
        ax.axvline(0, color="0.3", linewidth=1)
        ax.set_xlabel(f"{metric} difference (95 % paired interval)")
        if thin:  # the metric stays named by the x label; the caveat takes the panel's title
            _note(ax, "\n".join([metric] + thin))
        else:
            ax.set_title(metric)
    axes[0][0].set_yticks([p * (len(subsets) + 1) + (len(subsets) - 1) / 2 for p in range(len(pairs))],
                          [f"{m}\nminus {o}" for m, o in pairs])
    axes[0][0].invert_yaxis()
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside right center", fontsize="small")
    _title(fig, "CoLLM-FaissRet over each collaborative model, against it and the other baselines, same rows",
           "right of 0: CoLLM-FaissRet ahead; an interval across 0: these rows cannot tell; "
           + "; ".join(f"{s}: {_sample(*counts[s])}" for s in subsets) + (f". {subtitle}" if subtitle else ""))
    return fig
