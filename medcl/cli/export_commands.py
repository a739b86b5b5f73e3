"""``medcl export``: write a run's encoder in one of the export formats, round-trip checked."""

from __future__ import annotations

from pathlib import Path

import typer

_FORMATS_HELP = "bundle | safetensors | torch-export | torchscript | onnx"


def export_command(
    run_dir: Path = typer.Argument(..., help="run directory of a finished pretraining"),
    fmt: str = typer.Option("bundle", "--format", "-f", help=_FORMATS_HELP),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="target (a folder for bundle); default RUN_DIR/export/encoder*"
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing target"),
) -> None:
    """Export the run's encoder; the artifact is reloaded and checked against the encoder first.

    Formats: bundle (MONAI bundle folder; recommended), safetensors (+ .json spec),
    torch-export (.pt2), torchscript (.pt; code: load only from trusted sources), onnx.
    Load any of them with `medcl.load_encoder(path)`.

    Example: `medcl export runs/s3d --format bundle --out exports/s3d_bundle`
    """
    from medcl.errors import MedclInputError
    from medcl.export import FORMATS, export_encoder

    if fmt not in FORMATS:
        raise MedclInputError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    path = export_encoder(run_dir, fmt, out, overwrite=overwrite)  # type: ignore[arg-type]
    typer.echo(f"exported {fmt} encoder (round-trip checked): {path}")
    if fmt == "safetensors":
        typer.echo(f"  architecture + input spec: {path.with_suffix('.json')}")
    typer.echo(f"load it with: medcl.load_encoder({str(path)!r})")


def register(app: typer.Typer) -> None:
    """Add ``medcl export`` to ``app``."""
    app.command("export")(export_command)
