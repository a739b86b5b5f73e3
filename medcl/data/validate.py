"""Validate a manifest and everything it points at, reporting every problem at once.

``validate_manifest`` checks the manifest schema, the table (readable, non-empty, required
columns, unique ids, values that parse, known categories, no all-missing attribute, labels with
at least two classes, patient-level split), paths (inside the data root), feature files of
embedding attributes, and opens every image to check it is readable and of the declared kind.
It writes nothing. Only numpy/pandas/pydantic and the image libraries' header readers are
imported (no torch, no MONAI), so it answers quickly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medcl.data.cohort import parse_cohort
from medcl.data.manifest import Manifest, load_manifest
from medcl.data.readers import check_image
from medcl.data.tables import as_text
from medcl.errors import InputProblems, MedclInputError

#: Image problems listed individually before the rest are only counted.
MAX_IMAGE_PROBLEMS = 50


def _image_problems(manifest: Manifest, cohort_table, column: str) -> list[str]:
    out: list[str] = []
    bad = 0
    where = f"{manifest.table}, column {column!r}"
    for i, text in enumerate(as_text(cohort_table[column])):
        if text is None:
            continue  # reported by the cohort parser
        try:
            path = manifest.resolve(text, "image path")
        except MedclInputError:
            continue  # reported by the cohort parser
        problem = check_image(path, manifest.image.kind, manifest.image.channels)
        if problem is None:
            continue
        bad += 1
        if bad <= MAX_IMAGE_PROBLEMS:
            out.append(f"{where}: row {i + 1}: image {text!r} ({path}): {problem}")
    if bad > MAX_IMAGE_PROBLEMS:
        out.append(f"{where}: ... and {bad - MAX_IMAGE_PROBLEMS} more image(s) with problems")
    return out


def validate_manifest(path: str | Path | Manifest, *, check_images: bool = True) -> dict[str, Any]:
    """Check a manifest, its table, feature files and images; return the cohort summary.

    Args:
        path: manifest YAML file (or an already loaded :class:`Manifest`).
        check_images: open every image (header-level where cheap) to check readability and kind.

    Returns:
        :meth:`medcl.data.Cohort.summary` of the cohort (counts, splits, label balance, attribute
        ranges and missing rates; no ids).

    Raises:
        InputProblems: every problem found, one line each naming file, row and column.
    """
    if isinstance(path, Manifest):
        manifest = path
    else:
        try:
            manifest = load_manifest(path)
        except InputProblems:
            raise
        except MedclInputError as err:
            raise InputProblems([str(err)], header=f"invalid manifest {path}") from None
    cohort, problems = parse_cohort(manifest, check_files=False)
    header = f"invalid cohort {manifest.path or manifest.name}"
    if cohort is None:
        raise InputProblems(problems, header=header)
    table = cohort.table
    if check_images and manifest.image.column in table.columns:
        problems += _image_problems(manifest, table, manifest.image.column)
    if problems:
        raise InputProblems(problems, header=header)
    return cohort.summary()


def format_summary(summary: dict[str, Any]) -> str:
    """A short human-readable rendering of :meth:`Cohort.summary` (for ``medcl validate``)."""
    lines = [
        f"cohort {summary['name']!r}: {summary['subjects']} subjects, {summary['patients']} patients, "
        f"{summary['image_kind']} images",
        "split ({}): {}".format(
            summary["split_method"], ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
        ),
    ]
    for name, entry in summary["labels"].items():
        if "counts" in entry:
            detail = ", ".join(f"{c} {n}" for c, n in entry["counts"].items())
        else:
            detail = f"range {entry['min']:.4g} .. {entry['max']:.4g}, mean {entry['mean']:.4g}"
        lines.append(f"label {name} ({entry['type']}): {detail}; missing {entry['missing']}")
    for name, entry in summary["attributes"].items():
        if "min" in entry:
            detail = f"range {entry['min']:.4g} .. {entry['max']:.4g}, mean {entry['mean']:.4g}"
        elif "counts" in entry:
            shown = list(entry["counts"].items())
            detail = ", ".join(f"{c} {n}" for c, n in shown[:8]) + (" ..." if len(shown) > 8 else "")
        else:
            detail = f"{entry['dim']} features"
        lines.append(f"attribute {name} ({entry['type']}): {detail}; missing {entry['missing_rate']:.1%}")
    return "\n".join(lines)
