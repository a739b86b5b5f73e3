"""Prior kernels on subjects' weak attributes (clinical metadata, prior embeddings).

A :class:`PriorKernel` combines one :class:`KernelTerm` per attribute. Each term reads the
columns ``[start, stop)`` of the (n, p) attribute matrix built by ``Cohort.attribute_matrix``:

- ``rbf``: ``exp(-||a - b||^2 / (2 bandwidth^2))`` (a continuous attribute: one column; an
  embedding: k columns). Without a given bandwidth, :meth:`PriorKernel.fit` sets it by the
  median heuristic (below).
- ``delta``: ``1[a == b]`` on integer category codes stored as floats (all columns equal).
- ``cosine``: ``<a, b> / (|a| |b|)`` on vectors (0 for a zero vector).

Terms combine as a product (default) or a weighted sum with weights normalised to sum to 1;
both keep K positive semi-definite.

Instance term. ``instance_weight`` w mixes the attribute kernel with the identity,
``K = (1 - w) K_attr + w I``: every subject keeps a direction of its own. A kernel on one or two
scalar attributes is nearly low-rank on a batch, so the kernel-ridge smoother ``(K + lam I)^-1 K``
of kernel decoupled uniformity keeps only a handful of the batch's directions and the loss stops
seeing individual scans; with w the directions K ignores keep ``w / (w + lam)`` of their weight
(one half at w = lam) while the attribute's own directions are kept as before. w = 1 is plain
decoupled uniformity (up to the factor 1/(1 + lam)). See ``docs/kernel_spectrum.md``.

Bandwidth scale. ``bandwidth_scale`` multiplies every median-heuristic bandwidth at fit time (a
narrower RBF, scale < 1, raises the kernel's rank); given bandwidths are used as they are.

Bandwidth rule of a product. A product of RBF terms is one RBF on the attributes put side by side,
each divided by its bandwidth: with every term at its own median distance, the joint distance of a
typical pair grows like sqrt(number of terms) and the product is far narrower than any of its
factors (the demo cohort's three clinical scores: a typical pair has k = 0.11 instead of 0.61; the
kernel is close to the identity and kernel DU to plain DU). ``bandwidth_rule="joint"`` (the
default) applies the median heuristic to that joint vector instead: the fitted bandwidths of a
product's RBF terms are multiplied by the median joint distance (in units of the per-term
medians), so a typical pair of the product gets the same value as a typical pair of one attribute.
A single RBF term, a sum, and given bandwidths are unchanged. ``"per_attribute"`` keeps each term
at its own median (kernels saved before the rule existed load with it; their fitted bandwidths are
stored anyway).

Median heuristic. For a term without a bandwidth, sigma is the median of the Euclidean
distances ``||a_i - a_j||`` over all unordered pairs i < j of the non-missing training rows
(tied values included), computed on at most 2000 rows (a deterministic subsample, seed 0, when
there are more). If that median is 0 (more than half the pairs tied), the median of the
non-zero distances is used; if every distance is 0, sigma = 1.

Missing values (mean-embedding imputation). A subject missing an attribute (any of the term's
columns flagged in ``missing`` or NaN) gets the mean feature map of the training values, so
``k(i, j) = mean_b k(b, a_j)`` for i missing and ``k(i, i') = mean_{b, b'} k(b, b')`` when both
are. The means run over a compact, de-identified training reference stored by
:meth:`PriorKernel.fit` (and in a run's ``config.yaml``): for ``delta`` the training
categories and their frequencies (exact); for ``cosine`` the mean unit vector, i.e. the mean
feature map itself (exact); for ``rbf`` the mean and spread of groups of at least ``MIN_GROUP``
training subjects, weighted by group size (at most ``REFERENCE_GROUPS`` groups: on one column,
consecutive runs of the sorted values; on vectors, k-means clusters, seed 0, with clusters under
``MIN_GROUP`` merged into their nearest neighbour). Each rbf group stands for a Gaussian
N(mean, spread I), whose mean embedding has a closed form; this approximates the mean over the
training values closely (max error ~3e-3 on one column or 4-d vectors of 500 subjects). No raw
training value is kept, and no stored number describes fewer than ``MIN_GROUP`` subjects: delta
categories held by fewer are pooled into one "other" point (or left out when the pool is small
too), and an attribute with fewer than ``MIN_GROUP`` training values keeps no reference at all:
a missing value of it then has the zero feature map (similar to no one; ``k = 0``, itself
included). A missing subject's feature map is the mean embedding of a probability distribution,
or zero, so K stays PSD. See ``docs/privacy.md``.

Why this size: about 50 lines are this docstring; :class:`KernelTerm` and :class:`PriorKernel`
share the de-identified imputation reference (fit, evaluation, serialisation), one contract.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medcl.errors import MedclInputError
from medcl.kernels.vocabulary import BANDWIDTH_RULES, COMBINE_MODES, KERNEL_KINDS, KernelKind

#: Most groups in an rbf / cosine imputation reference; each group pools >= MIN_GROUP subjects.
REFERENCE_GROUPS = 64
MIN_GROUP = 10
#: Code of the pooled rare categories in a delta reference (category codes are >= 0).
OTHER_CATEGORY = -1.0
_MEDIAN_ROWS = 2000
_FORMAT_VERSION = 2  # 2: de-identified references (group means; cosine: mean unit vector)


@dataclass(frozen=True)
class KernelTerm:
    """One attribute's kernel on columns ``[start, stop)`` of the attribute matrix.

    Args:
        name: attribute name (unique within a PriorKernel).
        kind: ``"rbf"``, ``"delta"`` or ``"cosine"``.
        start, stop: column range, 0 <= start < stop.
        bandwidth: RBF sigma > 0, or None for the median heuristic at fit time (rbf only).
        weight: weight > 0 in a weighted-sum combination (ignored by ``"product"``).
    """

    name: str
    kind: KernelKind
    start: int
    stop: int
    bandwidth: float | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        where = f"kernel term {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise MedclInputError(f"name: expected a non-empty attribute name, got {self.name!r}")
        if self.kind not in KERNEL_KINDS:
            raise MedclInputError(f"{where}: kind must be one of {', '.join(KERNEL_KINDS)}, got {self.kind!r}")
        for field_name in ("start", "stop"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise MedclInputError(f"{where}: {field_name} must be an integer column index, got {value!r}")
        if not 0 <= self.start < self.stop:
            raise MedclInputError(
                f"{where}: expected columns 0 <= start < stop, got start={self.start}, stop={self.stop}"
            )
        if self.bandwidth is not None:
            if self.kind != "rbf":
                raise MedclInputError(f"{where}: bandwidth only applies to kind 'rbf', not {self.kind!r}")
            if not (isinstance(self.bandwidth, int | float) and math.isfinite(self.bandwidth) and self.bandwidth > 0):
                raise MedclInputError(f"{where}: bandwidth must be a number > 0 or None, got {self.bandwidth!r}")
        if not (isinstance(self.weight, int | float) and math.isfinite(self.weight) and self.weight > 0):
            raise MedclInputError(f"{where}: weight must be a number > 0, got {self.weight!r}")

    @property
    def width(self) -> int:
        """Number of columns read by this term."""
        return self.stop - self.start


def _pairwise(kind: str, a: torch.Tensor, b: torch.Tensor, bandwidth: float | None) -> torch.Tensor:
    """Kernel matrix (len(a), len(b)) between row vectors a (n, w) and b (m, w)."""
    if kind == "delta":
        out = a[:, None, 0] == b[None, :, 0]
        for c in range(1, a.shape[1]):
            out &= a[:, None, c] == b[None, :, c]
        return out.to(a.dtype)
    if kind == "cosine":
        return F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
    if a.shape[1] == 1:
        sq = (a[:, None, 0] - b[None, :, 0]) ** 2
    else:
        sq = torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    return torch.exp(sq / (-2.0 * bandwidth**2))


def _as_numpy(values: Any, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MedclInputError(f"{name}: expected a numeric (n, p) array, got {type(values).__name__}") from exc


def _median_distance(x: np.ndarray) -> float:
    if len(x) > _MEDIAN_ROWS:
        pick = np.random.default_rng(0).choice(len(x), _MEDIAN_ROWS, replace=False)
        x = x[np.sort(pick)]
    first, second = np.triu_indices(len(x), k=1)
    dist = np.sqrt(((x[first] - x[second]) ** 2).sum(axis=1))
    if dist.size == 0:
        return 1.0
    median = float(np.median(dist))
    if median > 0:
        return median
    positive = dist[dist > 0]
    return float(np.median(positive)) if positive.size else 1.0


Reference = tuple[np.ndarray, np.ndarray, np.ndarray]  # points (m, w), weights (m,), spreads (m,)


def _reference(kind: str, x: np.ndarray) -> Reference:
    """De-identified training reference for imputation: points, weights summing to 1, spreads.

    ``delta``: the categories held by >= MIN_GROUP subjects and their frequencies (smaller ones
    pooled, :func:`_category_reference`). ``cosine``: the mean unit vector (the mean feature map
    itself, so imputation is exact). ``rbf``: the mean and the spread (mean squared distance to the
    mean, per column) of groups of >= MIN_GROUP subjects, weighted by group size. Spreads are 0
    except for ``rbf``. With fewer than MIN_GROUP rows the reference is empty (no point): a missing
    value then has the zero feature map.
    """
    if len(x) < MIN_GROUP:  # any summary of so few subjects exposes them: suppressed
        return np.zeros((0, x.shape[1])), np.zeros(0), np.zeros(0)
    if kind == "delta":
        return _category_reference(x)
    if kind == "cosine":
        return _unit_mean(x, np.full(len(x), 1.0 / len(x))), np.ones(1), np.zeros(1)
    groups = _reference_groups(x)
    points = np.stack([x[g].mean(axis=0) for g in groups])
    spreads = np.array([((x[g] - p) ** 2).sum(axis=1).mean() / x.shape[1] for g, p in zip(groups, points, strict=True)])
    sizes = np.array([len(g) for g in groups], dtype=np.float64)
    order = np.lexsort(points.T[::-1])
    return points[order], (sizes / sizes.sum())[order], spreads[order]


def _category_reference(x: np.ndarray) -> Reference:
    """Categories of >= MIN_GROUP subjects with their frequencies; rarer ones pooled or left out.

    Rare categories (fewer than MIN_GROUP subjects each) become one ``OTHER_CATEGORY`` point, which
    matches no real category, when they pool at least MIN_GROUP subjects together; otherwise they
    are left out and the frequencies are those among the kept categories. No stored count is
    below MIN_GROUP, so a category held by a few subjects is not visible.
    """
    points, counts = np.unique(x, axis=0, return_counts=True)
    rare = counts < MIN_GROUP
    points, pooled, counts = points[~rare], counts[rare].sum(), counts[~rare]
    if pooled >= MIN_GROUP:
        points = np.vstack([points, np.full((1, x.shape[1]), OTHER_CATEGORY)])
        counts = np.r_[counts, pooled]
    return points, counts / counts.sum(), np.zeros(len(points))


def _smoothed_rbf(a: torch.Tensor, points: torch.Tensor, spread: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """RBF between rows of a (n, w) and Gaussians N(points, spread I) (m, w): E_b k(a, b) in closed form.

    ``spread`` broadcasts to (n, m). With spread 0 this is the plain RBF kernel.
    """
    var = bandwidth**2 + spread
    sq = torch.cdist(a, points, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    return (bandwidth**2 / var) ** (a.shape[1] / 2) * torch.exp(-sq / (2.0 * var))


def _unit_mean(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean (1, w) of the rows of x scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (weights @ np.divide(x, norms, out=np.zeros_like(x), where=norms > 0))[None, :]


def _reference_groups(x: np.ndarray) -> list[np.ndarray]:
    """Row indices of at most REFERENCE_GROUPS groups of >= MIN_GROUP rows each (one group when fewer)."""
    m = max(1, min(REFERENCE_GROUPS, len(x) // MIN_GROUP))
    if m == 1:
        return [np.arange(len(x))]
    if x.shape[1] == 1:  # contiguous runs of the sorted values: the tightest groups in 1-D
        return np.array_split(np.argsort(x[:, 0], kind="stable"), m)
    from sklearn.cluster import KMeans

    centres = KMeans(n_clusters=m, n_init=3, random_state=0).fit(x).cluster_centers_
    labels = _nearest(x, centres)
    while (sizes := np.bincount(labels, minlength=len(centres))).min() < MIN_GROUP:
        # drop the smallest cluster: its rows join their nearest remaining centre
        labels = _nearest(x, np.delete(centres, sizes.argmin(), axis=0))
        centres = np.stack([x[labels == c].mean(axis=0) for c in np.unique(labels)])
        labels = _nearest(x, centres)
    return [np.flatnonzero(labels == c) for c in range(len(centres)) if (labels == c).any()]


def _nearest(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre (Euclidean) for each row of x."""
    return ((centres**2).sum(axis=1)[None, :] - 2.0 * x @ centres.T).argmin(axis=1)


