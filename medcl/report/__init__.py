"""The run report: one self-contained HTML page for one or several run directories.

``render_report(run_dirs, out)`` writes it; ``write_embeddings`` and ``write_kernel_batch`` let a
training or demo script leave the artefacts the report plots. Importing this package is cheap:
pandas, scikit-learn and matplotlib load only when a report is rendered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from medcl.evaluate.artefacts import write_embeddings, write_kernel_batch

if TYPE_CHECKING:
    from medcl.report.collect import RunArtefacts, collect_run, collect_runs
    from medcl.report.html import build_html, render_report

__all__ = [
    "RunArtefacts",
    "build_html",
    "collect_run",
    "collect_runs",
    "render_report",
    "write_embeddings",
    "write_kernel_batch",
]

_LAZY = {
    "render_report": "medcl.report.html",
    "build_html": "medcl.report.html",
    "collect_run": "medcl.report.collect",
    "collect_runs": "medcl.report.collect",
    "RunArtefacts": "medcl.report.collect",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medcl.report' has no attribute {name!r}")
