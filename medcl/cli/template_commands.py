"""``medcl templates``: the ready-made pipeline configs and manifest templates, copied to edit."""

from __future__ import annotations

from pathlib import Path

import typer

templates_app = typer.Typer(
    help="The ready-made pipeline configs (pipelines/) and manifest templates (data_manifests/).",
    no_args_is_help=True,
)


@templates_app.command("copy")
def templates_copy_command(
    dest: Path = typer.Argument(..., help="folder to write pipelines/ and data_manifests/ into"),
    force: bool = typer.Option(False, "--force", help="overwrite template files that exist already"),
) -> None:
    """Copy the shipped templates into DEST/pipelines and DEST/data_manifests.

    Example: `medcl templates copy .` then `medcl config show --config pipelines/brain_mri_template.yaml`
    """
    from medcl.templates import copy_templates

    written = copy_templates(dest, force=force)
    typer.echo(f"wrote {len(written)} templates into {dest}/pipelines and {dest}/data_manifests:")
    for path in written:
        typer.echo(f"  {path}")


@templates_app.command("list")
def templates_list_command() -> None:
    """List the shipped templates and where they are installed."""
    from medcl.templates import TEMPLATES_DIR, template_files

    typer.echo(f"templates in {TEMPLATES_DIR} (copy them with `medcl templates copy DIR`):")
    for path in template_files():
        typer.echo(f"  {path.as_posix()}")


def register(app: typer.Typer) -> None:
    """Add the ``templates`` group to ``app``."""
    app.add_typer(templates_app, name="templates")
