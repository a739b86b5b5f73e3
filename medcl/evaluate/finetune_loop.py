"""The training loop of a diagnosis model: linear probe, full fine-tuning, or both (LP-FT).

Plain PyTorch on one device (a few hundred lines of Lightning callbacks would not be simpler).
The linear phase fits the head on the frozen encoder's features in closed form (scikit-learn's
logistic regression, or ridge for a continuous label, its regularisation chosen on the validation
metric): what a linear probe is, without a learning rate or an epoch budget to tune. ``lp-ft``
then trains the whole model from that head (Kumar et al. 2022: fine-tuning a random head distorts
pretrained features), the encoder at ``encoder_lr_mult`` times the head's rate (default 1: on the
2D demo cohort 0.1 held the pretrained encoders back, test AUC .784 vs .875 from 20 patients and
.919 vs .992 from 193 for DU, 5 seeds, and validation agreed: .847 vs .926, .946 vs .990). For a
random encoder (``init="scratch"``) ``lp-ft`` is full fine-tuning: there are no features to
protect, and a head fitted to a random encoder's eval-mode features (BatchNorm at its initial
statistics) starts the full phase far off (a first-epoch training loss of 6.9 instead of 0.7).
The full phase stops early on the validation metric (ROC AUC, or -MAE for a continuous label; ties
go to the lower validation loss) counted from its own best epoch; the better of the two phases'
best states is kept. An epoch is at least :data:`MIN_STEPS_PER_EPOCH` optimiser steps, so that a
small training subset (20 patients: 2 batches) gets a budget in steps, not only in passes.
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
LOOP_VERSION = 3
"""Changes when the loop trains differently for the same options (keys cached fine-tunes)."""
MIN_STEPS_PER_EPOCH = 10
"""An epoch of the full phase is at least this many optimiser steps (whole passes over the data)."""
HEAD_C_GRID = (0.01, 0.1, 1.0, 10.0)
"""Inverse regularisation strengths tried for the closed-form head (ridge: alpha = 1 / C)."""


@dataclass
class FineTuneOptions:
    """How a diagnosis model is trained (``medcl finetune``'s options)."""

    mode: str = "lp-ft"
    init: str = "pretrained"
    epochs: int = 20  # maximum epochs of the full phase (each at least MIN_STEPS_PER_EPOCH steps)
    patience: int = 5  # full-phase epochs without a better validation metric before it stops
    lr: float = 1e-3  # the head's learning rate (AdamW)
    encoder_lr_mult: float = 1.0  # encoder lr = lr x this
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
        for name in ("epochs", "patience", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise MedclInputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0 or not self.encoder_lr_mult > 0:
            raise MedclInputError("--lr and --encoder-lr-mult must be positive")
        if not 0 <= self.augmentation_strength <= 2:
            raise MedclInputError(f"--augmentation-strength must be in [0, 2], got {self.augmentation_strength}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


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


def _encoder_features(encoder: nn.Module, loader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """``(pooled features (n, d), cohort rows (n,))`` of the frozen encoder (eval mode, no augmentation)."""
    features, rows = predict_outputs(encoder, loader, device)
    return features.astype(np.float64), rows


def fit_linear_head(kind: str, x: np.ndarray, targets: np.ndarray, c: float, n_out: int,
                    balanced: bool = False, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form head ``(weight (n_out, d), bias (n_out,))`` on features ``x``.

    Logistic regression for a binary (one logit) or multiclass label (a class absent from
    ``targets`` gets zero weight and a bias far below the others), ridge (alpha = 1 / ``c``) on the
    standardised target for a continuous one. The features are divided by one common scale (their
    root mean square) before the fit and the weights by it after, so ``c`` means the same for
    every encoder while the head's weights stay on the features' own scale (per-feature
    standardisation gives some weights of hundreds, which full fine-tuning then amplifies).
    """
    from sklearn.linear_model import LogisticRegression, Ridge

    scale = float(np.sqrt(np.mean(x**2))) or 1.0
    xs = x / scale
    if kind == "continuous":
        model = Ridge(alpha=1.0 / c).fit(xs, targets)
        return model.coef_.reshape(1, -1) / scale, np.array([model.intercept_], dtype=float)
    model = LogisticRegression(C=c, max_iter=5000, class_weight="balanced" if balanced else None,
                               random_state=seed).fit(xs, targets.astype(int))
    coef, intercept = model.coef_ / scale, model.intercept_
    if kind == "binary":
        return coef, intercept
    weight, bias = np.zeros((n_out, x.shape[1])), np.full(n_out, float(intercept.min()) - 10.0)
    weight[model.classes_], bias[model.classes_] = coef, intercept
    return weight, bias


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
        self.head_c: float | None = None  # the closed-form head's regularisation (chosen on val)
        self._passes = 0  # passes over the training data so far (seeds the augmentation)

    def _targets(self, index: torch.Tensor) -> torch.Tensor:
        y = self.labels[index.to(self.device).long()]
        if self.kind == "continuous":
            return (y - self.model.target_mean) / self.model.target_std
        return y

    def _keep_if_best(self, score: float, val_loss: float, epoch: int) -> None:
        """Remember the model's state when it is the best on validation so far (across phases)."""
        if (score, -val_loss) > self.best:
            self.best, self.best_epoch = (score, -val_loss), epoch
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in self.model.state_dict().items()})

    def _epoch(self, loader, optimizer) -> float:
        """At least :data:`MIN_STEPS_PER_EPOCH` steps, in whole passes over ``loader``; mean loss."""
        self.model.train()
        total, count, steps = 0.0, 0, 0
        while steps < MIN_STEPS_PER_EPOCH:
            for batch in loader:
                images, index = batch["image"].to(self.device), batch["index"]
                if self.augment is not None:
                    images = self.augment(images, index, self._passes, views=1)[:, 0]
                loss = self.loss_fn(self.model.logits(images), self._targets(index))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total, count, steps = total + float(loss.detach()) * len(index), count + len(index), steps + 1
            self._passes += 1
            if steps == 0:
                raise MedclInputError("fine-tuning: the training loader yielded no batch")
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

    def linear_phase(self, train_loader, val_loader) -> None:
        """Fit the head in closed form on the frozen encoder's features; its C is chosen on validation."""
        x_train, rows_train = _encoder_features(self.model.encoder, train_loader, self.device)
        x_val, rows_val = _encoder_features(self.model.encoder, val_loader, self.device)
        targets = self._targets(torch.as_tensor(rows_train)).cpu().numpy().astype(float)
        y_val = self.labels.cpu().numpy()[rows_val]
        head = self.model.head
        fits = [fit_linear_head(self.kind, x_train, targets, c, head.out_features, self.options.class_balanced,
                                self.options.seed) for c in HEAD_C_GRID]
        scores = []
        with torch.inference_mode():
            for weight, bias in fits:
                logits = torch.as_tensor(x_val @ weight.T + bias, dtype=torch.float32, device=self.device)
                scores.append(_val_score(self.kind, self.model.outputs(logits).float().cpu().numpy(), y_val))
        chosen = int(np.argmax(scores))  # the first best: ties keep the stronger regularisation
        self.head_c = HEAD_C_GRID[chosen]
        with torch.no_grad():
            head.weight.copy_(torch.as_tensor(fits[chosen][0], dtype=head.weight.dtype))
            head.bias.copy_(torch.as_tensor(fits[chosen][1], dtype=head.bias.dtype))
        score, val_loss = self._validate(val_loader)
        epoch = len(self.history) + 1
        self._keep_if_best(score, val_loss, epoch)
        self.history.append({"epoch": epoch, "phase": "linear", "train_loss": math.nan, "val_loss": val_loss,
                             "val_score": score})
        if self.progress is not None:
            self.progress(0, 1, "linear", math.nan, math.nan)
            self.progress(1, 1, "linear", score, val_loss)

    def full_phase(self, train_loader, val_loader, *, epochs: int) -> None:
        """Train encoder + head; stop after ``patience`` epochs without a better validation metric
        than this phase's own best; the model ends at the best state of all phases."""
        opts = self.options
        self.model.encoder.requires_grad_(True)
        groups = [{"params": self.model.head.parameters(), "lr": opts.lr},
                  {"params": self.model.encoder.parameters(), "lr": opts.lr * opts.encoder_lr_mult}]
        optimizer = torch.optim.AdamW(groups, weight_decay=opts.weight_decay)
        phase_best, since_best = (-math.inf, -math.inf), 0
        if self.progress is not None:
            self.progress(0, epochs, "full", math.nan, math.nan)
        for e in range(epochs):
            train_loss = self._epoch(train_loader, optimizer)
            score, val_loss = self._validate(val_loader)
            epoch = len(self.history) + 1
            self._keep_if_best(score, val_loss, epoch)
            if (score, -val_loss) > phase_best:
                phase_best, since_best = (score, -val_loss), 0
            else:
                since_best += 1
            self.history.append({"epoch": epoch, "phase": "full", "train_loss": train_loss,
                                 "val_loss": val_loss, "val_score": score})
            if self.progress is not None:
                self.progress(e + 1, epochs, "full", score, val_loss)
            if since_best >= opts.patience:
                break

    def fit(self, train_loader, val_loader) -> None:
        opts = self.options
        if opts.mode == "linear" or (opts.mode == "lp-ft" and opts.init == "pretrained"):
            self.linear_phase(train_loader, val_loader)
        if opts.mode in ("full", "lp-ft"):
            self.full_phase(train_loader, val_loader, epochs=opts.epochs)
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        self.model.eval()
