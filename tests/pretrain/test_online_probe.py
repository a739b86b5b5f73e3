"""OnlineProbe (the probe scored during pretraining): which subjects it encodes, what it logs, when."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, mean_absolute_error
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.preprocessing import StandardScaler

from medcl.data.cohort import Cohort
from medcl.data.datasets import ImageDataset
from medcl.pretrain.callbacks import OnlineProbe


class PooledFeatures(torch.nn.Module):
    """A stand-in for the pretraining module: 4x4 average-pooled pixels as features.

    Records how many images it encoded, the mode it ran in, and what the callback logged.
    """

    def __init__(self) -> None:
        super().__init__()
        self.encoded, self.modes, self.logged = 0, [], {}

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        self.encoded += len(image)
        self.modes.append(self.training)
        return torch.nn.functional.adaptive_avg_pool2d(image, 4).flatten(1)

    def log(self, name: str, value: float, **kwargs) -> None:
        self.logged[name] = value


def _features(cohort: Cohort, idx: np.ndarray) -> np.ndarray:
    dataset = ImageDataset(cohort, idx, cache="none")
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    return torch.nn.functional.adaptive_avg_pool2d(images, 4).flatten(1).numpy()


@pytest.mark.parametrize(("label", "metric"), [("diagnosis", "bacc"), ("age", "mae")])
def test_online_probe_scores_train_vs_val_features_every_n_epochs(synthetic_2d_manifest: Path, label: str,
                                                                   metric: str) -> None:
    cohort = Cohort.from_manifest(synthetic_2d_manifest)
    split, y = np.asarray(cohort.split()), cohort.label(label)
    train_idx, val_idx = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    y[train_idx[0]] = np.nan  # an unlabelled training subject is left out
    cohort.label = lambda name: y.copy()  # the probe reads labels through the cohort
    probe = OnlineProbe(cohort, train_idx, val_idx, label, every_n_epochs=2, kind="knn", k=3, cache="none")
    module = PooledFeatures().train()

    probe.on_train_epoch_end(SimpleNamespace(current_epoch=0), module)  # epoch 1 of every 2: nothing
    assert module.encoded == 0 and module.logged == {}
    probe.on_train_epoch_end(SimpleNamespace(current_epoch=1), module)

    labelled_train = train_idx[np.isfinite(y[train_idx])]
    labelled_val = val_idx[np.isfinite(y[val_idx])]
    assert module.encoded == len(labelled_train) + len(labelled_val)  # never a test subject
    assert set(module.modes) == {False} and module.training  # encoded in eval mode, mode restored
    assert list(module.logged) == [f"probe/{label}_{metric}"]

    # independent reference: scaler + 3-NN fitted on the labelled training features, scored on val
    scaler = StandardScaler().fit(_features(cohort, labelled_train))
    x_train = scaler.transform(_features(cohort, labelled_train))
    x_val = scaler.transform(_features(cohort, labelled_val))
    if metric == "bacc":
        knn = KNeighborsClassifier(3).fit(x_train, y[labelled_train].astype(int))
        want = balanced_accuracy_score(y[labelled_val].astype(int), knn.predict(x_val))
    else:
        knn = KNeighborsRegressor(3).fit(x_train, y[labelled_train])
        want = mean_absolute_error(y[labelled_val], knn.predict(x_val))
    assert module.logged[f"probe/{label}_{metric}"] == pytest.approx(want, rel=1e-6)


def test_online_probe_skips_without_validation_subjects(synthetic_2d_manifest: Path) -> None:
    cohort = Cohort.from_manifest(synthetic_2d_manifest)
    train_idx = np.flatnonzero(np.asarray(cohort.split()) == "train")
    probe = OnlineProbe(cohort, train_idx, np.array([], dtype=int), "diagnosis", every_n_epochs=1, cache="none")
    module = PooledFeatures()
    probe.on_train_epoch_end(SimpleNamespace(current_epoch=0), module)
    assert module.encoded == 0 and module.logged == {}
