"""Fine-tune a pretrained encoder with a linear head, end to end, with Lightning.

The manifest's patient-level split gives train / val / test; training stops early on the
validation loss, the weights of the best validation epoch are kept (in memory, no pickled
checkpoint) and scored once on the test split with the probes' metrics.

Losses: binary cross-entropy (binary), cross-entropy (multiclass), mean squared error on the
standardised target (continuous; predictions are mapped back to label units for MAE / R²).
Images get the manifest's deterministic preprocessing only (no augmentation). The run's own
encoder files are never modified; the fine-tuned weights are not saved (only the metrics).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from medcl.errors import MedclInputError


def _lightning_module(
    encoder, head, kind: str, labels, *, lr: float, head_lr_mult: float, weight_decay: float,
    target_mean: float, target_std: float,
):
    """Build the LightningModule (a factory, so importing this file stays light)."""
    import lightning.pytorch as pl
    import torch
    from torch import nn

    class FineTuneModule(pl.LightningModule):
        """Encoder + linear head; labels looked up by the batch's cohort row index."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.head = head
            self.kind = kind
            self.register_buffer("labels", torch.as_tensor(labels, dtype=torch.float32), persistent=False)
            self.target_mean, self.target_std = target_mean, target_std
            self.best_val = math.inf
            self.best_epoch = -1
            self.best_state: dict[str, torch.Tensor] | None = None
            self.val_history: list[float] = []
            self._val_losses: list[tuple[float, int]] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.encoder(x))

        def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            out = self(batch["image"])
            y = self.labels[batch["index"].long()]
            if self.kind == "binary":
                return nn.functional.binary_cross_entropy_with_logits(out.squeeze(1), y)
            if self.kind == "multiclass":
                return nn.functional.cross_entropy(out, y.long())
            return nn.functional.mse_loss(out.squeeze(1), (y - self.target_mean) / self.target_std)

        def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
            loss = self._loss(batch)
            self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(batch["index"]))
            return loss

        def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
            loss = self._loss(batch)
            self._val_losses.append((float(loss), len(batch["index"])))
            self.log("val_loss", loss, on_step=False, on_epoch=True, batch_size=len(batch["index"]))

        def on_validation_epoch_end(self) -> None:
            if self.trainer.sanity_checking or not self._val_losses:
                self._val_losses.clear()
                return
            total = sum(n for _, n in self._val_losses)
            value = sum(v * n for v, n in self._val_losses) / total
            self._val_losses.clear()
            self.val_history.append(value)
            if value < self.best_val:
                self.best_val, self.best_epoch = value, self.current_epoch
                self.best_state = {k: v.detach().cpu().clone() for k, v in self.state_dict().items()}

        def configure_optimizers(self):
            return torch.optim.AdamW(
                [
                    {"params": self.encoder.parameters(), "lr": lr},
                    {"params": self.head.parameters(), "lr": lr * head_lr_mult},
                ],
                weight_decay=weight_decay,
            )

    return FineTuneModule()


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Hide Lightning's start-up banners and known-harmless warnings (errors still show)."""
    import logging
    import warnings

    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for pattern in (".*does not have many workers.*", ".*LeafSpec.*", ".*in eval mode.*",
                            ".*smaller than the logging interval.*"):
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _trainer(pl, epochs: int, patience: int, accelerator: str, run_dir: Path):
    from lightning.pytorch.callbacks import EarlyStopping

    return pl.Trainer(
        max_epochs=epochs,
        accelerator=accelerator,
        devices=1,
        callbacks=[EarlyStopping("val_loss", patience=patience, mode="min")],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(run_dir / "finetune"),
    )


def _predict(model, loader, device) -> tuple[np.ndarray, np.ndarray]:
    import torch

    outs, rows = [], []
    model.eval().to(device)
    with torch.inference_mode():
        for batch in loader:
            outs.append(model(batch["image"].to(device)).float().cpu().numpy())
            rows.append(batch["index"].numpy())
    return np.concatenate(outs), np.concatenate(rows)


def _metrics(kind: str, out: np.ndarray, y: np.ndarray, n_classes: int, mean: float, std: float) -> dict:
    from scipy.special import expit, softmax

    from medcl.evaluate.metrics import classification_metrics, regression_metrics

    if kind == "continuous":
        return regression_metrics(y, out[:, 0] * std + mean)
    if kind == "binary":
        p = expit(out[:, 0])
        return classification_metrics(y, np.stack([1 - p, p], axis=1), kind)
    return classification_metrics(y, softmax(out, axis=1), kind)


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


