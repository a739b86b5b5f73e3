"""The ``report.html`` of a methods comparison: the run report led by the comparison table.

The comparison engine (:mod:`medcl.evaluate.compare`) writes the numbers; this renders them. Called
by ``medcl compare`` and ``medcl demo`` right after :func:`~medcl.evaluate.compare.run_comparison`.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from medcl.evaluate.compare.marks import PROXY_CKA, PROXY_CORRELATION
from medcl.evaluate.compare.results import Comparison, entry_marks, repeats_phrase, shown_interval, signed
from medcl.evaluate.compare.statistics import PRIMARY_METRIC, lower_is_better


def render_comparison(result: Comparison) -> Path:
    """Write ``report.html`` into the comparison's folder (seed 0 of every arm, table first)."""
    from medcl.report.html import render_report

    out = result.out
    seed0 = [out / "runs" / a.dirname / "seed0" for a in result.arms]
    return render_report(seed0, out / "report.html", title=result.settings.title,
                         lead_sections=[("compare", "Methods comparison", comparison_html(result))])


def comparison_html(result: Comparison) -> str:
    """The comparison table as an HTML fragment (escaped; no subject or patient identifiers)."""
    e = html.escape
    base = result.settings.baseline
    parts = [f'<p class="help">Linear probes on the {result.held_out} subjects outside the pretraining split '
             f"({result.settings.folds}-fold patient-level CV{repeats_phrase(result.settings)}); mean over seeds; "
             f"Δ = paired difference to {e(base)} per seed with its 95% t-interval over seeds. "
             f"† prior is the probed label or a close proxy (|r| ≥ {PROXY_CORRELATION} or CKA ≥ {PROXY_CKA} "
             "on the training split); ! training collapsed in some seed; ✗ training diverged (non-finite "
             "loss) in some seed, left out of the mean and the differences.</p>"]
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
            rows.append(f"<tr><td>{e(entry['arm'])} {marks}</td><td class=\"num\">{entry['mean']:.3f}{sd}</td>"
                        f"<td class=\"num\">{diff}</td><td class=\"num\">{ci}</td><td>{e(note)}</td></tr>")
        better = "lower" if lower_is_better(metric) else "higher"
        parts.append(f"<h3>{e(label)} · {e(metric)} ({better} is better)</h3>"
                     '<div class="wide"><table><thead><tr><th>arm</th><th>mean ± sd over seeds</th>'
                     f"<th>Δ vs {e(base)}</th><th>95% CI</th><th>note</th></tr></thead><tbody>"
                     + "".join(rows) + "</tbody></table></div>")
    return "\n".join(parts)
