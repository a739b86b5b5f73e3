"""The pretraining config: one YAML file per run, validated, resolved and saved in the run dir.

Example (``pipelines/synthetic_3d.yaml``)::

    manifest: ../data/synthetic3d/manifest.yaml
    method: kernel_du
    attributes: [age]
    encoder: {arch: resnet18, widths: [8, 16, 32, 64]}
    epochs: 50
    batch_size: 32

Overrides use dotted keys with YAML scalar values (``--set optimizer.lr=0.01``,
``--set encoder.widths=[4,8,8,16]``); the result is validated after overriding.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from medcl.errors import InputProblems, MedclInputError
from medcl.kernels.vocabulary import (
    DEFAULT_BANDWIDTH_RULE,
    DEFAULT_INSTANCE_WEIGHT,
    DEFAULT_RESCALE_CENTROIDS,
    BandwidthRule,
    CombineMode,
)
from medcl.losses.registry import METHODS, MethodRecord, method_names
from medcl.models.encoders import EncoderSpec
from medcl.yaml_files import apply_overrides, read_yaml, validation_problems

if TYPE_CHECKING:
    from medcl.data.manifest import Manifest

DEFAULT_SUPCON_INSTANCE_MIX = 0.5


def _temperature_methods() -> list[str]:
    return [name for name, record in METHODS.items() if record.default_temperature is not None]


def _check_method(value: str) -> str:
    """A registered method name (:data:`medcl.losses.registry.METHODS`), read when the config is validated."""
    if value not in METHODS:
        expected = ", ".join(repr(m) for m in METHODS)
        expected = " or ".join(expected.rsplit(", ", 1)) if len(METHODS) > 1 else expected
        raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})
    return value


MethodName = Annotated[str, AfterValidator(_check_method)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LossOptions(_Strict):
    """Loss hyper-parameters; each method reads the ones it uses."""

    t: float = Field(2.0, gt=0, description="decoupled uniformity temperature t")
    lam: float | Literal["inv_sqrt_batch"] = Field(
        0.01, description="kernel ridge regularisation (kernel_du), > 0; 'inv_sqrt_batch': 1/sqrt(batch_size)"
    )
    temperature: float | None = Field(
        None, gt=0, description=f"InfoNCE temperature ({', '.join(_temperature_methods())}); null: the method's "
        "default"
    )
    sigma: float | None = Field(
        None, gt=0, description="y_aware RBF bandwidth in the attribute's units; null: y_aware_sigma_scale x std"
    )
    y_aware_sigma_scale: float = Field(
        0.25, gt=0, description="y_aware: sigma = this x the attribute's training-split std (paper: 5 y / 19 y)"
    )
    supcon_instance_mix: float = Field(
        DEFAULT_SUPCON_INSTANCE_MIX, ge=0, le=1,
        description="supcon: weight m of NT-Xent in (1-m) SupCon + m NT-Xent (0: plain SupCon, collapses "
                    "when the label is hard to see)",
    )
    label_classes: int | None = Field(
        None, ge=2, description="supervised: classes of the label (the linear head's width); resolved from the "
        "manifest, null for a continuous label",
    )
    label_mean: float | None = Field(
        None, description="supervised, continuous label: training-split mean the target is standardised with "
        "(resolved)",
    )
    label_std: float | None = Field(
        None, gt=0, description="supervised, continuous label: training-split std the target is standardised with "
        "(resolved)",
    )


class PriorOptions(_Strict):
    """How kernel DU builds its prior kernel from the attributes (see medcl.kernels, medcl.kernels.spectrum)."""

    combine: CombineMode | None = Field(
        None, description="combine attribute kernels as a product or a weighted sum; null: the manifest's"
    )
    instance_weight: float = Field(
        DEFAULT_INSTANCE_WEIGHT, ge=0, le=1,
        description="w in K = (1-w) K_attr + w I: keeps every scan its own direction (0: attributes only)",
    )
    bandwidth_scale: float = Field(1.0, gt=0, description="factor on the median-heuristic RBF bandwidths")
    warmup_epochs: int = Field(
        0, ge=0, description="kernel DU trains as plain DU (no prior) for this many epochs first, so the encoder "
        "learns image features by instance discrimination before the prior pulls subjects together",
    )
    bandwidth_rule: BandwidthRule = Field(
        DEFAULT_BANDWIDTH_RULE, description="joint: a product kernel's median heuristic on the joint attribute vector "
        "(a typical pair of the product gets the value of a typical pair of one attribute); per_attribute: each "
        "RBF at its own median distance, which makes a product of several attributes nearly the identity",
    )
    rescale_centroids: bool = Field(
        DEFAULT_RESCALE_CENTROIDS, description="compare the kernel-smoothed centroids at DU's scale (temperature "
        "t / r, r = ||(K + lam I)^-1 K||_F^2 / n per batch): without it the ridge's shrinkage lowers the "
        "temperature on every direction the prior does not pool",
    )


class AugmentationOptions(_Strict):
    """Random views: which preset, where it runs, how strong (see medcl.data.transforms).

    A plain string (``augmentation: xray2d``) means ``{preset: xray2d}``.
    """

    preset: str = Field("auto", description="augmentation preset (medcl.data.transforms.PRESETS); auto: mri3d "
                        "for 3D images, xray2d for 2D")
    backend: str = Field(
        "batched", description="batched: whole batches as tensor ops on the training device, after transfer "
        "(same parameter distributions as monai, much faster); monai: per view in the loader workers "
        "(see docs/internals.md, Augmentation)"
    )
    strength: float = Field(1.0, ge=0, description="factor on every augmentation magnitude (0: near-identity)")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        from medcl.data.transforms import PRESETS

        if value != "auto" and value not in PRESETS:
            raise ValueError(f"unknown preset {value!r}; choose one of {['auto', *PRESETS]}")
        return value

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        from medcl.data.transforms import BACKENDS

        if value not in BACKENDS:
            raise ValueError(f"unknown backend {value!r}; choose one of {list(BACKENDS)}")
        return value


class ProjectionOptions(_Strict):
    """The projection head (an MLP) between the encoder's features and the unit sphere."""

    hidden: int = Field(512, ge=1, description="width of the head's hidden layer")
    dim: int = Field(128, ge=1, description="dimension of the projected embedding (on the unit sphere)")
    batch_norm: bool = Field(
        True, description="BatchNorm after the hidden layer (synchronised across GPUs under DDP; per-device "
        "statistics on CPU)"
    )


