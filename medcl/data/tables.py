"""Reading cohort tables (CSV, TSV, Parquet) and per-subject feature files (also NPZ).

Tables are read with every CSV/TSV cell as text, so that ``007`` stays ``007`` and a category
``1`` is not turned into ``1.0`` by a missing value elsewhere in the column; the cohort parses
each column according to the manifest. Empty cells and ``NA`` / ``NaN`` / ``n/a`` are missing.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from medcl.errors import MedclInputError

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
FEATURE_SUFFIXES = (*TABLE_SUFFIXES, ".npz")


def table_format(path: Path) -> str:
    """``"csv"``, ``"tsv"`` or ``"parquet"`` from the file name; raises MedclInputError otherwise."""
    name = path.name.lower()
    for suffix, fmt in ((".csv", "csv"), (".tsv", "tsv"), (".parquet", "parquet"), (".pq", "parquet")):
        if name.endswith(suffix):
            return fmt
    raise MedclInputError(f"table {path}: unknown format; expected one of {list(TABLE_SUFFIXES)}")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV, TSV or Parquet table (format from the extension).

    Column names are stripped of surrounding spaces; CSV/TSV cells stay text.

    Raises:
        MedclInputError: naming the file when it is missing, unreadable, or has no data rows.
    """
    path = Path(path)
    fmt = table_format(path)
    if not path.is_file():
        raise MedclInputError(f"table {path} does not exist")
    try:
        if fmt == "parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(
                path, sep="\t" if fmt == "tsv" else ",", dtype=str, keep_default_na=True,
                na_values=["n/a", "N/A"], skipinitialspace=True,
            )
    except pd.errors.EmptyDataError:
        raise MedclInputError(f"table {path} is empty (no header, no rows)") from None
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise MedclInputError(f"table {path}: cannot read it as {fmt} ({err})") from None
    except Exception as err:  # pyarrow raises its own error types for corrupt files
        raise MedclInputError(
            f"table {path}: cannot read it as {fmt} ({type(err).__name__}: {err})"
        ) from None
    if len(df) == 0:
        raise MedclInputError(f"table {path} has no data rows")
    df.columns = [str(c).strip() for c in df.columns]
    dup = sorted({c for c in df.columns if list(df.columns).count(c) > 1})
    if dup:
        raise MedclInputError(f"table {path}: repeated column name(s) {dup}")
    return df.reset_index(drop=True)


def as_text(series: pd.Series) -> list[str | None]:
    """Cell values as stripped text, ``None`` where missing; integral floats print as integers."""
    out: list[str | None] = []
    for v in series.tolist():
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
            out.append(None)
        elif isinstance(v, float | np.floating) and float(v).is_integer():
            out.append(str(int(v)))
        else:
            text = str(v).strip()
            out.append(text if text else None)
    return out


def read_features(path: str | Path, id_column: str) -> tuple[list[str], np.ndarray]:
    """Read a per-subject feature file: ids and an (m, k) float32 matrix.

    Formats: ``.npz`` with arrays ``ids`` (m,) and ``features`` (m, k); or a CSV/TSV/Parquet table
    with the subject id column (``id_column``, else ``subject_id``) and one numeric column per
    feature. Non-finite values are kept as NaN (that subject's embedding counts as missing).

    Raises:
        MedclInputError: naming the file (and column) when it cannot be used.
    """
    path = Path(path)
    if not path.is_file():
        raise MedclInputError(f"feature file {path} does not exist")
    if path.name.lower().endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as npz:
                missing = [k for k in ("ids", "features") if k not in npz.files]
                if missing:
                    raise MedclInputError(
                        f"feature file {path}: missing array(s) {missing}; found {sorted(npz.files)}"
                    )
                ids = [str(i).strip() for i in npz["ids"].tolist()]
                feats = np.asarray(npz["features"])
        except MedclInputError:
            raise
        except Exception as err:
            raise MedclInputError(f"feature file {path}: cannot read it as .npz ({err})") from None
        if feats.ndim != 2 or feats.shape[0] != len(ids):
            raise MedclInputError(
                f"feature file {path}: 'features' must be (len(ids), k) = ({len(ids)}, k), got {feats.shape}"
            )
        try:
            feats = feats.astype(np.float32)
        except (TypeError, ValueError):
            raise MedclInputError(f"feature file {path}: 'features' is not numeric ({feats.dtype})") from None
    else:
        try:
            df = read_table(path)
        except MedclInputError as err:
            raise MedclInputError(str(err).replace("table ", "feature file ", 1)) from None
        col = id_column if id_column in df.columns else "subject_id"
        if col not in df.columns:
            raise MedclInputError(
                f"feature file {path}: no id column {id_column!r}; columns are {list(df.columns)}"
            )
        ids = [t or "" for t in as_text(df[col])]
        value_cols = [c for c in df.columns if c != col]
        if not value_cols:
            raise MedclInputError(f"feature file {path}: no feature columns besides {col!r}")
        feats = np.empty((len(df), len(value_cols)), dtype=np.float32)
        for j, c in enumerate(value_cols):
            values = pd.to_numeric(df[c], errors="coerce")
            bad = values.isna() & df[c].notna()
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise MedclInputError(
                    f"feature file {path}: row {row + 1}, column {c!r}: {df[c].iloc[row]!r} is not a number"
                )
            feats[:, j] = values.to_numpy(dtype=np.float64, na_value=np.nan)
    dup = [i for i, count in Counter(ids).items() if count > 1]
    if dup:
        raise MedclInputError(f"feature file {path}: {len(dup)} subject id(s) appear more than once")
    feats[~np.isfinite(feats)] = np.nan
    return ids, feats
