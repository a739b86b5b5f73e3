"""Arms (``du``, ``kernel_du:age``, ``supervised:diagnosis``, ``supcon:diagnosis``, ``random_init``), the
comparison settings, and the settings a run of an arm trained with (:func:`run_settings`).
"""


from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from medcl.errors import MedclInputError
from medcl.losses.registry import METHODS, MethodRecord

if TYPE_CHECKING:
    from medcl.pretrain.config import PretrainConfig


RANDOM_INIT = "random_init"
"""The arm of an untrained encoder (not a training method: nothing to pretrain)."""


def _record(method: str) -> MethodRecord | None:
    """The training method's record (None for :data:`RANDOM_INIT`)."""
    return METHODS.get(method)


def reads_attributes(method: str) -> bool:
    """``method:a+b`` names the prior attributes the method is trained on (kernel DU, y-Aware)."""
    record = _record(method)
    return record is not None and record.uses_attributes


def reads_label(method: str) -> bool:
    """``method:label`` names the label the method is trained on (supervised, SupCon)."""
    record = _record(method)
    return record is not None and record.uses_label


# ------------------------------------------------------------------------------------------ arms


@dataclass(frozen=True)
class Arm:
    """One arm of a comparison: a display name, a method and what its prior uses.

    ``attributes``: prior attributes (kernel_du, y_aware; None keeps the base config's);
    ``label``: a label arm's (supervised, supcon) label (None keeps the base config's); ``overrides``: dotted
    ``key=value`` settings of this method only (e.g. ``loss.sigma=5`` for y_aware), applied last.
    """

    name: str
    method: str
    attributes: tuple[str, ...] | None = None
    label: str | None = None
    description: str = ""
    overrides: tuple[str, ...] = ()

    @property
    def trains(self) -> bool:
        """False for the random-initialisation arm (nothing to pretrain)."""
        return self.method != RANDOM_INIT

    @property
    def dirname(self) -> str:
        """Folder name under ``runs/`` (``kernel_du:age+sex`` -> ``kernel_du-age+sex``)."""
        return self.name.replace(":", "-").replace("/", "_").replace(" ", "_")

    def config_changes(self, base: PretrainConfig) -> dict[str, Any]:
        """Keys this arm sets on the base config (everything else stays as the base says)."""
        changes: dict[str, Any] = {"method": self.method, "kernel": None, "label": None}
        if reads_attributes(self.method):
            changes["attributes"] = list(self.attributes) if self.attributes is not None else base.attributes
        else:  # the method ignores attributes: keep them out of the run (and of its fingerprint)
            changes["attributes"] = []
        if reads_label(self.method):
            changes["label"] = self.label if self.label is not None else base.label
        return changes


def known_methods() -> tuple[str, ...]:
    """What ``--methods`` accepts before a ':': every registered training method, and random_init."""
    return (*METHODS, RANDOM_INIT)


def methods_help() -> str:
    """The ``--methods`` help's list of arms, from the method records."""
    plain = [name for name, r in METHODS.items() if not r.arm_help]
    written = [r.arm_help for r in METHODS.values() if r.arm_help]
    return ", ".join([*plain, RANDOM_INIT, *written])


def parse_arm(spec: str) -> Arm:
    """Parse ``method[:arg]``: ``kernel_du:age+sex``, ``y_aware:age``, ``supervised:diagnosis``,
    ``supcon:diagnosis``, ``du``.

    Raises MedclInputError for an unknown method, or an argument on a method that takes none.
    """
    text = spec.strip()
    method, colon, arg = text.partition(":")
    method, arg = method.strip(), arg.strip()
    if colon and not arg.replace("+", "").strip():
        raise MedclInputError(f"--methods: {spec!r}: no attribute or label after ':' (e.g. kernel_du:age+sex)")
    known = known_methods()
    if method not in known:
        raise MedclInputError(f"--methods: unknown method {method!r} in {spec!r}; known: {', '.join(known)}")
    if reads_attributes(method):
        attrs = tuple(a.strip() for a in arg.split("+") if a.strip()) if arg else None
        what = "prior: " + "+".join(attrs) if attrs else "prior: the base config's attributes"
        return Arm(text, method, attributes=attrs, description=f"{method}, {what}")
    if reads_label(method):
        what = METHODS[method].summary or method
        return Arm(text, method, label=arg or None, description=f"{what} on {arg or 'the base label'}")
    if arg:
        raise MedclInputError(f"--methods: {spec!r}: method {method} takes no ':' argument")
    return Arm(text, method, description="untrained encoder (lower bound)" if method == RANDOM_INIT else method)


