"""The ready-made pipeline configs and manifest templates, shipped inside the package.

In a source checkout they are the repository's ``pipelines/`` and ``data_manifests/`` (linked
here); an installed package holds copies (pyproject's package data). ``medcl templates copy DIR``
writes them into a folder of your own to edit: a pip user has no repository to read them from.
"""

from __future__ import annotations

from pathlib import Path

from medcl.atomic import write_text
from medcl.errors import MedclInputError

TEMPLATES_DIR = Path(__file__).resolve().parent
FOLDERS = ("pipelines", "data_manifests")


def template_files() -> list[Path]:
    """Every shipped template, as paths relative to :data:`TEMPLATES_DIR` (``pipelines/x.yaml``)."""
    return sorted(p.relative_to(TEMPLATES_DIR) for folder in FOLDERS
                  for p in (TEMPLATES_DIR / folder).glob("*.yaml"))


def copy_templates(dest: str | Path, *, force: bool = False) -> list[Path]:
    """Write the templates into ``dest/pipelines`` and ``dest/data_manifests``; return the files written.

    The synthetic pipelines name their cohort relative to themselves (``../data/synthetic3d``), so
    ``medcl synth --out data/synthetic3d`` run in ``dest`` makes them work as they are.

    Raises:
        MedclInputError: a file to write exists already (nothing is written then) and not ``force``.
    """
    dest = Path(dest)
    files = template_files()
    if not files:
        raise MedclInputError(f"no templates found in {TEMPLATES_DIR}; the installation is incomplete")
    existing = [str(dest / f) for f in files if (dest / f).exists()]
    if existing and not force:
        raise MedclInputError(f"{len(existing)} template file(s) exist already (e.g. {existing[0]}); "
                              "use --force to overwrite them or choose another folder")
    for f in files:
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        write_text(dest / f, (TEMPLATES_DIR / f).read_text())
    return [dest / f for f in files]
