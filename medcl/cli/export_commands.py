"""``medcl export``: write a run's encoder (or a diagnosis model) in one of the export formats, round-trip checked.

The format choices, the default and the help text come from the format table
(:mod:`medcl.export.registry`, which imports nothing heavy).
"""

from __future__ import annotations

from pathlib import Path

import typer

from medcl.export.registry import export_formats, format_names

_HELP = """Export the run's encoder; the artifact is reloaded and checked against the encoder first.

Formats: {formats}.
Load any of them with `medcl.load_encoder(path)`. Given a diagnosis model folder (medcl
finetune --out), exports the model (images -> class probabilities, with its label mapping and
threshold in the metadata) to MODEL_DIR/export/model* by default.

Example: `medcl export runs/s3d --format {default} --out exports/s3d_{default}`
"""


def help_text() -> str:
    """The command's help: every format with its summary, from the table."""
    formats = ", ".join(f"{fmt.name} ({fmt.summary})" if fmt.summary else fmt.name for fmt in export_formats())
    return _HELP.format(formats=formats, default=format_names()[0])


def _folder_formats() -> str:
    return " or ".join(fmt.name for fmt in export_formats() if fmt.folder) or "a folder format"


def export_command(
    run_dir: Path = typer.Argument(..., help="run directory of a finished pretraining, or a diagnosis model folder"),
    fmt: str = typer.Option(format_names()[0], "--format", "-f", help=" | ".join(format_names())),
    out: Path | None = typer.Option(
        None, "--out", "-o", help=f"target (a folder for {_folder_formats()}); default RUN_DIR/export/encoder*"
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing target"),
) -> None:
    """Export the run's encoder (or a diagnosis model) in format ``fmt``; the help text is :func:`help_text`."""
    from medcl.errors import MedclInputError
    from medcl.export import export_diagnosis_model, export_encoder, get_format
    from medcl.models.saved import MODEL_DOCUMENT

    if fmt not in format_names():
        raise MedclInputError(f"--format {fmt!r}: choose one of {', '.join(format_names())}")
    diagnosis = (run_dir / MODEL_DOCUMENT).is_file()
    export = export_diagnosis_model if diagnosis else export_encoder
    path = export(run_dir, fmt, out, overwrite=overwrite)
    typer.echo(f"exported {fmt} {'diagnosis model' if diagnosis else 'encoder'} (round-trip checked): {path}")
    for sidecar, target in zip(get_format(fmt).sidecars, get_format(fmt).targets(path)[1:], strict=True):
        typer.echo(f"  {sidecar.what}: {target}")
    typer.echo(f"load it with: medcl.load_encoder({str(path)!r})")


def register(app: typer.Typer) -> None:
    """Add ``medcl export`` to ``app``."""
    app.command("export", help=help_text())(export_command)
