"""CLI commands of the data stage: ``medcl validate``, ``medcl cache``, the ``medcl manifest`` builders,
``medcl synth``.

Only light modules are imported at the top; each command imports what it needs.
"""

from __future__ import annotations

from pathlib import Path

import typer


def validate(
    manifest: Path = typer.Argument(..., help="Manifest YAML file.", show_default=False),
    images: bool = typer.Option(True, "--images/--no-images", help="Open every image (slower, thorough)."),
) -> None:
    """Check a manifest, its table and its images; print a summary or every problem.

    Example: `medcl validate data_manifests/my_cohort.yaml`

    Exit code 0 when the cohort is usable, 2 with one line per problem (file, row, column)
    otherwise. Writes nothing.
    """
    from medcl.data.validate import format_summary, validate_manifest

    summary = validate_manifest(manifest, check_images=images)
    typer.echo(format_summary(summary))
    typer.secho("ok: the manifest is valid", fg="green")


manifest_app = typer.Typer(
    help="Build a starting manifest (table.csv + manifest.yaml) from a dataset folder.",
    no_args_is_help=True,
)


def _report(result) -> None:
    typer.echo(f"wrote {result.table_path} ({result.rows} rows) and {result.manifest_path}")
    for line in result.notes:
        typer.echo(f"note: {line}")
    for line in result.skipped[:20]:
        typer.echo(f"skipped {line}")
    if len(result.skipped) > 20:
        typer.echo(f"... and {len(result.skipped) - 20} more skipped")
    typer.echo(f"next: edit {result.manifest_path.name}, then run `medcl validate {result.manifest_path}`")


@manifest_app.command("from-bids")
def from_bids(
    bids_dir: Path = typer.Argument(..., help="BIDS dataset folder (read only).", show_default=False),
    out: Path = typer.Option(..., "--out", help="Output folder for table.csv and manifest.yaml."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing table/manifest in --out."),
) -> None:
    """Manifest for the T1w images of a BIDS dataset (participants.tsv gives the attributes).

    Example: `medcl manifest from-bids /data/ds000001 --out manifests/ds000001`
    """
    from medcl.data.builders import build_from_bids

    _report(build_from_bids(bids_dir, out, force=force))


@manifest_app.command("from-dicom")
def from_dicom(
    dicom_dir: Path = typer.Argument(..., help="Folder tree of DICOM files (read only).", show_default=False),
    out: Path = typer.Option(..., "--out", help="Output folder for table.csv and manifest.yaml."),
    kind: str = typer.Option("auto", "--kind", help="2d, 3d or auto (the kind of most series)."),
    salt: str | None = typer.Option(
        None, "--salt", envvar="MEDCL_PSEUDONYM_SALT", show_default=False,
        help="Secret mixed into the patient pseudonyms; default: a random per-cohort salt kept in "
        "OUT/.pseudonym_salt (owner-only) and reused by later builds.",
    ),
    study_date: str = typer.Option(
        "year", "--study-date", help="year (keep the year only), offset (days since the patient's first "
        "study) or full (the date as is: an identifier)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing table/manifest in --out."),
) -> None:
    """Manifest with one row per DICOM series; patient ids are pseudonymised, study dates coarsened.

    Example: `medcl manifest from-dicom /data/pacs_export --out manifests/pacs --salt "$SECRET"`
    """
    from medcl.data.builders import build_from_dicom

    _report(build_from_dicom(dicom_dir, out, kind=kind, salt=salt, study_date=study_date, force=force))


def cache(
    manifest: Path | None = typer.Option(None, "--manifest", "-m", help="cohort manifest (YAML)"),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="pretraining config: its manifest and cache_dir (--manifest wins)"
    ),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="cache root (default: the config's cache_dir, $MEDCL_CACHE_DIR or "
        "~/.cache/medcl/preprocessed)"
    ),
    workers: int = typer.Option(2, "--workers", "-w", min=0, help="preprocessing processes (0: this one)"),
) -> None:
    """Preprocess every scan of a cohort once into the shared cache (before a comparison).

    Example: `medcl cache --manifest data_manifests/my_cohort.yaml --workers 8`

    Pretraining, probing, fine-tuning, `medcl compare` and the demo then read the cached images
    instead of re-reading and resampling each scan. Scans already cached (same file, same
    preprocessing) are skipped; safe to run while a training reads the same cache. The cache holds
    the preprocessed pixels of every scan: keep it on the hospital's machines.
    """
    from medcl.errors import MedclInputError

    if manifest is None and config is None:
        raise MedclInputError("give --manifest FILE (or --config FILE naming one)")
    root = cache_dir
    if config is not None:
        from medcl.pretrain.config import load_config

        cfg = load_config(config, [])
        manifest = manifest or Path(cfg.manifest)
        root = root or (Path(cfg.cache_dir) if cfg.cache_dir else None)
    from medcl.data.cohort import Cohort
    from medcl.data.preprocessed import warm_cache

    report = warm_cache(Cohort.from_manifest(manifest), cache_dir=root, workers=workers, progress=True)
    typer.echo(report.line())


def register(app: typer.Typer) -> None:
    """Add ``validate`` and the ``manifest`` group to ``app``."""
    app.command("validate")(validate)
    app.command("cache")(cache)
    app.add_typer(manifest_app, name="manifest")


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


def register_synth(app: typer.Typer) -> None:
    """Add ``medcl synth`` to ``app``."""
    app.command("synth")(synth)