def finetune_run(
    run_dir: str | Path,
    manifest: str | Path,
    label: str,
    *,
    epochs: int = 20,
    patience: int = 5,
    lr: float = 1e-4,
    head_lr_mult: float = 10.0,
    weight_decay: float = 1e-4,
    batch_size: int = 8,
    num_workers: int = 0,
    seed: int = 0,
    accelerator: str = "auto",
    cache: str = "memory",
    write: bool = True,
) -> dict[str, Any]:
    """Fine-tune a run's encoder + a linear head on ``label``; return (and write) test metrics.

    Args:
        run_dir: a finished pretraining run (``encoder.safetensors`` + ``encoder.json``).
        manifest: cohort manifest holding ``label`` and the patient-level split.
        label: manifest label name (binary, multiclass or continuous).
        epochs, patience: maximum epochs and early-stopping patience on the validation loss.
        lr, head_lr_mult, weight_decay: AdamW; the head learns ``head_lr_mult`` times faster.
        batch_size, num_workers, cache: data loading (``cache`` as for ``ImageDataset``).
        seed: seeds initialisation and shuffling.
        accelerator: Lightning accelerator (``"cpu"``, ``"gpu"``, ``"auto"``).
        write: write ``RUN_DIR/finetune/<label>.json``.

    Returns:
        A JSON-ready dict: sizes, epochs run, best epoch, validation history, ``test`` and
        ``val`` metrics (NaN as None), notes and the written ``path``.

    Raises:
        MedclInputError: no trained encoder, unknown label, an empty train / val / test split,
            a test subject that was in the run's pretraining split.
    """
    import lightning.pytorch as pl
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    from medcl.atomic import json_safe, write_json
    from medcl.data.cohort import Cohort
    from medcl.evaluate.features import run_images
    from medcl.evaluate.probe_run import _run_encoder

    run_dir = Path(run_dir)
    cohort = Cohort.from_manifest(manifest)
    spec = cohort.manifest.label(label)
    y_all = cohort.label(label)
    encoder = _run_encoder(run_dir, random_init=False, seed=seed)
    if not isinstance(encoder, nn.Module) or not any(p.requires_grad for p in encoder.parameters()):
        raise MedclInputError(f"{run_dir}: the encoder has no trainable parameters to fine-tune")
    split = cohort.split()
    labelled = np.isfinite(y_all)
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
    kind = spec.type
    if kind == "continuous":
        train_y = y_all[parts["train"]]
        target_mean, target_std = float(train_y.mean()), float(train_y.std() or 1.0)
        n_out, n_classes = 1, 0
    else:
        target_mean, target_std = 0.0, 1.0
        n_classes = len(cohort.label_classes(label) or []) or int(np.nanmax(y_all)) + 1
        n_out = 1 if kind == "binary" else n_classes
        if len(np.unique(y_all[parts["train"]])) < 2:
            raise MedclInputError(f"label {label!r} has a single class in the training split")

    pl.seed_everything(seed, workers=True, verbose=False)
    head = nn.Linear(int(encoder.out_features), n_out)
    model = _lightning_module(
        encoder, head, kind, np.nan_to_num(y_all), lr=lr, head_lr_mult=head_lr_mult,
        weight_decay=weight_decay, target_mean=target_mean, target_std=target_std,
    )
    datasets = {s: run_images(run_dir, cohort, idx, cache) for s, idx in parts.items()}
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(
        datasets["train"], batch_size=batch_size, shuffle=True, num_workers=num_workers, generator=generator,
        drop_last=len(parts["train"]) > batch_size and len(parts["train"]) % batch_size == 1,
    )

    def loader(s: str) -> DataLoader:
        return DataLoader(datasets[s], batch_size=batch_size, shuffle=False, num_workers=num_workers)

    with _quiet_lightning():
        trainer = _trainer(pl, epochs, patience, accelerator, run_dir)
    model.train()  # load_encoder returns eval mode; BatchNorm must train here
    with _quiet_lightning():
        trainer.fit(model, train_dataloaders=train_loader, val_dataloaders=loader("val"))
    if model.best_state is not None:
        model.load_state_dict(model.best_state)
    device = torch.device("cuda" if accelerator != "cpu" and torch.cuda.is_available() else "cpu")
    results: dict[str, Any] = {}
    for s in ("val", "test"):
        out, rows = _predict(model, loader(s), device)
        results[s] = _metrics(kind, out, y_all[rows], n_classes, target_mean, target_std)
    for name, value in results["test"].items():
        if not math.isfinite(value):
            notes.append(f"test {name} undefined (e.g. a single class in the test split)")
    summary = {
        "label": label,
        "kind": kind,
        "classes": cohort.label_classes(label),
        "n_train": len(parts["train"]),
        "n_val": len(parts["val"]),
        "n_test": len(parts["test"]),
        "n_dropped_missing_label": n_missing,
        "epochs_run": int(trainer.current_epoch),
        "best_epoch": None if model.best_epoch < 0 else model.best_epoch + 1,
        "best_val_loss": model.best_val,
        "val_loss_history": model.val_history,
        "test": results["test"],
        "val": results["val"],
        "settings": {
            "epochs": epochs, "patience": patience, "lr": lr, "head_lr_mult": head_lr_mult,
            "weight_decay": weight_decay, "batch_size": batch_size, "seed": seed,
        },
        "notes": notes,
    }
    summary = json_safe(copy.deepcopy(summary))
    path = run_dir / "finetune" / f"{label}.json"
    if write:
        write_json(path, summary)
    summary["path"] = str(path)
    return summary
