"""Shared pytest fixtures: tiny synthetic cohorts, generated once per test session.

Each fixture returns the path of a ``manifest.yaml`` that loads with
:func:`medcl.data.manifest.load_manifest` and :meth:`medcl.data.cohort.Cohort.from_manifest`.
The folders are read-only by convention: copy one before modifying it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from medcl.data.synthetic import generate_cohort


@pytest.fixture(scope="session")
def synthetic_3d_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 brain-MRI-like NIfTI scans at 16^3 (about 0.1 s to write)."""
    out = tmp_path_factory.mktemp("synthetic_3d")
    return generate_cohort(out, dims=3, subjects=24, size=16, seed=0)


@pytest.fixture(scope="session")
def synthetic_2d_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 chest-X-ray-like 8-bit PNG images at 32^2."""
    out = tmp_path_factory.mktemp("synthetic_2d")
    return generate_cohort(out, dims=2, subjects=24, size=32, seed=0, image_format="png")


@pytest.fixture(scope="session")
def synthetic_dicom_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 chest-X-ray-like DICOM (secondary capture) files at 32^2."""
    out = tmp_path_factory.mktemp("synthetic_dicom")
    return generate_cohort(out, dims=2, subjects=12, size=32, seed=0, image_format="dicom")



def pytest_configure(config: pytest.Config) -> None:
    """Preprocessed images go to a cache folder of this test session, never to ~/.cache."""
    import os
    import tempfile

    config._medcl_cache = os.environ["MEDCL_CACHE_DIR"] = tempfile.mkdtemp(prefix="medcl-test-cache-")


def pytest_unconfigure(config: pytest.Config) -> None:
    import shutil

    if hasattr(config, "_medcl_cache"):
        shutil.rmtree(config._medcl_cache, ignore_errors=True)
