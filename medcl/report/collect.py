"""Read whatever a run directory holds for the report, tolerating missing or damaged files.

Every artefact is optional (see :mod:`medcl.evaluate.artefacts` for the file list). A file that is
absent leaves its field empty; a file that is present but unreadable leaves it empty too and adds
a line to ``RunArtefacts.notes``. Only a directory that does not exist, or holds nothing
readable at all, is an error.

Probe results, ``probe/<label>.json``, as written by ``medcl.evaluate.metrics.write_probe_result``::

    {"label": "diagnosis", "kind": "binary" | "multiclass" | "continuous",
     "n_subjects": 120, "n_patients": 100, "n_folds": 5, ...other scalars (shown as details),
     "rows": [{"probe": "linear" | "knn", "train_size": "all" | 20, "n_train": 96.0,
               "metric": "roc_auc", "mean": 0.81, "std": 0.04, "ci_low": 0.74, "ci_high": 0.88,
               "n_folds": 5, "per_fold": [...]}, ...],
     "notes": ["..."]}

``train_size == "all"`` rows are the probe table; the linear probe's rows at every size make
the label-efficiency curve (x = ``n_train``, the mean number of training subjects per fold).
Also read, for hand-written or older files::

    {"label": ..., "kind": ...,
     "metrics": {"roc_auc": {"mean": 0.81, "std": 0.04, "ci_low": 0.74, "ci_high": 0.88}, ...},
     "label_efficiency": [{"train_size": 20, "roc_auc": 0.66, ...}, ...]}

with a metric given as a bare number (the mean), a list of per-fold values, or a dict with
``ci: [low, high]``; sizes under ``train_size`` / ``n_train`` / ``size`` / ``fraction``; a file
holding a list of results. ``label`` defaults to the file name. Null (NaN) bounds are shown as
missing.

Why this size: one tolerant reader per artefact (config, metrics, probes, embeddings, kernel,
spectrum, health, attributes), each turning a damaged file into a note, plus the record types the
page is built from.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from medcl.errors import MedclInputError
from medcl.evaluate.artefacts import (
    ATTRIBUTES_FILE,
    CONFIG_FILE,
    EMBEDDINGS_FILE,
    FEATURES_KEY,
    KERNEL_BATCH_FILE,
    KERNEL_FILE,
    METRICS_FILE,
    PROBE_DIR,
    SPECTRUM_FILE,
    SUMMARY_FILE,
    is_id_name,
)
from medcl.kernels.public import public_kernel

if TYPE_CHECKING:
    import pandas as pd

_READ_ERRORS = (OSError, ValueError, TypeError, KeyError, yaml.YAMLError, zipfile.BadZipFile, EOFError)
_SIZE_KEYS = ("train_size", "n_train", "size", "fraction")
_MAX_CATEGORIES = 20


@dataclass(frozen=True)
class MetricSummary:
    """One probe metric: mean over folds / bootstraps with its spread and confidence interval."""

    mean: float
    std: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None


@dataclass(frozen=True)
class EfficiencyPoint:
    """Probe metrics when training on ``train_size`` labelled subjects (or a fraction)."""

    train_size: float
    metrics: dict[str, MetricSummary]


@dataclass
class ProbeResult:
    """The linear-probe result for one label."""

    label: str
    kind: str | None
    metrics: dict[str, MetricSummary]
    label_efficiency: list[EfficiencyPoint] = field(default_factory=list)
    details: dict[str, float | int | str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class Embeddings:
    """Frozen-encoder features (n, F) and per-subject colour columns (n,) each."""

    features: np.ndarray
    columns: dict[str, np.ndarray]


@dataclass
class RunArtefacts:
    """Everything the report found in one run directory."""

    path: Path
    name: str
    config: dict[str, Any] | None = None
    metrics: pd.DataFrame | None = None
    probes: list[ProbeResult] = field(default_factory=list)
    embeddings: Embeddings | None = None
    kernel_batch: np.ndarray | None = None
    kernel_spec: dict[str, Any] | None = None
    spectrum: dict[str, Any] | None = None
    attributes: list[dict[str, Any]] | None = None
    health: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def collapsed(self) -> bool:
        """True when the run's training-health check flagged a collapse (summary.json)."""
        return bool(self.health and self.health.get("collapsed"))

    @property
    def method(self) -> str | None:
        """The pretraining method named in ``config.yaml`` (``method`` key), if any."""
        if self.config is None:
            return None
        method = self.config.get("method")
        if isinstance(method, dict):  # e.g. {"name": "kernel_du", ...}
            method = method.get("name")
        return None if method is None else str(method)

    def has_content(self) -> bool:
        """True when at least one artefact could be read."""
        return any(
            (
                self.config is not None,
                self.metrics is not None,
                bool(self.probes),
                self.embeddings is not None,
                self.kernel_batch is not None,
                self.kernel_spec is not None,
                self.spectrum is not None,
                self.attributes is not None,
                self.health is not None,
            )
        )


