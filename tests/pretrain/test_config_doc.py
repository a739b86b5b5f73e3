"""docs/config.md is generated from the config schema, current, and names every key a config has."""

from __future__ import annotations

from pathlib import Path

from medcl.pretrain.config import PretrainConfig
from medcl.pretrain.config_doc import DOC_PATH, config_markdown, config_rows

ROOT = Path(__file__).resolve().parents[2]


def _leaf_keys(data: dict, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in data.items():
        if isinstance(value, dict) and value:
            keys |= _leaf_keys(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


def test_committed_config_doc_is_current() -> None:
    assert (ROOT / DOC_PATH).read_text() == config_markdown(), (
        "docs/config.md is stale: run `python -m medcl.pretrain.config_doc`"
    )


def test_every_key_of_a_resolved_config_is_documented_with_a_meaning() -> None:
    # independent of the generator's walk: the keys a resolved config actually holds
    resolved = PretrainConfig.model_validate({"manifest": "m.yaml"}).model_dump(mode="json")
    rows = {key: (kind, default, meaning) for key, kind, default, meaning in config_rows()}
    assert set(rows) == _leaf_keys(resolved)
    assert not [key for key, (_, _, meaning) in rows.items() if not meaning], "keys without a description"
    text = config_markdown()
    for key in ("encoder.norm", "encoder.max_pool", "encoder.first_kernel", "projection.batch_norm",
                "log_every_n_steps", "optimizer.trust_coefficient"):
        assert f"| `{key}` |" in text


def test_rows_state_types_bounds_and_defaults() -> None:
    rows = {key: (kind, default) for key, kind, default, _ in config_rows()}
    assert rows["manifest"] == ("str", "required")
    assert rows["loss.t"] == ("float (> 0)", "`2.0`")
    assert rows["prior.instance_weight"] == ("float (>= 0, <= 1)", "`0.03`")
    assert rows["precision"] == ('"32" \\| "bf16-mixed" \\| "16-mixed" \\| "64"', '`"32"`')
    assert rows["attributes"] == ("list[str] \\| null", "`null`")
