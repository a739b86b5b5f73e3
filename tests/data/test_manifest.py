"""Manifest schema: defaults, coercions and messages that name the field."""

from __future__ import annotations

import pytest
import yaml
from cohort_factory import basic_manifest

from medcl.data.manifest import load_manifest, parse_manifest
from medcl.errors import InputProblems, MedclInputError


def test_defaults_and_round_trip(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(basic_manifest()))
    m = load_manifest(path)
    assert m.path == path.resolve() and m.base_dir == tmp_path.resolve()
    assert m.split.method == "column"
    assert m.attribute("age").kernel_name == "rbf" and m.attribute("sex").kernel_name == "delta"
    again = parse_manifest(yaml.safe_load(m.to_yaml()))
    assert again.model_dump() == m.model_dump()


def test_numbers_in_yaml_become_category_text():
    m = parse_manifest(
        basic_manifest(
            attributes=[{"name": "sex", "type": "binary", "categories": [0, 1]}],
            labels=[{"name": "dx", "type": "binary", "positive": 1}],
        )
    )
    assert m.attribute("sex").categories == ["0", "1"] and m.label("dx").positive == "1"


@pytest.mark.parametrize(
    ("change", "culprit"),
    [
        ({"image": {"kind": "4d"}}, "image.kind"),
        ({"preprocessing": {"size": [8, 8]}}, "3 values for 3d"),
        ({"attributes": [{"name": "sex", "type": "binary", "categories": ["M", "F", "X"]}]}, "exactly 2"),
        ({"attributes": [{"name": "e", "type": "embedding"}]}, "'features'"),
        ({"attributes": [{"name": "a", "type": "continuous", "kernel": "delta"}]}, "rbf kernel"),
        ({"split": {"method": "group_kfold", "folds": 3, "val_folds": [3]}}, "fold 3"),
        ({"split": {"method": "group_kfold", "stratify": "nope"}}, "'nope'"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_schema_errors_name_the_field(change, culprit):
    with pytest.raises(InputProblems) as info:
        parse_manifest(basic_manifest(**change), source="m.yaml")
    assert culprit in str(info.value) and "m.yaml" in str(info.value)


def test_unreadable_manifests(tmp_path):
    with pytest.raises(MedclInputError, match="does not exist"):
        load_manifest(tmp_path / "absent.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1,\n")
    with pytest.raises(MedclInputError, match=r"bad\.yaml: not valid YAML"):
        load_manifest(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(MedclInputError, match="YAML mapping"):
        load_manifest(tmp_path / "list.yaml")


def test_resolve_refuses_escape(tmp_path):
    m = parse_manifest(basic_manifest(), path=tmp_path / "m.yaml")
    assert m.resolve("img/a.nii", "image") == tmp_path.resolve() / "img" / "a.nii"
    with pytest.raises(MedclInputError, match="outside the data root"):
        m.resolve("../../etc/passwd", "image")


def test_bandwidth_is_refused_for_kernels_without_one() -> None:
    from medcl.data.manifest import AttributeSpec

    assert AttributeSpec(name="age", type="continuous", bandwidth=5.0).bandwidth == 5.0
    with pytest.raises(ValueError, match=r"'sex'.*bandwidth.*delta"):
        AttributeSpec(name="sex", type="binary", bandwidth=1.0)
    with pytest.raises(ValueError, match=r"'vae'.*bandwidth.*cosine"):
        AttributeSpec(name="vae", type="embedding", features="vae.csv", bandwidth=1.0)
