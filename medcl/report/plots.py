"""The report's figures, each rendered off-screen (matplotlib Agg) to PNG bytes.

Figures are built on ``matplotlib.figure.Figure`` directly (no pyplot global state), so they are
safe to make from any thread and never open a window. matplotlib is imported inside functions.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medcl.report.collect import EfficiencyPoint

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

X_COLUMNS = ("step", "global_step", "epoch")
_SKIP_COLUMNS = {*X_COLUMNS, "time", "timestamp", "wall_time", "created_at"}
MAX_PANELS = 8
_CATEGORICAL_MAX = 10
_DPI = 100


def figure_png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes (no timestamp or software metadata, so output is stable)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def training_curves(metrics_by_run: Mapping[str, pd.DataFrame]) -> bytes | None:
    """Loss, learning rate and other logged numeric columns against the step, runs overlaid.

    ``metrics_by_run`` maps a run name to its ``metrics.csv`` table (sparse rows allowed).
    Returns None when no run has a plottable column.
    """
    panels: dict[str, list[tuple[str, str]]] = {}  # panel title -> [(run, column)]
    for run, table in metrics_by_run.items():
        for column in table.columns:
            if str(column).lower() in _SKIP_COLUMNS or table[column].notna().sum() == 0:
                continue
            panels.setdefault(_panel_of(str(column)), []).append((run, column))
    if not panels:
        return None
    order = sorted(panels, key=lambda t: (t != "loss", t != "learning rate", t))[:MAX_PANELS]
    fig, axes = _grid(len(order), ncols=2, height=3.4, width=5.6)
    runs = list(metrics_by_run)
    colours = _colours(len(runs))
    styles = ["-", "--", ":", "-."]
    for ax, title in zip(axes, order, strict=False):
        columns_in_panel = sorted({c for _, c in panels[title]}, key=str)
        for run, column in panels[title]:
            table = metrics_by_run[run]
            xname = next((c for c in X_COLUMNS if c in table.columns), None)
            data = table[[column] + ([xname] if xname else [])].dropna()
            x = data[xname].to_numpy() if xname else data.index.to_numpy()
            y = data[column].to_numpy()
            label = column if len(runs) == 1 else f"{run} · {column}"
            style = styles[columns_in_panel.index(column) % len(styles)]
            ax.plot(
                x,
                y,
                style,
                color=colours[runs.index(run)],
                label=label,
                marker="o" if len(x) < 20 else None,
                markersize=3,
                linewidth=1.4,
            )
            ax.set_xlabel(xname or "row")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    return _finish(fig, axes, len(order))


def label_efficiency(label: str, points_by_run: Mapping[str, Sequence[EfficiencyPoint]], *,
                     xlabel: str = "labelled training subjects per fold") -> bytes | None:
    """Probe metric vs number of labelled training subjects for one label, runs overlaid.

    Bands show the confidence interval (or mean ± std when no interval is given).
    Returns None when no run has a label-efficiency point. ``xlabel`` names the x axis.
    """
    metrics: list[str] = []
    for points in points_by_run.values():
        for point in points:
            metrics.extend(m for m in point.metrics if m not in metrics)
    if not metrics:
        return None
    metrics = metrics[:4]
    fig, axes = _grid(len(metrics), ncols=min(2, len(metrics)), height=3.4, width=5.6)
    runs = list(points_by_run)
    colours = _colours(len(runs))
    sizes = [p.train_size for pts in points_by_run.values() for p in pts]
    log_x = min(sizes) > 0 and max(sizes) / min(sizes) >= 10
    for ax, metric in zip(axes, metrics, strict=False):
        for k, run in enumerate(runs):
            pts = [p for p in points_by_run[run] if metric in p.metrics]
            if not pts:
                continue
            x = np.array([p.train_size for p in pts])
            summaries = [p.metrics[metric] for p in pts]
            y = np.array([s.mean for s in summaries])
            ax.plot(x, y, "-o", color=colours[k], markersize=4, label=run)
            low, high = _band(summaries)
            if low is not None:
                ax.fill_between(x, low, high, color=colours[k], alpha=0.18, linewidth=0)
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric)
        ax.set_title(f"{label}: {metric}")
        ax.grid(alpha=0.3)
        if len(runs) > 1:
            ax.legend(fontsize=7, loc="best")
    return _finish(fig, axes, len(metrics))


def embedding_projection(coords: np.ndarray, columns: Mapping[str, np.ndarray], method: str) -> bytes:
    """Scatter of (n, 2) projected features, one panel per colour column (or one plain panel).

    Numeric columns with many distinct values use a continuous colour map and a colour bar; other
    columns are categorical with a legend. Missing values (NaN, empty string) are grey.
    """
    names = list(columns)[:6] or [""]
    fig, axes = _grid(len(names), ncols=min(3, len(names)), height=3.6, width=4.2)
    for ax, name in zip(axes, names, strict=False):
        if not name:
            ax.scatter(coords[:, 0], coords[:, 1], s=12, color="#3b6ea8", alpha=0.8)
        else:
            _scatter_coloured(fig, ax, coords, np.asarray(columns[name]), name)
        ax.set_title(f"{method}, coloured by {name}" if name else method, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    return _finish(fig, axes, len(names))


def kernel_matrix(kernel: np.ndarray) -> bytes:
    """Heat map of an (n, n) prior kernel matrix with its colour bar."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.4, 4.6))
    ax = fig.add_subplot()
    image = ax.imshow(kernel, cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.85)
    ax.set_title(f"prior kernel K of one batch ({kernel.shape[0]}×{kernel.shape[1]})", fontsize=10)
    ax.set_xlabel("subject in batch")
    ax.set_ylabel("subject in batch")
    return figure_png(fig)


