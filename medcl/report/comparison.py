"""The ``report.html`` of a methods comparison: the run report led by the comparison table.

The comparison engine (:mod:`medcl.evaluate.compare`) writes the numbers; this renders them. Called
by ``medcl compare`` and ``medcl demo`` right after :func:`~medcl.evaluate.compare.run_comparison`.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medcl.evaluate.compare.marks import PROXY_CKA, PROXY_CORRELATION
from medcl.evaluate.compare.results import (
    SETTINGS_LEGEND,
    Comparison,
    entry_marks,
    repeats_phrase,
    settings_values,
    shown_interval,
    signed,
)
from medcl.evaluate.compare.statistics import PRIMARY_METRIC, lower_is_better

if TYPE_CHECKING:
    from medcl.evaluate.compare.results import LabelEfficiency


def render_comparison(result: Comparison) -> Path:
    """Write ``report.html`` into the comparison's folder (seed 0 of every arm, table first)."""
    from medcl.report.html import render_report

    out = result.out
    seed0 = [out / "runs" / a.dirname / "seed0" for a in result.arms]
    lead = [("compare", "Methods comparison", comparison_html(result))]
    if result.label_efficiency is not None:
        lead.append(("finetune", "Label efficiency (fine-tuned)", label_efficiency_html(result.label_efficiency)))
    return render_report(seed0, out / "report.html", title=result.settings.title, lead_sections=lead)


def label_efficiency_html(le: LabelEfficiency) -> str:
    """Fine-tuned test metric against labelled training patients (one line per arm, band: 95% CI
    over seeds) and the table of paired differences to scratch and the baseline (HTML fragment)."""
    from medcl.evaluate.metrics import MetricSummary
    from medcl.report import plots
    from medcl.report.collect import EfficiencyPoint
    from medcl.report.html import html_figure

    e = html.escape
    entries = le.summary()
    points: dict[str, list[EfficiencyPoint]] = {}
    for entry in entries:  # sizes in order of patients: the x axis
        summary = MetricSummary(entry["mean"], entry["sd"] if entry["sd"] is not None else float("nan"),
                                entry["ci_low"], entry["ci_high"], entry["seeds"])
        points.setdefault(entry["arm"] + (" †" if entry["proxy"] else ""), []).append(
            EfficiencyPoint(entry["train_patients"], {le.metric: summary}))
    for series in points.values():
        series.sort(key=lambda p: p.train_size)
    better = "lower" if lower_is_better(le.metric) else "higher"
    parts = [f'<p class="help">Each arm\'s encoder and a randomly initialised one (scratch) fine-tuned on '
             f"{e(le.label)} ({e(str(le.options.get('mode')))}) with part of the training split's labels (nested, "
             f"stratified patients per seed), early stopping on val, scored once on the {le.test_patients} test "
             f"patients (none pretrained on). {e(le.metric)}: {better} is better; mean over seeds, band and CI: "
             f"95% t-interval over seeds; Δ: paired by seed.</p>"]
    png = plots.label_efficiency(le.label, points, xlabel="labelled training patients")
    if png is not None:
        parts.append(html_figure(png, f"label efficiency {le.label}",
                             f"{le.label}: fine-tuned test {le.metric} against labelled training patients "
                             "(band: 95% CI over seeds)"))
    rows = []
    for entry in entries:
        cells = []
        for key in ("vs_scratch", "vs_baseline"):
            d = entry[key]
            if d is None:
                cells.append("<td></td><td></td>")
                continue
            ci = f"[{signed(d['ci_low'])}, {signed(d['ci_high'])}]" if np.isfinite(d["ci_low"]) else ""
            cells.append(f'<td class="num">{signed(d["mean"])}</td><td class="num">{ci}</td>')
        sd = "" if entry["sd"] is None else f" ± {entry['sd']:.3f}"
        mark = " †" if entry["proxy"] else ""
        rows.append(f"<tr><td>{e(entry['train_size'])}</td><td class=\"num\">{entry['train_patients']:.0f}</td>"
                    f"<td>{e(entry['arm'])}{mark}</td><td class=\"num\">{entry['mean']:.3f}{sd}</td>"
                    + "".join(cells) + "</tr>")
    parts.append('<div class="wide"><table><thead><tr><th>size</th><th>patients</th><th>arm</th>'
                 "<th>mean ± sd over seeds</th><th>Δ vs scratch</th><th>95% CI</th>"
                 f"<th>Δ vs {e(le.baseline)}</th><th>95% CI</th></tr></thead><tbody>"
                 + "".join(rows) + "</tbody></table></div>")
    notes = list(le.skipped)
    notes += [f"† {x['arm']}: its pretraining used {le.label} or a close proxy of it on every training patient "
              f"({x['proxy_reason']}): not a few-label result" for x in entries if x["proxy"]
              and x["train_size"] == le.sizes[0]]
    if notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    return "\n".join(parts)


