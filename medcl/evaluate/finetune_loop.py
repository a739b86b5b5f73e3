"""The training loop of a diagnosis model: linear probe, full fine-tuning, or both (LP-FT).

Plain PyTorch on one device (a few hundred lines of Lightning callbacks would not be simpler).
``lp-ft`` first trains the head on a frozen encoder (its BatchNorm statistics frozen too), then
the whole model with the encoder at ``encoder_lr_mult`` times the head's rate (Kumar et al. 2022:
fine-tuning a random head distorts pretrained features). Each phase stops early on the
validation metric (ROC AUC, or -MAE for a continuous label; ties go to the lower validation loss),
and the best validation state is what the next phase starts from and what is kept.
Training batches get the pretraining presets' random augmentation (batched backend) at a milder
strength; validation and test images never do.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from medcl.errors import MedclInputError

MODES = ("linear", "full", "lp-ft")
INITS = ("pretrained", "scratch")


@dataclass
class FineTuneOptions:
    """How a diagnosis model is trained (``medcl finetune``'s options)."""

    mode: str = "lp-ft"
    init: str = "pretrained"
    epochs: int = 20  # maximum epochs of the full phase (and of the linear phase in mode "linear")
    linear_epochs: int = 10  # maximum epochs of lp-ft's linear phase
    patience: int = 5
    lr: float = 1e-3  # the head's learning rate (AdamW)
    encoder_lr_mult: float | None = None  # encoder lr = lr x this; None: 0.1 pretrained, 1.0 scratch
    weight_decay: float = 1e-4
    batch_size: int = 16
    class_balanced: bool = False
    augmentation: str = "auto"  # a pretraining preset ("auto": the image kind's), or "none"
    augmentation_strength: float = 0.5
    train_size: int | float | None = None  # patients, a fraction, or None (all)
    seed: int = 0
    device: str = "auto"
    n_boot: int = 1000

    def check(self) -> FineTuneOptions:
        if self.mode not in MODES:
            raise MedclInputError(f"--mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.init not in INITS:
            raise MedclInputError(f"--init {self.init!r}: choose one of {', '.join(INITS)}")
        for name in ("epochs", "linear_epochs", "patience", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise MedclInputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0 or (self.encoder_lr_mult is not None and not self.encoder_lr_mult > 0):
            raise MedclInputError("--lr and --encoder-lr-mult must be positive")
        if not 0 <= self.augmentation_strength <= 2:
            raise MedclInputError(f"--augmentation-strength must be in [0, 2], got {self.augmentation_strength}")
        return self

    @property
    def resolved_encoder_lr_mult(self) -> float:
        if self.encoder_lr_mult is not None:
            return float(self.encoder_lr_mult)
        return 0.1 if self.init == "pretrained" else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "encoder_lr_mult": self.resolved_encoder_lr_mult}


def resolve_device(device: str) -> torch.device:
    if device in ("auto", "gpu"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _loss_function(kind: str, y_train: np.ndarray, n_classes: int, balanced: bool, device: torch.device):
    """The loss on the head's logits; ``balanced`` weights classes by inverse frequency."""
    if kind == "continuous":
        return lambda logits, y: nn.functional.mse_loss(logits[:, 0], y)
    counts = np.bincount(y_train.astype(int), minlength=max(n_classes, 2)).astype(float)
    if kind == "binary":
        pos_weight = torch.tensor(counts[0] / max(counts[1], 1.0), device=device) if balanced else None
        return lambda logits, y: nn.functional.binary_cross_entropy_with_logits(
            logits[:, 0], y, pos_weight=pos_weight
        )
    weight = None
    if balanced:
        weight = torch.tensor(counts.sum() / (len(counts) * np.maximum(counts, 1.0)), dtype=torch.float32,
                              device=device)
    return lambda logits, y: nn.functional.cross_entropy(logits, y.long(), weight=weight)


def predict_outputs(model: nn.Module, loader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """``(outputs (n, K), cohort rows (n,))`` of ``model`` (eval mode) over ``loader``."""
    outs, rows = [], []
    model.eval()
    with torch.inference_mode():
        for batch in loader:
            outs.append(model(batch["image"].to(device)).float().cpu().numpy())
            rows.append(batch["index"].numpy())
    return np.concatenate(outs), np.concatenate(rows)


def _val_score(kind: str, outputs: np.ndarray, y: np.ndarray) -> float:
    from medcl.evaluate.diagnosis_metrics import point_metrics

    metrics = point_metrics(kind, y, outputs)
    score = -metrics["mae"] if kind == "continuous" else metrics["roc_auc"]
    return score if math.isfinite(score) else -math.inf


class Trainer:
    """Train a :class:`~medcl.models.heads.DiagnosisModel` in place; ``history`` holds one row per epoch."""

    def __init__(self, model, kind: str, labels: np.ndarray, train_rows: np.ndarray, options: FineTuneOptions,
                 augment=None, progress=None) -> None:
        self.model, self.kind, self.options = model, kind, options
        self.device = resolve_device(options.device)
        self.model.to(self.device)
        self.labels = torch.as_tensor(np.nan_to_num(labels), dtype=torch.float32, device=self.device)
        y_train = np.asarray(labels)[train_rows]
        n_classes = model.out_features if kind == "multiclass" else 2
        self.loss_fn = _loss_function(kind, y_train, n_classes, options.class_balanced, self.device)
        self.augment, self.progress = augment, progress
        self.history: list[dict[str, Any]] = []
        self.best: tuple[float, float] = (-math.inf, -math.inf)
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch = 0

    def _targets(self, index: torch.Tensor) -> torch.Tensor:
        y = self.labels[index.to(self.device).long()]
        if self.kind == "continuous":
            return (y - self.model.target_mean) / self.model.target_std
        return y

    def _epoch(self, loader, optimizer, train_encoder: bool, epoch: int) -> float:
        self.model.train()
        if not train_encoder:
            self.model.encoder.eval()  # a linear probe: BatchNorm statistics stay the encoder's
        total, count = 0.0, 0
        for batch in loader:
            images, index = batch["image"].to(self.device), batch["index"]
            if self.augment is not None:
                images = self.augment(images, index, epoch, views=1)[:, 0]
            loss = self.loss_fn(self.model.logits(images), self._targets(index))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + float(loss.detach()) * len(index), count + len(index)
        return total / max(count, 1)

    def _validate(self, loader) -> tuple[float, float]:
        self.model.eval()
        logits, rows = [], []
        with torch.inference_mode():
            for batch in loader:
                logits.append(self.model.logits(batch["image"].to(self.device)))
                rows.append(batch["index"])
            logits_all, index = torch.cat(logits), torch.cat(rows)
            loss = float(self.loss_fn(logits_all, self._targets(index)))
            outputs = self.model.outputs(logits_all).float().cpu().numpy()
        return _val_score(self.kind, outputs, self.labels.cpu().numpy()[index.numpy()]), loss

    def phase(self, name: str, train_loader, val_loader, *, epochs: int, train_encoder: bool) -> None:
        """Run one phase (early stopping on validation); the model ends at the best state so far."""
        opts = self.options
        self.model.encoder.requires_grad_(train_encoder)
        groups = [{"params": self.model.head.parameters(), "lr": opts.lr}]
        if train_encoder:
            groups.append({"params": self.model.encoder.parameters(), "lr": opts.lr * opts.resolved_encoder_lr_mult})
        optimizer = torch.optim.AdamW(groups, weight_decay=opts.weight_decay)
        since_best = 0
        if self.progress is not None:
            self.progress(0, epochs, name, math.nan, math.nan)
        for e in range(epochs):
            epoch = len(self.history)
            train_loss = self._epoch(train_loader, optimizer, train_encoder, epoch)
            score, val_loss = self._validate(val_loader)
            improved = (score, -val_loss) > self.best
            if improved:
                self.best, self.best_epoch = (score, -val_loss), epoch + 1
                self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in self.model.state_dict().items()})
                since_best = 0
            else:
                since_best += 1
            self.history.append({"epoch": epoch + 1, "phase": name, "train_loss": train_loss,
                                 "val_loss": val_loss, "val_score": score})
            if self.progress is not None:
                self.progress(e + 1, epochs, name, score, val_loss)
            if since_best >= opts.patience:
                break
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        self.model.encoder.requires_grad_(True)

    def fit(self, train_loader, val_loader) -> None:
        opts = self.options
        if opts.mode in ("linear", "lp-ft"):
            epochs = opts.epochs if opts.mode == "linear" else opts.linear_epochs
            self.phase("linear", train_loader, val_loader, epochs=epochs, train_encoder=False)
        if opts.mode in ("full", "lp-ft"):
            self.phase("full", train_loader, val_loader, epochs=opts.epochs, train_encoder=True)
        self.model.eval()
