"""Fine-tune a pretrained (or a randomly initialised) encoder + a linear head into a diagnosis model.

The manifest's patient-level split gives train / val / test. Training (:mod:`.finetune_loop`)
uses the train split (or a nested, stratified part of its patients: ``train_size``), stops early on
the validation metric; the binary decision threshold is chosen on the validation split only
(Youden's J); the test split is scored once, with patient-level bootstrap intervals
(:mod:`.diagnosis_metrics`). The model is saved as a folder (``model.safetensors`` +
``model.json``, written by :mod:`medcl.models.saved`, + ``metrics.json``), atomically. The run's
own encoder files are never modified. Nothing written holds a subject id or value.
"""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from medcl.errors import MedclInputError
from medcl.evaluate.finetune_loop import FineTuneOptions


def check_split_agrees(run_dir: Path, cohort: Any, test_idx: np.ndarray) -> str | None:
    """Refuse test subjects the encoder was pretrained on (the run's split.csv); a note if unknown.

    Raises MedclInputError naming how many and the first few ids.
    """
    from medcl.pretrain.run_dir import RunDir

    run = RunDir(run_dir)
    try:
        pretrained = run.pretraining_subject_ids()
    except MedclInputError as err:
        return f"could not check the split against the run's: {err}"
    ids = [str(cohort.subject_ids[i]) for i in test_idx]
    leaked = [i for i in ids if i in pretrained]
    if leaked:
        shown = ", ".join(leaked[:5]) + (", ..." if len(leaked) > 5 else "")
        raise MedclInputError(
            f"{len(leaked)} test subject(s) of the manifest's split were in the run's pretraining split "
            f"({run.split_path}): {shown}. Their test scores would be optimistic. Use the split the run was "
            "pretrained with (same manifest split settings) or a cohort the encoder has not seen."
        )
    return None


def _provenance(run_dir: Path, options: FineTuneOptions) -> dict[str, Any]:
    """Where the encoder came from: run folder name, method, prior attributes (names only, no values)."""
    import yaml

    from medcl.pretrain.run_dir import RunDir

    info: dict[str, Any] = {"run": run_dir.resolve().name, "init": options.init, "mode": options.mode}
    try:
        config = yaml.safe_load(RunDir(run_dir).config_path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {**info, "method": "unknown"}
    info["method"] = config.get("method", "unknown")
    info["attributes"] = [str(a) for a in config.get("attributes") or []]
    terms = (config.get("kernel") or {}).get("terms") or []
    if terms:
        info["kernel_terms"] = [{"name": t.get("name"), "kind": t.get("kind")} for t in terms]
    info["pretraining_epochs"] = config.get("epochs")
    return info


def _augmentation(options: FineTuneOptions, spatial_dims: int):
    """The batched backend of the pretraining preset at the fine-tuning strength (None: off)."""
    from medcl.data.batch_augment import BatchAugmentation
    from medcl.data.transforms import PRESETS, preset_spec, resolve_preset

    preset = resolve_preset(options.augmentation, spatial_dims)
    if preset not in PRESETS:
        raise MedclInputError(f"--augmentation {options.augmentation!r}: choose auto, none or one of {list(PRESETS)}")
    if preset == "none" or options.augmentation_strength == 0:
        return None
    return BatchAugmentation(preset_spec(preset, spatial_dims, strength=options.augmentation_strength),
                             seed=options.seed)


def _label_block(cohort: Any, label: str, kind: str, n_classes: int) -> tuple[dict[str, Any], list[str]]:
    spec = cohort.manifest.label(label)
    classes = cohort.label_classes(label)
    if kind != "continuous" and not classes:
        classes = [str(c) for c in range(n_classes)]
    block = {"name": label, "kind": kind, "classes": classes,
             "positive": (classes[1] if kind == "binary" else None) if spec.positive is None else spec.positive,
             "units": None}
    outputs = [label] if kind == "continuous" else [f"p_{c}" for c in classes]
    return block, outputs


def _epoch_printer(stream):
    from medcl.pretrain.progress import ProgressLines

    lines: dict[str, ProgressLines] = {}

    def show(done: int, total: int, phase: str, score: float, val_loss: float) -> None:
        bar = lines.setdefault(phase, ProgressLines(total, stream=stream, unit="epoch"))
        if done:  # done == 0 starts the phase's clock
            bar.update(done, f"{phase} phase", total, extra=f"val score {score:.3f}, val loss {val_loss:.4f}")

    return show


def _check_out(out: Path) -> None:
    from medcl.models.saved import MODEL_DOCUMENT

    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MODEL_DOCUMENT).is_file())):
        raise MedclInputError(f"--out {out}: exists and is not a medcl diagnosis model folder; choose another")


