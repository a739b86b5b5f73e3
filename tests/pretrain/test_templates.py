"""The shipped manifest templates and pipeline configs parse against their schemas."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medcl.data.manifest import parse_manifest
from medcl.pretrain.config import parse_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "data_manifests").glob("*.yaml")), ids=lambda p: p.name)
def test_manifest_templates_are_valid(path: Path) -> None:
    manifest = parse_manifest(yaml.safe_load(path.read_text()), source=str(path))
    assert manifest.labels and manifest.attributes


@pytest.mark.parametrize("path", sorted((ROOT / "pipelines").glob("*.yaml")), ids=lambda p: p.name)
def test_pipeline_configs_are_valid(path: Path) -> None:
    config = parse_config(yaml.safe_load(path.read_text()), source=str(path))
    assert config.epochs >= 1
    assert config.method == "kernel_du" and config.attributes  # the ready pipelines use a prior
