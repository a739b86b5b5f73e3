"""``medcl report``: one self-contained HTML page for one or several run directories."""

from __future__ import annotations

from pathlib import Path

import typer


def report(
    run_dirs: list[Path] = typer.Argument(
        ..., metavar="RUN_DIR", help="run directories (several: compared side by side)"
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="HTML file to write (default RUN_DIR/report.html, or ./report.html for several)",
    ),
    title: str | None = typer.Option(None, "--title", help="page title (default: the run names)"),
    projection: str = typer.Option(
        "auto", "--projection", help="2D projection of embeddings: auto (t-SNE when small), pca or tsne"
    ),
) -> None:
    """Write a self-contained HTML report for one or several run directories.

    Sections: training curves, probe table with confidence intervals, label-efficiency curves,
    2D projection of the embeddings, prior kernel, attribute diagnostics, resolved config, and a
    comparison table when several runs are given.

    Plots are embedded as PNG, so the file can be e-mailed or archived on its own. Sections whose
    files are missing are replaced by a short note; subject ids are never shown.

    Given a diagnosis model folder (medcl finetune --out), the page shows its test metrics with
    their bootstrap intervals, the reliability diagram and the training history instead.

    Example: `medcl report runs/kernel_du runs/simclr --out comparison.html`
    """
    from medcl.report.diagnosis import is_model_dir, render_diagnosis_report
    from medcl.report.html import render_report

    if len(run_dirs) == 1 and is_model_dir(run_dirs[0]):
        typer.echo(f"report: {render_diagnosis_report(run_dirs[0], out)}")
        return

    path = render_report(run_dirs, out, title=title, projection=projection)  # type: ignore[arg-type]
    typer.echo(f"report: {path}")


def register(app: typer.Typer) -> None:
    """Add ``medcl report`` to ``app``."""
    app.command("report")(report)
