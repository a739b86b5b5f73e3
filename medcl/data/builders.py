"""Build a starting manifest (table + YAML) from a BIDS dataset or a folder of DICOM files.

The builders read the input folder and never write into it. They write ``table.csv`` and
``manifest.yaml`` into an output folder (each file atomically, the manifest last, so a manifest
never points at a missing table). Image paths and ``data_root`` are written relative to the
output folder. The guessed attributes, labels, preprocessing and split (patient-level folds:
one for validation, one for test, the rest for training) are a starting point:
edit the YAML, then run ``medcl validate``.

Why this size: the two builders (BIDS, DICOM) share the column guessing, the atomic writer and
the pseudonymisation (salt, date coarsening); the DICOM path is most of it, and splitting it off
would split that privacy handling across files.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medcl.atomic import atomic_path, write_text
from medcl.data.manifest import parse_manifest
from medcl.data.tables import as_text, read_table
from medcl.errors import MedclInputError

TABLE_NAME = "table.csv"
MANIFEST_NAME = "manifest.yaml"
#: The per-cohort pseudonym salt ``manifest from-dicom`` generates when none is given (mode 0600).
SALT_NAME = ".pseudonym_salt"
STUDY_DATE_MODES = ("year", "offset", "full")

_AGE_NAMES = re.compile(r"^age(_.*)?$|.*_age$", re.IGNORECASE)
_SEX_NAMES = re.compile(r"^(sex|gender)$", re.IGNORECASE)
_SITE_NAMES = re.compile(r"^(site|scanner|center|centre|manufacturer|model|institution|field_strength)",
                         re.IGNORECASE)
_LABEL_NAMES = re.compile(r"^(diagnosis|dx|group|label|condition|disease)$", re.IGNORECASE)
#: A text column with more distinct values than this is not guessed as categorical.
MAX_GUESSED_CATEGORIES = 20


@dataclass
class BuildResult:
    """What a builder wrote and what it left out."""

    manifest_path: Path
    table_path: Path
    rows: int
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _prepare_out(src: Path, out_dir: Path, force: bool) -> Path:
    src = src.resolve()
    if not src.is_dir():
        raise MedclInputError(f"input folder {src} does not exist or is not a folder")
    out = out_dir.resolve()
    if out == src or src in out.parents:
        raise MedclInputError(f"output folder {out} is inside the input folder {src}; choose another --out")
    for name in (TABLE_NAME, MANIFEST_NAME):
        if (out / name).exists() and not force:
            raise MedclInputError(f"{out / name} already exists; use --force to overwrite it")
    return out


def _numeric(texts: list[str | None]) -> bool:
    known = [t for t in texts if t is not None]
    try:
        [float(t) for t in known]
    except ValueError:
        return False
    return bool(known)


def guess_columns(df: pd.DataFrame, skip: set[str]) -> tuple[list[dict], list[dict]]:
    """Guess attribute and label specs from table columns (name and content heuristics).

    Age-like numeric columns become continuous attributes and also continuous labels (to probe
    how well an encoder predicts age, ``--label age``); sex/gender binary; site / scanner /
    manufacturer / model categorical; diagnosis-like columns labels. Other numeric columns become
    continuous attributes, other text columns with few values categorical ones. Columns that are
    all missing or constant are left out. Returns (attributes, labels) as manifest dicts.
    """
    attributes: list[dict] = []
    labels: list[dict] = []
    for col in df.columns:
        if col in skip:
            continue
        texts = as_text(df[col])
        distinct = {t for t in texts if t is not None}
        if len(distinct) < 2:
            continue
        numeric = _numeric(texts)
        if _LABEL_NAMES.match(col):
            kind = "continuous" if numeric and len(distinct) > MAX_GUESSED_CATEGORIES else (
                "binary" if len(distinct) == 2 else "multiclass")
            labels.append({"name": col, "type": kind})
        elif _SEX_NAMES.match(col):
            attributes.append({"name": col, "type": "binary" if len(distinct) == 2 else "categorical"})
        elif _AGE_NAMES.match(col) and numeric:
            attributes.append({"name": col, "type": "continuous"})
            labels.append({"name": col, "type": "continuous"})
        elif _SITE_NAMES.match(col) and len(distinct) <= MAX_GUESSED_CATEGORIES:
            attributes.append({"name": col, "type": "categorical"})
        elif numeric and len(distinct) > 2:
            attributes.append({"name": col, "type": "continuous"})
        elif len(distinct) <= MAX_GUESSED_CATEGORIES and len(distinct) <= len(texts) / 2:  # not free text
            attributes.append({"name": col, "type": "binary" if len(distinct) == 2 else "categorical"})
    return attributes, labels


def _write(out: Path, table: pd.DataFrame, manifest: dict[str, Any], skipped: list[str]) -> BuildResult:
    n_patients = table["patient_id"].nunique()
    folds = max(2, min(5, n_patients))
    # validation and test folds by patient: what probes and `medcl finetune` expect (test: none
    # when there are too few patients for three folds)
    manifest["split"] = {"method": "group_kfold", "folds": folds, "seed": 0, "val_folds": [0],
                         "test_folds": [1] if folds >= 3 else []}
    parsed = parse_manifest(manifest, source="generated manifest")  # our own output must be valid
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / TABLE_NAME) as tmp:
        table.to_csv(tmp, index=False)
    header = ("# Generated by medcl; guessed attributes, labels and preprocessing are a starting point.\n"
              "# Edit, then check with: medcl validate " + MANIFEST_NAME + "\n")
    write_text(out / MANIFEST_NAME, header + parsed.to_yaml())
    return BuildResult(out / MANIFEST_NAME, out / TABLE_NAME, len(table), skipped)


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


# -- BIDS -------------------------------------------------------------------------------------
_T1W = re.compile(r"^(sub-[A-Za-z0-9]+)(?:_(ses-[A-Za-z0-9]+))?.*_T1w\.nii(\.gz)?$")


def build_from_bids(bids_dir: str | Path, out_dir: str | Path, *, force: bool = False) -> BuildResult:
    """Build a manifest for the T1-weighted images of a BIDS dataset.

    One row per image ``sub-*/[ses-*/]anat/*_T1w.nii[.gz]``: subject id = the file name without
    extension (unique per image), patient id = the participant (so sessions of one participant
    stay on one side of every split), columns of ``participants.tsv`` joined on participant.

    Raises:
        MedclInputError: no such folder, no T1w image, unreadable ``participants.tsv``, or an
            output folder inside the input.
    """
    src, out = Path(bids_dir).resolve(), Path(out_dir)
    out = _prepare_out(src, out, force)
    rows = []
    for path in sorted(src.glob("sub-*/**/anat/*_T1w.nii*")):
        m = _T1W.match(path.name)
        rel_parts = path.relative_to(src).parts
        if not m or len(rel_parts) not in (3, 4) or rel_parts[0] != m.group(1):
            continue
        stem = path.name.removesuffix(".gz").removesuffix(".nii")
        rows.append({"subject_id": stem, "patient_id": m.group(1), "session": m.group(2),
                     "image": _rel(path, out)})
    if not rows:
        raise MedclInputError(
            f"{src}: no sub-*/[ses-*/]anat/*_T1w.nii[.gz] image found; is it a BIDS dataset?"
        )
    table = pd.DataFrame(rows)
    if table["session"].isna().all():
        table = table.drop(columns="session")
    attributes: list[dict] = []
    labels: list[dict] = []
    participants = src / "participants.tsv"
    if participants.is_file():
        info = read_table(participants)
        if "participant_id" not in info.columns:
            raise MedclInputError(
                f"{participants}: no 'participant_id' column; columns are {list(info.columns)}"
            )
        info = info.rename(columns={"participant_id": "patient_id"})
        info["patient_id"] = [t if t is None or t.startswith("sub-") else f"sub-{t}"
                              for t in as_text(info["patient_id"])]
        clash = [c for c in info.columns if c in table.columns and c != "patient_id"]
        info = info.rename(columns={c: f"{c}_participant" for c in clash})
        table = table.merge(info.drop_duplicates("patient_id"), on="patient_id", how="left")
        attributes, labels = guess_columns(table, skip={"subject_id", "patient_id", "session", "image"})
    manifest = {
        "name": src.name,
        "table": TABLE_NAME,
        "data_root": _rel(src, out),
        "subject_column": "subject_id",
        "patient_column": "patient_id",
        "image": {"column": "image", "kind": "3d"},
        "preprocessing": {"orientation": "RAS", "spacing": [2.0, 2.0, 2.0], "size": [96, 96, 96],
                          "intensity": {"method": "zscore", "nonzero": True}},
        "attributes": attributes,
        "labels": labels,
    }
    return _write(out, table, manifest, [])


# -- DICOM ------------------------------------------------------------------------------------
_AGE_UNITS = {"Y": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}


def parse_dicom_age(value: object) -> float | None:
    """DICOM Age String (``"045Y"``, ``"006M"``, ``"003W"``, ``"010D"``) in years, None if invalid."""
    m = re.fullmatch(r"\s*(\d{1,3})\s*([YMWD])\s*", str(value or ""), re.IGNORECASE)
    return None if m is None else round(int(m.group(1)) * _AGE_UNITS[m.group(2).upper()], 4)


def pseudonymize(patient_id: str, salt: str = "") -> str:
    """A stable pseudonym for a DICOM PatientID: ``"p"`` + 16 hex digits of HMAC-SHA256.

    Why: the table and the run directory (split file) outlive the PACS export, travel between
    machines and end up in logs; the raw PatientID (often a hospital record number) must not.
    Grouping only needs equal ids for equal patients, which a keyed hash gives. Caveat: record
    numbers are short, so an unsalted hash can be reversed by trying them all; pass a secret
    ``salt`` (kept out of the dataset) to make that infeasible. The same salt gives the same
    pseudonyms, so tables built at different times can be joined.
    """
    digest = hmac.new(salt.encode(), patient_id.encode(), hashlib.sha256).hexdigest()
    return "p" + digest[:16]


def _series_row(ds: Any) -> dict[str, Any]:
    def text(tag: str) -> str | None:
        v = ds.get(tag)
        v = "" if v is None else str(v).strip()
        return v or None

    strength = text("MagneticFieldStrength")
    try:
        strength_value = float(strength) if strength else None
    except ValueError:
        strength_value = None
    return {
        "modality": text("Modality"),
        "body_part": text("BodyPartExamined"),
        "manufacturer": text("Manufacturer"),
        "model": text("ManufacturerModelName"),
        "field_strength": strength_value,
        "age": parse_dicom_age(ds.get("PatientAge")),
        "sex": (text("PatientSex") or "").upper() or None,
        "study_date": text("StudyDate"),
    }


def build_from_dicom(
    dicom_dir: str | Path,
    out_dir: str | Path,
    *,
    kind: str = "auto",
    salt: str | None = None,
    study_date: str = "year",
    force: bool = False,
) -> BuildResult:
    """Build a manifest from a folder tree of DICOM files: one row per series.

    Headers are read with pydicom (no pixel data). Files are grouped by SeriesInstanceUID; the
    image of a series is its folder when the folder holds that series only, the file itself for a
    single-file series; a multi-file series sharing a folder with other series is skipped
    (reported in ``BuildResult.skipped``; re-export it one folder per series). Columns: subject id
    (patient pseudonym + series number), patient id (:func:`pseudonymize`), image, modality, body
    part, manufacturer, model, field strength, age (years), sex, study date.

    ``kind``: ``"2d"``, ``"3d"`` or ``"auto"`` (the kind of most series: multi-slice or
    multi-frame series are 3D). Series of the other kind are skipped and reported.

    ``salt``: the secret of :func:`pseudonymize`. None or empty: a random per-cohort salt kept in
    ``OUT/.pseudonym_salt`` (owner-only, 0600), made on the first build and reused afterwards so
    that rebuilt tables keep their pseudonyms (said in ``BuildResult.notes``).

    ``study_date`` (a direct identifier under HIPAA Safe Harbor): ``"year"`` keeps the year only
    (column ``study_year``), ``"offset"`` the days since the patient's first study
    (``study_day``), ``"full"`` the DICOM date as is (``study_date``).

    Raises:
        MedclInputError: no such folder, no DICOM image series, or an output folder inside the input.
    """
    import pydicom

    src = Path(dicom_dir).resolve()
    out = _prepare_out(src, Path(out_dir), force)
    if kind not in ("auto", "2d", "3d"):
        raise MedclInputError(f"kind must be 'auto', '2d' or '3d', got {kind!r}")
    if study_date not in STUDY_DATE_MODES:
        raise MedclInputError(f"study date must be one of {', '.join(STUDY_DATE_MODES)}, got {study_date!r}")
    notes: list[str] = []
    salt_file = None
    if not salt:
        salt, salt_file, note = _cohort_salt(out)
        notes.append(note)
    series_files: dict[str, list[Path]] = defaultdict(list)
    series_info: dict[str, dict[str, Any]] = {}
    folder_series: dict[Path, set[str]] = defaultdict(set)
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        except Exception:
            continue  # not DICOM (README, DICOMDIR without preamble, ...)
        uid = str(ds.get("SeriesInstanceUID", "")).strip()
        if not uid or "Rows" not in ds:  # DICOMDIR, reports, structure sets: no image
            continue
        series_files[uid].append(path)
        folder_series[path.parent].add(uid)
        if uid not in series_info:
            row = _series_row(ds)
            row["_patient"] = str(ds.get("PatientID", "") or "").strip() or f"series:{uid}"
            row["_series_number"] = str(ds.get("SeriesNumber", "") or "").strip()
            row["_frames"] = int(ds.get("NumberOfFrames", 1) or 1)
            series_info[uid] = row
    if not series_files:
        raise MedclInputError(f"{src}: no DICOM image found in any file below it")

    skipped: list[str] = []
    candidates = []
    for uid, files in series_files.items():
        info = series_info[uid]
        folder = files[0].parent
        own_folder = all(f.parent == folder for f in files) and folder_series[folder] == {uid}
        if len(files) == 1:
            image, dims = files[0], ("3d" if info["_frames"] > 1 else "2d")
        elif own_folder:
            image, dims = folder, "3d"
        else:
            skipped.append(f"{_rel(folder, src)}: a {len(files)}-file series shares its folder with "
                           "other series; give each series its own folder")
            continue
        candidates.append((uid, image, dims))
    if kind == "auto":
        n3 = sum(d == "3d" for _, _, d in candidates)
        kind = "3d" if n3 >= len(candidates) - n3 and n3 > 0 else "2d"
    rows = []
    for uid, image, dims in candidates:
        if dims != kind:
            skipped.append(f"{_rel(image, src)}: a {dims} series, the manifest is {kind}")
            continue
        info = series_info[uid]
        rows.append({"patient_id": pseudonymize(info.pop("_patient"), salt), "image": _rel(image, out),
                     "_series_number": info.pop("_series_number"), **info})
    if not rows:
        raise MedclInputError(f"{src}: no usable DICOM series ({'; '.join(skipped[:5])})")
    table = pd.DataFrame(rows).sort_values(["patient_id", "study_date", "_series_number", "image"],
                                           na_position="last", kind="stable")
    table.insert(0, "subject_id", [f"{p}_s{k}" for p, k in zip(
        table["patient_id"], table.groupby("patient_id").cumcount() + 1, strict=True)])
    table = table.drop(columns=["_series_number", "_frames"]).reset_index(drop=True)
    date_column, table["study_date"] = _coarsen_dates(table, study_date)
    table = table.rename(columns={"study_date": date_column}).dropna(axis=1, how="all")
    attributes, labels = guess_columns(
        table, skip={"subject_id", "patient_id", "image", date_column, "modality"}
    )
    spatial = 3 if kind == "3d" else 2
    manifest = {
        "name": src.name,
        "table": TABLE_NAME,
        "data_root": _rel(src, out),
        "subject_column": "subject_id",
        "patient_column": "patient_id",
        "image": {"column": "image", "kind": kind},
        "preprocessing": {"orientation": "RAS" if spatial == 3 else None, "spacing": None,
                          "size": [96] * 3 if spatial == 3 else [224, 224],
                          "intensity": {"method": "percentile"}},
        "attributes": attributes,
        "labels": labels,
    }
    if salt_file is not None:
        _keep_salt(salt_file, salt)
    result = _write(out, table, manifest, skipped)
    result.notes = notes
    return result


def _cohort_salt(out: Path) -> tuple[str, Path | None, str]:
    """The cohort's pseudonym salt from ``out/.pseudonym_salt``, or a new random one (not yet saved).

    Returns (salt, file to save it to or None when it was read from there, a note for the user).
    """
    import secrets

    file = out / SALT_NAME
    if file.is_file():
        salt = file.read_text().strip()
        if not salt:
            raise MedclInputError(f"{file}: empty pseudonym salt file; delete it or give --salt")
        return salt, None, (f"pseudonyms use the cohort salt in {file} (reused; keep it private, "
                            f"outside anything you share)")
    return secrets.token_hex(32), file, (
        f"no --salt or MEDCL_PSEUDONYM_SALT given: generated a random pseudonym salt in {file} "
        "(owner-only); later builds into this folder reuse it. Keep it private: it is what "
        "stops pseudonyms being traced back to patient ids"
    )


def _keep_salt(file: Path, salt: str) -> None:
    """Write the salt atomically with owner-only permissions (0600)."""
    import tempfile

    file.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".tmp", dir=file.parent)  # 0600
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(salt + "\n")
        os.chmod(name, 0o600)
        os.replace(name, file)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def _coarsen_dates(table: pd.DataFrame, mode: str) -> tuple[str, pd.Series]:
    """(column name, values) of the study date kept under ``mode`` (see :func:`build_from_dicom`)."""
    raw = table["study_date"] if "study_date" in table else pd.Series([None] * len(table), index=table.index)
    if mode == "full":
        return "study_date", raw
    dates = pd.to_datetime(raw, format="%Y%m%d", errors="coerce")
    if mode == "year":
        return "study_year", dates.dt.year.astype("Int64")
    first = dates.groupby(table["patient_id"]).transform("min")
    return "study_day", (dates - first).dt.days.astype("Int64")
