"""The training methods: one :class:`MethodRecord` per method, and ``build_loss(method, **options)``.

A record says everything the rest of medcl needs to know about a method: its loss module, what it
is trained on besides the images (prior attributes, a label), its default temperature, how its loss
options come from the (resolved) pretraining config, what to try when it collapses, and how a
comparison writes it. Config validation, the pretraining module and loop, training health,
``medcl compare`` and the demo all read these records; none of them spells a method name out.

Adding a method is one loss module plus one record here (or :func:`register_method` at run time).
The loss module supplies the method's collapse value (``LossModule.collapse_value``).

The functions of a record receive the pretraining config (``medcl.pretrain.config.PretrainConfig``)
and the cohort (``medcl.data.cohort.Cohort``) as arguments: the losses stage reads them, it does not
import them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from torch import nn

from medcl.errors import MedclInputError
from medcl.losses.align_uniform import AlignUniformLoss
from medcl.losses.dcl import DecoupledContrastiveLoss
from medcl.losses.decoupled_uniformity import DecoupledUniformityLoss, KernelDecoupledUniformityLoss
from medcl.losses.infonce import InfoNCELoss
from medcl.losses.supcon import SupConLoss
from medcl.losses.supervised import SupervisedLoss
from medcl.losses.y_aware import YAwareInfoNCELoss, y_aware_sigma

GENERIC_ADVICE = "lower optimizer.lr, add warm-up (optimizer.warmup_epochs) or change loss.temperature / loss.t"
"""What to try when a run collapses, for a method that says nothing more specific."""

TrainedOn = Literal["images", "attributes", "label"]


def _temperature(config: Any, record: MethodRecord) -> float:
    """``loss.temperature``, or the method's default when it is null (an unresolved config)."""
    value = config.loss.temperature
    return value if value is not None else record.default_temperature


@dataclass(frozen=True)
class MethodRecord:
    """One pretraining method, as the pipeline sees it.

    Attributes:
        name: the config's ``method`` value.
        loss: the loss module class (built by :func:`build_loss` with ``options``' keywords).
        options: ``(config, kernel) -> keyword options`` of ``loss`` from the resolved config
            (``kernel``: the fitted prior kernel, or None when the method has none).
        trained_on: what the method reads besides the images: ``"attributes"`` (the prior's weak
            attributes; ``medcl compare`` writes ``method:a+b``), ``"label"`` (a manifest label;
            ``method:label``) or ``"images"`` only.
        prior_kernel: the loss uses a fitted kernel on the attributes (kernel DU): the kernel
            gets the instance term, a batch spectrum and ``prior.warmup_epochs``.
        single_attribute: the method reads one continuous attribute (y-Aware).
        label_types: label types the method accepts (label methods only).
        default_temperature: ``loss.temperature: null`` resolves to this (None: no temperature).
        resolve: ``(config, cohort, attribute_names, train_idx) -> loss options`` fitted on the
            training split at the start of a run and saved in its resolved config.
        subject_centroids: the loss works on the views' centroids (the DU family): the run logs
            their mean norm.
        linear_head: trained through a linear head on the pooled features (not a projection MLP);
            health then watches the features, not the head's few outputs.
        advice: what to try when a run of this method collapses.
        summary: a few words for ``medcl compare``'s arm description.
        arm_help: how ``--methods`` writes the arm (``kernel_du:ATTR[+ATTR]``); default: the name.
    """

    name: str
    loss: type[nn.Module]
    options: Callable[[Any, Any], dict[str, Any]]
    trained_on: TrainedOn = "images"
    prior_kernel: bool = False
    single_attribute: bool = False
    label_types: tuple[str, ...] = ()
    default_temperature: float | None = None
    resolve: Callable[[Any, Any, list[str], np.ndarray], dict[str, Any]] | None = None
    subject_centroids: bool = False
    linear_head: bool = False
    advice: str = GENERIC_ADVICE
    summary: str = ""
    arm_help: str = ""

    @property
    def uses_attributes(self) -> bool:
        return self.trained_on == "attributes"

    @property
    def uses_label(self) -> bool:
        return self.trained_on == "label"

    def resolved_options(self, config: Any, cohort: Any, names: list[str], train_idx: np.ndarray) -> dict[str, Any]:
        """Loss options fixed at the start of a run: the default temperature, then :attr:`resolve`'s."""
        out: dict[str, Any] = {}
        if self.default_temperature is not None and config.loss.temperature is None:
            out["temperature"] = self.default_temperature
        if self.resolve is not None:
            out.update(self.resolve(config, cohort, names, train_idx))
        return out