class OptimizerOptions(_Strict):
    """Optimiser and learning-rate schedule (see medcl.pretrain.optim)."""

    name: Literal["sgd", "adamw", "lars"] = Field("adamw", description="optimiser (lars: for large batches)")
    lr: float = Field(1e-3, gt=0, description="base learning rate (peak after warm-up)")
    weight_decay: float = Field(1e-4, ge=0, description="weight decay (decoupled for adamw)")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd / lars")
    trust_coefficient: float = Field(
        0.001, gt=0, description="lars: eta in the layer-wise rate lr x eta ||w|| / ||grad w||"
    )
    warmup_epochs: float = Field(0, ge=0, description="linear warm-up, then cosine decay to 0")


class CheckpointOptions(_Strict):
    """When checkpoints are written into ``<run>/checkpoints`` (``medcl pretrain --resume`` continues)."""

    every_n_epochs: int = Field(1, ge=0, description="keep checkpoints/epoch=N.ckpt every N epochs (0: never)")
    every_n_steps: int = Field(0, ge=0, description="also refresh last.ckpt every N steps (0: epoch end only)")


class ProbeOptions(_Strict):
    """Online probe: every ``every_n_epochs`` fit a kNN / logistic probe on frozen features."""

    every_n_epochs: int = Field(0, ge=0, description="0 disables the probe")
    label: str | None = Field(None, description="manifest label to probe")
    kind: Literal["knn", "logistic"] = Field("knn", description="kNN or logistic-regression probe")
    k: int = Field(5, ge=1, description="neighbours for the kNN probe")

    @model_validator(mode="after")
    def _check(self) -> ProbeOptions:
        if self.every_n_epochs > 0 and self.label is None:
            raise ValueError("probe.label is required when probe.every_n_epochs > 0")
        return self


