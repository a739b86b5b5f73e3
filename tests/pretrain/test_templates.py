"""The shipped manifest templates and pipeline configs parse, and each pipeline fits its manifest."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from _pretrain_helpers import cli

from medcl.data.manifest import load_manifest, parse_manifest
from medcl.pretrain.config import load_config, parse_config
from medcl.templates import TEMPLATES_DIR, copy_templates, template_files

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = sorted((ROOT / "pipelines").glob("*.yaml"))


@pytest.mark.parametrize("path", sorted((ROOT / "data_manifests").glob("*.yaml")), ids=lambda p: p.name)
def test_manifest_templates_are_valid(path: Path) -> None:
    manifest = parse_manifest(yaml.safe_load(path.read_text()), source=str(path))
    assert manifest.labels and manifest.attributes


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_pipeline_configs_are_valid(path: Path) -> None:
    config = parse_config(yaml.safe_load(path.read_text()), source=str(path))
    assert config.epochs >= 1
    assert config.method == "kernel_du" and config.attributes  # the ready pipelines use a prior


def test_every_pipeline_has_a_manifest_to_go_with() -> None:
    assert {p.name for p in PIPELINES} == {"brain_mri_template.yaml", "chest_xray_template.yaml",
                                           "synthetic_2d.yaml", "synthetic_3d.yaml"}


@pytest.fixture
def pipeline_manifest(request, synthetic_2d_manifest: Path, synthetic_3d_manifest: Path) -> Path:
    """The manifest a pipeline goes with: its data_manifests/ template, or the cohort `medcl synth` makes."""
    name = request.param
    if name.startswith("synthetic_2d"):
        return synthetic_2d_manifest
    if name.startswith("synthetic_3d"):
        return synthetic_3d_manifest
    return ROOT / "data_manifests" / name


@pytest.mark.parametrize("pipeline_manifest", [p.name for p in PIPELINES], indirect=True)
def test_pipeline_resolves_against_its_manifest(pipeline_manifest: Path, request, capsys) -> None:
    pipeline = ROOT / "pipelines" / request.node.callspec.params["pipeline_manifest"]
    config = load_config(pipeline, [f"manifest={pipeline_manifest}"])
    manifest = load_manifest(pipeline_manifest)
    assert config.manifest_problems(manifest) == []  # every attribute and label name exists
    assert set(config.attributes) <= {a.name for a in manifest.attributes}
    assert config.probe.label in {lab.name for lab in manifest.labels}
    # the same check through the command a user runs
    assert cli(["config", "show", "--config", pipeline, "--set", f"manifest={pipeline_manifest}"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["attributes"] == config.attributes and shown["manifest"] == str(pipeline_manifest.resolve())


def test_templates_ship_with_the_package_and_copy_out(tmp_path: Path, capsys) -> None:
    # medcl/templates links to the repository's folders (a wheel holds copies): the same files
    shipped = {p.as_posix() for p in template_files()}
    in_repo = {p.relative_to(ROOT).as_posix() for folder in ("pipelines", "data_manifests")
               for p in (ROOT / folder).glob("*.yaml")}
    assert shipped == in_repo and (TEMPLATES_DIR.parent / "py.typed").is_file()
    assert cli(["templates", "copy", tmp_path]) == 0
    for rel in shipped:
        assert (tmp_path / rel).read_text() == (ROOT / rel).read_text()
    (tmp_path / "pipelines" / "synthetic_3d.yaml").write_text("edited")
    assert cli(["templates", "copy", tmp_path]) == 2  # never overwrites an edited copy silently
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "pipelines" / "synthetic_3d.yaml").read_text() == "edited"
    assert len(copy_templates(tmp_path, force=True)) == len(shipped)
    restored = (tmp_path / "pipelines" / "synthetic_3d.yaml").read_text()
    assert restored == (ROOT / "pipelines" / "synthetic_3d.yaml").read_text()