def finetune_run(
    run_dir: str | Path,
    manifest: str | Path,
    label: str,
    *,
    out: str | Path | None = None,
    write: bool = True,
    cache: str = "memory",
    num_workers: int = 0,
    progress: bool = False,
    **settings: Any,
) -> dict[str, Any]:
    """Fine-tune a run's encoder + a linear head on ``label``; save the model; return its metrics.

    Args:
        run_dir: a finished pretraining run (``encoder.safetensors`` + ``encoder.json``); with
            ``init="scratch"`` only its architecture is used.
        manifest: cohort manifest holding ``label`` and the patient-level split.
        label: manifest label name (binary, multiclass or continuous).
        out: the model folder (default ``RUN_DIR/finetune/LABEL``); replaced only if it holds a model.
        write: save the model folder (False: only return the metrics).
        cache, num_workers: data loading (``cache`` as for ``ImageDataset``).
        progress: print one line per epoch (stderr).
        settings: :class:`~medcl.evaluate.finetune_loop.FineTuneOptions` fields (mode, init, epochs,
            patience, lr, encoder_lr_mult, weight_decay, batch_size, class_balanced,
            augmentation, augmentation_strength, train_size, seed, device, n_boot);
            ``accelerator`` is read as ``device``.

    Returns:
        The metrics document (as in ``metrics.json``) plus ``path`` (the model folder, or None).

    Raises:
        MedclInputError: no trained encoder, unknown label, an empty train / val / test split, a
            single class in the training subset, a test subject that was in the run's pretraining
            split, a bad option, an ``out`` that is not a model folder.
    """
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    from medcl.atomic import atomic_path, json_safe, write_json
    from medcl.data.cohort import Cohort
    from medcl.evaluate.diagnosis_metrics import diagnosis_metrics, point_metrics, youden_threshold
    from medcl.evaluate.features import run_images
    from medcl.evaluate.finetune_loop import Trainer, predict_outputs
    from medcl.evaluate.label_subsets import nested_train_subset, parse_train_size
    from medcl.evaluate.probe_run import run_encoder
    from medcl.models.heads import DiagnosisModel
    from medcl.models.saved import MODEL_METRICS, diagnosis_document, save_diagnosis_model

    if "accelerator" in settings:
        settings["device"] = settings.pop("accelerator")
    try:
        options = FineTuneOptions(**settings).check()
    except TypeError as err:
        raise MedclInputError(f"finetune: {err}") from None
    options.train_size = parse_train_size(options.train_size) if isinstance(options.train_size, str) else (
        options.train_size)
    run_dir = Path(run_dir)
    out_dir = Path(out) if out is not None else run_dir / "finetune" / label
    if write:
        _check_out(out_dir)
    cohort = Cohort.from_manifest(manifest)
    kind = cohort.manifest.label(label).type
    y_all = cohort.label(label)
    encoder = run_encoder(run_dir, random_init=options.init == "scratch", seed=options.seed)
    if not isinstance(encoder, nn.Module) or not any(p.requires_grad for p in encoder.parameters()):
        raise MedclInputError(f"{run_dir}: the encoder has no trainable parameters to fine-tune")
    split, labelled = cohort.split(), np.isfinite(y_all)
    parts = {s: np.flatnonzero((split == s) & labelled) for s in ("train", "val", "test")}
    empty = [s for s, idx in parts.items() if len(idx) == 0]
    if empty:
        raise MedclInputError(
            f"manifest {manifest}: no labelled subject in the {'/'.join(empty)} split(s) for {label!r}; "
            "fine-tuning needs train, val and test (set split.val_folds / split.test_folds or a split column)"
        )
    notes = [] if (note := check_split_agrees(run_dir, cohort, parts["test"])) is None else [note]
    n_missing = int((~labelled).sum())
    if n_missing:
        notes.append(f"{n_missing} subject(s) without a value for {label!r} were left out")
    patients = np.asarray(cohort.patient_ids).astype(str)
    n_train_patients_all = len(np.unique(patients[parts["train"]]))
    parts["train"] = nested_train_subset(parts["train"], patients, y_all, kind, options.train_size, options.seed)
    if kind == "continuous":
        train_y = y_all[parts["train"]]
        target_mean, target_std, n_classes = float(train_y.mean()), float(train_y.std() or 1.0), 0
    else:
        target_mean, target_std = 0.0, 1.0
        n_classes = len(cohort.label_classes(label) or []) or int(np.nanmax(y_all)) + 1
        if len(np.unique(y_all[parts["train"]])) < 2:
            raise MedclInputError(f"label {label!r} has a single class in the training patients")

    torch.manual_seed(options.seed)
    model = DiagnosisModel(encoder, kind, n_classes=max(n_classes, 2), target_mean=target_mean,
                           target_std=target_std)
    datasets = {s: run_images(run_dir, cohort, idx, cache) for s, idx in parts.items()}
    n_train, batch = len(parts["train"]), options.batch_size
    train_loader = DataLoader(
        datasets["train"], batch_size=batch, shuffle=True, num_workers=num_workers,
        generator=torch.Generator().manual_seed(options.seed),
        drop_last=n_train > batch and n_train % batch == 1,  # a batch of one breaks BatchNorm
    )

    def loader(s: str) -> DataLoader:
        return DataLoader(datasets[s], batch_size=batch, shuffle=False, num_workers=num_workers)

    trainer = Trainer(model, kind, y_all, parts["train"], options,
                      augment=_augmentation(options, cohort.manifest.image.spatial_dims),
                      progress=_epoch_printer(sys.stderr) if progress else None)
    trainer.fit(train_loader, loader("val"))
    outputs = {s: predict_outputs(model, loader(s), trainer.device) for s in ("val", "test")}
    threshold = None
    if kind == "binary":
        val_out, val_rows = outputs["val"]
        threshold, note = youden_threshold(y_all[val_rows], val_out[:, 1])
        notes += [note] if note else []
    test_out, test_rows = outputs["test"]
    test = diagnosis_metrics(kind, y_all[test_rows], test_out, patients[test_rows], threshold=threshold,
                             n_boot=options.n_boot, seed=options.seed)
    for name, entry in test["metrics"].items():
        if not math.isfinite(entry["value"]):
            notes.append(f"test {name} undefined (e.g. a single class in the test split)")
    val_out, val_rows = outputs["val"]
    label_block, output_names = _label_block(cohort, label, kind, n_classes)
    sizes = {
        "train_scans": len(parts["train"]), "train_patients": len(np.unique(patients[parts["train"]])),
        "train_patients_available": int(n_train_patients_all), "val_scans": len(parts["val"]),
        "test_scans": len(parts["test"]), "test_patients": test["n_patients"],
        "dropped_missing_label": n_missing,
    }
    if kind != "continuous":  # training patients per class (a patient counts with its first scan's class)
        first = {p: c for p, c in zip(patients[parts["train"]][::-1], y_all[parts["train"]][::-1], strict=True)}
        counts = np.bincount(np.array(list(first.values()), dtype=int), minlength=n_classes)
        sizes["train_patients_per_class"] = dict(zip(label_block["classes"], counts.tolist(), strict=True))
    provenance = _provenance(run_dir, options)
    diagnosis = {
        "label": label_block,
        "outputs": output_names,
        "threshold": None if threshold is None else {"value": threshold, "rule": "youden_j", "chosen_on": "val"},
        "target": {"mean": target_mean, "std": target_std} if kind == "continuous" else None,
        "preprocessing": {
            "image": cohort.manifest.image.model_dump(mode="json", exclude={"column"}),
            "preprocessing": cohort.manifest.preprocessing.model_dump(mode="json"),
        },
        "provenance": provenance,
        "settings": options.to_dict(),
    }
    result = json_safe(copy.deepcopy({
        "label": label, "kind": kind, "classes": label_block["classes"], "sizes": sizes,
        "threshold": diagnosis["threshold"],
        "epochs_run": len(trainer.history), "best_epoch": trainer.best_epoch, "history": trainer.history,
        "linear_head_c": trainer.head_c,
        "test": test["metrics"], "reliability": test["reliability"],
        "val": point_metrics(kind, y_all[val_rows], val_out, threshold),
        "provenance": provenance, "settings": options.to_dict(), "notes": notes,
    }))
    path = None
    if write:
        model.cpu().eval()
        doc = diagnosis_document(model, dict(encoder.input_spec), json_safe(diagnosis))
        with atomic_path(out_dir, is_dir=True) as tmp:
            save_diagnosis_model(model, doc, tmp)
            write_json(tmp / MODEL_METRICS, result)
        path = str(out_dir)
    result["path"] = path
    return result
