"""Probe a run directory's encoder on a manifest's cohort: :func:`probe_run` (``medcl probe``).

Encodes the cohort once with the run's encoder (no augmentation), keeps the subjects outside the
run's pretraining split (unless asked otherwise) and hands the features to
:func:`medcl.evaluate.probe.probe_features`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medcl.errors import MedclInputError
from medcl.evaluate.metrics import ProbeResult, write_probe_result
from medcl.evaluate.probe import probe_features
from medcl.pretrain.run_dir import RunDir


def run_encoder(run_dir: Path, *, random_init: bool, seed: int):
    """The run's encoder (or a random one of the same spec) and its input spec."""
    from medcl.models.saved import random_encoder

    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise MedclInputError(f"{run.path}: no such run directory")
    if not run.encoder_json.is_file() or (not random_init and not run.encoder_weights.is_file()):
        raise MedclInputError(
            f"{run.path}: no trained encoder ({run.ENCODER_WEIGHTS} / {run.ENCODER_DOCUMENT} missing); "
            "finish pretraining first"
        )
    if not random_init:
        return run.load_encoder()  # as medcl.load_encoder(run dir)
    info = run.encoder_info()
    return random_encoder(info["spec"], seed, info["input"])


def _probe_subjects(run_dir: Path, cohort: Any, labels: np.ndarray, subjects: str,
                    label: str) -> tuple[np.ndarray, str | None]:
    """Indices of the labelled subjects to probe, and a note saying which were left out (or kept)."""
    if subjects not in ("outside", "all"):
        raise MedclInputError(f"subjects: expected 'outside' or 'all', got {subjects!r}")
    labelled = np.isfinite(labels)
    ids = np.asarray([str(i) for i in cohort.subject_ids], dtype=object)
    run = RunDir(run_dir)
    if subjects == "all":
        try:
            inside = np.isin(ids, list(run.pretraining_subject_ids()))
        except MedclInputError:
            return np.flatnonzero(labelled), "subjects 'all': the run's pretraining split is unknown (no split.csv)"
        n_in = int((inside & labelled).sum())
        return np.flatnonzero(labelled), (
            f"subjects 'all': {n_in} of the {int(labelled.sum())} probed subjects pretrained this encoder; "
            "their scores are optimistic" if n_in else None)
    try:
        inside = np.isin(ids, list(run.pretraining_subject_ids()))
    except MedclInputError as err:
        raise MedclInputError(f"{err}; probe with subjects='all' (--subjects all) to score every subject") from None
    keep = labelled & ~inside
    if not keep.any():
        raise MedclInputError(
            f"no subject with a value for {label!r} outside the run's pretraining split ({run.split_path}); "
            "probe a cohort the encoder has not seen, or use --subjects all"
        )
    n_in = int((inside & labelled).sum())
    note = (f"{n_in} subject(s) of the run's pretraining split were left out (probe scores only subjects "
            "the encoder never saw)") if n_in else None
    return np.flatnonzero(keep), note


def probe_run(
    run_dir: str | Path,
    manifest: str | Path,
    label: str,
    *,
    train_sizes: Sequence[int | str] | None = None,
    n_folds: int | None = None,
    knn: bool = False,
    random_init: bool = False,
    seed: int | None = None,
    batch_size: int = 16,
    num_workers: int = 0,
    device: str | None = None,
    progress: bool = True,
    write: bool = True,
    subjects: str = "outside",
    **probe_options: Any,
) -> ProbeResult:
    """Encode a manifest's cohort with a run's encoder once, then :func:`probe_features`.

    Folds are the cohort's patient-level folds (:meth:`Cohort.folds`, ``n_folds`` overriding the
    manifest's count) when they are stratified on this label (or it is continuous); otherwise
    patient-level folds stratified on this label, with the manifest's seed.
    ``random_init`` probes a randomly initialised encoder of the same architecture (a lower
    bound). ``subjects="outside"`` (default) scores only the subjects outside the run's
    pretraining split (RUN_DIR/split.csv), so that no subject whose image (and, for a supervised
    run, whose label) trained the encoder is ever scored; ``"all"`` probes every subject and
    says in the notes how many pretrained the encoder. Results go to
    ``RUN_DIR/probe/<label>.json`` and ``.csv`` (random init:
    ``RUN_DIR/probe/random-init/<label>.*``, kept apart so reports never mix the two).

    Raises:
        MedclInputError: no trained encoder, unknown or constant label, channel mismatch,
            no split.csv (with ``subjects="outside"``), no labelled subject outside the split.
    """
    from medcl.data.cohort import Cohort
    from medcl.evaluate.features import encode_dataset, run_images

    run_dir = Path(run_dir)
    cohort = Cohort.from_manifest(manifest)
    spec = cohort.manifest.label(label)  # raises for an unknown label, listing the known ones
    labels = cohort.label(label)
    encoder = run_encoder(run_dir, random_init=random_init, seed=seed or 0)
    input_spec = dict(getattr(encoder, "input_spec", {}) or {})
    channels = input_spec.get("channels")
    if channels is not None and int(channels) != cohort.manifest.image.channels:
        raise MedclInputError(
            f"the encoder expects {channels} channel(s) but manifest {manifest} has "
            f"{cohort.manifest.image.channels}"
        )
    split = cohort.manifest.split
    k = n_folds or split.folds
    seed = split.seed if seed is None else seed
    if spec.type == "continuous" or split.stratify == label:
        folds, folds_source = cohort.folds(k, seed), "cohort folds"
    else:
        folds, folds_source = None, f"patient-level folds stratified on {label!r}"
    labelled, subject_note = _probe_subjects(run_dir, cohort, labels, subjects, label)
    images = run_images(run_dir, cohort, labelled, cache="disk")  # one pass: no RAM copy
    features = encode_dataset(encoder, images, batch_size=batch_size, num_workers=num_workers, device=device,
                              progress=progress)
    groups = np.asarray(cohort.patient_ids, dtype=object)[labelled]
    result = probe_features(
        features,
        labels[labelled],
        groups,
        spec.type,
        folds=None if folds is None else folds[labelled],
        n_folds=k,
        train_sizes=train_sizes,
        knn=knn,
        seed=seed,
        **probe_options,
    )
    dropped = int((~np.isfinite(labels)).sum())
    result.info["n_dropped_missing_label"] = dropped
    result.info["subjects"] = subjects
    result.notes = [n for n in result.notes if "without a label" not in n]
    if dropped:
        result.notes.insert(0, f"{dropped} subject(s) without a value for {label!r} were left out")
    if subject_note:
        result.notes.insert(0, subject_note)
    result.info.update(
        folds=folds_source,
        encoder="random-init" if random_init else "pretrained",
        classes=cohort.label_classes(label),
    )
    if write:
        write_probe_result(
            result,
            RunDir(run_dir).probe_results_dir(random_init),
            label,
            encoder="random-init" if random_init else "pretrained",
            manifest=cohort.manifest.name,
        )
    return result
