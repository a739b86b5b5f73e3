"""The report page of a diagnosis model folder (``medcl report MODEL_DIR``).

Reads ``model.json`` and ``metrics.json`` (written by ``medcl finetune``): what the model predicts,
the decision threshold, where its encoder came from, the test metrics with their patient-level
bootstrap intervals, the reliability diagram and the training history. Neither file holds a
subject id or value.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from medcl.atomic import write_text
from medcl.errors import MedclInputError
from medcl.models.saved import MODEL_DOCUMENT, MODEL_METRICS, medcl_version
from medcl.report import plots
from medcl.report.html import CSS, REPORT_FILE, absent, escape, fmt, html_figure, html_table


def is_model_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / MODEL_DOCUMENT).is_file()


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MedclInputError(f"{path}: unreadable ({err})") from None


def _metrics_table(test: dict[str, Any]) -> str:
    rows = []
    for name, entry in test.items():
        entry = entry or {}
        ci = "" if entry.get("low") is None else f"[{fmt(entry['low'])}, {fmt(entry['high'])}]"
        rows.append([escape(name), fmt(entry.get("value")), ci, escape(entry.get("n_boot", ""))])
    return html_table(["test metric", "value", "95% interval (patient bootstrap)", "resamples used"], rows)


def diagnosis_html(model_dir: Path) -> str:
    """The page for one model folder, as an HTML string."""
    doc = _read(model_dir / MODEL_DOCUMENT)
    diagnosis = doc.get("diagnosis") or {}
    metrics = _read(model_dir / MODEL_METRICS) if (model_dir / MODEL_METRICS).is_file() else {}
    label = diagnosis.get("label") or {}
    provenance = diagnosis.get("provenance") or {}
    threshold = diagnosis.get("threshold") or {}
    summary = [
        ["label", escape(f"{label.get('name')} ({label.get('kind')})")],
        ["classes", escape(", ".join(map(str, label.get("classes") or [])) or "n/a (continuous)")],
        ["outputs", escape(", ".join(diagnosis.get("outputs") or []))],
        ["decision threshold", escape(f"{threshold['value']:.4f} on p({label.get('positive')}), "
                                  f"{threshold.get('rule')} on the {threshold.get('chosen_on')} split")
         if threshold else "arg max" if label.get("kind") == "multiclass" else "n/a"],
        ["encoder", escape(f"run {provenance.get('run')}, method {provenance.get('method')}, init "
                       f"{provenance.get('init')}, mode {provenance.get('mode')}")],
        ["prior attributes", escape(", ".join(provenance.get("attributes") or []) or "none")],
        ["scans", escape(json.dumps(metrics.get("sizes", {})))],
    ]
    parts = [f"<section><h2>Model</h2>{html_table(['', ''], summary)}</section>"]
    if metrics.get("test"):
        parts.append(f"<section><h2>Test metrics</h2>{_metrics_table(metrics['test'])}")
        if metrics.get("notes"):
            parts.append('<ul class="notes">' + "".join(f"<li>{escape(n)}</li>" for n in metrics["notes"]) + "</ul>")
        parts.append("</section>")
    else:
        parts.append(absent(f"no {MODEL_METRICS} in this folder"))
    reliability = metrics.get("reliability") or {}
    png = plots.reliability_diagram(reliability.get("bins") or [], title=f"ECE {fmt(reliability.get('ece'))}")
    parts.append("<section><h2>Calibration</h2>" + (
        html_figure(png, "reliability diagram", "Test scans binned by predicted probability (binary: of the positive "
                "class; multiclass: of the predicted class).") if png else absent("no reliability data "
                                                                                  "(continuous label)")) + "</section>")
    history = metrics.get("history") or []
    if history:
        rows = [[escape(h["epoch"]), escape(h["phase"]), fmt(h["train_loss"]), fmt(h["val_loss"]), fmt(h["val_score"])]
                for h in history]
        parts.append("<section><h2>Training</h2>" + html_table(
            ["epoch", "phase", "train loss", "val loss", "val score (AUC or -MAE)"], rows) + "</section>")
    settings = json.dumps(metrics.get("settings") or diagnosis.get("settings") or {}, indent=2)
    parts.append(f"<section><h2>Settings</h2><pre>{escape(settings)}</pre></section>")
    title = f"medcl diagnosis model: {label.get('name')}"
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<header>\n<h1>{escape(title)}</h1>\n"
        f"<p class=\"meta\">Generated {stamp} by medcl {escape(medcl_version())}</p>\n"
        f"</header>\n<main>\n{''.join(parts)}\n</main>\n</body>\n</html>\n"
    )


def render_diagnosis_report(model_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the model folder's report (default ``MODEL_DIR/report.html``) atomically; return its path."""
    model_dir = Path(model_dir)
    if not is_model_dir(model_dir):
        raise MedclInputError(f"{model_dir}: not a diagnosis model folder ({MODEL_DOCUMENT} missing)")
    target = Path(out) if out is not None else model_dir / REPORT_FILE
    return write_text(target, diagnosis_html(model_dir))
