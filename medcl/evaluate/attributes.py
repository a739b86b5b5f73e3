"""Attribute diagnostics: does a weak attribute's kernel carry information about a label?

Before pretraining with a prior kernel, a team can check which clinical attributes align with the
diagnosis they care about. The measure is the centered kernel alignment (CKA, Cortes et al. 2012;
Kornblith et al. 2019) between the attribute's kernel K and the label's kernel L on the labelled
subjects::

    CKA(K, L) = <HKH, HLH>_F / (||HKH||_F ||HLH||_F),   H = I - 11^T / n

(the normalised HSIC), in [0, 1] for PSD kernels: 1 when the kernels agree up to scale, about 0
when they are unrelated. Its significance comes from a permutation test that shuffles the label.

The label kernel is the delta kernel 1[y_i == y_j] for class labels and an RBF kernel with the
median-heuristic bandwidth for continuous labels. Both are written as ``L = F F^T`` with a thin
feature matrix F (one-hot classes, or the leading eigenvectors of the RBF kernel), so a
permutation costs one (n, n) x (n, r) product and thousands of permutations run batched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from medcl.errors import MedclInputError

if TYPE_CHECKING:
    from medcl.data.cohort import Cohort

_EIG_ENERGY = 1 - 1e-6  # kept fraction of the RBF label kernel's centred spectrum
_GRID_POINTS = 128  # Nystrom landmarks for the continuous label kernel
_PERM_CHUNK_ELEMENTS = 2**24  # bound on n * r * permutations held at once


def center_kernel(k: np.ndarray) -> np.ndarray:
    """Double-centre an (n, n) kernel: H K H with H = I - 11^T/n (float64 copy)."""
    k = np.asarray(k, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise MedclInputError(f"a kernel must be a square (n, n) matrix, got shape {k.shape}")
    row = k.mean(axis=0, keepdims=True)
    col = k.mean(axis=1, keepdims=True)
    return k - row - col + k.mean()


def centered_kernel_alignment(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """CKA between two (n, n) kernels; NaN when either is constant after centring."""
    kc, lc = center_kernel(k), center_kernel(l)
    if kc.shape != lc.shape:
        raise MedclInputError(f"kernels must have the same shape, got {kc.shape} and {lc.shape}")
    den = np.linalg.norm(kc) * np.linalg.norm(lc)
    return float(np.sum(kc * lc) / den) if den > 0 else float("nan")


def _median_bandwidth(y: np.ndarray, max_points: int = 2000) -> float:
    """Median non-zero pairwise distance (on a fixed subsample of ``max_points`` values)."""
    if len(y) > max_points:
        y = y[np.random.default_rng(0).choice(len(y), max_points, replace=False)]
    d = np.abs(y[:, None] - y[None, :])[np.triu_indices(len(y), k=1)]
    d = d[d > 0]
    return float(np.median(d)) if len(d) else 1.0


def label_features(y: np.ndarray, kind: str) -> np.ndarray:
    """Feature matrix F (n, r) with label kernel L = F F^T.

    Class labels (``binary`` / ``multiclass``, codes 0..K-1): one-hot, so L is the delta kernel.
    ``continuous``: RBF with the median pairwise distance as bandwidth, factorised through its
    leading eigenvectors (scaled by sqrt of the eigenvalues).
    """
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if not np.isfinite(y).all():
        raise MedclInputError("label values must be finite (drop missing labels first)")
    if kind in ("binary", "multiclass"):
        codes = np.unique(y, return_inverse=True)[1].reshape(-1)
        return np.eye(codes.max() + 1)[codes]
    if kind != "continuous":
        raise MedclInputError(f"label kind must be binary, multiclass or continuous, got {kind!r}")
    sigma = _median_bandwidth(y)
    # Nystrom on a fine 1-D grid (spacing << sigma, so the approximation is near exact), then
    # compressed to the leading directions: O(n m^2) instead of an O(n^3) eigendecomposition.
    grid = np.linspace(y.min(), y.max(), _GRID_POINTS)
    k_mm = np.exp(-((grid[:, None] - grid[None, :]) ** 2) / (2 * sigma**2))
    w, u = np.linalg.eigh(k_mm)
    ok = w > w.max() * 1e-12
    f = np.exp(-((y[:, None] - grid[None, :]) ** 2) / (2 * sigma**2)) @ (u[:, ok] / np.sqrt(w[ok]))
    w, v = np.linalg.eigh(f.T @ f)
    w, v = w[::-1].clip(min=0), v[:, ::-1]
    keep = int(np.searchsorted(np.cumsum(w) / w.sum(), _EIG_ENERGY) + 1)
    return f @ v[:, :keep]


def cka_permutation_test(
    kernel: np.ndarray,
    labels: np.ndarray,
    kind: str,
    *,
    permutations: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """CKA between an attribute kernel and a label's kernel, with a permutation p-value.

    Args:
        kernel: (n, n) attribute kernel on the labelled subjects.
        labels: (n,) label (class codes or continuous values), no missing values.
        kind: ``"binary"``, ``"multiclass"`` or ``"continuous"``.
        permutations: number of label permutations (0 skips the test; p is then NaN).
        seed: seeds the permutations.

    Returns:
        ``(cka, p_value)`` with ``p = (1 + #{perm CKA >= CKA}) / (1 + permutations)``.
    """
    n = np.shape(kernel)[0]
    if len(labels) != n:
        raise MedclInputError(f"kernel is {n}x{n} but there are {len(labels)} labels")
    return alignment_test(kernel, label_features(labels, kind), permutations, seed)


def alignment_test(kernel: np.ndarray, f: np.ndarray, permutations: int, seed: int) -> tuple[float, float]:
    """CKA(K, F F^T) and its permutation p-value (rows of F permuted)."""
    kc = center_kernel(kernel)
    n = kc.shape[0]
    f = f - f.mean(axis=0, keepdims=True)  # H F: centres L = F F^T on both sides
    k_norm = np.linalg.norm(kc)
    l_norm = np.linalg.norm(f.T @ f)  # ||F F^T||_F = ||F^T F||_F
    if k_norm == 0 or l_norm == 0:
        return float("nan"), float("nan")

    def stat(k: np.ndarray, fp: np.ndarray) -> np.ndarray:  # fp: (n, r, B) -> (B,) trace(Fp^T K Fp)
        kf = (k @ fp.reshape(n, -1)).reshape(fp.shape)
        return np.einsum("irb,irb->b", fp, kf, dtype=np.float64)

    observed = float(stat(kc, f[:, :, None])[0] / (k_norm * l_norm))
    if permutations <= 0:
        return observed, float("nan")
    rng = np.random.default_rng(seed)
    # permuted statistics in float32 (twice as fast); ties within float32 precision count as reached
    kc32, f32 = kc.astype(np.float32), f.astype(np.float32)
    tol = 1e-5 * abs(observed) + 1e-7
    chunk = max(1, _PERM_CHUNK_ELEMENTS // max(1, n * f.shape[1]))
    exceed = 0
    done = 0
    while done < permutations:
        b = min(chunk, permutations - done)
        perms = np.argsort(rng.random((b, n)), axis=1)  # (b, n): b independent permutations
        fp = np.ascontiguousarray(np.transpose(f32[perms], (1, 2, 0)))  # (n, r, b)
        exceed += int(np.sum(stat(kc32, fp) / (k_norm * l_norm) >= observed - tol))
        done += b
    return observed, float((1 + exceed) / (1 + permutations))


@dataclass
class AttributeAlignment:
    """CKA of one attribute (or combination) with a label."""

    attributes: list[str]
    cka: float
    p_value: float
    n_subjects: int

    @property
    def name(self) -> str:
        return "+".join(self.attributes)


@dataclass
class AlignmentReport:
    """Result of :func:`attribute_alignment`: one row per attribute or combination, best first."""

    label: str
    label_kind: str
    n_labelled: int
    n_used: int
    permutations: int
    rows: list[AttributeAlignment]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN becomes None); holds no subject or patient id."""
        out = asdict(self)
        out["rows"] = [{"name": r.name, **asdict(r)} for r in self.rows]
        return _nan_to_none(out)

    def table(self) -> str:
        """A sorted plain-text table for the terminal."""
        width = max([len("attribute")] + [len(r.name) for r in self.rows])
        head = f"{'attribute':<{width}}  {'CKA':>6}  {'p-value':>8}  {'n':>6}"
        lines = [
            f"alignment with label {self.label!r} ({self.label_kind}), {self.n_used} subjects, "
            f"{self.permutations} permutations",
            head,
            "-" * len(head),
        ]
        for r in self.rows:
            cka = "n/a" if not math.isfinite(r.cka) else f"{r.cka:.3f}"
            p = "n/a" if not math.isfinite(r.p_value) else f"{r.p_value:.4f}"
            lines.append(f"{r.name:<{width}}  {cka:>6}  {p:>8}  {r.n_subjects:>6}")
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def parse_combos(combos: Sequence[str] | None, known: Sequence[str]) -> list[list[str]]:
    """Parse ``"age+sex"`` strings into attribute-name lists, checking every name is known."""
    out = []
    for combo in combos or []:
        names = [s.strip() for s in combo.split("+") if s.strip()]
        unknown = [n for n in names if n not in known]
        if not names or unknown:
            raise MedclInputError(
                f"--combo {combo!r}: unknown attribute(s) {unknown or combo!r}; known: {list(known)}"
            )
        out.append(names)
    return out


def attribute_alignment(
    cohort: Cohort,
    label: str,
    *,
    combos: Sequence[str] | None = None,
    permutations: int = 1000,
    seed: int = 0,
    max_subjects: int = 3000,
    split: str | None = "train",
) -> AlignmentReport:
    """CKA between every attribute (and each named combination) and a label, on labelled subjects.

    Only the subjects of ``split`` (default ``"train"``, so that choosing a prior never looks at
    the test subjects; None: every subject) are used. Each attribute's
    :class:`medcl.kernels.PriorKernel` is fitted on the labelled subjects used (so bandwidths
    and missing-value imputation come from them). More than ``max_subjects`` are subsampled
    (seeded), and the report says so.

    Raises:
        MedclInputError: unknown label or attribute, no attributes, or fewer than 3 labelled subjects.
    """
    spec = cohort.manifest.label(label)
    if not cohort.attribute_names:
        raise MedclInputError(f"manifest {cohort.manifest.path or cohort.manifest.name} has no attributes")
    sets = [[a] for a in cohort.attribute_names] + parse_combos(combos, cohort.attribute_names)
    y_all = cohort.label(label)
    notes = []
    pool = np.arange(len(y_all)) if split is None else cohort.indices(split)
    if split is not None:
        notes.append(f"{split} split only: {len(pool)} of {len(y_all)} subjects")
    labelled = pool[np.isfinite(y_all[pool])]
    n_missing = len(pool) - len(labelled)
    if n_missing:
        notes.append(f"{n_missing} subject(s) without label {label!r} left out")
    if len(labelled) < 3:
        where = "" if split is None else f" in the {split} split"
        raise MedclInputError(
            f"label {label!r}: only {len(labelled)} labelled subject(s){where}; need at least 3"
        )
    idx = labelled
    if len(idx) > max_subjects:
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(labelled, size=max_subjects, replace=False))
        notes.append(f"subsampled {max_subjects} of {len(labelled)} labelled subjects (seed {seed})")
    y = y_all[idx]
    if len(np.unique(y)) < 2:
        raise MedclInputError(f"label {label!r} is constant on the labelled subjects; nothing to align")
    features = label_features(y, spec.type)
    rows = []
    for names in sets:
        values, missing, _ = cohort.attribute_matrix(names)
        kernel = cohort.prior_kernel(names)
        kernel.fit(values[idx], missing[idx])
        k = kernel(values[idx], missing[idx])
        k = k.detach().cpu().double().numpy() if hasattr(k, "detach") else np.asarray(k, dtype=np.float64)
        cka, p = alignment_test(k, features, permutations, seed)
        if not math.isfinite(cka):
            notes.append(f"{'+'.join(names)}: kernel is constant on these subjects (CKA undefined)")
        rows.append(AttributeAlignment(list(names), cka, p, len(idx)))
    rows.sort(key=lambda r: -r.cka if math.isfinite(r.cka) else math.inf)
    return AlignmentReport(
        label=label,
        label_kind=spec.type,
        n_labelled=len(labelled),
        n_used=len(idx),
        permutations=permutations,
        rows=rows,
        notes=notes,
    )
