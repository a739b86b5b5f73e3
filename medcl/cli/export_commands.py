"""``medcl export``: write a run's encoder (or a diagnosis model) in one of the export formats, round-trip checked."""

from __future__ import annotations

from pathlib import Path

import typer

_FORMATS_HELP = "bundle | safetensors | torch-export | torchscript | onnx"


def export_command(
    run_dir: Path = typer.Argument(..., help="run directory of a finished pretraining, or a diagnosis model folder"),
    fmt: str = typer.Option("bundle", "--format", "-f", help=_FORMATS_HELP),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="target (a folder for bundle); default RUN_DIR/export/encoder*"
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing target"),
) -> None:
    """Export the run's encoder; the artifact is reloaded and checked against the encoder first.

    Formats: bundle (MONAI bundle folder; recommended), safetensors (+ .json spec),
    torch-export (.pt2), torchscript (.pt; code: load only from trusted sources), onnx.
    Load any of them with `medcl.load_encoder(path)`. Given a diagnosis model folder (medcl
    finetune --out), exports the model (images -> class probabilities, with its label mapping and
    threshold in the metadata) to MODEL_DIR/export/model* by default.

    Example: `medcl export runs/s3d --format bundle --out exports/s3d_bundle`
    """
    from medcl.errors import MedclInputError
    from medcl.export import FORMATS, export_diagnosis_model, export_encoder
    from medcl.models.saved import MODEL_DOCUMENT

    if fmt not in FORMATS:
        raise MedclInputError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    diagnosis = (run_dir / MODEL_DOCUMENT).is_file()
    export = export_diagnosis_model if diagnosis else export_encoder
    path = export(run_dir, fmt, out, overwrite=overwrite)  # type: ignore[arg-type]
    typer.echo(f"exported {fmt} {'diagnosis model' if diagnosis else 'encoder'} (round-trip checked): {path}")
    if fmt == "safetensors":
        typer.echo(f"  architecture + input spec: {path.with_suffix('.json')}")
    typer.echo(f"load it with: medcl.load_encoder({str(path)!r})")


def register(app: typer.Typer) -> None:
    """Add ``medcl export`` to ``app``."""
    app.command("export")(export_command)
