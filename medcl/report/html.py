"""Assemble the self-contained HTML report (inline CSS, plots as base64 PNG, no external files).

Sections, each shown when some run has its data and otherwise replaced by a short note: runs
overview, comparison table (several runs), training curves, probe table with confidence
intervals, label-efficiency curves, 2D projection of embeddings, prior-kernel matrix of a batch,
attribute diagnostics, resolved config. Every text taken from a run directory is escaped with
``html.escape``; identifier-like columns and config keys are never shown.

Why this size: one function per page section (nine of them) and the escaping helpers they
share; the plots are in :mod:`medcl.report.plots`, the data in :mod:`medcl.report.collect`.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from medcl.atomic import write_text
from medcl.errors import MedclInputError
from medcl.evaluate.artefacts import (
    ATTRIBUTES_FILE,
    CONFIG_FILE,
    EMBEDDINGS_FILE,
    KERNEL_BATCH_FILE,
    METRICS_FILE,
    PROBE_DIR,
)
from medcl.models.saved import medcl_version
from medcl.report import plots
from medcl.report.collect import (
    MetricSummary,
    RunArtefacts,
    collect_runs,
    public_config,
    public_kernel,
    redact_ids,
)
from medcl.report.projection import PROJECTIONS, Projection, project_2d

REPORT_FILE = "report.html"
_LOWER_IS_BETTER = ("mae", "mse", "rmse", "loss", "error", "brier")

CSS = """
:root { --fg:#1d2430; --muted:#5b6678; --line:#d9dee7; --accent:#2f5d9a; --bg:#ffffff; --soft:#f4f6fa; }
* { box-sizing: border-box; }
body { margin:0; font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color:var(--fg); background:var(--bg); line-height:1.45; font-size:15px; }
header { background:var(--accent); color:#fff; padding:18px 32px 12px; }
header h1 { margin:0 0 4px; font-size:24px; }
header .meta { margin:0 0 10px; opacity:.85; font-size:13px; }
nav a { color:#fff; margin-right:14px; font-size:13px; text-decoration:none; border-bottom:1px dotted #fff; }
main { max-width:1180px; margin:0 auto; padding:8px 32px 48px; }
section { border-bottom:1px solid var(--line); padding:10px 0 18px; }
h2 { font-size:19px; margin:18px 0 8px; color:var(--accent); }
h3 { font-size:15px; margin:14px 0 6px; }
p.absent { color:var(--muted); font-style:italic; margin:4px 0; }
p.help { color:var(--muted); font-size:13px; margin:2px 0 8px; }
table { border-collapse:collapse; margin:6px 0 12px; font-size:13px; }
th, td { border:1px solid var(--line); padding:4px 9px; text-align:left; vertical-align:top; }
th { background:var(--soft); font-weight:600; }
td.num { text-align:right; font-variant-numeric: tabular-nums; white-space:nowrap; }
td.best { font-weight:700; }
td.collapsed, span.collapsed { color:#a4262c; font-weight:700; }
figure { margin:8px 0 14px; }
figure img { max-width:100%; height:auto; border:1px solid var(--line); border-radius:4px; }
figcaption { color:var(--muted); font-size:12px; }
pre { background:var(--soft); border:1px solid var(--line); border-radius:4px; padding:10px;
      font-size:12px; overflow:auto; max-height:420px; }
ul.notes { color:#8a4b08; font-size:13px; }
div.wide { overflow-x:auto; }
"""


def default_report_path(run_dirs: Sequence[str | os.PathLike]) -> Path:
    """Where ``medcl report`` writes by default: inside the run for one run, else ./report.html."""
    return Path(run_dirs[0]) / REPORT_FILE if len(run_dirs) == 1 else Path(REPORT_FILE)


def render_report(
    run_dirs: Sequence[str | os.PathLike],
    out: str | os.PathLike | None = None,
    *,
    title: str | None = None,
    projection: Projection = "auto",
    lead_sections: Sequence[tuple[str, str, str]] = (),
) -> Path:
    """Read one or several run directories and atomically write the HTML report; returns its path.

    ``out`` defaults to :func:`default_report_path`. ``lead_sections``: ``(id, title, html)``
    sections placed first (``html`` already escaped; e.g. ``medcl compare``'s table).
    Raises ``MedclInputError`` when a run directory is missing or holds nothing readable, or
    ``out`` is an existing directory.
    """
    if projection not in PROJECTIONS:
        raise MedclInputError(f"--projection: expected one of {', '.join(PROJECTIONS)}, got {projection!r}")
    target = Path(out) if out is not None else default_report_path(run_dirs)
    if target.is_dir():
        raise MedclInputError(f"--out {str(target)!r} is a directory; give a file path such as report.html")
    runs = collect_runs(list(run_dirs))
    return write_text(target, build_html(runs, title=title, projection=projection, lead_sections=lead_sections))


def build_html(
    runs: Sequence[RunArtefacts],
    *,
    title: str | None = None,
    projection: Projection = "auto",
    lead_sections: Sequence[tuple[str, str, str]] = (),
) -> str:
    """The report page for already-collected runs, as one HTML string (``lead_sections`` first)."""
    title = title or ("medcl report: " + ", ".join(r.name for r in runs))
    sections: list[tuple[str, str, Callable[[Sequence[RunArtefacts]], str]]] = [
        ("runs", "Runs", _runs_section),
        ("training", "Training curves", _training_section),
        ("probes", "Probes", _probe_section),
        ("label-efficiency", "Label efficiency", _efficiency_section),
        ("embeddings", "Embeddings", lambda rs: _embeddings_section(rs, projection)),
        ("kernel", "Prior kernel", _kernel_section),
        ("attributes", "Attribute diagnostics", _attributes_section),
        ("config", "Resolved config", _config_section),
    ]
    if len(runs) > 1:
        sections.insert(1, ("comparison", "Comparison", _comparison_section))
    for sid, name, fragment in reversed(list(lead_sections)):
        sections.insert(0, (sid, name, lambda _rs, fragment=fragment: fragment))
    nav = " ".join(f'<a href="#{sid}">{escape(name)}</a>' for sid, name, _ in sections)
    body = "\n".join(
        f'<section id="{sid}">\n<h2>{escape(name)}</h2>\n{render(runs)}\n</section>'
        for sid, name, render in sections
    )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<header>\n<h1>{escape(title)}</h1>\n"
        f'<p class="meta">Generated {stamp} by medcl {escape(medcl_version())} · {len(runs)} run(s)</p>\n'
        f"<nav>{nav}</nav>\n</header>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


# ----------------------------------------------------------------------------------------- sections


def _runs_section(runs: Sequence[RunArtefacts]) -> str:
    rows = []
    for run in runs:
        found = [
            name
            for name, present in (
                (CONFIG_FILE, run.config is not None),
                (METRICS_FILE, run.metrics is not None),
                (f"{PROBE_DIR}/ ({len(run.probes)} label(s))", bool(run.probes)),
                (EMBEDDINGS_FILE, run.embeddings is not None),
                (KERNEL_BATCH_FILE, run.kernel_batch is not None),
                (ATTRIBUTES_FILE, run.attributes is not None),
            )
            if present
        ]
        rows.append([escape(run.name), escape(run.method or "—"), _health_cell(run), escape(", ".join(found))])
    out = html_table(["run", "method", "training health", "artefacts found"], rows)
    out += ('<p class="help">Training health (summary.json): spread of the normalised projections '
            "(about 1 when spread over the sphere, 0 when all coincide) and effective rank of the batch "
            "embeddings at the last epoch; a collapsed run learned nothing useful.</p>")
    for run in runs:
        for warning in (run.health or {}).get("warnings") or []:
            out += f'<p class="absent">Warning ({escape(run.name)}): {escape(str(warning))}</p>'
    for run in runs:
        if run.notes:
            items = "".join(f"<li>{escape(n)}</li>" for n in run.notes)
            out += f'<p>Problems reading <b>{escape(run.name)}</b>:</p><ul class="notes">{items}</ul>'
    return out


def _comparison_section(runs: Sequence[RunArtefacts]) -> str:
    keys: list[tuple[str, str]] = []
    for run in runs:
        for probe in run.probes:
            keys.extend((probe.label, m) for m in probe.metrics if (probe.label, m) not in keys)
    if not keys:
        return absent("No run has probe results to compare; run `medcl probe` on each run.")
    values = {run.name: {(p.label, m): s for p in run.probes for m, s in p.metrics.items()} for run in runs}
    best: dict[tuple[str, str], float] = {}
    for key in keys:
        means = [v[key].mean for v in values.values() if key in v]
        if len(means) > 1:
            best[key] = min(means) if _lower_is_better(key[1]) else max(means)
    rows = []
    for run in runs:
        method = escape(run.method or "—") + (' <span class="collapsed">(collapsed)</span>' if run.collapsed else "")
        cells = [escape(run.name), method]
        for key in keys:
            summary = values[run.name].get(key)
            if summary is None:
                cells.append(_Cell("—", "num"))
            else:
                cls = "num best" if best.get(key) == summary.mean else "num"
                cells.append(_Cell(escape(_with_ci(summary)), cls))
        rows.append(cells)
    header = ["run", "method", *(f"{label} · {metric}" for label, metric in keys)]
    note = (
        '<p class="help">Mean over folds with its 95% confidence interval; '
        "the best run per column in bold.</p>"
    )
    return note + html_table(header, rows)


def _health_cell(run: RunArtefacts) -> _Cell | str:
    health = run.health
    if not health:
        return escape("—")
    numbers = f"spread {fmt(health.get('spread'))}, effective rank {fmt(health.get('effective_rank'))}"
    if health.get("collapsed"):
        return _Cell(escape(f"collapsed: {health.get('reason') or ''} ({numbers})"), "collapsed")
    return escape(f"healthy ({numbers})")


def _training_section(runs: Sequence[RunArtefacts]) -> str:
    tables = {r.name: r.metrics for r in runs if r.metrics is not None}
    out = "".join(absent(f"No {METRICS_FILE} in run {r.name}.") for r in runs if r.metrics is None)
    if not tables:
        return out
    png = plots.training_curves(tables)
    if png is None:
        return out + absent(f"{METRICS_FILE} has no plottable column.")
    caption = "Loss, learning rate and other logged values against the training step"
    if len(tables) > 1:
        caption += "; runs overlaid (colour = run, line style = column)"
    out += html_figure(png, "training curves", caption + ".")
    rows = []
    for name, table in tables.items():
        for column in table.columns:
            series = table[column].dropna()
            if str(column).lower() in plots.X_COLUMNS or series.empty:
                continue
            rows.append(
                [escape(name)] * (len(tables) > 1)
                + [
                    escape(column),
                    *(_Cell(fmt(v), "num") for v in (series.iloc[-1], series.min(), series.max())),
                ]
            )
    header = ["run"] * (len(tables) > 1) + ["column", "last", "min", "max"]
    return out + html_table(header, rows)


def _probe_section(runs: Sequence[RunArtefacts]) -> str:
    out = "".join(absent(f"No {PROBE_DIR}/*.json in run {r.name}.") for r in runs if not r.probes)
    rows = []
    several = len(runs) > 1
    for run in runs:
        for probe in run.probes:
            details = ", ".join(f"{k}={v}" for k, v in probe.details.items())
            for k, (metric, s) in enumerate(probe.metrics.items()):
                ci = (
                    "—" if s.ci_low is None or s.ci_high is None else f"[{fmt(s.ci_low)}, {fmt(s.ci_high)}]"
                )
                rows.append(
                    [escape(run.name)] * several
                    + [
                        escape(probe.label),
                        escape(probe.kind or "—"),
                        escape(metric),
                        _Cell(fmt(s.mean), "num"),
                        _Cell(fmt(s.std), "num"),
                        _Cell(ci, "num"),
                        escape(details) if k == 0 else "",
                    ]
                )
    if not rows:
        return out
    header = ["run"] * several + ["label", "kind", "metric", "mean", "std", "95% CI", "details"]
    note = (
        '<p class="help">Probes on frozen features with patient-level cross-validation: '
        "mean and standard deviation over the outer folds, 95% confidence interval.</p>"
    )
    notes = [
        f"{run.name}: {probe.label}: {n}" if several else f"{probe.label}: {n}"
        for run in runs
        for probe in run.probes
        for n in probe.notes
    ]
    listing = f'<ul class="notes">{"".join(f"<li>{escape(n)}</li>" for n in notes)}</ul>' if notes else ""
    return out + note + html_table(header, rows) + listing


def _efficiency_section(runs: Sequence[RunArtefacts]) -> str:
    labels: list[str] = []
    for run in runs:
        labels.extend(p.label for p in run.probes if p.label_efficiency and p.label not in labels)
    if not labels:
        return absent("No label-efficiency results (probe JSON without a label_efficiency list).")
    out = ""
    for label in labels:
        series = {
            r.name: p.label_efficiency
            for r in runs
            for p in r.probes
            if p.label == label and p.label_efficiency
        }
        png = plots.label_efficiency(label, series)
        if png is not None:
            caption = (
                f"{label}: linear-probe metric vs labelled training subjects per fold "
                "(band: 95% CI, or ± std when no interval is given)."
            )
            out += html_figure(png, f"label efficiency {label}", caption)
    return out


def _embeddings_section(runs: Sequence[RunArtefacts], projection: Projection) -> str:
    out = ""
    for run in runs:
        out += _run_heading(runs, run)
        if run.embeddings is None:
            out += absent(
                f"No {EMBEDDINGS_FILE} in run {run.name} (write one with medcl.report.write_embeddings)."
            )
            continue
        coords, method = project_2d(run.embeddings.features, projection)
        png = plots.embedding_projection(coords, run.embeddings.columns, method)
        n, dim = run.embeddings.features.shape
        coloured = ", ".join(run.embeddings.columns) or "nothing"
        caption = f"{method} of {n} subjects' {dim}-dimensional features, coloured by {coloured}."
        out += html_figure(png, f"{method} projection of {run.name}", caption)
    return out


def _kernel_section(runs: Sequence[RunArtefacts]) -> str:
    out = ""
    for run in runs:
        out += _run_heading(runs, run)
        if run.kernel_batch is not None:
            caption = ("Prior kernel on a synthetic batch drawn from the fitted kernel's de-identified summary "
                       "(group means and spreads, category frequencies; no subject's values), sorted by the "
                       "first attribute (1 = same attributes).")
            out += html_figure(plots.kernel_matrix(run.kernel_batch), f"kernel matrix of {run.name}", caption)
        else:
            out += absent(f"No {KERNEL_BATCH_FILE} in run {run.name}.")
        if run.spectrum is not None:
            out += _spectrum_table(run.spectrum)
        if run.kernel_spec is not None:
            text = json.dumps(public_kernel(redact_ids(run.kernel_spec)), indent=2, default=str)
            out += (
                '<p class="help">Fitted kernel (config.yaml; the imputation reference, a summary of '
                f"the training cohort, stays in the run directory):</p><pre>{escape(text)}</pre>"
            )
    return out


def _spectrum_table(spectrum: dict[str, Any]) -> str:
    """The prior's batch spectrum (spectrum.json): how much of a batch kernel DU still sees."""
    rows = [spectrum.get("run"), *(spectrum.get("attributes") or [])]
    rows = [r for r in rows if isinstance(r, dict)]
    columns = ["name", "batch_size", "lam", "instance_weight", "eigenvalues_above_lam", "retained_fraction",
               "kept_spread"]
    body = [[_Cell(fmt(r.get(c)), "num") if c != "name" else escape(str(r.get(c, "—"))) for c in columns]
            for r in rows]
    out = ('<p class="help">Kernel spectrum on training batches: directions of a batch that the kernel-ridge '
           "smoother keeps (eigenvalues above lam), the retained fraction mean e/(e+lam) (plain DU: ~1) and the "
           "spread kept mean (e/(e+lam))^2 (without prior.rescale_centroids, t acts as t times it). "
           "Attribute rows show each attribute's kernel alone, without the instance term.</p>")
    out += html_table(columns, body)
    warning = spectrum.get("warning")
    if warning:
        out += f'<p class="absent">Warning: {escape(str(warning))}</p>'
    return out


def _attributes_section(runs: Sequence[RunArtefacts]) -> str:
    out = ""
    for run in runs:
        out += _run_heading(runs, run)
        if run.attributes is None:
            out += absent(f"No {ATTRIBUTES_FILE} in run {run.name}.")
            continue
        extra = {k for row in run.attributes for k in row if k != "attribute"}
        columns = ["attribute", *sorted(extra, key=lambda k: (k != "cka", k != "p_value", k))]
        rows = [
            [
                _Cell(fmt(row.get(c)), "num") if isinstance(row.get(c), float) else escape(row.get(c, "—"))
                for c in columns
            ]
            for row in run.attributes
        ]
        out += (
            '<p class="help">How much each weak attribute is reflected in the learned features '
            "(CKA: 0 = not at all, 1 = fully).</p>"
        )
        out += html_table(columns, rows)
        png = plots.attribute_cka(run.attributes)
        if png is not None:
            out += html_figure(png, f"attribute CKA of {run.name}", "CKA per attribute.")
    return out


def _config_section(runs: Sequence[RunArtefacts]) -> str:
    out = ""
    for run in runs:
        out += _run_heading(runs, run)
        if run.config is None:
            out += absent(f"No readable {CONFIG_FILE} in run {run.name}.")
            continue
        text = yaml.safe_dump(
            public_config(run.config), sort_keys=False, default_flow_style=False, allow_unicode=True
        )
        out += f"<pre>{escape(text)}</pre>"
    return out


# ----------------------------------------------------------------------------------------- helpers


class _Cell(str):
    """Already-escaped cell text with a CSS class."""

    css: str

    def __new__(cls, text: str, css: str) -> _Cell:
        obj = super().__new__(cls, text)
        obj.css = css
        return obj


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An HTML table; header strings are escaped here, cells must already be escaped."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{c.css}">{c}</td>' if isinstance(c, _Cell) else f"<td>{c}</td>" for c in row)
        + "</tr>"
        for row in rows
    )
    return (
        f'<div class="wide"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>{body}</tbody>\n</table></div>\n'
    )


def html_figure(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img alt="{escape(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>\n"
    )


def absent(text: str) -> str:
    return f'<p class="absent">{escape(text)}</p>\n'


def _run_heading(runs: Sequence[RunArtefacts], run: RunArtefacts) -> str:
    return f"<h3>{escape(run.name)}</h3>\n" if len(runs) > 1 else ""


def _with_ci(s: MetricSummary) -> str:
    if s.ci_low is None or s.ci_high is None:
        return fmt(s.mean) if s.std is None else f"{fmt(s.mean)} ± {fmt(s.std)}"
    return f"{fmt(s.mean)} [{fmt(s.ci_low)}, {fmt(s.ci_high)}]"


def _lower_is_better(metric: str) -> bool:
    low = metric.lower()
    return any(
        low == k or low.endswith(("_" + k, "/" + k)) or low.startswith(k + "_") for k in _LOWER_IS_BETTER
    )


def fmt(value: object) -> str:
    if value is None:
        return "—"
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
    if x != x:
        return "—"
    return f"{x:.3g}" if x != 0 and (abs(x) < 1e-2 or abs(x) >= 1e4) else f"{x:.3f}"


def escape(value: object) -> str:
    return html.escape(str(value), quote=True)