# ------------------------------------------------------------------------- options per method


def _du_options(config: Any, kernel: Any) -> dict[str, Any]:
    return {"t": config.loss.t}


def _kernel_du_options(config: Any, kernel: Any) -> dict[str, Any]:
    return {"kernel": kernel, "t": config.loss.t, "lam": config.lam, "rescale": config.prior.rescale_centroids}


def _infonce_options(config: Any, kernel: Any) -> dict[str, Any]:
    return {"temperature": _temperature(config, METHODS[config.method])}


def _y_aware_options(config: Any, kernel: Any) -> dict[str, Any]:
    if config.loss.sigma is None:
        raise MedclInputError("loss.sigma: y_aware needs the resolved config (medcl.pretrain.loop.prepare "
                              "fits sigma on the training split)")
    return {**_infonce_options(config, kernel), "sigma": config.loss.sigma}


def _supcon_options(config: Any, kernel: Any) -> dict[str, Any]:
    return {**_infonce_options(config, kernel), "instance_mix": config.loss.supcon_instance_mix}


def _supervised_options(config: Any, kernel: Any) -> dict[str, Any]:
    loss = config.loss
    if loss.label_classes is None and loss.label_std is None:
        raise MedclInputError("loss.label_classes: supervised needs the resolved config (medcl.pretrain.loop."
                              "prepare reads the label's classes, or its mean and std, from the training split)")
    if loss.label_classes is not None:
        return {"classes": loss.label_classes}
    return {"classes": None, "target_mean": loss.label_mean, "target_std": loss.label_std}


# ---------------------------------------------------------------- options fitted on the cohort


def _fit_y_aware_sigma(config: Any, cohort: Any, names: list[str], train_idx: np.ndarray) -> dict[str, Any]:
    """``sigma: null`` -> ``y_aware_sigma_scale x`` the std of the attribute on the training split."""
    if config.loss.sigma is not None:
        return {}
    values, missing, _ = cohort.attribute_matrix(names[:1])
    known = values[train_idx, 0][~missing[train_idx, 0]]
    try:
        return {"sigma": y_aware_sigma(known, config.loss.y_aware_sigma_scale)}
    except MedclInputError as err:
        raise MedclInputError(f"attribute {names[0]!r}: {err}") from None


def supervised_target(cohort: Any, label: str, train_idx: np.ndarray) -> dict[str, Any]:
    """The supervised arm's target: ``label_classes`` for a class label, else the training split's
    ``label_mean`` / ``label_std`` (the regression target is standardised with them)."""
    classes = cohort.label_classes(label)
    if cohort.manifest.label(label).type != "continuous":
        return {"label_classes": len(classes), "label_mean": None, "label_std": None}
    y = cohort.label(label)[train_idx]
    y = y[np.isfinite(y)]
    std = float(np.std(y)) if len(y) > 1 else 0.0
    if not std > 0:
        raise MedclInputError(f"label {label!r}: constant or missing on the training split; nothing to regress")
    return {"label_classes": None, "label_mean": float(np.mean(y)), "label_std": std}


def _fit_supervised_target(config: Any, cohort: Any, names: list[str], train_idx: np.ndarray) -> dict[str, Any]:
    return supervised_target(cohort, config.label, train_idx)


# ---------------------------------------------------------------------------------- the records

_INFONCE_TEMPERATURE = 0.1
"""SimCLR, DCL and y-Aware use their papers' 0.1."""
_SUPCON_TEMPERATURE = 0.5
"""SupCon: on the demo cohort (seed 0, instance mix 0.5) it reached diagnosis AUC .702 against .584
at 0.1 (random init .586); at 0.1 the own view dominates the partition function, so the label term
barely moves the embedding."""
_CLASS_LABELS = ("binary", "multiclass")

