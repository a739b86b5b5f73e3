"""2D projection of encoder features for the report (PCA, or t-SNE for small cohorts)."""

from __future__ import annotations

from typing import Literal

import numpy as np

from medcl.errors import MedclInputError

Projection = Literal["auto", "pca", "tsne"]
PROJECTIONS: tuple[str, ...] = ("auto", "pca", "tsne")
TSNE_MAX_SUBJECTS = 500  # "auto" uses t-SNE up to this many subjects (about 3 s on one core)


def project_2d(features: np.ndarray, method: Projection = "auto", *, seed: int = 0) -> tuple[np.ndarray, str]:
    """Project (n, F) features to (n, 2); returns the coordinates and the method used.

    ``"auto"`` picks t-SNE when 10 <= n <= ``TSNE_MAX_SUBJECTS``, else PCA. Features are
    standardised first; rows with non-finite values are projected to NaN. Raises
    ``MedclInputError`` for an unknown method.
    """
    if method not in PROJECTIONS:
        raise MedclInputError(f"projection: expected one of {', '.join(PROJECTIONS)}, got {method!r}")
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # OpenMP threads spin on small inputs: 10-25x slower on a busy CPU
        return _project(features, method, seed)


def _project(features: np.ndarray, method: Projection, seed: int) -> tuple[np.ndarray, str]:
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    feats = np.asarray(features, dtype=np.float64)
    finite = np.isfinite(feats).all(axis=1)
    coords = np.full((len(feats), 2), np.nan)
    x = feats[finite]
    n = len(x)
    if n < 2:
        return coords, "pca"
    x = StandardScaler().fit_transform(x)
    use_tsne = method == "tsne" or (method == "auto" and 10 <= n <= TSNE_MAX_SUBJECTS)
    if use_tsne and n >= 5:
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
        init = "pca" if x.shape[1] >= 2 else "random"
        out = TSNE(n_components=2, perplexity=perplexity, init=init, random_state=seed).fit_transform(x)
        used = "t-SNE"
    else:
        k = min(2, x.shape[1], n)
        out = np.zeros((n, 2))
        out[:, :k] = PCA(n_components=k, random_state=seed).fit_transform(x)
        used = "PCA"
    coords[finite] = out
    return coords, used