def comparison_html(result: Comparison) -> str:
    """The comparison table as an HTML fragment (escaped; no subject or patient identifiers)."""
    e = html.escape
    base = result.settings.baseline
    parts = [f'<p class="help">Linear probes on the {result.held_out} subjects outside the pretraining split '
             f"({result.settings.folds}-fold patient-level CV{repeats_phrase(result.settings)}); mean over seeds; "
             f"Δ = paired difference to {e(base)} per seed with its 95% t-interval over seeds. "
             f"† prior is the probed label or a close proxy (|r| ≥ {PROXY_CORRELATION} or CKA ≥ {PROXY_CKA} "
             "on the training split); ! training collapsed in some seed; ✗ training diverged (non-finite "
             "loss) in some seed, left out of the mean and the differences. " + e(SETTINGS_LEGEND) + ".</p>"]
    for label, kind in result.labels.items():
        metric = PRIMARY_METRIC[kind]
        rows = []
        for entry in (x for x in result.summary() if x["label"] == label):
            marks = entry_marks(entry)
            if entry["mean"] is None:
                rows.append(f"<tr><td>{e(entry['arm'])} {marks}</td><td colspan=\"4\">diverged on every seed: "
                            "no result</td></tr>")
                continue
            d = entry["diff"]
            diff = "baseline" if d is None else f"{signed(d['mean'])}"
            lo, hi = (None, None) if d is None else shown_interval(d, entry["seeds"])
            ci = "" if lo is None or not np.isfinite(lo) else f"[{signed(lo)}, {signed(hi)}]"
            sd = "" if entry["sd"] is None else f" ± {entry['sd']:.3f}"
            seeds = ", ".join(map(str, entry["diverged_seeds"]))
            diverged = f"diverged on seed {seeds}" if seeds else ""
            note = "; ".join(x for x in (entry["proxy_reason"], *entry["collapse_reasons"], diverged) if x)
            temp, strength = settings_values(entry)
            rows.append(f"<tr><td>{e(entry['arm'])} {marks}</td><td class=\"num\">{entry['mean']:.3f}{sd}</td>"
                        f"<td class=\"num\">{diff}</td><td class=\"num\">{ci}</td><td>{e(temp)}</td>"
                        f"<td class=\"num\">{e(strength)}</td><td>{e(note)}</td></tr>")
        better = "lower" if lower_is_better(metric) else "higher"
        parts.append(f"<h3>{e(label)} · {e(metric)} ({better} is better)</h3>"
                     '<div class="wide"><table><thead><tr><th>arm</th><th>mean ± sd over seeds</th>'
                     f"<th>Δ vs {e(base)}</th><th>95% CI</th><th>temp.</th><th>aug.</th><th>note</th>"
                     "</tr></thead><tbody>"
                     + "".join(rows) + "</tbody></table></div>")
    return "\n".join(parts)