def collect_run(run_dir: str | os.PathLike, name: str | None = None) -> RunArtefacts:
    """Read every report artefact present in ``run_dir``.

    Raises ``MedclInputError`` naming the directory when it does not exist or nothing in it is
    readable; otherwise problems with single files are recorded in ``notes``.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise MedclInputError(f"run directory {str(path)!r} does not exist or is not a directory")
    run = RunArtefacts(path=path, name=name or path.resolve().name or str(path))
    readers = (
        (CONFIG_FILE, _read_config, "config"),
        (METRICS_FILE, _read_metrics, "metrics"),
        (EMBEDDINGS_FILE, _read_embeddings, "embeddings"),
        (KERNEL_BATCH_FILE, _read_kernel_batch, "kernel_batch"),
        (KERNEL_FILE, _read_json_dict, "kernel_spec"),
        (SPECTRUM_FILE, _read_json_dict, "spectrum"),
        (ATTRIBUTES_FILE, _read_attributes, "attributes"),
        (SUMMARY_FILE, _read_health, "health"),
    )
    for filename, reader, attr in readers:
        file = path / filename
        if not file.is_file():
            continue
        try:
            setattr(run, attr, reader(file, run.notes))
        except _READ_ERRORS as err:
            run.notes.append(f"{filename}: unreadable ({type(err).__name__}: {_short(err)})")
    if isinstance(run.config, dict) and isinstance(run.config.get("kernel"), dict):
        run.kernel_spec = run.config["kernel"]  # the one store (kernel.json: older runs only)
    probe_dir = path / PROBE_DIR
    if probe_dir.is_dir():
        for file in sorted(probe_dir.glob("*.json")):
            try:
                run.probes.extend(read_probe(file))
            except _READ_ERRORS as err:
                run.notes.append(f"{PROBE_DIR}/{file.name}: unreadable ({type(err).__name__}: {_short(err)})")
    if not run.has_content():
        found = "; ".join(run.notes) if run.notes else "none of the expected files are present"
        raise MedclInputError(
            f"run directory {str(path)!r} holds nothing the report can read "
            f"(looked for {CONFIG_FILE}, {METRICS_FILE}, {PROBE_DIR}/*.json, {EMBEDDINGS_FILE}, "
            f"{KERNEL_BATCH_FILE}, {KERNEL_FILE}, {ATTRIBUTES_FILE}): {found}"
        )
    return run


def collect_runs(run_dirs: list[str | os.PathLike]) -> list[RunArtefacts]:
    """Read several run directories, giving each a unique display name.

    Names are the directory names, extended with parent folders where two would clash.
    Raises ``MedclInputError`` when the list is empty or any directory fails :func:`collect_run`.
    """
    if not run_dirs:
        raise MedclInputError("no run directory given")
    paths = [Path(p).resolve() for p in run_dirs]
    names = _unique_names(paths)
    return [collect_run(p, n) for p, n in zip(paths, names, strict=True)]


def read_probe(file: str | os.PathLike) -> list[ProbeResult]:
    """Parse one ``probe/<label>.json`` file (one result, or a list of results).

    Raises ``ValueError`` (or ``json.JSONDecodeError``) when the file holds no probe metrics.
    """
    file = Path(file)
    data = json.loads(file.read_text())
    items = data if isinstance(data, list) else [data]
    results = []
    for item in items:
        if not isinstance(item, dict):
            raise ValueError(f"expected a JSON object per label, got {type(item).__name__}")
        if isinstance(item.get("rows"), list):
            metrics, efficiency = _from_rows(item["rows"])
        elif isinstance(item.get("metrics"), dict):
            metrics = {str(k): s for k, v in item["metrics"].items() if (s := _metric(v)) is not None}
            efficiency = _efficiency(item.get("label_efficiency"))
        else:
            raise ValueError("neither a 'rows' list nor a 'metrics' object")
        if not metrics:
            raise ValueError("no metric with a finite mean")
        details = {
            str(k): v
            for k, v in item.items()
            if k not in ("label", "kind", "metrics", "label_efficiency", "rows")
            and isinstance(v, int | float | str)
            and not isinstance(v, bool)
            and not is_id_name(str(k))
        }
        notes = item.get("notes")
        results.append(
            ProbeResult(
                label=str(item.get("label") or file.stem),
                kind=None if item.get("kind") is None else str(item["kind"]),
                metrics=metrics,
                label_efficiency=efficiency,
                details=details,
                notes=[str(n) for n in notes] if isinstance(notes, list) else [],
            )
        )
    return results


def _from_rows(rows: list[Any]) -> tuple[dict[str, MetricSummary], list[EfficiencyPoint]]:
    """Metrics and label-efficiency points from ``medcl.evaluate.probe`` rows.

    Rows with ``train_size == "all"`` give the metrics (the kNN probe's as ``"<metric> (knn)"``);
    the linear probe's rows at every training size give the curve, placed at ``n_train`` (mean
    training subjects per fold) so that the "all" point sits on the same axis.
    """
    metrics: dict[str, MetricSummary] = {}
    by_size: dict[float, dict[str, MetricSummary]] = {}
    for row in rows:
        if not isinstance(row, dict) or "metric" not in row:
            continue
        summary = _metric(row)
        if summary is None:
            continue
        probe, name = str(row.get("probe", "linear")), str(row["metric"])
        if row.get("train_size", "all") == "all":
            metrics[name if probe == "linear" else f"{name} ({probe})"] = summary
        if probe == "linear" and (size := _num(row.get("n_train", row.get("train_size")))) is not None:
            by_size.setdefault(size, {})[name] = summary
    points = [EfficiencyPoint(train_size=k, metrics=v) for k, v in sorted(by_size.items())]
    return metrics, points if len(points) > 1 else []


def redact_ids(obj: Any) -> Any:
    """Copy of a config tree with every identifier-like key's value replaced by a placeholder.

    A list, tuple or dict becomes ``"<N identifiers redacted>"``, any other value but None
    ``"<identifier redacted>"`` (``{"subject_id": "P-0001"}`` as much as ``{"subject_ids": [...]}``).
    """
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if not is_id_name(str(key)) or value is None:
                out[key] = redact_ids(value)
            elif isinstance(value, list | tuple | dict):
                out[key] = f"<{len(value)} identifiers redacted>"
            else:
                out[key] = "<identifier redacted>"
        return out
    if isinstance(obj, list):
        return [redact_ids(v) for v in obj]
    return obj


def public_config(config: dict[str, Any]) -> dict[str, Any]:
    """A run config as a report shows it: identifiers redacted, the kernel as :func:`public_kernel`."""
    out = redact_ids(config)
    if "kernel" in out:
        out["kernel"] = public_kernel(out["kernel"])
    return out


def _read_config(file: Path, notes: list[str]) -> dict[str, Any]:
    data = yaml.safe_load(file.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"expected a mapping, got {type(data).__name__}")
    return data


def _read_metrics(file: Path, notes: list[str]) -> pd.DataFrame | None:
    import pandas as pd

    try:
        table = pd.read_csv(file)
    except pd.errors.EmptyDataError:
        notes.append(f"{METRICS_FILE}: empty")
        return None
    numeric = table.apply(pd.to_numeric, errors="coerce").dropna(axis=1, how="all")
    if numeric.empty or len(numeric) == 0:
        notes.append(f"{METRICS_FILE}: no numeric columns")
        return None
    return numeric


def _read_embeddings(file: Path, notes: list[str]) -> Embeddings:
    with np.load(file, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    if FEATURES_KEY not in arrays:
        raise ValueError(f"no {FEATURES_KEY!r} array (found {sorted(arrays)})")
    feats = arrays.pop(FEATURES_KEY)
    if feats.ndim != 2 or feats.shape[0] < 2 or not np.issubdtype(feats.dtype, np.number):
        raise ValueError(f"{FEATURES_KEY!r} must be a numeric (n, F) array with n >= 2, got {feats.shape}")
    columns = {}
    for key, col in arrays.items():
        if is_id_name(key):
            notes.append(f"{EMBEDDINGS_FILE}: column {key!r} skipped (identifiers are never shown)")
        elif col.shape != (feats.shape[0],):
            notes.append(
                f"{EMBEDDINGS_FILE}: column {key!r} skipped (shape {col.shape}, expected ({len(feats)},))"
            )
        elif not np.issubdtype(col.dtype, np.number) and len(np.unique(col)) > _MAX_CATEGORIES:
            notes.append(
                f"{EMBEDDINGS_FILE}: column {key!r} skipped (more than {_MAX_CATEGORIES} categories)"
            )
        else:
            columns[key] = col
    return Embeddings(features=feats.astype(np.float64), columns=columns)


def _read_kernel_batch(file: Path, notes: list[str]) -> np.ndarray:
    mat = np.load(file, allow_pickle=False)
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1] or mat.shape[0] == 0:
        raise ValueError(f"expected a square (n, n) matrix, got shape {mat.shape}")
    return mat.astype(np.float64)


def _read_json_dict(file: Path, notes: list[str]) -> dict[str, Any]:
    data = json.loads(file.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    return data


def _read_health(file: Path, notes: list[str]) -> dict[str, Any] | None:
    """The ``health`` entry of summary.json (None for runs written before the health check)."""
    data = json.loads(file.read_text())
    health = data.get("health") if isinstance(data, dict) else None
    if health is not None and not isinstance(health, dict):
        notes.append(f"{file.name}: 'health' is not a mapping; ignored")
        return None
    return health


def _read_attributes(file: Path, notes: list[str]) -> list[dict[str, Any]]:
    data = json.loads(file.read_text())
    if isinstance(data, dict):
        data = data.get("attributes", data.get("diagnostics"))
    if not isinstance(data, list):
        raise ValueError("expected a list of {attribute, cka, p_value} objects")
    rows = []
    for entry in data:
        if not isinstance(entry, dict):
            continue
        name = entry.get("attribute", entry.get("name"))
        if name is None:
            continue
        row: dict[str, Any] = {"attribute": str(name)}
        for key, value in entry.items():
            if key in ("attribute", "name") or is_id_name(str(key)):
                continue
            if isinstance(value, int | float) and not isinstance(value, bool):
                row["p_value" if key == "p" else str(key)] = float(value)
            elif isinstance(value, str):
                row[str(key)] = value
        rows.append(row)
    if not rows:
        raise ValueError("no entry with an 'attribute' name")
    return rows


def _metric(value: Any) -> MetricSummary | None:
    """Parse a metric given as a number, a list of per-fold values, or a summary dict."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return MetricSummary(mean=float(value)) if math.isfinite(value) else None
    if isinstance(value, list) and value and all(isinstance(v, int | float) for v in value):
        arr = np.asarray(value, dtype=float)
        return MetricSummary(mean=float(arr.mean()), std=float(arr.std(ddof=1)) if len(arr) > 1 else None)
    if isinstance(value, dict):
        mean = _num(value.get("mean", value.get("value")))
        if mean is None:
            return None
        low, high = _num(value.get("ci_low", value.get("low"))), _num(value.get("ci_high", value.get("high")))
        ci = value.get("ci", value.get("ci95"))
        if low is None and isinstance(ci, list | tuple) and len(ci) == 2:
            low, high = _num(ci[0]), _num(ci[1])
        return MetricSummary(mean=mean, std=_num(value.get("std")), ci_low=low, ci_high=high)
    return None


