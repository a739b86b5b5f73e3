"""Run a saved diagnosis model on scans: one CSV row per scan (``medcl predict``).

The model's own preprocessing (saved in its document) is rebuilt, so predictions do not depend on
the manifest's settings. Scans are read one by one and run in batches; a scan that cannot be read
or preprocessed is reported (``on_failure``) and skipped, and the others are still written. The CSV
is the user's own data: with a manifest it carries the subject id, otherwise only the image path.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medcl.errors import MedclInputError


@dataclass
class Predictions:
    """What :func:`predict_scans` wrote: the CSV path, rows written and the scans that failed."""

    path: Path
    n_written: int
    failed: list[tuple[str, str]] = field(default_factory=list)


def image_files(items: Sequence[str | Path]) -> list[Path]:
    """Files and folders -> image paths: a folder holding image files gives those (sorted); a folder
    without any is taken as one DICOM series. Raises MedclInputError for a path that does not exist."""
    from medcl.data.image_formats import image_format

    paths: list[Path] = []
    for item in map(Path, items):
        if not item.exists():
            raise MedclInputError(f"--images {item}: no such file or folder")
        if item.is_dir():
            inside = sorted(p for p in item.iterdir() if p.is_file() and image_format(p) not in (None, "dicom"))
            inside += sorted(p for p in item.iterdir() if p.is_file() and image_format(p) == "dicom")
            paths += inside or [item]
        else:
            paths.append(item)
    if not paths:
        raise MedclInputError("--images: no image given")
    return paths


def _decisions(doc: dict, outputs: np.ndarray) -> list:
    """Predicted class name per row (binary: p >= the validation threshold) or the value."""
    diagnosis = doc["diagnosis"]
    label = diagnosis["label"]
    if label["kind"] == "continuous":
        return [float(v) for v in outputs[:, 0]]
    classes = label["classes"]
    if label["kind"] == "binary":
        threshold = (diagnosis.get("threshold") or {}).get("value", 0.5)
        return [classes[int(p >= threshold)] for p in outputs[:, 1]]
    return [classes[int(k)] for k in outputs.argmax(axis=1)]


def predict_scans(
    model_dir: str | Path,
    out: str | Path,
    *,
    manifest: str | Path | None = None,
    images: Sequence[str | Path] | None = None,
    batch_size: int = 16,
    device: str = "auto",
    progress: bool = False,
    on_failure: Callable[[str, str], None] | None = None,
) -> Predictions:
    """Predict every scan of ``manifest`` (or ``images``) with the model in ``model_dir``; write ``out`` (CSV).

    Columns: ``subject_id`` (manifest only), ``image``, one per model output (``p_<class>`` or the
    label name for a continuous label), ``predicted`` (class name, or the value).

    Raises:
        MedclInputError: not a diagnosis model, neither or both of manifest / images, a missing path.
    """
    import pandas as pd
    import torch

    from medcl.atomic import atomic_path
    from medcl.data.manifest import ImageSpec, PreprocessingSpec
    from medcl.data.transforms import preprocessing_chain
    from medcl.evaluate.finetune_loop import resolve_device
    from medcl.models.saved import load_diagnosis_model
    from medcl.pretrain.progress import ProgressLines

    if (manifest is None) == (images is None):
        raise MedclInputError("give either --manifest or --images (not both)")
    model = load_diagnosis_model(model_dir)
    doc = model.metadata
    pre = doc["diagnosis"]["preprocessing"]
    chain = preprocessing_chain(ImageSpec.model_validate({**pre["image"]}), PreprocessingSpec.model_validate(
        pre["preprocessing"]))
    if manifest is not None:
        from medcl.data.cohort import Cohort

        cohort = Cohort.from_manifest(manifest, check_files=False)
        if cohort.manifest.image.kind != pre["image"]["kind"]:
            raise MedclInputError(f"manifest {manifest}: {cohort.manifest.image.kind} images, but the model was "
                                  f"trained on {pre['image']['kind']} images")
        paths, ids = [Path(p) for p in cohort.image_paths], [str(s) for s in cohort.subject_ids]
    else:
        paths, ids = image_files(images or []), None
    on_failure = on_failure or (lambda path, why: print(f"cannot read {path}: {why}", file=sys.stderr))
    dev = resolve_device(device)
    model.to(dev).eval()
    rows, outputs, failed = [], [], []
    bar = ProgressLines(len(paths), stream=sys.stderr, unit="scan") if progress else None
    for start in range(0, len(paths), batch_size):
        batch, kept = [], []
        for i in range(start, min(start + batch_size, len(paths))):
            try:
                batch.append(chain({"image": str(paths[i])})["image"])
                kept.append(i)
            except Exception as err:  # MONAI wraps the reader's error; name the scan and go on
                cause = err.__cause__ or err
                why = f"{type(cause).__name__}: {str(cause).strip().splitlines()[0] if str(cause).strip() else ''}"
                failed.append((str(paths[i]), why))
                on_failure(str(paths[i]), why)
        if batch:
            with torch.inference_mode():
                outputs.append(model(torch.stack(batch).to(dev)).float().cpu().numpy())
            rows += kept
        if bar is not None:
            bar.update(min(start + batch_size, len(paths)), "predict")
    names = doc["diagnosis"]["outputs"]
    values = np.concatenate(outputs) if outputs else np.zeros((0, len(names)))
    table = pd.DataFrame({"image": [str(paths[i]) for i in rows]})
    if ids is not None:
        table.insert(0, "subject_id", [ids[i] for i in rows])
    if doc["diagnosis"]["label"]["kind"] != "continuous":
        for k, name in enumerate(names):
            table[name] = values[:, k].astype(np.float64)
    table["predicted"] = _decisions(doc, values)
    out = Path(out)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    return Predictions(out, len(table), failed)
