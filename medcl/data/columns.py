"""Parsing a cohort table's columns: numbers, categories, labels, embeddings, and the problem list.

Package-private helpers of :mod:`medcl.data.cohort` (``parse_cohort`` is their one caller): each
parser reads one column's texts, returns the parsed values and adds a line naming the file, row and
column to :class:`ProblemList` for every bad row (at most :data:`MAX_ROWS_PER_PROBLEM` per column and
kind of problem).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medcl.data.manifest import AttributeSpec, LabelSpec, Manifest
from medcl.data.tables import read_features
from medcl.errors import MedclInputError

#: At most this many rows are listed per column and kind of problem; the rest are counted.
MAX_ROWS_PER_PROBLEM = 5


@dataclass(frozen=True)
class ParsedAttribute:
    spec: AttributeSpec
    values: np.ndarray  # (n, k) float32, NaN where missing
    categories: list[str] | None


@dataclass(frozen=True)
class ParsedLabel:
    spec: LabelSpec
    values: np.ndarray  # (n,) float64, NaN where missing
    classes: list[str] | None


def readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _sorted_values(values: set[str]) -> list[str]:
    """Sort category values numerically when they all look like numbers, else as text."""
    try:
        return sorted(values, key=float)
    except ValueError:
        return sorted(values)


class ProblemList:
    """Collects problem lines; per-row problems are capped per (where, what)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        self.lines.append(line)

    def rows(self, where: str, bad: list[tuple[int, str]], what: str) -> None:
        """``bad``: (row index, description) pairs for one column and kind of problem."""
        for i, desc in bad[:MAX_ROWS_PER_PROBLEM]:
            self.lines.append(f"{where}: row {i + 1}: {desc}")
        if len(bad) > MAX_ROWS_PER_PROBLEM:
            self.lines.append(f"{where}: ... and {len(bad) - MAX_ROWS_PER_PROBLEM} more row(s) with {what}")


def parse_numbers(texts: list[str | None], where: str, problems: ProblemList) -> np.ndarray:
    out = np.full(len(texts), np.nan)
    bad: list[tuple[int, str]] = []
    for i, t in enumerate(texts):
        if t is None:
            continue
        try:
            v = float(t)
        except ValueError:
            bad.append((i, f"{t!r} is not a number"))
            continue
        if not np.isfinite(v):
            bad.append((i, f"{t!r} is not a finite number"))
            continue
        out[i] = v
    problems.rows(where, bad, "non-numeric values")
    return out


def parse_categories(
    texts: list[str | None], spec: AttributeSpec, where: str, problems: ProblemList
) -> tuple[np.ndarray, list[str]]:
    observed = {t for t in texts if t is not None}
    if spec.categories is not None:
        categories = [str(c) for c in spec.categories]
        unknown = [(i, f"unknown category {t!r}; expected one of {categories}")
                   for i, t in enumerate(texts) if t is not None and t not in categories]
        problems.rows(where, unknown, "unknown categories")
    else:
        categories = _sorted_values(observed)
        if spec.type == "binary" and len(categories) > 2:
            problems.add(f"{where}: binary attribute has {len(categories)} distinct values "
                         f"{categories[:10]}; expected at most 2 (use type categorical?)")
    index = {c: k for k, c in enumerate(categories)}
    codes = np.array([index.get(t, np.nan) if t is not None else np.nan for t in texts], dtype=float)
    return codes, categories


def parse_label(
    texts: list[str | None], spec: LabelSpec, where: str, problems: ProblemList
) -> tuple[np.ndarray, list[str] | None]:
    name = spec.name
    if spec.type == "continuous":
        values = parse_numbers(texts, where, problems)
        known = values[~np.isnan(values)]
        if len(known) == 0:
            problems.add(f"{where}: label {name!r} is missing for every subject")
        elif len(np.unique(known)) == 1:
            problems.add(f"{where}: label {name!r} has a single value ({known[0]:g}) for every subject")
        return values, None
    observed = _sorted_values({t for t in texts if t is not None})
    if not observed:
        problems.add(f"{where}: label {name!r} is missing for every subject")
        return np.full(len(texts), np.nan), []
    if spec.type == "binary" and spec.positive is not None:
        pos = str(spec.positive)
        negatives = [c for c in observed if c != pos]
        if pos not in observed:
            problems.add(f"{where}: label {name!r}: the positive value {pos!r} never appears; "
                         f"values are {observed[:10]}")
        classes = [negatives[0] if len(negatives) == 1 else f"not {pos}", pos]
        values = np.array([np.nan if t is None else float(t == pos) for t in texts])
    else:
        classes = observed
        if spec.type == "binary" and len(observed) > 2:
            problems.add(f"{where}: binary label {name!r} has {len(observed)} values {observed[:10]}; "
                         "set 'positive' or use type multiclass")
        index = {c: k for k, c in enumerate(classes)}
        values = np.array([np.nan if t is None else float(index[t]) for t in texts])
    present = np.unique(values[~np.isnan(values)])
    if len(present) < 2:
        problems.add(f"{where}: label {name!r} has only one class ({classes[int(present[0])]!r}) "
                     "among the subjects; a label needs at least two")
    return values, classes


def required_columns(m: Manifest) -> list[tuple[str, str]]:
    cols = [(m.subject_column, "subject_column"), (m.image.column, "image.column")]
    if m.patient_column:
        cols.append((m.patient_column, "patient_column"))
    cols += [(a.source_column, f"attribute {a.name!r}") for a in m.attributes if a.type != "embedding"]
    cols += [(lab.source_column, f"label {lab.name!r}") for lab in m.labels]
    if m.split.method == "column" and m.split.column:
        cols.append((m.split.column, "split.column"))
    return cols


def parse_embedding(
    manifest: Manifest, spec: AttributeSpec, subject_ids: list[str], problems: ProblemList
) -> ParsedAttribute | None:
    assert spec.features is not None
    try:
        ids, feats = read_features(manifest.base_dir / spec.features, manifest.subject_column)
    except MedclInputError as err:
        problems.add(f"attribute {spec.name!r}: {err}")
        return None
    row = {s: i for i, s in enumerate(ids)}
    values = np.full((len(subject_ids), feats.shape[1]), np.nan, dtype=np.float32)
    found = 0
    for i, s in enumerate(subject_ids):
        j = row.get(s)
        if j is not None:
            values[i] = feats[j]
            found += 1
    if found == 0 or np.isnan(values).any(axis=1).all():
        problems.add(f"attribute {spec.name!r}: feature file {spec.features} has no usable row for any "
                     f"subject of the table (ids are matched on {manifest.subject_column!r})")
    return ParsedAttribute(spec, values, None)