class PretrainConfig(_Strict):
    """Everything a pretraining run needs; unknown keys are errors."""

    manifest: str = Field(..., description="cohort manifest (YAML); relative to the config file")
    method: MethodName = Field("kernel_du", description="pretraining method (loss); see medcl.losses",
                               json_schema_extra={"choices": list(METHODS)})
    attributes: list[str] | None = Field(
        None, description="manifest attributes for the prior kernel / y_aware (default: all)"
    )
    label: str | None = Field(None, description=f"label name (methods {', '.join(method_names('label'))})")
    loss: LossOptions = LossOptions()
    prior: PriorOptions = PriorOptions()
    views: int = Field(2, ge=2, description="augmented views per subject")
    augmentation: AugmentationOptions = AugmentationOptions()
    encoder: EncoderSpec = EncoderSpec()
    projection: ProjectionOptions = ProjectionOptions()
    optimizer: OptimizerOptions = OptimizerOptions()
    epochs: int = Field(100, ge=1, description="training epochs (passes over the training split)")
    batch_size: int = Field(32, ge=2, description="GLOBAL batch size (split over devices x nodes)")
    num_workers: int = Field(4, ge=0, description="data-loader worker processes per device (0: in the main process)")
    cache: Literal["auto", "memory", "disk", "none"] = Field(
        "auto", description="preprocessed images: auto (disk for 3D, memory for small 2D), disk, memory, none"
    )
    cache_dir: str | None = Field(
        None, description="root of the shared preprocessed-image cache (default: $MEDCL_CACHE_DIR or "
        "~/.cache/medcl/preprocessed); it holds every scan's pixels: keep it inside the hospital"
    )
    precision: Literal["32", "bf16-mixed", "16-mixed", "64"] = Field(
        "32", description="Lightning precision; bf16-mixed on recent GPUs, 32 on CPU (a number is read as text)"
    )
    accelerator: str = Field("auto", description="Lightning accelerator: auto, cpu or gpu")
    devices: int | str | list[int] = Field(
        1, description="Lightning devices: a count (4), a list of GPU indices ([0, 1]) or auto"
    )
    num_nodes: int = Field(1, ge=1, description="machines (nodes) of a multi-node run")
    strategy: str = Field("auto", description="Lightning strategy; auto becomes ddp with several devices")
    seed: int = Field(0, description="seed of the weights, views and batches (the split has the manifest's)")
    log_every_n_steps: int = Field(10, ge=1, description="write training metrics every N steps (at most once per "
                                   "epoch on small cohorts)")
    checkpoint: CheckpointOptions = CheckpointOptions()
    probe: ProbeOptions = ProbeOptions()
    deterministic: bool = Field(False, description="torch deterministic algorithms (slower)")
    progress_bar: bool = Field(True, description="a progress bar (or a line per epoch when not on a terminal)")
    kernel: dict[str, Any] | None = Field(
        None, description="fitted prior kernel (written by medcl into the resolved config)"
    )

    @field_validator("augmentation", mode="before")
    @classmethod
    def _preset_name(cls, value: Any) -> Any:
        return {"preset": value} if isinstance(value, str) else value

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_text(cls, value: Any) -> Any:
        # YAML reads `precision: 32` (and `--set precision=32`) as a number; Lightning's name is "32"
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("devices", mode="after")
    @classmethod
    def _check_devices(cls, value: int | str | list[int]) -> int | str | list[int]:
        if isinstance(value, list) and (not value or any(i < 0 for i in value) or len(set(value)) < len(value)):
            raise ValueError(f"a devices list names distinct GPU indices >= 0, got {value}")
        if isinstance(value, int) and (value == 0 or value < -1):
            raise ValueError(f"devices must be >= 1 (or -1: all), got {value}")
        return value

    @model_validator(mode="after")
    def _check(self) -> PretrainConfig:
        if isinstance(self.loss.lam, float | int) and not self.loss.lam > 0:
            raise ValueError(f"loss.lam must be > 0 or 'inv_sqrt_batch', got {self.loss.lam}")
        if self.record.uses_label and self.label is None:
            raise ValueError(f"method {self.method} needs 'label' (a manifest label name)")
        if self.probe.every_n_epochs > 0 and self.probe.label is None and self.label is not None:
            self.probe.label = self.label
        return self

    @property
    def record(self) -> MethodRecord:
        """The method's record (:mod:`medcl.losses.registry`): what it reads, its loss options, ..."""
        return METHODS[self.method]

    @property
    def uses_attributes(self) -> bool:
        return self.record.uses_attributes

    @property
    def lam(self) -> float:
        """``loss.lam`` as a number (:func:`resolve_lam` at this config's batch size)."""
        return resolve_lam(self.loss.lam, self.batch_size)

    @property
    def multi_device(self) -> bool:
        """True when Lightning runs several processes (several devices or nodes)."""
        d = self.devices
        return self.num_nodes > 1 or (isinstance(d, list) and len(d) > 1) or (
            isinstance(d, int) and (d > 1 or d == -1))

    def manifest_problems(self, manifest: Manifest) -> list[str]:
        """Names this config uses that ``manifest`` does not declare (attributes, labels); [] if none."""
        known_attributes = [a.name for a in manifest.attributes]
        known_labels = [lab.name for lab in manifest.labels]
        problems = [f"attributes: {name!r} is not a manifest attribute; known: {known_attributes}"
                    for name in self.attributes or [] if name not in known_attributes]
        probed = self.probe.label if self.probe.every_n_epochs else None
        for key, name in (("label", self.label), ("probe.label", probed)):
            if name is not None and name not in known_labels:
                problems.append(f"{key}: {name!r} is not a manifest label; known: {known_labels}")
        return problems

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def resolve_lam(lam: float | str, batch_size: int) -> float:
    """The ridge ``lam`` as a number: a float as is, ``"inv_sqrt_batch"`` as ``1 / sqrt(batch_size)``.

    ``1 / sqrt(batch)`` is the default of the paper's official code. Raises MedclInputError otherwise.
    """
    if isinstance(lam, str):
        if lam != "inv_sqrt_batch":
            raise MedclInputError(f"loss.lam: expected a number > 0 or 'inv_sqrt_batch', got {lam!r}")
        return 1.0 / math.sqrt(batch_size)
    if isinstance(lam, bool) or not (isinstance(lam, int | float) and math.isfinite(lam) and lam > 0):
        raise MedclInputError(f"loss.lam: expected a number > 0 or 'inv_sqrt_batch', got {lam!r}")
    return float(lam)


