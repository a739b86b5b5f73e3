"""One record per training method: adding a method is a loss module plus a record.

A toy method registered here (and removed after) must be accepted by the config, trainable by
``medcl pretrain``, offered by ``medcl compare`` and checked by training health with its own
collapse value and advice; and no other list of methods may drift from the records.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from _pretrain_helpers import cli, write_config

from medcl.errors import MedclInputError
from medcl.losses import METHODS, MethodRecord, nt_xent, register_method
from medcl.losses.base import LossModule
from medcl.losses.registry import unregister_method
from medcl.pretrain.config import parse_config
from medcl.pretrain.run_dir import RunDir

TOY_ADVICE = "feed the toy more views"


class ToyLoss(LossModule):
    """NT-Xent, or (``frozen``) NT-Xent of identical embeddings: exactly its collapse value, no gradient."""

    def __init__(self, temperature: float = 0.1, frozen: int = 0, gather: bool = False):
        super().__init__(gather, temperature=temperature)
        self.frozen = bool(frozen)

    def collapse_value(self, n: int, views: int) -> float:
        return math.log(n * views - 1)

    def forward(self, z, attributes=None, missing=None, labels=None):
        if self.frozen:
            z = z * 0 + 1
        return nt_xent(z, temperature=self.temperature)


def _toy_options(config, kernel):
    temperature = config.loss.temperature if config.loss.temperature is not None else 0.3
    return {"temperature": temperature, "frozen": int(config.method == "toy_frozen")}


@pytest.fixture
def toy_methods() -> Iterator[None]:
    for name in ("toy", "toy_frozen"):
        register_method(MethodRecord(name, ToyLoss, _toy_options, default_temperature=0.3, advice=TOY_ADVICE,
                                     summary="toy"))
    yield
    for name in ("toy", "toy_frozen"):
        unregister_method(name)


def test_a_registered_toy_method_is_accepted_trained_and_offered(
        toy_methods: None, synthetic_2d_manifest: Path, tmp_path: Path) -> None:
    from medcl.evaluate.compare import CompareSettings, known_methods, methods_help, parse_arms, plan

    assert parse_config({"manifest": "m.yaml", "method": "toy"}).method == "toy"
    out = tmp_path / "run"
    assert cli(["pretrain", "--config", write_config(tmp_path, synthetic_2d_manifest, method="toy"),
                "--out", out]) == 0
    run = RunDir(out)
    assert run.config().loss.temperature == 0.3  # the record's default temperature, resolved and saved
    losses = run.metrics()["train/loss_epoch"].dropna().to_numpy()
    assert len(losses) == 2 and (losses > 0).all()
    assert not run.summary()["health"]["collapsed"]

    assert "toy" in known_methods() and "toy" in methods_help().split(", ")
    base = parse_config({"manifest": str(synthetic_2d_manifest), "method": "du", "batch_size": 4})
    planned, _ = plan(base, parse_arms("du,toy"), CompareSettings(labels=["diagnosis"], seeds=1))
    assert sorted({p.arm.method for p in planned}) == ["du", "toy"]


def test_health_checks_a_toy_method_against_its_own_collapse_value(
        toy_methods: None, synthetic_2d_manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = write_config(tmp_path, synthetic_2d_manifest, method="toy_frozen", epochs=3)
    assert cli(["pretrain", "--config", config, "--out", out]) == 0
    health = RunDir(out).summary()["health"]
    collapse = math.log(4 * 2 - 1)  # batch 4, 2 views
    assert health["collapsed"] and f"collapse value {collapse:.4f}" in health["reason"]
    assert any(TOY_ADVICE in w for w in health["warnings"])


def test_an_unknown_or_taken_method_name_is_refused() -> None:
    with pytest.raises(MedclInputError, match="Input should be 'kernel_du', 'du'"):
        parse_config({"manifest": "m.yaml", "method": "toy"})
    with pytest.raises(ValueError, match="already registered"):
        register_method(METHODS["du"])


def test_the_compare_help_lists_exactly_the_records() -> None:
    """The one copy: ``medcl compare --help`` spells the arms statically (no torch at ``--help``)."""
    from medcl.cli.evaluate_commands import METHODS_HELP
    from medcl.evaluate.compare import methods_help

    assert METHODS_HELP == methods_help()


def test_every_record_builds_its_loss_from_a_resolved_config(synthetic_2d_manifest: Path) -> None:
    from medcl.losses import build_loss
    from medcl.pretrain.loop import prepare
    from medcl.pretrain.module import loss_options

    for name, record in METHODS.items():
        changes = {"attributes": ["age"]} if record.uses_attributes else {"attributes": []}
        if record.uses_label:
            changes["label"] = "diagnosis"
        config = parse_config({"manifest": str(synthetic_2d_manifest), "method": name, "batch_size": 4, **changes})
        prep = prepare(config)
        loss = build_loss(name, **loss_options(prep.config, prep.kernel))
        assert isinstance(loss, record.loss)
        z = torch.randn(4, 2, loss.outputs if record.linear_head else 8)
        value = loss(z, attributes=torch.randn(4, 1), missing=torch.zeros(4, 1, dtype=torch.bool),
                     labels=torch.tensor([0, 1, 0, 1]) if record.uses_label else None)
        assert torch.isfinite(value)