def parse_arms(specs: str | Sequence[str]) -> list[Arm]:
    """Parse a comma-separated list (or a list) of arm specs; refuses duplicates and an empty list."""
    items = specs.split(",") if isinstance(specs, str) else list(specs)
    arms = [parse_arm(s) for s in items if s.strip()]
    if not arms:
        raise MedclInputError("--methods: no method given (e.g. --methods du,kernel_du:age,random_init)")
    check_unique(arms)
    return arms


def check_unique(arms: Sequence[Arm]) -> None:
    seen: dict[str, str] = {}
    for arm in arms:
        for key in {arm.name, arm.dirname}:
            if key in seen:
                raise MedclInputError(f"--methods: {arm.name!r} given twice (or clashes with {seen[key]!r})")
            seen[key] = arm.name


# ------------------------------------------------------------------------------------- settings


@dataclass
class CompareSettings:
    """What to compare and how to probe (the base config fixes encoder and budget).

    ``seeds``: runs per arm (seeds 0..seeds-1); ``labels``: manifest labels to probe; ``folds``:
    outer folds of the patient-level probe CV; ``repeats``: fresh fold draws of that CV, averaged
    (the fold draw alone moves a 160-subject AUC by 0.02-0.05); ``baseline``: the arm differences refer to;
    ``train_sizes``: label-efficiency points (training patients per fold, "all" always included);
    ``colour_by``: attributes the report's embedding plots are also coloured by; ``jobs``: runs
    pretrained side by side, each on ``cores // jobs`` threads, or ``auto``
    (:mod:`medcl.evaluate.compare.parallel`).
    """

    labels: list[str]
    seeds: int = 3
    folds: int = 5
    repeats: int = 3
    baseline: str = "du"
    train_sizes: list[int | str] = field(default_factory=lambda: ["all"])
    colour_by: list[str] = field(default_factory=list)
    title: str = "medcl compare"
    encode_batch_size: int = 64
    jobs: int | str = 1

    def check(self, arms: Sequence[Arm]) -> None:
        """Raise MedclInputError for settings that cannot run (before anything is written)."""
        if not self.labels:
            raise MedclInputError("--label: give at least one label to probe (e.g. --label diagnosis)")
        if len(set(self.labels)) != len(self.labels):
            raise MedclInputError(f"--label: a label is given twice: {self.labels}")
        if self.seeds < 1:
            raise MedclInputError(f"--seeds must be >= 1, got {self.seeds}")
        if self.folds < 2:
            raise MedclInputError(f"--folds must be >= 2, got {self.folds}")
        if self.repeats < 1:
            raise MedclInputError(f"--repeats must be >= 1, got {self.repeats}")
        if self.jobs != "auto" and not (isinstance(self.jobs, int) and self.jobs >= 1):
            raise MedclInputError(f"--jobs must be a positive number or auto, got {self.jobs!r}")
        names = [a.name for a in arms]
        if self.baseline not in names:
            raise MedclInputError(f"--baseline {self.baseline!r} is not one of the arms {names}")


def run_settings(config: PretrainConfig | None) -> dict[str, Any]:
    """The resolved loss temperature and augmentation strength a run trained with (a results row's keys).

    ``temperature``: the value the loss is built with (:func:`medcl.pretrain.module.loss_options`),
    ``temperature_key``: which config key it is (``loss.temperature``: InfoNCE-type losses divide their
    logits by it; ``loss.t``: decoupled uniformity and align-uniform multiply distances by it; None for
    a loss without one, e.g. cross-entropy); ``augmentation_strength``: ``augmentation.strength``.
    All None for the random-initialisation arm (``config`` None: nothing trained).
    """
    if config is None:
        return {"temperature": None, "temperature_key": None, "augmentation_strength": None}
    from medcl.pretrain.module import loss_options

    options = loss_options(config, None)
    key = next((k for k in ("temperature", "t") if k in options), None)
    return {"temperature": None if key is None else float(options[key]),
            "temperature_key": None if key is None else f"loss.{key}",
            "augmentation_strength": float(config.augmentation.strength)}
