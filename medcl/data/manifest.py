"""The manifest: a small YAML file that tells medcl how to read a cohort.

A manifest points at a table (CSV, TSV or Parquet) and names its columns: subject id, patient id
(for leakage-free splits), image path, weak attributes (prior knowledge for the kernel), downstream
labels and the split. Paths resolve relative to the manifest; image paths read from the table
may not escape ``data_root`` (default: the manifest's folder).

Example::

    name: my-cohort
    table: participants.csv
    subject_column: subject_id
    patient_column: patient_id
    image: {column: image, kind: 3d}
    preprocessing: {spacing: [2, 2, 2], size: [64, 64, 64], intensity: {method: zscore}}
    attributes:
      - {name: age, type: continuous}
      - {name: sex, type: binary}
      - {name: site, type: categorical}
    labels:
      - {name: diagnosis, type: binary, positive: AD}
    split: {method: group_kfold, folds: 5, seed: 0, stratify: diagnosis}
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medcl.errors import InputProblems, MedclInputError
from medcl.kernels.vocabulary import CombineMode, KernelKind
from medcl.yaml_files import read_yaml, validation_problems

AttributeType = Literal["continuous", "categorical", "binary", "embedding"]
KernelName = KernelKind
LabelType = Literal["binary", "multiclass", "continuous"]

DEFAULT_KERNEL: dict[str, KernelName] = {
    "continuous": "rbf",
    "categorical": "delta",
    "binary": "delta",
    "embedding": "cosine",
}


def _scalar_text(v: object) -> object:
    """Numbers written in YAML (``1``, ``2.5``) as the text a table cell would hold."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return v
    return str(int(v)) if float(v).is_integer() else str(v)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageSpec(_Strict):
    """Where the images are and what they are."""

    column: str = "image"
    kind: Literal["2d", "3d"]
    channels: int = Field(1, ge=1)

    @property
    def spatial_dims(self) -> int:
        return 2 if self.kind == "2d" else 3


class IntensitySpec(_Strict):
    """Intensity scaling applied once, before caching."""

    method: Literal["zscore", "minmax", "percentile", "none"] = "zscore"
    lower: float = Field(0.5, ge=0, le=100, description="lower percentile (method=percentile)")
    upper: float = Field(99.5, ge=0, le=100, description="upper percentile (method=percentile)")
    nonzero: bool = Field(False, description="zscore over non-zero voxels only (brain MRI)")


class PreprocessingSpec(_Strict):
    """Deterministic preprocessing; its settings are part of the cache key."""

    orientation: str | None = Field("RAS", description="axcodes for 3D images; null keeps the file's")
    spacing: list[float] | None = Field(None, description="target voxel size in mm; null keeps it")
    size: list[int] = Field(..., description="final spatial size after resampling/cropping")
    intensity: IntensitySpec = IntensitySpec()

    @field_validator("size")
    @classmethod
    def _positive_size(cls, v: list[int]) -> list[int]:
        if not v or any(s < 1 for s in v):
            raise ValueError(f"size must be positive integers, got {v}")
        return v


class AttributeSpec(_Strict):
    """A weak attribute used as prior knowledge in the kernel."""

    name: str
    column: str | None = Field(None, description="table column; defaults to name")
    type: AttributeType
    kernel: KernelName | None = Field(None, description="defaults: rbf / delta / delta / cosine")
    bandwidth: float | None = Field(None, gt=0, description="RBF sigma; null = median heuristic")
    weight: float = Field(1.0, gt=0, description="weight in a weighted-sum kernel")
    categories: list[str] | None = Field(None, description="known categories (categorical/binary)")
    features: str | None = Field(
        None, description="embedding only: CSV/TSV/Parquet/NPZ feature file keyed by subject id"
    )

    @field_validator("categories", mode="before")
    @classmethod
    def _categories_as_text(cls, v: object) -> object:
        # YAML reads `categories: [0, 1]` as numbers; table cells are compared as text.
        return [_scalar_text(c) for c in v] if isinstance(v, list) else v

    @property
    def source_column(self) -> str:
        return self.column or self.name

    @property
    def kernel_name(self) -> KernelName:
        return self.kernel or DEFAULT_KERNEL[self.type]

    @model_validator(mode="after")
    def _check(self) -> AttributeSpec:
        if self.type == "embedding" and not self.features:
            raise ValueError(f"attribute {self.name!r}: type embedding needs a 'features' file")
        if self.type != "embedding" and self.features:
            raise ValueError(f"attribute {self.name!r}: 'features' is only for type embedding")
        if self.categories is not None and self.type not in ("categorical", "binary"):
            raise ValueError(f"attribute {self.name!r}: 'categories' is only for categorical/binary")
        if self.categories is not None and len(set(map(str, self.categories))) != len(self.categories):
            raise ValueError(f"attribute {self.name!r}: 'categories' has repeated values")
        if self.type == "binary" and self.categories is not None and len(self.categories) != 2:
            raise ValueError(
                f"attribute {self.name!r}: a binary attribute has exactly 2 categories, got {self.categories}"
            )
        if self.type in ("categorical", "binary") and self.kernel_name != "delta":
            raise ValueError(f"attribute {self.name!r}: {self.type} attributes use the delta kernel")
        if self.type == "continuous" and self.kernel_name not in ("rbf",):
            raise ValueError(f"attribute {self.name!r}: continuous attributes use the rbf kernel")
        if self.type == "embedding" and self.kernel_name not in ("rbf", "cosine"):
            raise ValueError(f"attribute {self.name!r}: embedding attributes use rbf or cosine")
        if self.bandwidth is not None and self.kernel_name != "rbf":
            raise ValueError(
                f"attribute {self.name!r}: 'bandwidth' applies to the rbf kernel only, not {self.kernel_name}"
            )
        return self


