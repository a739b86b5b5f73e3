"""``medcl synth``: write a synthetic cohort (images, table, manifest) for demos and tests."""

from __future__ import annotations

from pathlib import Path

import typer


def synth(
    out: Path = typer.Option(..., "--out", help="output folder (created; must be empty unless --force)"),
    dims: int = typer.Option(3, "--dims", help="3: brain-MRI-like NIfTI; 2: chest-X-ray-like PNG/DICOM"),
    subjects: int = typer.Option(500, "--subjects", min=1, help="number of scans (table rows)"),
    seed: int = typer.Option(0, "--seed", help="random seed; same seed gives identical files"),
    size: int | None = typer.Option(None, "--size", min=8, help="image side (default 32 for 3D, 64 for 2D)"),
    image_format: str | None = typer.Option(
        None, "--format", help="nifti (3D), png or dicom (2D); default nifti / png"
    ),
    force: bool = typer.Option(False, "--force", help="replace a non-empty output folder"),
) -> None:
    """Write a synthetic cohort whose ground truth is known (age, sex, site, diagnosis, scores).

    Example: `medcl synth --out synth3d --dims 3 --subjects 200 --seed 1`
    then `medcl validate synth3d/manifest.yaml`.
    """
    import pandas as pd

    from medcl.data.synthetic import generate_cohort
    from medcl.errors import MedclInputError

    if dims not in (2, 3):
        raise MedclInputError(f"--dims must be 2 or 3, got {dims}")
    manifest = generate_cohort(
        out,
        dims=dims,
        subjects=subjects,
        size=size,
        seed=seed,
        image_format=image_format,  # type: ignore[arg-type]
        overwrite=force,
    )
    table = pd.read_csv(manifest.parent / "participants.csv")
    diseased = int((table["diagnosis"] == "disease").sum())
    typer.echo(
        f"wrote {len(table)} {dims}D scans of {table['patient_id'].nunique()} patients "
        f"({diseased} diseased, {table['site'].nunique()} sites) to {manifest.parent}\n"
        f"manifest: {manifest}"
    )


def register(app: typer.Typer) -> None:
    """Add ``medcl synth`` to ``app``."""
    app.command("synth")(synth)