METHODS: dict[str, MethodRecord] = {}
"""Every registered method by name, in registration order (the order of ``medcl`` listings)."""


def register_method(record: MethodRecord) -> MethodRecord:
    """Add ``record`` (a new name) to :data:`METHODS`; returns it. Raises ValueError for a taken name."""
    if record.name in METHODS:
        raise ValueError(f"method {record.name!r} is already registered")
    METHODS[record.name] = record
    return record


def unregister_method(name: str) -> None:
    """Remove a method added by :func:`register_method` (e.g. a test's toy method)."""
    METHODS.pop(name, None)


for _record in (
    MethodRecord("kernel_du", KernelDecoupledUniformityLoss, _kernel_du_options, trained_on="attributes",
                 prior_kernel=True, subject_centroids=True, summary="kernel DU",
                 arm_help="kernel_du:ATTR[+ATTR]"),
    MethodRecord("du", DecoupledUniformityLoss, _du_options, subject_centroids=True, summary="DU"),
    MethodRecord("simclr", InfoNCELoss, _infonce_options, default_temperature=_INFONCE_TEMPERATURE,
                 summary="SimCLR"),
    MethodRecord("y_aware", YAwareInfoNCELoss, _y_aware_options, trained_on="attributes", single_attribute=True,
                 default_temperature=_INFONCE_TEMPERATURE, resolve=_fit_y_aware_sigma, summary="y-Aware",
                 arm_help="y_aware:ATTR",
                 advice="lower loss.sigma (the positives' weights are nearly uniform over the batch) or lower "
                        "loss.y_aware_sigma_scale"),
    MethodRecord("dcl", DecoupledContrastiveLoss, _infonce_options, default_temperature=_INFONCE_TEMPERATURE,
                 summary="DCL"),
    MethodRecord("align_uniform", AlignUniformLoss, _du_options, summary="alignment + uniformity"),
    MethodRecord("supervised", SupervisedLoss, _supervised_options, trained_on="label",
                 label_types=("binary", "multiclass", "continuous"), resolve=_fit_supervised_target,
                 linear_head=True, summary="cross-entropy", arm_help="supervised:LABEL (cross-entropy / regression)",
                 advice="check that the label is visible in the images (a loss stuck at log(classes), or 1 for a "
                        "continuous label, is a constant prediction) or lower optimizer.lr"),
    MethodRecord("supcon", SupConLoss, _supcon_options, trained_on="label", label_types=_CLASS_LABELS,
                 default_temperature=_SUPCON_TEMPERATURE, summary="SupCon", arm_help="supcon:LABEL",
                 advice="raise loss.supcon_instance_mix (keeps each scan's own views as positives) or check "
                        "that the label is visible in the images"),
):
    register_method(_record)


def method_record(name: str) -> MethodRecord:
    """The record of ``name``; MedclInputError naming the known methods for an unknown one."""
    if name not in METHODS:
        raise MedclInputError(f"method: unknown loss {name!r}; expected one of {', '.join(METHODS)}")
    return METHODS[name]


def method_names(trained_on: TrainedOn | None = None) -> tuple[str, ...]:
    """Registered method names (those trained on ``trained_on`` only, when given)."""
    return tuple(n for n, r in METHODS.items() if trained_on is None or r.trained_on == trained_on)


def build_loss(method: str, **options: object) -> nn.Module:
    """Build the loss module for ``method`` (a key of :data:`METHODS`) with its options.

    ``kernel_du`` needs ``kernel=`` (a fitted PriorKernel), ``y_aware`` needs ``sigma=``.
    Every module takes ``gather=``. Raises MedclInputError for an unknown method, an unknown
    or missing option, or an invalid value.
    """
    cls = method_record(method).loss
    params = inspect.signature(cls.__init__).parameters
    valid = [p for p in params if p != "self"]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise MedclInputError(
            f"method {method!r}: unknown option(s) {', '.join(unknown)}; valid options: {', '.join(valid)}"
        )
    required = [p for p in valid if params[p].default is inspect.Parameter.empty and p not in options]
    if required:
        raise MedclInputError(f"method {method!r}: missing required option(s) {', '.join(required)}")
    return cls(**options)
