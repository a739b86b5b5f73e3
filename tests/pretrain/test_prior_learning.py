"""Behaviour, not just plumbing: kernel methods learn, and what holds on any machine.

Training at a small budget is chaotic: on the demo cohort a run finds the lesion or misses it, and
which seeds miss depends on the CPU's float path (another SIMD kernel set changes the first
step's rounding). Measured at the demo's recipe (:func:`medcl.demo.base_config`: 400-subject 2D
cohort, 240 pretrained, resnet10 for 45 epochs at lr 6e-3, channels-last, batched augmentation at
strength 0.5, default prior), held-out diagnosis AUC, one thread per run (docs/reproducibility.md):

- kernel DU, oracle prior (delta kernel on the diagnosis), seeds 0-2: native AVX512 .973/.974/.967,
  ``ATEN_CPU_CAPABILITY=default`` .945/.976/.983; over seeds 0-9 native .932-.985, default
  .928-.998: no run missed the lesion;
- plain DU, seeds 0-9 native .893-.986 (mean .939), default .805-.951 (mean .920);
- random init (no training, so no chaos): seeds 0-2 .728/.787/.843, the same on both paths.
  (At the previous recipe, resnet18 for 24 epochs: oracle .633-.978 and DU .589-.928 over
  seeds 0-9 native; random init .644/.732/.656.)

So no single-seed comparison of two trained arms holds on every machine (at the previous recipe
the oracle-minus-DU gap ran from -.11 to +.33 per seed, and its mean over seeds 0-2 was +.145
native but +.012 with generic kernels: that test failed on one CPU and passed on another). The
comparison lives in ``medcl compare`` over 10 seeds (docs/reproducibility.md). What holds on every
float path, and is asserted here:

- the oracle prior's encoder beats the random-init encoder on held-out subjects, on the mean over
  seeds 0-2, by more than ``OVER_RANDOM_INIT`` (measured +.185 native, +.182 default; one missed
  run among the three would still leave about +.08);
- the training loss of the oracle runs, and of every kernel method with the default prior
  (oracle, informative scores, pure noise), falls.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medcl.data.check_attributes import NOISE_ATTRIBUTE, oracle_attribute, with_check_attributes

# Mean over SEEDS of oracle AUC - random-init AUC, one thread: +.185 native, +.182 ATEN_CPU_CAPABILITY=default
# (resnet10's random features probe higher than resnet18's; at the previous recipe +.28 / +.27). One missed
# run (~.65) among the three would leave about +.08; an encoder that learned nothing, about 0.
OVER_RANDOM_INIT = 0.06
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def check_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medcl.data.synthetic import generate_cohort
    from medcl.demo import DemoSettings

    s = DemoSettings()
    root = tmp_path_factory.mktemp("prior_learning")
    manifest = generate_cohort(root / "cohort", dims=2, subjects=s.subjects, size=s.size, seed=0, image_format="png")
    return with_check_attributes(manifest, "diagnosis", root / "checked")


def train_and_probe(manifest: Path, out: Path, method: str, attributes: list[str], seed: int,
                    epochs: int | None = None, **overrides: object) -> tuple[float, np.ndarray]:
    """Pretrain with the demo's recipe on the training split; return (held-out diagnosis AUC,
    per-epoch training loss). ``method="random_init"`` probes an untrained encoder."""
    from medcl.data.cohort import Cohort
    from medcl.data.datasets import ImageDataset
    from medcl.demo import DemoSettings, base_config
    from medcl.evaluate.features import encode_dataset
    from medcl.evaluate.probe import probe_features
    from medcl.models.saved import random_encoder
    from medcl.pretrain.config import parse_config
    from medcl.pretrain.loop import pretrain

    s = DemoSettings()
    values = base_config(manifest, s).model_dump(mode="json")
    values.update(method="du" if method == "random_init" else method, attributes=attributes, seed=seed,
                  epochs=epochs or s.epochs, **overrides)
    config = parse_config(values)
    cohort = Cohort.from_manifest(manifest)
    if method == "random_init":  # as compare's random_init arm
        spec = config.encoder.resolved(cohort.manifest.image.spatial_dims, cohort.manifest.image.channels)
        encoder, loss = random_encoder(spec, seed), np.array([])
    else:
        run = pretrain(config, out)
        encoder, loss = run.load_encoder(), run.metrics()["train/loss_epoch"].dropna().to_numpy()
    held_out = np.flatnonzero(np.asarray(cohort.split()) != "train")
    features = encode_dataset(encoder, ImageDataset(cohort, held_out, cache="memory"), batch_size=64, progress=False)
    groups = np.asarray(cohort.patient_ids, dtype=object)[held_out]
    labels = cohort.label("diagnosis")[held_out]
    auc = np.mean([probe_features(features, labels, groups, "binary", n_folds=s.probe_folds, seed=r)
                   .metric("roc_auc").mean for r in range(s.probe_repeats)])  # as the demo probes
    return float(auc), loss


@pytest.mark.slow
def test_oracle_prior_beats_random_init_on_held_out_subjects(check_manifest: Path, tmp_path: Path) -> None:
    oracle, random = [], []
    for seed in SEEDS:
        random.append(train_and_probe(check_manifest, tmp_path / f"random{seed}", "random_init", [], seed)[0])
        auc, loss = train_and_probe(check_manifest, tmp_path / f"oracle{seed}", "kernel_du",
                                    [oracle_attribute("diagnosis")], seed)
        oracle.append(auc)
        assert loss[-1] < loss[0] - 0.05, (seed, loss)
    assert np.mean(oracle) >= np.mean(random) + OVER_RANDOM_INIT, (oracle, random)


@pytest.mark.slow
@pytest.mark.parametrize("attributes", [[oracle_attribute("diagnosis")], ["score1", "score2", "score3"],
                                        [NOISE_ATTRIBUTE]], ids=["oracle", "scores", "noise"])
def test_every_kernel_method_loss_falls(check_manifest: Path, tmp_path: Path, attributes: list[str]) -> None:
    _, loss = train_and_probe(check_manifest, tmp_path / "run", "kernel_du", attributes, seed=1, epochs=4)
    assert len(loss) == 4
    assert loss[-1] < loss[0] - 0.05, loss  # it falls, and by more than step noise
    assert np.all(np.isfinite(loss))
