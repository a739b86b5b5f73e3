"""The supervised upper bound: cross-entropy (or regression) on the label, on every augmented view.

What a hospital would train with the labels: a linear head on the encoder's pooled features
(it lives in the pretraining module and is dropped at export) predicts the label, and the loss is

- a class label (binary or multiclass, C classes): ``mean_{i, v} CE(logits_i^v, y_i)``, z holds
  the logits (n, V, C);
- a continuous label: ``mean_{i, v} (z_i^v - (y_i - mean) / std)^2``, the squared error on the
  target standardised with the training split's mean and std, z holds the prediction (n, V, 1).

Every view is a training sample of its own (the usual supervised training with augmentation),
rather than the views' mean logits being scored once: the same images and augmentations the
contrastive arms see, and each view's gradient is that of a plain supervised step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from medcl.errors import MedclInputError
from medcl.losses._checks import check_per_subject, check_positive, check_views, class_codes, full_precision
from medcl.losses.base import LossModule
from medcl.losses.distributed import all_gather_with_grad, gather_optional


@full_precision
def view_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, *, gather: bool = False) -> torch.Tensor:
    """Mean cross-entropy of logits (n, V, C) against integer labels (n,) over every subject and view.

    Raises MedclInputError when logits are not (n, V, C) or labels not (n,) integer codes in [0, C).
    """
    check_views(logits, "logits", min_subjects=1)
    labels = check_per_subject(labels, logits.shape[0], "labels", integer=True)
    classes = logits.shape[-1]
    if classes < 2:
        raise MedclInputError(f"logits: expected at least 2 classes (C >= 2), got C = {classes}")
    if ((labels < 0) | (labels >= classes)).any():
        raise MedclInputError(f"labels: expected class codes in [0, {classes}), got {labels.unique().tolist()}")
    if gather:
        logits = all_gather_with_grad(logits)
        labels = gather_optional(labels, True)
    v = logits.shape[1]
    return F.cross_entropy(logits.reshape(-1, classes), labels.to(logits.device).repeat_interleave(v))


@full_precision
def view_regression(
    prediction: torch.Tensor,
    target: torch.Tensor,
    *,
    target_mean: float = 0.0,
    target_std: float = 1.0,
    gather: bool = False,
) -> torch.Tensor:
    """Mean squared error of predictions (n, V, 1) against ``(target - target_mean) / target_std`` (n,).

    Raises MedclInputError when prediction is not (n, V, 1), target not (n,) finite values, or
    target_std not > 0.
    """
    check_views(prediction, "prediction", min_subjects=1)
    if prediction.shape[-1] != 1:
        raise MedclInputError(f"prediction: expected one output per view (n, V, 1), got {tuple(prediction.shape)}")
    target_std = check_positive(target_std, "target_std")
    target = check_per_subject(target, prediction.shape[0], "target")
    if not torch.isfinite(target).all():
        raise MedclInputError("target: expected finite values (subjects with a missing label are left out)")
    if gather:
        prediction = all_gather_with_grad(prediction)
        target = gather_optional(target, True)
    standard = (target.to(prediction) - float(target_mean)) / target_std
    return F.mse_loss(prediction[..., 0], standard[:, None].expand(-1, prediction.shape[1]))


class SupervisedLoss(LossModule):
    """Method ``supervised``: cross-entropy over ``classes`` classes, or regression when ``classes`` is None.

    z is the linear head's output: logits (n, V, classes), or a prediction (n, V, 1) of the
    continuous label standardised by ``target_mean`` / ``target_std`` (the training split's).
    """

    def __init__(self, classes: int | None = None, target_mean: float = 0.0, target_std: float = 1.0,
                 gather: bool = False):
        super().__init__(gather)
        if classes is not None and (isinstance(classes, bool) or int(classes) != classes or classes < 2):
            raise MedclInputError(f"classes: expected an integer >= 2 (or None for regression), got {classes!r}")
        self.classes = None if classes is None else int(classes)
        self.target_mean = float(target_mean)
        self.target_std = check_positive(target_std, "target_std")

    @property
    def outputs(self) -> int:
        """Width of the linear head: the number of classes, or 1 for regression."""
        return self.classes or 1

    def collapse_value(self, n: int, views: int) -> float:
        """The loss of a constant prediction: ``log(C)`` (uniform logits) for CE; 1 for regression
        (the standardised target's variance, what predicting its mean scores)."""
        return 1.0 if self.classes is None else math.log(self.classes)

    def extra_repr(self) -> str:
        if self.classes is None:
            return f"regression, target_mean={self.target_mean}, target_std={self.target_std}, gather={self.gather}"
        return f"classes={self.classes}, gather={self.gather}"

    def forward(
        self,
        z: torch.Tensor,
        attributes: torch.Tensor | None = None,
        missing: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of the head's output z (n, V, C or 1) against labels (n,); attributes ignored."""
        if labels is None:
            raise MedclInputError("labels: supervised needs the label of every subject (n,), got None")
        if z.dim() == 3 and z.shape[-1] != self.outputs:
            raise MedclInputError(f"z: expected {self.outputs} output(s) per view, got shape {tuple(z.shape)}")
        if self.classes is None:
            return view_regression(z, torch.as_tensor(labels), target_mean=self.target_mean,
                                   target_std=self.target_std, gather=self.gather)
        return view_cross_entropy(z, class_codes(labels), gather=self.gather)