class LabelSpec(_Strict):
    """A downstream label (diagnosis, score) for probing and fine-tuning."""

    name: str
    column: str | None = None
    type: LabelType
    positive: str | None = Field(None, description="binary: the value that counts as positive")

    @field_validator("positive", mode="before")
    @classmethod
    def _positive_as_text(cls, v: object) -> object:
        return _scalar_text(v)

    @property
    def source_column(self) -> str:
        return self.column or self.name


class SplitSpec(_Strict):
    """How subjects are split, always by patient.

    Either ``column`` (values train / val / test, per row) or ``method: group_kfold`` with
    ``folds`` folds (stratified on ``stratify`` when given); ``val_folds`` and ``test_folds`` say
    which folds are validation and test, the rest is training.
    """

    column: str | None = None
    method: Literal["column", "group_kfold"] = "group_kfold"
    folds: int = Field(5, ge=2)
    seed: int = 0
    stratify: str | None = Field(None, description="label name to stratify folds on")
    val_folds: list[int] = [0]
    test_folds: list[int] = []

    @model_validator(mode="after")
    def _check(self) -> SplitSpec:
        if self.column is not None:
            self.method = "column"
        if self.method == "column" and self.column is None:
            raise ValueError("split: method 'column' needs 'column'")
        for f in [*self.val_folds, *self.test_folds]:
            if not 0 <= f < self.folds:
                raise ValueError(f"split: fold {f} is outside 0..{self.folds - 1}")
        if set(self.val_folds) & set(self.test_folds):
            raise ValueError("split: a fold cannot be both validation and test")
        return self


class Manifest(_Strict):
    """A validated cohort manifest. Load with :func:`load_manifest`."""

    name: str = "cohort"
    table: str
    data_root: str | None = Field(None, description="images must lie inside; default: manifest folder")
    subject_column: str = "subject_id"
    patient_column: str | None = Field(None, description="default: one patient per subject")
    image: ImageSpec
    preprocessing: PreprocessingSpec
    attributes: list[AttributeSpec] = []
    kernel_combine: CombineMode = "product"
    labels: list[LabelSpec] = []
    split: SplitSpec = SplitSpec()

    # Set by load_manifest; not part of the YAML.
    path: Path | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _check(self) -> Manifest:
        names = [a.name for a in self.attributes]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"attribute names must be unique, repeated: {sorted(dup)}")
        lnames = [lab.name for lab in self.labels]
        dup = {n for n in lnames if lnames.count(n) > 1}
        if dup:
            raise ValueError(f"label names must be unique, repeated: {sorted(dup)}")
        if self.split.stratify is not None and self.split.stratify not in lnames:
            raise ValueError(f"split.stratify names {self.split.stratify!r}, not a label ({lnames})")
        dims = self.image.spatial_dims
        if len(self.preprocessing.size) != dims:
            raise ValueError(
                f"preprocessing.size must have {dims} values for {self.image.kind} images, "
                f"got {self.preprocessing.size}"
            )
        if self.preprocessing.spacing is not None and len(self.preprocessing.spacing) != len(
            self.preprocessing.size
        ):
            raise ValueError("preprocessing.spacing and preprocessing.size must have the same length")
        return self

    @property
    def base_dir(self) -> Path:
        """Folder relative paths resolve against (the manifest's own folder)."""
        return (self.path.parent if self.path else Path.cwd()).resolve()

    @property
    def root(self) -> Path:
        """Data root: no image path read from the table may resolve outside it."""
        if self.data_root is None:
            return self.base_dir
        return (self.base_dir / self.data_root).resolve()

    def resolve(self, relative: str, what: str) -> Path:
        """Resolve a path from the manifest or table; refuse one that escapes the data root."""
        p = (self.base_dir / str(relative)).resolve()
        root = self.root
        if p != root and root not in p.parents:
            raise MedclInputError(f"{what} {relative!r} resolves to {p}, outside the data root {root}")
        return p

    def attribute(self, name: str) -> AttributeSpec:
        for a in self.attributes:
            if a.name == name:
                return a
        known = [a.name for a in self.attributes]
        raise MedclInputError(f"no attribute {name!r} in manifest; known: {known}")

    def label(self, name: str) -> LabelSpec:
        for lab in self.labels:
            if lab.name == name:
                return lab
        raise MedclInputError(f"no label {name!r} in manifest; known: {[lab.name for lab in self.labels]}")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)


def parse_manifest(data: dict, source: str = "manifest", path: Path | None = None) -> Manifest:
    """Validate a manifest given as a dict; every schema problem is reported at once."""
    if not isinstance(data, dict):
        raise MedclInputError(
            f"{source}: expected a YAML mapping at the top level, got {type(data).__name__}"
        )
    try:
        m = Manifest.model_validate(data)
    except ValidationError as err:
        raise InputProblems(validation_problems(err, source), header=f"invalid manifest {source}") from None
    m.path = path
    return m


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest YAML file. Raises MedclInputError naming the file and field."""
    path = Path(path)
    data = read_yaml(path, "manifest")
    return parse_manifest(data, source=str(path), path=path.resolve())
