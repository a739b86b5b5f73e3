"""The cheap probe scored during pretraining (frozen features -> kNN or logistic / ridge).

The full probing protocol (patient-level CV, grid search, reports) lives in
:mod:`medcl.evaluate.probe`; this one only tracks progress, once every few epochs.
"""

from __future__ import annotations

import numpy as np


def probe_score(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *,
                kind: str = "knn", k: int = 5, continuous: bool = False) -> tuple[str, float]:
    """Fit on (x_train, y_train), score on the validation split.

    Returns ``("bacc", balanced accuracy)`` for class labels or ``("mae", mean absolute error)``
    for continuous ones. Features are standardised on the training split.
    """
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import balanced_accuracy_score, mean_absolute_error
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    k = max(1, min(k, len(x_train)))
    if continuous:
        est = KNeighborsRegressor(k) if kind == "knn" else Ridge(alpha=1.0)
        model = make_pipeline(StandardScaler(), est).fit(x_train, y_train)
        return "mae", float(mean_absolute_error(y_val, model.predict(x_val)))
    y_train = y_train.astype(int)
    if len(np.unique(y_train)) < 2:
        return "bacc", float("nan")
    est = KNeighborsClassifier(k) if kind == "knn" else LogisticRegression(max_iter=1000)
    model = make_pipeline(StandardScaler(), est).fit(x_train, y_train)
    return "bacc", float(balanced_accuracy_score(y_val.astype(int), model.predict(x_val)))