def _efficiency(value: Any) -> list[EfficiencyPoint]:
    if isinstance(value, dict):  # {"20": {"roc_auc": ...}, ...}
        value = [{"train_size": k, **v} for k, v in value.items() if isinstance(v, dict)]
    if not isinstance(value, list):
        return []
    points = []
    for entry in value:
        if not isinstance(entry, dict):
            continue
        size_key = next((k for k in _SIZE_KEYS if k in entry), None)
        size = _num(entry.get(size_key)) if size_key else None
        if size is None:
            continue
        metrics = entry.get("metrics", entry)
        parsed = {
            str(k): s for k, v in metrics.items() if k not in _SIZE_KEYS and (s := _metric(v)) is not None
        }
        if parsed:
            points.append(EfficiencyPoint(train_size=size, metrics=parsed))
    return sorted(points, key=lambda p: p.train_size)


def _num(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _short(err: Exception, limit: int = 160) -> str:
    text = str(err).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _unique_names(paths: list[Path]) -> list[str]:
    depth, deepest = 1, max(len(p.parts) for p in paths)
    names = [p.name or str(p) for p in paths]
    while len(set(names)) < len(names) and depth < deepest:
        depth += 1
        names = ["/".join(p.parts[-depth:]) for p in paths]
    seen: dict[str, int] = {}
    unique = []
    for name in names:  # the same directory given twice
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return unique