def attribute_cka(rows: Sequence[Mapping[str, Any]]) -> bytes | None:
    """Horizontal bars of each attribute's CKA with the features, p-value written beside.

    Returns None when no row has a numeric ``cka``.
    """
    from matplotlib.figure import Figure

    rows = [r for r in rows if isinstance(r.get("cka"), float) and math.isfinite(r["cka"])]
    if not rows:
        return None
    fig = Figure(figsize=(6.4, 0.5 * len(rows) + 1.2))
    ax = fig.add_subplot()
    names = [str(r["attribute"]) for r in rows]
    values = [r["cka"] for r in rows]
    ax.barh(range(len(rows)), values, color="#3b6ea8")
    ax.set_yticks(range(len(rows)), names)
    ax.invert_yaxis()
    for k, row in enumerate(rows):
        p = row.get("p_value")
        if isinstance(p, float):
            ax.text(values[k], k, f"  p={p:.3g}", va="center", fontsize=8)
    ax.set_xlim(0, max(1.0, max(values) * 1.25))
    ax.set_xlabel("CKA with encoder features")
    ax.grid(axis="x", alpha=0.3)
    return figure_png(fig)


def _panel_of(column: str) -> str:
    low = column.lower()
    if "loss" in low:
        return "loss"
    if (
        low in ("lr", "learning_rate")
        or low.startswith(("lr-", "lr_", "lr/"))
        or low.endswith(("/lr", "learning_rate"))
    ):
        return "learning rate"
    return column


def _band(summaries: Sequence[Any]) -> tuple[np.ndarray | None, np.ndarray | None]:
    if all(s.ci_low is not None and s.ci_high is not None for s in summaries):
        return np.array([s.ci_low for s in summaries]), np.array([s.ci_high for s in summaries])
    if all(s.std is not None for s in summaries):
        mean, std = np.array([s.mean for s in summaries]), np.array([s.std for s in summaries])
        return mean - std, mean + std
    return None, None


def _scatter_coloured(fig: Figure, ax: Axes, coords: np.ndarray, values: np.ndarray, name: str) -> None:
    numeric = np.issubdtype(values.dtype, np.number)
    if numeric:
        missing = ~np.isfinite(values.astype(float))
    else:
        values = values.astype(str)
        missing = np.isin(np.char.strip(values), ["", "nan", "NaN", "None"])
    if missing.any():
        ax.scatter(coords[missing, 0], coords[missing, 1], s=10, color="#bbbbbb", label="missing")
    present = ~missing
    distinct = np.unique(values[present])
    if numeric and len(distinct) > _CATEGORICAL_MAX:
        points = ax.scatter(
            coords[present, 0], coords[present, 1], c=values[present].astype(float), s=12, cmap="viridis"
        )
        fig.colorbar(points, ax=ax, shrink=0.8, label=name)
        if missing.any():
            ax.legend(fontsize=7, loc="best")
        return
    colours = _colours(len(distinct))
    for k, value in enumerate(distinct):
        mask = present & (values == value)
        text = f"{value:g}" if numeric else str(value)
        ax.scatter(coords[mask, 0], coords[mask, 1], s=12, color=colours[k], label=text)
    ax.legend(fontsize=7, loc="best", title=name, title_fontsize=7, markerscale=1.2)


def _colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(k % cmap.N) for k in range(max(n, 1))]


def _grid(panels: int, *, ncols: int, height: float, width: float) -> tuple[Figure, list[Axes]]:
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, panels))
    nrows = math.ceil(panels / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    return fig, axes


def _finish(fig: Figure, axes: list[Axes], used: int) -> bytes:
    for ax in axes[used:]:
        ax.set_visible(False)
    fig.tight_layout()
    return figure_png(fig)


def reliability_diagram(bins: Sequence[Mapping[str, Any]], *, title: str = "") -> bytes | None:
    """Observed rate against mean predicted probability per bin (dot size ~ scans), and the diagonal."""
    filled = [b for b in bins if b.get("n") and b.get("predicted") is not None and b.get("observed") is not None]
    if not filled:
        return None
    fig, axes = _grid(1, ncols=1, height=3.6, width=3.9)
    ax = axes[0]
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect calibration")
    total = sum(b["n"] for b in filled)
    ax.plot([b["predicted"] for b in filled], [b["observed"] for b in filled], color="0.3", linewidth=1)
    ax.scatter([b["predicted"] for b in filled], [b["observed"] for b in filled],
               s=[20 + 300 * b["n"] / total for b in filled], color=_colours(1)[0], zorder=3, label="test bins")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted probability", ylabel="observed frequency",
           title=title)
    ax.legend(loc="upper left", fontsize=8)
    return _finish(fig, axes, 1)
