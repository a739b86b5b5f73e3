"""Export a run directory's encoder: :func:`export_encoder`, with training metadata free of ids.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medcl.errors import MedclInputError
from medcl.export.roundtrip import default_export_path, export_module
from medcl.models.saved import (
    load_diagnosis_model,
    load_safetensors,
)


def _redact(obj: Any, ids: set[str]) -> Any:
    """Replace any string (value or key) equal to a subject / patient id by "<redacted>"."""
    if isinstance(obj, dict):
        return {("<redacted>" if str(k) in ids else k): _redact(v, ids) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_redact(v, ids) for v in obj]
    if isinstance(obj, str) and obj in ids:
        return "<redacted>"
    return obj


def _run_ids(run) -> set[str]:
    import pandas as pd

    if not run.split_path.is_file():
        return set()
    table = pd.read_csv(run.split_path, dtype=str, keep_default_na=False)
    cols = [c for c in table.columns if c != "split"]
    return {v for c in cols for v in table[c].tolist() if v}


def run_training_info(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Method, attributes, kernel terms and a k-anonymous training-cohort summary of a run (no ids, no values)."""
    from medcl.pretrain.run_dir import RunDir

    run = RunDir(run_dir)
    info: dict[str, Any] = {}
    try:
        config = run.config()
    except (OSError, MedclInputError):
        return info
    info["method"] = config.method
    kernel = config.kernel or {}
    terms = kernel.get("terms") if isinstance(kernel, dict) else None
    if config.uses_attributes:
        info["attributes"] = list(config.attributes or [t.get("name") for t in terms or []])
    if terms:  # names, kinds, bandwidths, weights: the imputation reference stays in the run
        from medcl.kernels.public import public_kernel

        kernel_info = public_kernel(kernel)
        for term in kernel_info["terms"]:
            term.pop("imputation_reference", None)
        info["kernel"] = {"combine": kernel_info["combine"], "terms": kernel_info["terms"]}
    info["encoder"] = config.encoder.model_dump(mode="json")
    info["epochs"] = config.epochs
    try:
        from medcl.data.cohort import Cohort
        from medcl.data.shareable import shareable_summary

        cohort = Cohort.from_manifest(config.manifest, check_files=False)
        info["cohort"] = shareable_summary(cohort)  # rounded, k-anonymous: no subject's value
    except (OSError, MedclInputError):
        info["cohort"] = "unavailable (manifest not readable at export time)"
    return _redact(info, _run_ids(run))


def export_encoder(
    run_dir: str | os.PathLike,
    fmt: str,
    out: str | os.PathLike | None = None,
    *,
    overwrite: bool = False,
    atol: float = 1e-4,
) -> Path:
    """Export a run's encoder (``encoder.safetensors`` + ``encoder.json``) in format ``fmt``.

    ``out`` defaults to :func:`default_export_path`. Metadata carries the input spec, method,
    attributes and a training-cohort summary, and never a subject or patient id.

    Raises:
        MedclInputError: not a run directory, no encoder weights yet, existing target, or an
            export that fails its round-trip check (nothing written then).
    """
    from medcl.pretrain.run_dir import RunDir

    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise MedclInputError(f"{run.path}: no such run directory")
    if not run.encoder_weights.is_file() or not run.encoder_json.is_file():
        missing = run.encoder_weights if not run.encoder_weights.is_file() else run.encoder_json
        raise MedclInputError(
            f"{run.path}: no encoder to export ({missing.name} missing); finish pretraining first "
            "(medcl pretrain ... or --resume the run)"
        )
    encoder = load_safetensors(run.encoder_weights, run.encoder_json)
    doc = encoder.metadata
    training = run_training_info(run.path)
    out = Path(out) if out is not None else default_export_path(run.path, fmt)
    return export_module(
        encoder, doc["input"], fmt, out,
        spec=doc.get("spec"), training=training, overwrite=overwrite, atol=atol,
    )


def export_diagnosis_model(
    model_dir: str | os.PathLike,
    fmt: str,
    out: str | os.PathLike | None = None,
    *,
    overwrite: bool = False,
    atol: float = 1e-4,
) -> Path:
    """Export a saved diagnosis model (``medcl finetune --out``) in format ``fmt``, round-trip checked.

    The artefact maps images to class probabilities (or values) and embeds the model's document
    (label, classes, threshold, preprocessing, provenance). ``out`` defaults to
    ``MODEL_DIR/export/model[.ext]``. Raises MedclInputError as :func:`export_encoder`.
    """
    model_dir = Path(model_dir)
    model = load_diagnosis_model(model_dir)
    if out is None:
        out = default_export_path(model_dir, fmt, stem="model")
    return export_module(model, model.metadata["input"], fmt, out, document=model.metadata,
                         overwrite=overwrite, atol=atol)
