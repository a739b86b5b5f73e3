"""A copy of a cohort with two control attributes: an oracle (the label itself) and pure noise.

Before trusting a prior, check the pipeline with the two ends of the scale: kernel DU with a delta
kernel on the label itself (the *oracle*) must beat plain DU on that label, and a pure-noise
attribute must not hurt it. :func:`with_check_attributes` writes a new manifest and table that add
``oracle_<label>`` and ``noise`` to the cohort's attributes; the user's files are only read (images
and feature files are referenced by absolute path, inside the original data root).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from medcl.atomic import write_text
from medcl.errors import MedclInputError

NOISE_ATTRIBUTE = "noise"


def oracle_attribute(label: str) -> str:
    """Name of the oracle attribute for ``label``."""
    return f"oracle_{label}"


def with_check_attributes(manifest_path: str | Path, label: str, out_dir: str | Path, *, seed: int = 12345) -> Path:
    """Write ``out_dir/manifest.yaml`` + ``table.csv``: the cohort plus ``oracle_<label>`` and ``noise``.

    The oracle is a categorical attribute (delta kernel) for a class label and a continuous one (RBF)
    for a continuous label; ``noise`` is standard normal, drawn with ``seed``. Returns the new
    manifest's path. Raises MedclInputError for an unknown label or a name already in use.
    """
    from medcl.data.manifest import load_manifest
    from medcl.data.tables import read_table

    manifest_path = Path(manifest_path).resolve()
    manifest = load_manifest(manifest_path)
    spec = manifest.label(label)
    oracle = oracle_attribute(label)
    taken = {a.name for a in manifest.attributes} & {oracle, NOISE_ATTRIBUTE}
    if taken:
        raise MedclInputError(f"{manifest_path}: attribute name(s) {sorted(taken)} already in use")
    table = read_table(manifest.base_dir / manifest.table).copy()
    table[oracle] = table[spec.source_column]
    table[NOISE_ATTRIBUTE] = np.round(np.random.default_rng(seed).normal(size=len(table)), 4)
    image_column = manifest.image.column
    table[image_column] = [str(manifest.resolve(str(v), "image path")) for v in table[image_column]]

    data = yaml.safe_load(manifest_path.read_text())
    data["table"] = "table.csv"
    data["data_root"] = str(manifest.root)
    for attr in data.get("attributes") or []:
        if attr.get("features"):
            attr["features"] = str(manifest.resolve(attr["features"], "features file"))
    kind = "continuous" if spec.type == "continuous" else "categorical"
    data["attributes"] = [*(data.get("attributes") or []), {"name": oracle, "type": kind},
                          {"name": NOISE_ATTRIBUTE, "type": "continuous"}]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "table.csv", table.to_csv(index=False))
    path = out_dir / "manifest.yaml"
    write_text(path, yaml.safe_dump(data, sort_keys=False))
    return path