def parse_config(data: Any, source: str = "config", overrides: list[str] | None = None) -> PretrainConfig:
    """Validate a config dict (after ``overrides``); every problem is reported at once."""
    if not isinstance(data, dict):
        raise MedclInputError(f"{source}: expected a YAML mapping at the top level, got {type(data).__name__}")
    if isinstance(data.get("augmentation"), str):  # so that --set augmentation.backend=... applies
        data = {**data, "augmentation": {"preset": data["augmentation"]}}
    data = apply_overrides(data, overrides or [])
    try:
        return PretrainConfig.model_validate(data)
    except ValidationError as err:
        raise InputProblems(validation_problems(err, source), header=f"invalid pretraining config {source}") from None


def upgrade_saved_config(data: Any) -> Any:
    """A run directory's saved (resolved) config in today's vocabulary, so that older runs load.

    - ``augmentation: PRESET`` (written before the backends existed): its views came from the MONAI
      chain, so it becomes ``{preset: PRESET, backend: monai}``.
    - ``method: supervised`` without a resolved ``loss.label_classes`` / ``loss.label_std`` was written
      when ``supervised`` meant SupCon (before the cross-entropy arm): it becomes ``supcon``.
    """
    if not isinstance(data, dict):
        return data
    data = dict(data)
    if isinstance(data.get("augmentation"), str):
        data["augmentation"] = {"preset": data["augmentation"], "backend": "monai"}
    loss = data.get("loss") if isinstance(data.get("loss"), dict) else {}
    if data.get("method") == "supervised" and loss.get("label_classes") is None and loss.get("label_std") is None:
        data["method"] = "supcon"
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> PretrainConfig:
    """Read, override and validate a config file; a relative ``manifest`` resolves against it."""
    path = Path(path)
    data = read_yaml(path, "config")
    config = parse_config(data, source=str(path), overrides=overrides)
    manifest = Path(config.manifest).expanduser()
    if not manifest.is_absolute():
        # A manifest written in the config is relative to the config file; one given on the
        # command line (--set manifest=...) is relative to where the command runs.
        from_command_line = any(o.split("=", 1)[0].strip() == "manifest" for o in overrides or [])
        manifest = (Path.cwd() if from_command_line else path.parent).joinpath(manifest).resolve()
    return config.model_copy(update={"manifest": str(manifest)})
