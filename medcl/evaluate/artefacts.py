"""The run-directory files the report reads, and writers for the two that only the report needs.

Files (all optional; the report shows what is present; their names are :class:`RunDir`'s):

- ``config.yaml``: the resolved run config; its ``method`` names the pretraining method and its
  ``kernel`` is the fitted prior kernel (``PriorKernel.to_dict()``), shown by the report.
- ``metrics.csv``: one row per logged step (Lightning's CSV logger); numeric columns such as
  ``step``, ``epoch``, ``train/loss``, ``val/loss``, ``lr``. Rows may be sparse.
- ``probe/<label>.json``: one linear-probe result per label (format in :mod:`medcl.report.collect`).
- ``embeddings.npz``: ``features`` (n, F) float plus one (n,) array per colour column
  (``diagnosis``, ``age``, ``site``, ...). Written by :func:`write_embeddings`.
- ``kernel_batch.npy``: the (n, n) prior kernel on a batch, for a picture of the kernel. Written by
  :func:`write_kernel_batch`; ``medcl compare`` evaluates the kernel on a synthetic batch
  (:func:`medcl.kernels.public.synthetic_batch`), never on subjects' attributes.
- ``kernel.json``: the fitted prior kernel of a run written before it was kept in config.yaml only.
- ``attributes.json``: attribute diagnostics, a list of ``{"attribute", "cka", "p_value"}``.
- ``summary.json``: the run's summary; the report reads its ``health`` entry (collapse check,
  :mod:`medcl.pretrain.health`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from medcl.atomic import atomic_path
from medcl.errors import MedclInputError
from medcl.pretrain.run_dir import RunDir

# the report's names for RunDir's file names
CONFIG_FILE = RunDir.CONFIG
METRICS_FILE = RunDir.METRICS
PROBE_DIR = RunDir.PROBE
EMBEDDINGS_FILE = RunDir.EMBEDDINGS
KERNEL_BATCH_FILE = RunDir.KERNEL_BATCH
KERNEL_FILE = RunDir.KERNEL
SPECTRUM_FILE = RunDir.SPECTRUM
ATTRIBUTES_FILE = RunDir.ATTRIBUTES
SUMMARY_FILE = RunDir.SUMMARY

FEATURES_KEY = "features"

# Column / key names that hold subject or patient identifiers: never shown in a report.
_ID_NAME = re.compile(
    r"^(?!(?:n|nb|num|number[_\-. ]of|count)[_\-. ])"  # counts such as n_subjects are not ids
    r"(?:.*[_\-. /])?(?:subject|patient|participant|case|person)s?"
    r"(?:[_\-. ]?(?:ids?|uids?|keys?|names?|numbers?|codes?))?$"
    r"|^(?:ids?|uids?|eids?|mrn|accession(?:[_\-. ]?(?:number|no))?)$",
    re.IGNORECASE,
)


def is_id_name(name: str) -> bool:
    """True when a column or key name looks like a subject / patient identifier."""
    return bool(_ID_NAME.search(str(name)))


def write_embeddings(
    run_dir: str | os.PathLike, features: np.ndarray, columns: Mapping[str, np.ndarray] | None = None
) -> Path:
    """Atomically write ``run_dir/embeddings.npz`` for the report's 2D projection.

    ``features`` is (n, F); ``columns`` maps a colour name (``"diagnosis"``, ``"age"``,
    ``"site"``) to an (n,) array (numbers or strings; NaN / empty = missing). Identifier columns
    are refused: a report never shows subject ids. Raises ``MedclInputError`` on bad shapes.
    """
    feats = np.asarray(features)
    if feats.ndim != 2 or feats.shape[0] == 0:
        raise MedclInputError(f"embeddings: expected features of shape (n, F), got {feats.shape}")
    if not np.issubdtype(feats.dtype, np.number):
        raise MedclInputError(f"embeddings: features must be numeric, got dtype {feats.dtype}")
    arrays: dict[str, np.ndarray] = {FEATURES_KEY: feats.astype(np.float32, copy=False)}
    for name, values in (columns or {}).items():
        if name == FEATURES_KEY:
            raise MedclInputError(f"embeddings: colour column may not be named {FEATURES_KEY!r}")
        if is_id_name(name):
            raise MedclInputError(
                f"embeddings: column {name!r} looks like an identifier; reports never show ids"
            )
        col = np.asarray(values)
        if col.shape != (feats.shape[0],):
            raise MedclInputError(
                f"embeddings: column {name!r} has shape {col.shape}, expected ({feats.shape[0]},)"
            )
        if col.dtype == object:
            col = np.array(["" if v is None else str(v) for v in col])
        arrays[str(name)] = col
    target = RunDir(run_dir).embeddings_path
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return target


def write_kernel_batch(run_dir: str | os.PathLike, kernel: np.ndarray) -> Path:
    """Atomically write the (n, n) kernel matrix of one batch to ``run_dir/kernel_batch.npy``.

    Accepts a numpy array or anything ``np.asarray`` takes (a CPU torch tensor included).
    Raises ``MedclInputError`` when the matrix is not square.
    """
    mat = np.asarray(kernel, dtype=np.float64)
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1] or mat.shape[0] == 0:
        raise MedclInputError(f"kernel batch: expected a square (n, n) matrix, got {mat.shape}")
    target = RunDir(run_dir).kernel_batch_path
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, mat.astype(np.float32))
    return target
