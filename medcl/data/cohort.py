"""A cohort: the manifest joined with its table, parsed and checked once.

``Cohort.from_manifest`` reads the table, resolves image paths (refusing any that leaves the data
root), parses attributes and labels according to the manifest, and checks the split. Every
problem found is collected and raised together as :class:`~medcl.errors.InputProblems`, each line
naming the file, row (counted from 1 at the first data row) and column. The result is read-only:
accessors return fresh arrays.

The per-column parsers and the problem collector are in :mod:`medcl.data.columns`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medcl.data.columns import (
    ParsedAttribute,
    ParsedLabel,
    ProblemList,
    parse_categories,
    parse_embedding,
    parse_label,
    parse_numbers,
    readonly,
    required_columns,
)
from medcl.data.manifest import Manifest, load_manifest
from medcl.data.splits import SPLIT_NAMES, folds_to_split, group_kfold, split_problems
from medcl.data.tables import as_text, read_table
from medcl.errors import InputProblems, MedclInputError

if TYPE_CHECKING:
    from medcl.kernels import KernelTerm, PriorKernel

class Cohort:
    """Subjects of a manifest: ids, image paths, parsed attributes, labels and the split.

    Build with :meth:`from_manifest`. ``table`` is the table as read (rows in file order).
    """

    def __init__(
        self,
        manifest: Manifest,
        table: pd.DataFrame,
        subject_ids: list[str],
        patient_ids: list[str],
        image_paths: list[Path],
        attributes: dict[str, ParsedAttribute],
        labels: dict[str, ParsedLabel],
        split_column: np.ndarray | None,
    ) -> None:
        self._manifest = manifest
        self._table = table
        self._subject_ids = list(subject_ids)
        self._patient_ids = list(patient_ids)
        self._image_paths = list(image_paths)
        self._attributes = attributes
        self._labels = labels
        self._split_column = split_column
        self._folds_cache: dict[tuple[int, int], np.ndarray] = {}

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_manifest(cls, source: str | Path | Manifest, *, check_files: bool = True) -> Cohort:
        """Load a manifest (path or :class:`Manifest`) and join it with its table.

        ``check_files`` also checks that every image path exists (a cheap ``stat``; opening
        the images is :func:`medcl.data.validate.validate_manifest`'s job).

        Raises:
            MedclInputError: the manifest or table cannot be read.
            InputProblems: every problem found in the table, one line each.
        """
        manifest = source if isinstance(source, Manifest) else load_manifest(source)
        cohort, problems = parse_cohort(manifest, check_files=check_files)
        if problems or cohort is None:
            raise InputProblems(problems, header=f"invalid cohort {manifest.path or manifest.name}")
        return cohort

    # -- basic accessors ----------------------------------------------------------------------
    @property
    def manifest(self) -> Manifest:
        return self._manifest

    @property
    def table(self) -> pd.DataFrame:
        """The table as read, in file order (a copy)."""
        return self._table.copy()

    def __len__(self) -> int:
        return len(self._subject_ids)

    def __repr__(self) -> str:
        return (f"Cohort(name={self._manifest.name!r}, subjects={len(self)}, "
                f"patients={len(set(self._patient_ids))}, kind={self._manifest.image.kind!r})")

    @property
    def subject_ids(self) -> list[str]:
        return list(self._subject_ids)

    @property
    def patient_ids(self) -> list[str]:
        return list(self._patient_ids)

    @property
    def image_paths(self) -> list[Path]:
        return list(self._image_paths)

    @property
    def attribute_names(self) -> list[str]:
        return [a.name for a in self._manifest.attributes]

    @property
    def label_names(self) -> list[str]:
        return [lab.name for lab in self._manifest.labels]

    # -- attributes ---------------------------------------------------------------------------
    def _attribute(self, name: str) -> ParsedAttribute:
        if name not in self._attributes:
            raise MedclInputError(f"no attribute {name!r} in manifest; known: {self.attribute_names}")
        return self._attributes[name]

    def attribute_categories(self, name: str) -> list[str] | None:
        """Categories of a categorical/binary attribute, in code order (None otherwise)."""
        cats = self._attribute(name).categories
        return None if cats is None else list(cats)

    def attribute_matrix(
        self, names: list[str] | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[KernelTerm]]:
        """Attributes as one matrix, for the prior kernel.

        Args:
            names: attribute names (default: all, in manifest order).

        Returns:
            values: (n, p) float32, NaN where missing. Continuous and categorical/binary
                attributes take one column (value / category code), an embedding ``k`` columns.
            missing: (n, p) bool; a subject misses an attribute when any of its columns is NaN,
                and then all of that attribute's columns are marked missing.
            terms: one :class:`medcl.kernels.KernelTerm` per attribute, naming its columns.
        """
        from medcl.kernels import KernelTerm

        names = self.attribute_names if names is None else list(names)
        blocks, masks, terms = [], [], []
        start = 0
        for name in names:
            attr = self._attribute(name)
            block = attr.values
            miss = np.isnan(block).any(axis=1, keepdims=True)
            blocks.append(block)
            masks.append(np.broadcast_to(miss, block.shape))
            stop = start + block.shape[1]
            spec = attr.spec
            terms.append(KernelTerm(spec.name, spec.kernel_name, start, stop,
                                    bandwidth=spec.bandwidth, weight=spec.weight))
            start = stop
        n = len(self)
        values = np.concatenate(blocks, axis=1).astype(np.float32) if blocks else np.zeros((n, 0), np.float32)
        missing = np.concatenate(masks, axis=1) if masks else np.zeros((n, 0), bool)
        values = values.copy()
        values[missing] = np.nan
        return values, missing.copy(), terms

    def prior_kernel(
        self,
        names: list[str] | None = None,
        *,
        combine: str | None = None,
        **options: Any,
    ) -> PriorKernel:
        """An unfitted :class:`medcl.kernels.PriorKernel` over these attributes.

        ``combine`` defaults to the manifest's ``kernel_combine``; ``options`` (``instance_weight``,
        ``bandwidth_scale``, ``bandwidth_rule``) go to the kernel, whose defaults apply otherwise.
        """
        from medcl.kernels import PriorKernel

        _, _, terms = self.attribute_matrix(names)
        return PriorKernel(terms, combine=combine or self._manifest.kernel_combine, **options)

    # -- labels -------------------------------------------------------------------------------
    def _label(self, name: str) -> ParsedLabel:
        if name not in self._labels:
            raise MedclInputError(f"no label {name!r} in manifest; known: {self.label_names}")
        return self._labels[name]

    def label(self, name: str) -> np.ndarray:
        """(n,) float64: binary 0/1, multiclass code, or continuous value; NaN where missing."""
        return self._label(name).values.copy()

    def label_classes(self, name: str) -> list[str] | None:
        """Class names in code order (binary: [negative, positive]); None for continuous."""
        classes = self._label(name).classes
        return None if classes is None else list(classes)

    # -- splits -------------------------------------------------------------------------------
    def folds(self, k: int | None = None, seed: int | None = None) -> np.ndarray:
        """(n,) int64 patient-level fold per subject (default: the manifest's folds and seed).

        Stratified on the manifest's ``split.stratify`` label when set. Ignores a split column:
        use it for cross-validation over the whole cohort.
        """
        spec = self._manifest.split
        k = spec.folds if k is None else int(k)
        seed = spec.seed if seed is None else int(seed)
        key = (k, seed)
        if key not in self._folds_cache:
            y = self.label(spec.stratify) if spec.stratify else None
            self._folds_cache[key] = readonly(group_kfold(self._patient_ids, k, seed=seed, y=y))
        return self._folds_cache[key].copy()

    def split(self) -> np.ndarray:
        """(n,) object array of ``"train"`` / ``"val"`` / ``"test"`` per subject, patient-level."""
        if self._split_column is not None:
            return self._split_column.copy()
        spec = self._manifest.split
        return folds_to_split(self.folds(), spec.val_folds, spec.test_folds)

    def indices(self, split: str) -> np.ndarray:
        """Row indices of the subjects in ``split`` (``"train"``, ``"val"`` or ``"test"``)."""
        if split not in SPLIT_NAMES:
            raise MedclInputError(f"split must be one of {list(SPLIT_NAMES)}, got {split!r}")
        return np.flatnonzero(self.split() == split)

    # -- summary ------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Counts, per-split sizes, label balance, attribute ranges and missing rates (no ids)."""
        split = self.split()
        out: dict[str, Any] = {
            "name": self._manifest.name,
            "image_kind": self._manifest.image.kind,
            "subjects": len(self),
            "patients": len(set(self._patient_ids)),
            "splits": {s: int((split == s).sum()) for s in SPLIT_NAMES},
            "split_method": self._manifest.split.method,
            "labels": {},
            "attributes": {},
        }
        for name, lab in self._labels.items():
            v = lab.values
            entry: dict[str, Any] = {"type": lab.spec.type, "missing": int(np.isnan(v).sum())}
            if lab.classes is None:
                known = v[~np.isnan(v)]
                entry.update(min=float(known.min()), max=float(known.max()), mean=float(known.mean()))
            else:
                entry["counts"] = {c: int((v == k).sum()) for k, c in enumerate(lab.classes)}
            out["labels"][name] = entry
        for name, attr in self._attributes.items():
            miss = np.isnan(attr.values).any(axis=1)
            entry = {"type": attr.spec.type, "missing_rate": float(miss.mean())}
            if attr.spec.type == "continuous":
                known = attr.values[~miss, 0]
                entry.update(min=float(known.min()), max=float(known.max()), mean=float(known.mean()))
            elif attr.categories is not None:
                codes = attr.values[:, 0]
                entry["counts"] = {c: int((codes == k).sum()) for k, c in enumerate(attr.categories)}
            else:
                entry["dim"] = int(attr.values.shape[1])
            out["attributes"][name] = entry
        return out


def parse_cohort(manifest: Manifest, *, check_files: bool = True) -> tuple[Cohort | None, list[str]]:
    """Join a manifest with its table, collecting every problem instead of stopping at the first.

    Returns ``(cohort, problems)``. When ``problems`` is not empty the cohort is partial (some
    attributes, labels or paths could not be parsed) and must not be used for training. A problem
    with the table file itself (missing, unreadable, empty) is returned alone, with no cohort.
    """
    problems = ProblemList()
    try:
        # The table and feature files are named by the manifest's author, so only paths read
        # from the table (images) are held inside the data root.
        table = read_table(manifest.base_dir / manifest.table)
    except MedclInputError as err:
        return None, [str(err)]
    tname = manifest.table
    n = len(table)

    missing_cols = [(c, why) for c, why in required_columns(manifest) if c not in table.columns]
    for col, why in missing_cols:
        problems.add(f"{tname}: no column {col!r} (named by {why}); columns are {list(table.columns)}")
    absent = {c for c, _ in missing_cols}

    def col_where(col: str) -> str:
        return f"{tname}, column {col!r}"

    # ids
    subject_ids: list[str] = [""] * n
    if manifest.subject_column not in absent:
        texts = as_text(table[manifest.subject_column])
        where = col_where(manifest.subject_column)
        problems.rows(where, [(i, "missing subject id") for i, t in enumerate(texts) if t is None],
                      "missing subject ids")
        subject_ids = [t or "" for t in texts]
        rows_by_id: dict[str, list[int]] = {}
        for i, s in enumerate(subject_ids):
            if s:
                rows_by_id.setdefault(s, []).append(i)
        dups = [rows for rows in rows_by_id.values() if len(rows) > 1]
        problems.rows(where, [(rows[0], "subject id repeated in rows " + ", ".join(str(r + 1) for r in rows))
                              for rows in dups], "repeated subject ids")
    patient_ids = list(subject_ids)
    if manifest.patient_column and manifest.patient_column not in absent:
        texts = as_text(table[manifest.patient_column])
        problems.rows(col_where(manifest.patient_column),
                      [(i, "missing patient id") for i, t in enumerate(texts) if t is None],
                      "missing patient ids")
        patient_ids = [t or "" for t in texts]

    # images
    image_paths: list[Path] = [Path()] * n
    if manifest.image.column not in absent:
        where = col_where(manifest.image.column)
        bad: list[tuple[int, str]] = []
        escaped: list[tuple[int, str]] = []
        for i, t in enumerate(as_text(table[manifest.image.column])):
            if t is None:
                bad.append((i, "missing image path"))
                continue
            try:
                p = manifest.resolve(t, "image path")
            except MedclInputError as err:
                escaped.append((i, str(err)))
                continue
            image_paths[i] = p
            if check_files and not p.exists():
                bad.append((i, f"image {t!r} does not exist ({p})"))
        problems.rows(where, escaped, "paths outside the data root")
        problems.rows(where, bad, "missing images")

    # attributes
    attributes: dict[str, ParsedAttribute] = {}
    for spec in manifest.attributes:
        if spec.type == "embedding":
            attr = parse_embedding(manifest, spec, subject_ids, problems)
        elif spec.source_column in absent:
            continue
        else:
            texts = as_text(table[spec.source_column])
            where = col_where(spec.source_column)
            if spec.type == "continuous":
                attr = ParsedAttribute(spec, parse_numbers(texts, where, problems)[:, None], None)
            else:
                codes, cats = parse_categories(texts, spec, where, problems)
                attr = ParsedAttribute(spec, codes[:, None], cats)
            if all(t is None for t in texts):
                problems.add(f"{where}: attribute {spec.name!r} is missing for every subject")
        if attr is not None:
            attributes[spec.name] = ParsedAttribute(attr.spec, readonly(attr.values.astype(np.float32)),
                                               attr.categories)

    # labels
    labels: dict[str, ParsedLabel] = {}
    for lspec in manifest.labels:
        if lspec.source_column in absent:
            continue
        values, classes = parse_label(as_text(table[lspec.source_column]), lspec,
                                       col_where(lspec.source_column), problems)
        labels[lspec.name] = ParsedLabel(lspec, readonly(values), classes)

    # split
    split_column = None
    spec = manifest.split
    if spec.method == "column" and spec.column and spec.column not in absent:
        raw = as_text(table[spec.column])
        for line in split_problems(raw, patient_ids, where=col_where(spec.column)):
            problems.add(line)
        split_column = readonly(np.array([t or "" for t in raw], dtype=object))
    elif spec.method == "group_kfold":
        n_patients = len(set(patient_ids))
        if n_patients < spec.folds:
            problems.add(f"{tname}: split needs {spec.folds} patient-level folds but the table has "
                         f"{n_patients} patient(s); lower split.folds")

    cohort = Cohort(manifest, table, subject_ids, patient_ids, image_paths, attributes, labels, split_column)
    return cohort, problems.lines


__all__ = ["Cohort", "parse_cohort"]