class PriorKernel:
    """Kernel K (n, n) on subjects from their (n, p) attribute matrix and missing mask.

    Args:
        terms: one :class:`KernelTerm` per attribute (unique names).
        combine: ``"product"`` (default) or ``"sum"`` (weights normalised to sum to 1).
        instance_weight: w in [0, 1]; the kernel is ``(1 - w) K_attr + w I`` (module docstring).
        bandwidth_scale: factor > 0 on the median-heuristic bandwidths fitted by :meth:`fit`.
        bandwidth_rule: ``"joint"`` (a product's median on the joint vector) or ``"per_attribute"``.

    Call :meth:`fit` on the training cohort (bandwidths, imputation reference), then call the
    kernel on a batch of distinct subjects: ``K = kernel(values, missing)``.
    """

    def __init__(
        self,
        terms: list[KernelTerm] | tuple[KernelTerm, ...],
        combine: str = "product",
        *,
        instance_weight: float = 0.0,
        bandwidth_scale: float = 1.0,
        bandwidth_rule: str = "joint",
    ):
        terms = list(terms)
        if not terms:
            raise MedclInputError("terms: expected at least one KernelTerm, got none")
        for term in terms:
            if not isinstance(term, KernelTerm):
                raise MedclInputError(f"terms: expected KernelTerm objects, got {type(term).__name__}")
        names = [t.name for t in terms]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise MedclInputError(f"terms: duplicate attribute name(s) {', '.join(duplicates)}")
        if combine not in COMBINE_MODES:
            raise MedclInputError(f"combine: expected one of {', '.join(COMBINE_MODES)}, got {combine!r}")
        if isinstance(instance_weight, bool) or not (
            isinstance(instance_weight, int | float) and 0 <= instance_weight <= 1
        ):
            raise MedclInputError(f"instance_weight: expected a number in [0, 1], got {instance_weight!r}")
        if isinstance(bandwidth_scale, bool) or not (
            isinstance(bandwidth_scale, int | float) and math.isfinite(bandwidth_scale) and bandwidth_scale > 0
        ):
            raise MedclInputError(f"bandwidth_scale: expected a number > 0, got {bandwidth_scale!r}")
        if bandwidth_rule not in BANDWIDTH_RULES:
            raise MedclInputError(
                f"bandwidth_rule: expected one of {', '.join(BANDWIDTH_RULES)}, got {bandwidth_rule!r}"
            )
        self.terms = terms
        self.combine = combine
        self.instance_weight = float(instance_weight)
        self.bandwidth_scale = float(bandwidth_scale)
        self.bandwidth_rule = bandwidth_rule
        self._bandwidths: dict[str, float] = {}
        self._references: dict[str, Reference] | None = None

    @property
    def n_columns(self) -> int:
        """Number of columns expected in the attribute matrix (largest ``stop``)."""
        return max(t.stop for t in self.terms)

    @property
    def is_fitted(self) -> bool:
        """True once :meth:`fit` has run (or the kernel was restored from a fitted dict)."""
        return self._references is not None

    @property
    def bandwidths(self) -> dict[str, float | None]:
        """Effective RBF bandwidth per rbf term: given, fitted, or None when still unknown."""
        return {
            t.name: (t.bandwidth if t.bandwidth is not None else self._bandwidths.get(t.name))
            for t in self.terms
            if t.kind == "rbf"
        }

    def _check_values(self, values: np.ndarray | torch.Tensor, name: str = "values") -> None:
        if values.ndim != 2 or values.shape[1] != self.n_columns:
            raise MedclInputError(
                f"{name}: expected an attribute matrix of shape (n, {self.n_columns}) for attributes "
                f"{', '.join(t.name for t in self.terms)}, got shape {tuple(values.shape)}"
            )

    def fit(self, values: np.ndarray | torch.Tensor, missing: np.ndarray | torch.Tensor | None = None) -> PriorKernel:
        """Fit median-heuristic bandwidths and the imputation reference on training values.

        Args:
            values: (n, p) training attribute matrix (NaN where missing).
            missing: (n, p) bool mask, or None (then NaN marks missing values).

        Returns:
            self. Raises MedclInputError for a wrong shape or an attribute with no value.
        """
        x = _as_numpy(values, "values")
        self._check_values(x)
        absent = np.isnan(x)
        if missing is not None:
            m = np.asarray(missing.detach().cpu() if isinstance(missing, torch.Tensor) else missing, dtype=bool)
            if m.shape != x.shape:
                raise MedclInputError(f"missing: expected shape {x.shape} like values, got {m.shape}")
            absent |= m
        bandwidths, references = {}, {}
        for term in self.terms:
            rows = ~absent[:, term.start : term.stop].any(axis=1)
            observed = x[rows, term.start : term.stop]
            if len(observed) == 0:
                raise MedclInputError(
                    f"values: attribute {term.name!r} has no non-missing training value; cannot fit its kernel"
                )
            if term.kind == "rbf" and term.bandwidth is None:
                bandwidths[term.name] = _median_distance(observed)
            references[term.name] = _reference(term.kind, observed)
        joint = 1.0
        if self.bandwidth_rule == "joint" and self.combine == "product" and len(bandwidths) > 1:
            fitted = [t for t in self.terms if t.name in bandwidths]
            rows = ~np.column_stack([absent[:, t.start : t.stop].any(axis=1) for t in fitted]).any(axis=1)
            scaled = np.hstack([x[rows, t.start : t.stop] / bandwidths[t.name] for t in fitted])
            joint = _median_distance(scaled) if len(scaled) > 1 else 1.0
        self._bandwidths = {name: self.bandwidth_scale * joint * b for name, b in bandwidths.items()}
        self._references = references
        return self

    def __call__(
        self, values: np.ndarray | torch.Tensor, missing: np.ndarray | torch.Tensor | None = None
    ) -> torch.Tensor:
        """Kernel matrix (n, n) of the subjects in ``values`` (n, p).

        Accepts numpy arrays or tensors; the result is on ``values``' device, float64 when
        ``values`` is float64 and float32 otherwise. ``missing`` (n, p) bool (or None: NaN
        marks missing). Raises MedclInputError for a wrong shape, an unknown bandwidth or a
        missing value before :meth:`fit`.
        """
        v = values if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))
        dtype = torch.float64 if v.dtype == torch.float64 else torch.float32
        v = v.detach().to(dtype)
        self._check_values(v)
        absent = torch.isnan(v)
        if missing is not None:
            m = missing if isinstance(missing, torch.Tensor) else torch.as_tensor(np.asarray(missing))
            if tuple(m.shape) != tuple(v.shape):
                raise MedclInputError(f"missing: expected shape {tuple(v.shape)} like values, got {tuple(m.shape)}")
            absent = absent | m.to(device=v.device, dtype=torch.bool)
        n = v.shape[0]
        weight_total = sum(t.weight for t in self.terms)
        out = (
            torch.ones(n, n, dtype=dtype, device=v.device)
            if self.combine == "product"
            else torch.zeros(n, n, dtype=dtype, device=v.device)
        )
        for term in self.terms:
            k = self._term_matrix(term, v, absent)
            if self.combine == "product":
                out = out * k
            else:
                out = out + (term.weight / weight_total) * k
        if self.instance_weight > 0:
            out = out * (1.0 - self.instance_weight)
            out.diagonal().add_(self.instance_weight)
        return out

    def _term_matrix(self, term: KernelTerm, v: torch.Tensor, absent: torch.Tensor) -> torch.Tensor:
        bandwidth = self.bandwidths.get(term.name)
        if term.kind == "rbf" and bandwidth is None:
            raise MedclInputError(
                f"PriorKernel: attribute {term.name!r} has no RBF bandwidth; give one or call "
                f".fit(train_values, train_missing) first"
            )
        rows_absent = absent[:, term.start : term.stop].any(dim=1)
        a = v[:, term.start : term.stop].masked_fill(rows_absent[:, None], 0.0)
        k = _pairwise(term.kind, a, a, bandwidth)
        if not bool(rows_absent.any()):
            return k
        if self._references is None:
            raise MedclInputError(
                f"values: attribute {term.name!r} has missing values but the kernel is not fitted; "
                f"call .fit(train_values, train_missing) first (it stores the imputation reference)"
            )
        points, weights, spreads = (
            torch.as_tensor(r, dtype=v.dtype, device=v.device) for r in self._references[term.name]
        )
        if term.kind == "cosine":  # points hold mean unit vectors: a linear kernel on them
            to_reference = F.normalize(a, dim=1) @ points.T @ weights
            reference_mean = weights @ (points @ points.T) @ weights
        elif term.kind == "rbf":  # each group as a Gaussian of its mean and spread
            to_reference = _smoothed_rbf(a, points, spreads[None, :], bandwidth) @ weights
            reference_mean = weights @ _smoothed_rbf(points, points, spreads[:, None] + spreads, bandwidth) @ weights
        else:
            to_reference = _pairwise(term.kind, a, points, bandwidth) @ weights  # mean_b k(b, a_j)
            reference_mean = weights @ _pairwise(term.kind, points, points, bandwidth) @ weights
        mi, mj = rows_absent[:, None], rows_absent[None, :]
        k = torch.where(mj, to_reference[:, None], k)
        k = torch.where(mi, to_reference[None, :], k)
        return torch.where(mi & mj, reference_mean, k)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able description (terms, combine, fitted bandwidths and reference)."""
        fitted = None
        if self._references is not None:
            fitted = {
                "bandwidths": {k: float(b) for k, b in self._bandwidths.items()},
                "references": {
                    name: {"points": points.tolist(), "weights": weights.tolist(), "spreads": spreads.tolist()}
                    for name, (points, weights, spreads) in self._references.items()
                },
            }
        return {
            "format_version": _FORMAT_VERSION,
            "combine": self.combine,
            "instance_weight": self.instance_weight,
            "bandwidth_scale": self.bandwidth_scale,
            "bandwidth_rule": self.bandwidth_rule,
            "terms": [{**asdict(t), "start": int(t.start), "stop": int(t.stop)} for t in self.terms],
            "fitted": fitted,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PriorKernel:
        """Rebuild a kernel from :meth:`to_dict` output (gives identical matrices)."""
        if not isinstance(d, dict) or "terms" not in d:
            raise MedclInputError("kernel dict: expected a mapping with 'terms' (from PriorKernel.to_dict())")
        try:
            terms = [KernelTerm(**t) for t in d["terms"]]
        except TypeError as exc:
            raise MedclInputError(f"kernel dict: invalid term entry ({exc})") from exc
        kernel = cls(
            terms,
            combine=d.get("combine", "product"),
            instance_weight=d.get("instance_weight", 0.0),
            bandwidth_scale=d.get("bandwidth_scale", 1.0),
            bandwidth_rule=d.get("bandwidth_rule", "per_attribute"),
        )
        fitted = d.get("fitted")
        if fitted is not None:
            kernel._bandwidths = {k: float(b) for k, b in fitted["bandwidths"].items()}
            kernel._references = {}
            for term in terms:
                ref = fitted["references"][term.name]
                points = np.asarray(ref["points"], dtype=np.float64).reshape(-1, term.width)
                weights = np.asarray(ref["weights"], dtype=np.float64)
                if term.kind == "cosine" and d.get("format_version", 1) < 2:  # raw vectors: average them
                    points, weights = _unit_mean(points, weights), np.ones(1)
                spreads = np.asarray(ref.get("spreads", np.zeros(len(points))), dtype=np.float64)
                kernel._references[term.name] = (points, weights, spreads)
        return kernel

    def __repr__(self) -> str:
        inner = ", ".join(f"{t.name}:{t.kind}[{t.start}:{t.stop}]" for t in self.terms)
        extra = f", instance_weight={self.instance_weight:g}" if self.instance_weight else ""
        return f"PriorKernel({inner}, combine={self.combine!r}{extra}, fitted={self.is_fitted})"
